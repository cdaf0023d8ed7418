"""Deeply nested records are rows or single error lines, never a failed or quarantined file."""

from __future__ import annotations

import json

import pytest
from conftest import Env, write

from logwatchd.records import INVALID_JSON, RecordBatcher, dumps_json, parse_json

TS = '"timestamp":"2026-11-25T10:00:00Z"'


def _deep_list(d: int) -> str:
    return "[" * d + "]" * d


def _deep_object(d: int) -> str:
    return '{"a":' * d + "1" + "}" * d


def _records(d: int) -> list[str]:
    """Compact JSON texts (so an array element's raw text is the text itself)."""
    return [
        '{' + TS + ',"user_id":"u","action":"ok"}',
        '{' + TS + ',"user_id":' + _deep_list(d) + ',"action":"a"}',
        '{' + TS + ',"user_id":"u","action":' + _deep_object(d) + '}',
        '{' + TS + ',"user_id":"u","action":"deep","extra":' + _deep_object(d) + '}',
        _deep_list(d),
        '{"timestamp":' + _deep_list(d) + ',"user_id":"u","action":"a"}',
        '{' + TS + ',"user_id":"u","action":"deep2","extra":[' + _deep_list(d) + ',{"b":2}]}',
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "array"])
@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_records_are_rows_or_error_lines(env: Env, fmt: str, depth: int) -> None:
    """Nesting 1,000 / 100,000 deep in user_id, action, timestamp, extra fields or the element itself: one row or one error line each, JSON Lines and arrays alike."""
    recs = _records(depth)
    text = "\n".join(recs) + "\n" if fmt == "jsonl" else "[\n" + ",\n".join(recs) + "\n]\n"
    path = write(env.base / f"deep.{'jsonl' if fmt == 'jsonl' else 'json'}", text)
    [summary] = env.process(path)
    assert summary["status"] == "ok", summary
    assert summary["processed"] == len(recs)
    rows = env.clean_rows()
    errors = {e["source_line"]: e for e in env.error_rows()}
    if depth == 1000:  # the parser takes it: the field checks decide
        assert [r["source_line"] for r in rows] == [1, 4, 7]
        assert rows[1]["attributes"] == '{"extra":' + _deep_object(depth) + "}"
        assert rows[2]["attributes"] == '{"extra":[' + _deep_list(depth) + ',{"b":2}]}'
        want = {2: ("invalid_field", "user_id"), 3: ("invalid_field", "action"),
                5: ("not_an_object", None), 6: ("invalid_timestamp", "timestamp")}
    else:  # deeper than the parser allows: invalid_json
        assert [r["source_line"] for r in rows] == [1]
        want = {k: (INVALID_JSON, None) for k in range(2, 8)}
    assert {k: (e["reason"], e.get("field")) for k, e in errors.items()} == want
    for k, e in errors.items():
        assert e["raw"] == recs[k - 1]  # the line as text / the element as compact JSON


def test_deep_values_serialise_without_recursion() -> None:
    """dumps_json writes 100,000-deep lists and objects (no RecursionError), as json.dumps would at a shallow depth."""
    deep: object = 1
    for k in range(100_000):
        deep = [deep] if k % 2 else {"k": deep}
    text = dumps_json(deep)
    assert text.startswith('[{"k":[{"k":') and text.endswith("}]}]")
    assert dumps_json({"a": [1, "é", None, True, 2.5, 10**30]}) == json.dumps(
        {"a": [1, "é", None, True, 2.5, 10**30]}, ensure_ascii=False, separators=(",", ":"))


def test_too_deep_for_the_parser_is_invalid_json() -> None:
    """parse_json reports nesting beyond the parser's limit as invalid_json, flagged as too deep."""
    from logwatchd.records import RecordError

    with pytest.raises(RecordError) as err:
        parse_json(_deep_list(100_000).encode())
    assert err.value.reason == INVALID_JSON and err.value.too_deep


def test_deep_array_element_in_process() -> None:
    """An array element 100,000 deep is one invalid_json error line in-process (not a RecordError for the file)."""
    batcher = RecordBatcher("f.json", "UTC", "x", 1 << 20)
    _table, res = batcher.process_elements([_deep_list(100_000).encode(),
                                           ('{' + TS + ',"user_id":"u","action":"a"}').encode()], 1)
    assert (res.valid, res.errors) == (1, 1)
    assert json.loads(res.error_lines[0])["reason"] == INVALID_JSON


def test_a_file_of_only_too_deep_lines_is_not_quarantined(env: Env) -> None:
    """A JSON Lines file whose every line is nested 100,000 deep is processed (error lines), not quarantined as not_json."""
    path = write(env.base / "only-deep.jsonl", (_deep_object(100_000) + "\n") * 2)
    [summary] = env.process(path)
    assert (summary["status"], summary["errors"]) == ("ok", 2), summary
    assert [e["reason"] for e in env.error_rows()] == [INVALID_JSON] * 2
