"""`logwatchd process` end to end: the real CLI in a subprocess, outputs read back with pyarrow."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, Env, jsonl, write

GOOD = {"timestamp": "2026-11-25T10:00:00Z", "user_id": "u1", "action": "login"}


def test_bundled_example_gives_one_valid_two_errors(env: Env) -> None:
    """The README's first example: 3 processed, 1 valid, 2 errors, read back with pyarrow."""
    [summary] = env.process(REPO / "examples" / "first.json")
    assert summary == {"file": "first.json", "status": "ok", "processed": 3, "valid": 1, "errors": 2}
    [row] = env.clean_rows()
    assert row["user_id"] == "42" and row["action"] == "login" and row["source_line"] == 1
    assert [(e["source_line"], e["reason"], e.get("field")) for e in env.error_rows()] == [
        (2, "missing_field", "timestamp"), (3, "invalid_timestamp", "timestamp")]
    assert (REPO / "examples" / "first.json").exists(), "files outside the inbox stay where they are"


def test_every_reason_code(env: Env) -> None:
    """Each SPEC §5 reason code, with its field, for one line each; the valid lines are rows."""
    lines = [
        json.dumps(GOOD),                                                   # 1 valid
        '{"timestamp": "2026-11-25T10:00:00Z", "user_id": "u1"',            # 2 invalid_json
        b'{"timestamp": "2026-11-25T10:00:00Z", "user_id": "\xff", "action": "a"}',  # 3 invalid_encoding
        "[1, 2]",                                                           # 4 not_an_object
        '{"user_id": "u", "action": "a"}',                                  # 5 missing_field timestamp
        '{"timestamp": 1764000000, "user_id": null, "action": "a"}',        # 6 missing_field user_id
        '{"timestamp": 1764000000, "user_id": "u"}',                        # 7 missing_field action
        '{"timestamp": 1764000000, "user_id": true, "action": "a"}',        # 8 invalid_field user_id
        '{"timestamp": 1764000000, "user_id": "", "action": "a"}',          # 9 invalid_field user_id
        '{"timestamp": 1764000000, "user_id": 1.5, "action": "a"}',         # 10 invalid_field user_id
        '{"timestamp": 1764000000, "user_id": "u", "action": ""}',          # 11 invalid_field action
        '{"timestamp": 1764000000, "user_id": "u", "action": 3}',           # 12 invalid_field action
        '{"timestamp": "2026-02-30T10:00:00Z", "user_id": "u", "action": "a"}',  # 13 invalid_timestamp
        '{"timestamp": true, "user_id": "u", "action": "a"}',               # 14 invalid_timestamp
        '{"timestamp": 1764000000, "user_id": "u", "action": "' + "x" * 300 + '"}',  # 15 line_too_long
        '{"timestamp": 1764000000, "user_id": 12, "action": "logout"}',     # 16 valid
    ]
    data = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    env.write_config(ingest={"max_line_bytes": 200})
    [s] = env.process(write(env.base / "r.jsonl", data))
    assert s == {"file": "r.jsonl", "status": "ok", "processed": 16, "valid": 2, "errors": 14}
    got = [(e["source_line"], e["reason"], e.get("field")) for e in env.error_rows()]
    assert got == [
        (2, "invalid_json", None), (3, "invalid_encoding", None), (4, "not_an_object", None),
        (5, "missing_field", "timestamp"), (6, "missing_field", "user_id"),
        (7, "missing_field", "action"), (8, "invalid_field", "user_id"),
        (9, "invalid_field", "user_id"), (10, "invalid_field", "user_id"),
        (11, "invalid_field", "action"), (12, "invalid_field", "action"),
        (13, "invalid_timestamp", "timestamp"), (14, "invalid_timestamp", "timestamp"),
        (15, "line_too_long", None)]
    errs = {e["source_line"]: e for e in env.error_rows()}
    assert errs[3]["raw"] == '{"timestamp": "2026-11-25T10:00:00Z", "user_id": "\ufffd", "action": "a"}'
    assert errs[2]["raw"] == lines[1]
    assert all(e["source_file"] == "r.jsonl" and e["ingested_at"].endswith("Z") for e in errs.values())
    assert [r["source_line"] for r in env.clean_rows()] == [1, 16]


def test_columns_types_and_attributes(env: Env) -> None:
    """The clean schema of SPEC §5, Hive-partitioned by event date, attributes lossless JSON."""
    big = 2**80 + 3
    line = ('{"timestamp": "2026-11-25T23:30:00-02:00", "user_id": 123456789012345678901234567890,'
            ' "action": "login", "n": ' + str(big) + ', "f": 0.1, "s": "a\u2028b", "nested": {"k": [true, null]}}')
    [s] = env.process(write(env.base / "a.jsonl", line + "\n"))
    assert s["valid"] == 1
    files = list(env.path("clean").rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["date=2026-11-26"]
    schema = pq.read_schema(files[0])
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert [f.name for f in schema] == ["timestamp", "ts", "day_of_week", "user_id", "action",
                                         "attributes", "source_file", "source_line"]
    [row] = env.clean_rows()
    assert row["timestamp"] == "2026-11-26 01:30:00" and row["day_of_week"] == "Thursday"
    assert row["user_id"] == "123456789012345678901234567890"
    attrs = json.loads(row["attributes"])
    assert attrs == {"n": big, "f": 0.1, "s": "a\u2028b", "nested": {"k": [True, None]}}
    assert str(big) in row["attributes"]
    meta = schema.metadata
    assert meta[b"logwatchd.input_sha256"].decode() == s_sha(env.base / "a.jsonl")


def s_sha(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_berlin_summer_and_winter(env: Env) -> None:
    """Naive times are read in the configured zone; timestamp/day_of_week/date are local."""
    env.write_config(transform={"timezone": "Europe/Berlin"})
    data = jsonl({"timestamp": "2026-07-01T00:30:00", "user_id": "u", "action": "login"},
                 {"timestamp": "2026-01-01T00:30:00", "user_id": "u", "action": "login"},
                 {"timestamp": "2026-06-30T22:30:00Z", "user_id": "u", "action": "login"})
    env.process(write(env.base / "b.jsonl", data))
    rows = env.clean_rows()
    assert [r["ts"].isoformat() for r in rows] == [
        "2026-06-30T22:30:00+00:00", "2025-12-31T23:30:00+00:00", "2026-06-30T22:30:00+00:00"]
    assert [r["timestamp"] for r in rows] == ["2026-07-01 00:30:00", "2026-01-01 00:30:00", "2026-07-01 00:30:00"]
    assert [r["date"] for r in rows] == ["2026-07-01", "2026-01-01", "2026-07-01"]
    assert rows[1]["day_of_week"] == "Thursday"


def test_crlf_bom_blank_lines_and_u2028(env: Env) -> None:
    """A BOM and CRLF are accepted, blank lines skipped (numbering kept), U+2028 is not a break."""
    body = ("\ufeff" + json.dumps(GOOD) + "\r\n\r\n   \r\n"
            + '{"timestamp": 1764000000, "user_id": "u", "action": "a\u2028b"}\r\n')
    [s] = env.process(write(env.base / "c.jsonl", body))
    assert s == {"file": "c.jsonl", "status": "ok", "processed": 2, "valid": 2, "errors": 0}
    rows = env.clean_rows()
    assert [r["source_line"] for r in rows] == [1, 4]
    assert rows[1]["action"] == "a\u2028b"


def test_gzip_of_lines_and_of_an_array(env: Env) -> None:
    """gzip by suffix and by magic, of JSON Lines and of an array."""
    a = write(env.base / "a.jsonl.gz", gzip.compress(jsonl(GOOD, "oops").encode()))
    b = write(env.base / "b.json", gzip.compress(json.dumps([GOOD, 5]).encode()))
    sa, sb = env.process(a, b)
    assert (sa["valid"], sa["errors"], sb["valid"], sb["errors"]) == (1, 1, 1, 1)
    reasons = {(e["source_file"], e["reason"]) for e in env.error_rows()}
    assert reasons == {("a.jsonl.gz", "invalid_json"), ("b.json", "not_an_object")}


def test_array_elements_non_objects_and_raw_compact(env: Env) -> None:
    """Array elements are numbered from 1; a non-object element is an error with compact raw JSON."""
    data = '[\n {"timestamp": 1764000000, "user_id": "u", "action": "a"},\n [1, 2],\n "s",\n null, {"a": [1, {"b": "]"}]}\n]'
    [s] = env.process(write(env.base / "arr.json", data))
    assert s == {"file": "arr.json", "status": "ok", "processed": 5, "valid": 1, "errors": 4}
    errs = env.error_rows()
    assert [(e["source_line"], e["reason"], e["raw"]) for e in errs] == [
        (2, "not_an_object", "[1,2]"), (3, "not_an_object", '"s"'), (4, "not_an_object", "null"),
        (5, "missing_field", '{"a":[1,{"b":"]"}]}')]


def test_deep_nesting_nan_surrogates_and_big_lines_are_error_lines(env: Env) -> None:
    """40,000-deep nesting, NaN and a lone surrogate escape become error lines, not a crash."""
    data = b"\n".join([
        b'{"timestamp": 1764000000, "user_id": "u", "action": "a", "x": ' + b"[" * 40000 + b"]" * 40000 + b"}",
        b'{"timestamp": 1764000000, "user_id": "u", "action": "a", "x": NaN}',
        b'{"timestamp": 1764000000, "user_id": "u", "action": "\\ud800"}',
        json.dumps(GOOD).encode(),
    ]) + b"\n"
    [s] = env.process(write(env.base / "d.jsonl", data))
    assert (s["status"], s["valid"], s["errors"]) == ("ok", 1, 3)
    assert [e["reason"] for e in env.error_rows()] == ["invalid_json", "invalid_json", "invalid_encoding"]
    assert env.error_rows()[2]["raw"] == '{"timestamp": 1764000000, "user_id": "u", "action": "\\ud800"}'


def test_line_longer_than_a_chunk_is_streamed_not_buffered(env: Env) -> None:
    """A line far over max_line_bytes (and over the chunk size) is one line_too_long error."""
    env.write_config(ingest={"max_line_bytes": 1000, "chunk_bytes": 4096})
    huge = '{"timestamp": 1764000000, "user_id": "u", "action": "' + "y" * 3_000_000 + '"}'
    data = jsonl(GOOD, huge, GOOD | {"user_id": "u3"})
    [s] = env.process(write(env.base / "e.jsonl", data))
    assert (s["processed"], s["valid"], s["errors"]) == (3, 2, 1)
    [err] = env.error_rows()
    assert err["reason"] == "line_too_long" and err["source_line"] == 2
    assert [r["source_line"] for r in env.clean_rows()] == [1, 3]


@pytest.mark.parametrize("name, data, reason", [
    ("corrupt.jsonl.gz", b"\x1f\x8b\x08\x00" + b"garbage" * 20, "corrupt_gzip"),
    ("truncated.jsonl.gz", gzip.compress(jsonl(GOOD).encode() * 50)[:-30], "corrupt_gzip"),
    ("broken.json", b'[{"timestamp": 1, "user_id": "u", "action": "a"}, {"x": 1', "invalid_array"),
    ("trailing.json", b"[1, 2,]", "invalid_array"),
    ("nan.json", b'[{"a": NaN}]', "invalid_array"),
    ("after.json", b'[1] {"x": 1}', "invalid_array"),
    ("binary.jsonl", bytes(range(256)) * 20, "not_json"),
    ("text.jsonl", b"hello\nworld\n", "not_json"),
])
def test_malformed_files_are_quarantined_whole(env: Env, name: str, data: bytes, reason: str) -> None:
    """Each malformed-file case: quarantined with a reason sidecar, nothing written."""
    write(env.inbox / name, data)
    [s] = env.process(env.inbox / name)
    assert s["status"] == "quarantined" and s["reason"] == reason
    assert not (env.inbox / name).exists()
    assert (env.path("quarantine") / name).read_bytes() == data
    sidecar = json.loads((env.path("quarantine") / f"{name}.reason.json").read_text())
    assert sidecar["reason"] == reason and sidecar["detail"] and sidecar["at"]
    assert env.clean_rows() == [] and env.error_rows() == []


def test_empty_file_is_processed_with_zero_records(env: Env) -> None:
    """An empty file (or only blank lines) is ok with zero records, and archived."""
    write(env.inbox / "empty.jsonl", b"")
    write(env.inbox / "blank.jsonl", b"\n  \n")
    s1, s2 = env.process(env.inbox / "empty.jsonl", env.inbox / "blank.jsonl")
    assert s1 == {"file": "empty.jsonl", "status": "ok", "processed": 0, "valid": 0, "errors": 0}
    assert s2["status"] == "ok" and s2["processed"] == 0
    assert len(list(env.path("archive").rglob("*.jsonl"))) == 2


def test_inbox_file_is_archived_and_same_content_is_a_duplicate(env: Env) -> None:
    """An inbox file moves to archive/date=…/NAME; the same content again is a duplicate."""
    write(env.inbox / "a.jsonl", jsonl(GOOD))
    [s] = env.process(env.inbox / "a.jsonl")
    assert s["status"] == "ok" and not (env.inbox / "a.jsonl").exists()
    [archived] = env.path("archive").rglob("a.jsonl")
    assert archived.parent.name.startswith("date=")
    write(env.inbox / "a.jsonl", jsonl(GOOD))
    write(env.base / "copy.jsonl", jsonl(GOOD))
    s2, s3 = env.process(env.inbox / "a.jsonl", env.base / "copy.jsonl")
    assert s2["status"] == s3["status"] == "duplicate"
    assert len(env.clean_rows()) == 1
    archived = sorted(p.name for p in env.path("archive").rglob("a*.jsonl"))
    assert len(archived) == 2 and "a.jsonl" in archived, "a second copy is kept, not overwritten"
    [tagged] = [a for a in archived if a != "a.jsonl"]
    assert tagged.startswith("a.") and tagged.endswith(".jsonl"), "tagged before its suffix"


def test_dedupe_off_processes_again(env: Env) -> None:
    """With dedupe = false the same content is processed again, as a new input with its own outputs."""
    env.write_config(ingest={"dedupe": False})
    write(env.base / "a.jsonl", jsonl(GOOD, "bad"))
    env.process(env.base / "a.jsonl")
    [s] = env.process(env.base / "a.jsonl")
    assert (s["status"], s["valid"], s["errors"]) == ("ok", 1, 1)
    assert len(env.clean_rows()) == 2 and len(env.error_rows()) == 2
    assert len(list(env.path("clean").rglob("*.parquet"))) == 2


def test_missing_file_fails_with_exit_1(env: Env) -> None:
    """A file that does not exist is `failed` and the exit code is 1; other files still run."""
    write(env.base / "a.jsonl", jsonl(GOOD))
    proc = env.cli("process", str(env.base / "nope.jsonl"), str(env.base / "a.jsonl"), check=False)
    assert proc.returncode == 1
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["status"] for x in lines] == ["failed", "ok"]


def test_ledger_counts_match_the_dataset(env: Env) -> None:
    """Per-(date, action) counts in the ledger equal a scan of the Parquet dataset."""
    recs = [{"timestamp": 1764000000 + i * 3600, "user_id": i, "action": "login" if i % 3 else "view"}
            for i in range(100)]
    env.process(write(env.base / "m.jsonl", jsonl(*recs)))
    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    ledger = {(d, a): n for d, a, n in con.execute("SELECT date, action, n FROM daily_counts")}
    scan: dict[tuple[str, str], int] = {}
    for r in env.clean_rows():
        scan[(r["date"], r["action"])] = scan.get((r["date"], r["action"]), 0) + 1
    assert ledger == scan and sum(ledger.values()) == 100


def test_empty_or_corrupt_ledger_is_refused(env: Env) -> None:
    """A 0-byte, corrupt, or missing-beside-outputs ledger is refused, never recreated."""
    env.process(write(env.base / "a.jsonl", jsonl(GOOD)))
    ledger = env.path("state") / "ledger.sqlite3"
    for f in ledger.parent.glob("ledger.sqlite3*"):
        f.unlink()
    proc = env.cli("process", str(write(env.base / "b.jsonl", jsonl(GOOD | {"user_id": "x"}))), check=False)
    assert proc.returncode == 1 and "rebuild-ledger" in proc.stderr
    assert not ledger.exists()
    ledger.write_bytes(b"")
    proc = env.cli("process", str(env.base / "b.jsonl"), check=False)
    assert proc.returncode == 1 and "empty" in proc.stderr
    ledger.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    proc = env.cli("process", str(env.base / "b.jsonl"), check=False)
    assert proc.returncode == 1 and "ledger" in proc.stderr
    assert ledger.stat().st_size == 4096 + 16


def test_large_file_in_parallel_chunks_matches_serial(env: Env) -> None:
    """A file cut into many chunks over worker processes gives every line exactly once, in order."""
    env.write_config(ingest={"chunk_bytes": 65536, "workers": 2})
    recs = []
    for i in range(20000):
        recs.append(GOOD | {"user_id": f"u{i}", "timestamp": 1764000000 + i * 30} if i % 7 else "bad line")
    [s] = env.process(write(env.base / "big.jsonl", jsonl(*recs)))
    assert s["processed"] == 20000 and s["errors"] == 20000 // 7 + 1
    rows = env.clean_rows()
    lines = sorted([r["source_line"] for r in rows] + [e["source_line"] for e in env.error_rows()])
    assert lines == list(range(1, 20001))
    errs = [e["source_line"] for e in env.error_rows()]
    files = list(env.path("errors").rglob("*.jsonl"))
    in_file = [json.loads(x)["source_line"] for x in files[0].read_text().splitlines()]
    assert in_file == sorted(errs), "error lines keep the file's order"
    assert len(list(env.path("clean").rglob("*.parquet"))) >= 2


def test_file_names_with_invalid_utf8_and_newlines(env: Env) -> None:
    """Names that are not UTF-8, or hold a newline, are processed and archived; rows name them readably."""
    import os
    raw_name = os.fsdecode(b"bad-\xff-name.jsonl")
    write(env.inbox / raw_name, jsonl(GOOD))
    write(env.inbox / "new\nline.jsonl", jsonl(GOOD | {"user_id": "nl"}, "oops"))
    s1, s2 = env.process(env.inbox / raw_name, env.inbox / "new\nline.jsonl")
    assert (s1["status"], s1["file"]) == ("ok", "bad-\ufffd-name.jsonl")
    assert (s2["status"], s2["file"], s2["errors"]) == ("ok", "new\nline.jsonl", 1)
    assert sorted(r["source_file"] for r in env.clean_rows()) == ["bad-\ufffd-name.jsonl", "new\nline.jsonl"]
    archived = {p.name for p in env.path("archive").rglob("*") if p.is_file()}
    assert archived == {raw_name, "new\nline.jsonl"}
    assert not list(env.inbox.iterdir())


def test_lines_of_only_vertical_tab_or_form_feed_are_errors_not_blank(env: Env) -> None:
    """\\x0b and \\x0c are not JSON whitespace: such a line is an invalid_json error, not skipped."""
    data = b"\x0c\n" + json.dumps(GOOD).encode() + b"\n\x0b\x0b\n \t \n"
    [s] = env.process(write(env.base / "ff.jsonl", data))
    assert (s["processed"], s["valid"], s["errors"]) == (3, 1, 2)
    assert [(e["source_line"], e["reason"]) for e in env.error_rows()] == [(1, "invalid_json"), (3, "invalid_json")]
