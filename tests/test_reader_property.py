"""Property tests: every line of a random file is one row or one error line, as a small oracle of SPEC §4 says.

The oracle below is written from the SPEC alone, with the standard library only (json,
datetime, re): it splits a file into lines or elements, and says for each whether it is a
row (with which instant) or an error line (with which reason and field). The files mix
valid records, every kind of invalid one, blank lines, a BOM, CRLF, deep nesting, long
names and over-long lines, as JSON Lines or a JSON array, gzipped or not; the reader cuts
them with tiny chunk sizes, so chunk boundaries fall everywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import Env
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from logwatchd.durable import staged_name
from logwatchd.errors import MalformedFile
from logwatchd.layout import clean_path
from logwatchd.parallel import JobSpec, LocalRunner, PoolRunner
from logwatchd.reader import HashingReader, iter_chunks, open_input

# --- the oracle -------------------------------------------------------------------------
WS = " \t\r\n"
ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                 r"(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})?")
LOW, HIGH = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
Verdict = tuple[str, Any]  # ("row", (user_id, action, instant)) or ("error", (reason, field))


def _reject(name: str) -> Any:
    raise ValueError(name)


def _strings(value: Any) -> list[str]:
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return out


def oracle_instant(ts: Any) -> datetime | None:
    """The UTC instant of a `timestamp` value as SPEC §4 reads it (zone UTC), or None."""
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int | float):
        micros = ts * 1000 if ts > 10**11 else ts * 1_000_000  # milliseconds above 10^11
        if not -62135596800 * 10**6 <= micros <= 253402300800 * 10**6:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(micros))
    if not isinstance(ts, str):
        return None
    m = ISO.fullmatch(ts)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac, off = m.group(7), m.group(8)
    try:
        local = datetime(y, mo, d, h, mi, s, int((frac or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    offset = timedelta(0)
    if off and off != "Z":
        oh, om = int(off[1:3]), int(off[4:6])
        if oh > 23 or om > 59:
            return None
        offset = (1 if off[0] == "+" else -1) * timedelta(hours=oh, minutes=om)
    try:
        return local.replace(tzinfo=timezone(offset)).astimezone(UTC)
    except OverflowError:
        return None


def oracle_record(raw: bytes) -> tuple[Verdict, bool]:
    """(verdict, parsed as JSON) of one non-blank line or element."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ("error", ("invalid_encoding", None)), False
    try:
        value = json.loads(text, parse_constant=_reject)
    except RecursionError:
        return ("error", ("invalid_json", None)), True  # too deep: still JSON
    except ValueError:
        return ("error", ("invalid_json", None)), False
    if any(isinstance(v, float) and v in (float("inf"), float("-inf")) for v in _flat(value)):
        return ("error", ("invalid_json", None)), False
    if any(re.search("[\ud800-\udfff]", s) for s in _strings(value)):
        return ("error", ("invalid_encoding", None)), False
    if not isinstance(value, dict):
        return ("error", ("not_an_object", None)), True
    ts, uid, act = value.get("timestamp"), value.get("user_id"), value.get("action")
    if ts is None:
        return ("error", ("missing_field", "timestamp")), True
    if uid is None:
        return ("error", ("missing_field", "user_id")), True
    if not (isinstance(uid, str) and uid or isinstance(uid, int) and not isinstance(uid, bool)):
        return ("error", ("invalid_field", "user_id")), True
    if act is None:
        return ("error", ("missing_field", "action")), True
    if not (isinstance(act, str) and act):
        return ("error", ("invalid_field", "action")), True
    instant = oracle_instant(ts)
    if instant is None or not LOW <= instant <= HIGH:
        return ("error", ("invalid_timestamp", "timestamp")), True
    return ("row", (str(uid), act, instant)), True


def _flat(value: Any) -> list[Any]:
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        else:
            out.append(v)
    return out


def oracle_file(content: bytes, array: bool, max_line: int) -> tuple[str, dict[int, Verdict]]:
    """("ok" | "quarantined", {line or element number: verdict}) of a whole (decompressed) file."""
    verdicts: dict[int, Verdict] = {}
    parsed = 0
    items: list[tuple[int, bytes]]
    if array:
        items = list(enumerate(_split_array(content), 1))
    else:
        body = content[3:] if content.startswith(b"\xef\xbb\xbf") else content
        lines = body.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        items = [(k, line[:-1] if line.endswith(b"\r") else line) for k, line in enumerate(lines, 1)]
    for number, raw in items:
        if not raw.strip(WS.encode()):
            continue
        if len(raw) > max_line:
            verdicts[number] = ("error", ("line_too_long", None))
            parsed += 1  # never read: not known not to be JSON, so never "not_json"
            continue
        verdicts[number], ok = oracle_record(raw)
        parsed += ok
    if verdicts and not parsed:
        return "quarantined", {}
    return "ok", verdicts


def _split_array(content: bytes) -> list[bytes]:
    """The elements of a JSON array as the generator wrote them (top-level commas)."""
    text = content.strip(WS.encode())
    assert text.startswith(b"[") and text.endswith(b"]")
    return [e.strip(WS.encode()) for e in text[1:-1].split(SEP)] if text[1:-1].strip() else []


# --- the generator ----------------------------------------------------------------------
SEP = b"\x00SEP\x00"  # marks element boundaries while building an array (replaced by commas)
TS = st.sampled_from([
    "2026-11-25T10:00:00Z", "2026-11-25 10:00:00", "2026-11-25T10:00:00.123456+05:30",
    "2024-02-29T23:59:59-08:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "2026-02-30T00:00:00Z", "2026-11-25T24:00:00Z", "yesterday", "2026-11-25", "",
    "0001-01-01T00:00:00+00:01",
]) | st.integers(-10**13, 10**13) | st.floats(-1e13, 1e13, allow_nan=False) | st.sampled_from(
    [True, 1e300, -1e300, 10**20, [], {}])
UID = st.sampled_from(["u1", "", 0, 12345678901234567890123, True, 1.5, [], "ü"]) | st.text(min_size=1, max_size=8)
ACT = st.sampled_from(["login", "view", "", 5, None, ["a"], "x" * 300]) | st.text(min_size=1, max_size=8)
LONG_KEY = "k" * 300


@st.composite
def record(draw: st.DrawFn) -> bytes:
    rec: dict[str, Any] = {}
    for key, strategy in (("timestamp", TS), ("user_id", UID), ("action", ACT)):
        if draw(st.integers(0, 9)) > 0:  # sometimes absent
            rec[key] = draw(strategy | st.none()) if draw(st.booleans()) else draw(strategy)
    extra = draw(st.sampled_from([None, 1, "deep", "long", "big"]))
    if extra == 1:
        rec["extra"] = {"n": draw(st.integers()), "s": draw(st.text(max_size=5))}
    elif extra == "long":
        rec[LONG_KEY] = "v" * draw(st.sampled_from([10, 2000]))
    elif extra == "big":
        rec["big"] = 10**draw(st.integers(18, 40))
    text = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode()
    if extra == "deep":
        depth = draw(st.sampled_from([1, 300, 50_000]))  # not near the parsers' limits (~1,000)
        text = text[:-1] + (b", " if rec else b"") + b'"deep": ' + b"[" * depth + b"]" * depth + b"}"
    return text


JUNK = st.sampled_from([
    b"{", b"tru", b"NaN", b"[1,]", b"{'a': 1}", b'{"a": 1e999}', b"\xff\xfe", b'{"a": "\xc3"}',
    b'{"timestamp": "2026-11-25T10:00:00Z", "user_id": "u", "action": "\\ud800"}',
    b"\x0b", b"x" * 2000,
])
NOT_OBJECT = st.sampled_from([b"[1, 2]", b'"text"', b"3", b"null", b"[" * 50_000 + b"]" * 50_000])
BLANK = st.sampled_from([b"", b"  ", b"\t", b" \r"])


@st.composite
def input_file(draw: st.DrawFn) -> dict[str, Any]:
    array = draw(st.booleans())
    kinds = record() | NOT_OBJECT if array else record() | NOT_OBJECT | JUNK | BLANK
    items = draw(st.lists(kinds, max_size=25))
    if array:
        content = b"[" + b"".join(
            (b"" if k == 0 else b"," + draw(st.sampled_from([b"", b" ", b"\n", b"\r\n  "]))) + item
            for k, item in enumerate(items)) + b"]" + draw(st.sampled_from([b"", b"\n"]))
    else:
        ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in items]
        content = b"".join(i + e for i, e in zip(items, ends, strict=True))
        if content and draw(st.booleans()):
            content = content[:-1] if content.endswith(b"\n") and not content.endswith(b"\r\n") else content
        if draw(st.integers(0, 3)) == 0:
            content = b"\xef\xbb\xbf" + content
        assume(not content.removeprefix(b"\xef\xbb\xbf").lstrip(WS.encode()).startswith(b"["))  # an array file
    max_line = draw(st.sampled_from([700, 1 << 20]))
    # Lengths within a few bytes of the limit (BOM, CR) are a boundary this test leaves alone.
    assume(all(abs(len(i) - max_line) > 8 for i in items))
    return {"array": array, "items": items, "content": content, "max_line": max_line,
            "gzip": draw(st.booleans()), "gz_suffix": draw(st.booleans()),
            "chunk": draw(st.sampled_from([1, 7, 64, 500, 1 << 20]))}


def _expected(f: dict[str, Any]) -> tuple[str, dict[int, Verdict]]:
    if f["array"]:
        marked = b"[" + SEP.join(f["items"]) + b"]" if f["items"] else b"[]"
        return oracle_file(marked, True, f["max_line"])
    return oracle_file(f["content"], False, f["max_line"])


# --- running logwatchd's reader and record path in-process ------------------------------
def run_inprocess(f: dict[str, Any], tmp: Path, runner: Any) -> tuple[str, dict[int, Verdict], dict[int, str]]:
    """(status, {number: verdict}, {number: raw of its error line}) as the reader + record path give them."""
    name = "in" + (".json" if f["array"] else ".jsonl") + (".gz" if f["gzip"] and f["gz_suffix"] else "")
    path = tmp / name
    path.write_bytes(gzip.compress(f["content"]) if f["gzip"] else f["content"])
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    clean = tmp / "clean"
    spec = JobSpec(sha, sha, name, clean, "UTC", "2026-01-01T00:00:00Z", f["max_line"])
    verdicts: dict[int, Verdict] = {}
    raws: dict[int, str] = {}
    fh, _ = open_input(path)
    with fh:
        chunks = iter_chunks(HashingReader(fh), name, f["chunk"], f["max_line"], max_decompressed=1 << 30)
        try:
            results = list(runner.run(spec, chunks))
        except MalformedFile:
            return "quarantined", {}, {}
    processed = parsed = 0
    for res in results[:-1]:
        processed += res.processed
        parsed += res.parsed
        for line in res.error_lines:
            e = json.loads(line)
            assert e["source_line"] not in verdicts, e
            verdicts[e["source_line"]] = ("error", (e["reason"], e.get("field")))
            raws[e["source_line"]] = e["raw"]
    for day, name, _rows, _size in results[-1]:
        staged = staged_name(clean / clean_path(day, name))
        for row in pq.read_table(staged).to_pylist():
            assert row["source_line"] not in verdicts, row
            verdicts[row["source_line"]] = ("row", (row["user_id"], row["action"], row["ts"]))
        staged.unlink()
    if processed and not parsed:
        return "quarantined", {}, {}
    assert processed == len(verdicts)
    return "ok", verdicts, raws


def _check(f: dict[str, Any], got: tuple[str, dict[int, Verdict], dict[int, str]]) -> None:
    status, verdicts, raws = got
    want_status, want = _expected(f)
    if f["array"] and any(v == ("error", ("invalid_json", None)) and len(i) < 1000 or
                          v == ("error", ("invalid_encoding", None))
                          for i, v in zip(f["items"], [want.get(k) for k in range(1, len(f["items"]) + 1)],
                                          strict=True)):
        want_status, want = "quarantined", {}  # an element that is not JSON: the array does not parse
    assert status == want_status
    assert verdicts == want
    if not f["array"]:  # an error line's raw is the line as text (over-long: its first 1,024 bytes)
        body = f["content"][3:] if f["content"].startswith(b"\xef\xbb\xbf") else f["content"]
        lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in body.split(b"\n")]
        for number, raw in raws.items():
            line = lines[number - 1]
            want_raw = line[:1024] if len(line) > f["max_line"] else line
            assert raw == want_raw.decode("utf-8", "replace"), number


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(f=input_file())
def test_every_line_is_one_row_or_one_error_line_as_the_oracle_says(tmp_path_factory: pytest.TempPathFactory,
                                                                   f: dict[str, Any]) -> None:
    """In-process, one worker: random files (formats, gzip, BOM, CRLF, tiny chunks) give each line the oracle's verdict, exactly once."""
    _check(f, run_inprocess(f, tmp_path_factory.mktemp("p"), LocalRunner()))


@pytest.fixture(scope="module")
def pool() -> Any:
    runner = PoolRunner(2)
    yield runner
    runner.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(f=input_file())
def test_the_worker_pool_gives_the_same_verdicts(tmp_path_factory: pytest.TempPathFactory, pool: Any,
                                                 f: dict[str, Any]) -> None:
    """With two worker processes, the same random files give the oracle's verdicts too."""
    _check(f, run_inprocess(f, tmp_path_factory.mktemp("w"), pool))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(f=input_file(), long_name=st.booleans())
def test_the_cli_gives_the_oracle_verdicts(tmp_path_factory: pytest.TempPathFactory, f: dict[str, Any],
                                           long_name: bool) -> None:
    """`logwatchd process` in a subprocess (long file names too) gives every line the oracle's verdict."""
    env = Env(tmp_path_factory.mktemp("cli"))
    env.write_config(ingest={"chunk_bytes": max(f["chunk"], 64), "max_line_bytes": f["max_line"],
                             "workers": 2})
    stem = "n" * (200 if long_name else 3)
    name = stem + (".json" if f["array"] else ".jsonl") + (".gz" if f["gzip"] else "")
    path = env.base / name
    path.write_bytes(gzip.compress(f["content"]) if f["gzip"] else f["content"])
    [summary] = env.process(path)
    verdicts: dict[int, Verdict] = {}
    for e in env.error_rows():
        verdicts[e["source_line"]] = ("error", (e["reason"], e.get("field")))
    for r in env.clean_rows():
        assert r["source_file"] == name
        verdicts[r["source_line"]] = ("row", (r["user_id"], r["action"], r["ts"]))
    status = "quarantined" if summary["status"] == "quarantined" else summary["status"]
    _check({**f, "content": f["content"]}, (status, verdicts if status == "ok" else {}, {}))
