"""A line's verdict and text depend on the line alone: not on its neighbours, on the file's
format, on how deep the call stack is, or on which parser reads it.

Each case came from an attack on the record path: an array element that is JSON but not a
valid value quarantined the whole array; a line nested ~1,000 deep holding a 20-digit
integer was valid or not depending on the stack it was parsed on; floats in a record with
an integer beyond 64 bits were written in Python's form instead of orjson's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Env

from logwatchd.errors import MalformedFile
from logwatchd.parallel import ChunkSink, JobSpec
from logwatchd.reader import Elements
from logwatchd.records import MAX_DEPTH, RecordBatcher, RecordError
from logwatchd.storage import LocalDir

HEAD = '"timestamp":1700000000,"user_id":"u","action":"a"'


def record(rest: str = "") -> bytes:
    return ("{" + HEAD + rest + "}").encode()


def lines(raw: bytes, first: int = 1, scan: bool = True) -> tuple[Any, Any]:
    b = RecordBatcher("f.jsonl", "UTC", "2026-01-01T00:00:00Z", 1 << 21, scan=scan)
    return b.process_lines(raw + b"\n", first)


def elements(items: list[bytes]) -> tuple[Any, Any]:
    return RecordBatcher("f.json", "UTC", "2026-01-01T00:00:00Z", 1 << 21).process_elements(items, 1)


VALUE_ERRORS = [  # JSON's grammar holds; the value cannot be read: one error line each
    (record(r',"s":"\ud800"'), "invalid_encoding"),
    (record(',"n":1e400'), "invalid_json"),
    (record(',"n":1' + "0" * 5000), "invalid_json"),
    (record(',"s":"X"').replace(b"X", b"\xff"), "invalid_encoding"),
]


@pytest.mark.parametrize("raw,reason", VALUE_ERRORS, ids=["lone-surrogate", "1e400", "5000-digits", "invalid-utf8"])
def test_an_array_element_that_cannot_be_read_is_one_error_line_as_in_json_lines(raw: bytes, reason: str) -> None:
    table, res = elements([record(), raw, record()])
    assert table is not None and table.num_rows == 2
    assert [json.loads(e)["reason"] for e in res.error_lines] == [reason]
    assert json.loads(res.error_lines[0])["source_line"] == 2
    _t, res_lines = lines(raw)
    assert [json.loads(e)["reason"] for e in res_lines.error_lines] == [reason]


@pytest.mark.parametrize("raw", [b'{"a":NaN}', b'{"a":-Infinity}', b'{"a":tru}', b'{"a" 1}'])
def test_an_array_element_that_is_not_json_still_means_the_array_does_not_parse(raw: bytes) -> None:
    with pytest.raises(RecordError) as info:
        elements([record(), raw])
    assert info.value.syntax


def test_an_unreadable_element_in_a_worker_is_an_error_line_not_a_malformed_file(tmp_path: Path) -> None:
    sink = ChunkSink(JobSpec("a" * 64, "s", "f.json", LocalDir(tmp_path), "UTC", "2026-01-01T00:00:00Z",
                             1 << 20), 0)
    res = sink.handle(Elements(1, [record(), record(r',"s":"\udc00"')]))
    assert res.valid == 1 and res.errors == 1
    with pytest.raises(MalformedFile):
        sink.handle(Elements(3, [b"[1,]"]))
    sink.abort()


def _nested(depth: int, big: bool) -> bytes:
    """A record whose deepest value is `depth` levels down in all (the record is level 1)."""
    inner = "[" * (depth - 1) + "1" + "]" * (depth - 1)
    return record((',"n":12345678901234567890' if big else "") + ',"d":' + inner)


def _verdict(raw: bytes, stack: int = 0, scan: bool = True) -> str:
    if stack:
        return _verdict(raw, stack - 1, scan)
    table, res = lines(raw, scan=scan)
    return "row" if table is not None else json.loads(res.error_lines[0])["reason"]


@pytest.mark.parametrize("depth", [MAX_DEPTH - 30, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 40])
def test_nesting_limit_is_the_same_for_every_line_and_every_stack(depth: int) -> None:
    """orjson's limit (1,024 levels in all) holds for lines that take the exact parser too
    (an integer beyond 64 bits), however deep the stack that parses them."""
    try:
        orjson.loads(_nested(depth, big=False))
        want = "row"
    except orjson.JSONDecodeError:
        want = "invalid_json"
    assert want == ("row" if depth <= MAX_DEPTH else "invalid_json")
    for big in (False, True):
        for stack in (0, 400):
            for scan in (True, False):
                assert _verdict(_nested(depth, big), stack, scan) == want, (big, stack, scan)
    table, _res = elements([_nested(depth, True)])
    assert (table is not None) == (want == "row")


def test_floats_are_written_as_orjson_writes_them_beside_an_integer_beyond_64_bits() -> None:
    floats = ',"f":[1e16,0.00001,1.5e-7,123.25,-0.0,5e-324]'
    plain, _ = lines(record(floats))
    big, _ = lines(record(floats + ',"i":123456789012345678901234567890'))
    text = big["attributes"][0].as_py()
    assert text.startswith(plain["attributes"][0].as_py()[:-1])
    assert text.endswith(',"i":123456789012345678901234567890}')


def test_integers_up_to_4300_digits_are_kept_exactly_beyond_that_invalid_json() -> None:
    ok, _ = lines(record(',"i":' + "9" * 4300))
    assert json.loads(ok["attributes"][0].as_py())["i"] == int("9" * 4300)
    table, res = lines(record(',"i":' + "9" * 4301))
    assert table is None and json.loads(res.error_lines[0])["reason"] == "invalid_json"


def test_an_array_of_readable_and_unreadable_elements_through_the_cli(env: Env) -> None:
    items = [record(), record(r',"s":"\ud800"'), record(',"n":1e400'), record()]
    path = env.base / "mixed.json"
    path.write_bytes(b"[" + b",\n".join(items) + b"]\n")
    r = env.cli("process", str(path))
    summary = json.loads(r.stdout.splitlines()[-1])
    assert (summary["status"], summary["valid"], summary["errors"]) == ("ok", 2, 2)


GOOD = record(',"pad":"' + "x" * 40 + '"')


def _process(env: Env, name: str, data: bytes, **ingest: Any) -> dict[str, Any]:
    if ingest:
        env.write_config(ingest=ingest)
    path = env.base / name
    path.write_bytes(data)
    r = env.cli("process", str(path))
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("ingest", [{}, {"chunk_bytes": 64, "max_line_bytes": 100}],
                         ids=["default-chunks", "tiny-chunks"])
def test_a_blank_line_longer_than_the_limit_is_skipped_wherever_it_is(env: Env, ingest: dict[str, int]) -> None:
    """Whitespace only is a blank line, however long: skipped at the start, in the middle, at
    the end, gzipped or not, whether the reader or the record path meets it."""
    import gzip

    env.write_config(**({"ingest": ingest} if ingest else {}))
    long_blank = b" \t" * (3 << 19) if not ingest else b" " * 500
    cases = {"start": long_blank + b"\n" + GOOD + b"\n", "middle": GOOD + b"\n" + long_blank + b"\n" + GOOD + b"\n",
             "end": GOOD + b"\n" + long_blank, "crlf": GOOD + b"\r\n" + long_blank + b"\r\n" + GOOD + b"\r\n"}
    for name, data in cases.items():
        for suffix, content in ((".jsonl", data), (".jsonl.gz", gzip.compress(data))):
            s = _process(env, name + suffix, content)
            goods = data.count(GOOD)
            assert (s["status"], s["processed"], s["valid"], s["errors"]) == ("ok", goods, goods, 0), (name, suffix, s)


@pytest.mark.parametrize("chunk", [64, 128, 8 << 20])
def test_a_last_line_of_exactly_the_limit_with_a_cr_is_valid_whatever_the_chunks(env: Env, chunk: int) -> None:
    limit = len(GOOD)
    env.write_config(ingest={"chunk_bytes": chunk, "max_line_bytes": limit})
    for tail in (b"\r", b"\r\n"):
        s = _process(env, f"cr{len(tail)}.jsonl", GOOD + b"\n" + GOOD + tail)
        assert (s["processed"], s["valid"], s["errors"]) == (2, 2, 0), (tail, s)
    s = _process(env, "long.jsonl", GOOD + b"\n" + GOOD[:-1] + b' }\n')  # one byte over: an error
    assert (s["processed"], s["valid"], s["errors"]) == (2, 1, 1), s


@pytest.mark.parametrize("blank_bytes", [100, 3 << 20])  # beyond a chunk and a read
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_blank_lines_before_the_first_byte_never_change_the_format_or_the_line_numbers(
        env: Env, blank_bytes: int, gz: bool) -> None:
    """More blank lines before an array (or the first record) than a chunk holds: still an
    array (first non-blank byte `[`), and JSON Lines keep their numbers."""
    import gzip

    env.write_config(ingest={"chunk_bytes": 4096})
    blanks = b"\n \t\r\n" * (blank_bytes // 5)
    array = blanks + b"[\n" + GOOD + b",\n" + GOOD + b"\n]\n"
    jsonl = blanks + GOOD + b"\n" + b"not json\n"
    for name, data, want in (("a.json", array, (2, 2, 0)), ("l.jsonl", jsonl, (2, 1, 1))):
        content = gzip.compress(data) if gz else data
        s = _process(env, name + (".gz" if gz else ""), content)
        assert (s["status"], s["processed"], s["valid"], s["errors"]) == ("ok", *want), (name, s)
    errors = [json.loads(x) for f in env.path("errors").rglob("*.jsonl") for x in f.read_text().splitlines()]
    assert {e["source_line"] for e in errors if e["raw"] == "not json"} == {blanks.count(b"\n") + 2}


@pytest.mark.parametrize("chunk", [64, 8 << 20], ids=["reader-skips-them", "record-path-meets-them"])
def test_a_file_of_over_long_records_is_line_too_long_errors_not_malformed(env: Env, chunk: int) -> None:
    """Over-long lines are never read, so they never make the file `not_json`: a file (or an
    array) of nothing else is processed, one `line_too_long` error line each, in `process`,
    in a dry run and in the workers (files beyond two chunks)."""
    env.write_config(ingest={"chunk_bytes": chunk, "max_line_bytes": 200})
    big = record(',"pad":"' + "x" * 300 + '"')
    cases = {"over.jsonl": big + b"\n" + big + b"\n", "over.json": b"[" + big + b"]\n",
             "many.jsonl": (big + b"\n") * 20}
    for name, data in cases.items():
        n = data.count(big)
        s = _process(env, name, data)
        assert (s["status"], s["processed"], s["valid"], s["errors"]) == ("ok", n, 0, n), (name, s)
        path = env.base / name
        dry = json.loads(env.cli("process", "--dry-run", str(path)).stdout.splitlines()[-1])
        assert (dry["status"], dry["reasons"]) == ("ok", {"line_too_long": n}), (name, dry)
    reasons = [e["reason"] for e in env.error_rows()]
    assert reasons == ["line_too_long"] * (2 + 1 + 20)
