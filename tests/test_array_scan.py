"""The JSON array scanner is linear, bounded by max_line_bytes, and shows progress while it reads."""

from __future__ import annotations

import io
import itertools
import json
import time
import tracemalloc

import pytest
from conftest import Env, write

from logwatchd.reader import Elements, HashingReader, LongLine, iter_chunks

HEAD = b'{"timestamp": 1764000000, "user_id": "u", "action": "a", "s": "'


def _array(mb: int) -> bytes:
    """An array whose first element holds a string of `mb` MiB (with escapes), then a small one."""
    body = (b'x' * 1000 + b'\\"') * ((mb << 20) // 1002)
    return b"[" + HEAD + body + b'"}, {"a": 1}]'


def _scan(data: bytes, max_line: int, beats: list[int] | None = None) -> list:
    src = HashingReader(io.BytesIO(data))
    progress = (lambda: beats.append(src.bytes_read)) if beats is not None else None
    return list(iter_chunks(src, "f.json", 8 << 20, max_line, progress=progress))


def _best_time(data: bytes, max_line: int) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        _scan(data, max_line)
        best = min(best, time.perf_counter() - started)
    return best


def test_array_scan_time_is_linear_in_the_element_size() -> None:
    """An element of 32 MB takes less than 6x the time of one of 8 MB, held whole or skipped as too long (was 17x)."""
    small, large = _array(8), _array(32)
    for max_line in (64 << 20, 1 << 20):
        t8, t32 = _best_time(small, max_line), _best_time(large, max_line)
        assert t32 < 6 * t8, (max_line, t8, t32)
    items = [e for c in _scan(large, 64 << 20) for e in c.items]
    assert len(items) == 2 and items[0].startswith(HEAD) and items[1] == b'{"a": 1}'


def test_an_over_long_element_is_skipped_without_being_held() -> None:
    """A 32 MB element with max_line_bytes 1 MiB is a LongLine with its first bytes, scanned in a few MB of memory."""
    data = _array(32)
    tracemalloc.start()
    try:
        chunks = _scan(data, 1 << 20)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    long, rest = chunks
    assert isinstance(long, LongLine) and long.number == 1
    assert long.prefix.startswith(HEAD) and long.length == len(data) - len(b'[, {"a": 1}]')
    assert isinstance(rest, Elements) and rest.first == 2 and rest.items == [b'{"a": 1}']


def test_progress_fires_every_few_mb_while_one_element_is_scanned() -> None:
    """While a single 32 MB element is scanned (no chunk to yield), the progress callback fires at least every 8 MB read."""
    beats: list[int] = []
    data = _array(32)
    _scan(data, 64 << 20, beats)
    marks = [0, *beats, len(data)]
    assert max(b - a for a, b in itertools.pairwise(marks)) <= 8 << 20, marks


def test_a_long_array_element_is_a_line_too_long_error_line(env: Env) -> None:
    """An array element over max_line_bytes is one line_too_long error line keeping its first 1,024 bytes, as the same record on a JSON Lines line is."""
    long_rec = json.dumps({"timestamp": 1764000000, "user_id": "u", "action": "a", "s": "é" * 1_500_000})
    ok = json.dumps({"timestamp": 1764000000, "user_id": "u", "action": "a"})
    write(env.base / "a.json", "[\n  " + ok + ",\n  " + long_rec + ",\n  " + ok + "\n]")
    write(env.base / "a.jsonl", ok + "\n" + long_rec + "\n" + ok + "\n")
    summaries = env.process(env.base / "a.json", env.base / "a.jsonl")
    assert [(s["status"], s["valid"], s["errors"]) for s in summaries] == [("ok", 2, 1)] * 2
    errors = env.error_rows()
    assert [(e["source_file"], e["source_line"], e["reason"]) for e in errors] == [
        ("a.json", 2, "line_too_long"), ("a.jsonl", 2, "line_too_long")]
    assert errors[0]["raw"] == errors[1]["raw"] == long_rec.encode()[:1024].decode("utf-8", "replace")


def test_an_over_long_crlf_line_keeps_no_cr_whatever_the_chunk_size(env: Env) -> None:
    """An over-long CRLF line's raw text has no trailing CR, whether the reader skips it (tiny chunks) or the record path cuts it (found by the property test)."""
    line = json.dumps({"timestamp": 1764000000, "user_id": "u", "action": "a", "s": "x" * 760})
    data = f"{line}\r\n{line}\r\n{{}}\r\n".encode()
    for chunk in (64, 1 << 20):
        env.write_config(ingest={"max_line_bytes": 700, "chunk_bytes": chunk, "dedupe": False})
        write(env.base / f"crlf-{chunk}.jsonl", data)
        [summary] = env.process(env.base / f"crlf-{chunk}.jsonl")
        assert summary["errors"] == 3, summary
    raws = [(e["source_file"], e["source_line"], e["raw"]) for e in env.error_rows() if e["reason"] == "line_too_long"]
    assert raws == [(f"crlf-{c}.jsonl", k, line) for c in (1 << 20, 64) for k in (1, 2)]


TRICKY = [
    b'{"a":"x,y]}","b":"q\\"]","c":"back\\\\"}',       # brackets, commas and escapes in strings
    b'{ "n" : 1 ,\r\n "m" : [1, {"z": "}"}] }',          # nested: scanned token by token
    b'{}',
    b'{"k": "\xc3\xa9\xf0\x9f\x98\x80"}',                 # UTF-8
    b'{\\}',                                              # a backslash outside a string (not JSON)
    b'"a string"', b'17', b'null', b'[1, [2]]',
    b'{"long": "' + b'y' * 3000 + b'"}',
]


@pytest.mark.parametrize("c_path", [True, False], ids=["c", "python"])
def test_array_elements_are_cut_exactly_whatever_the_reads(c_path: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every element comes out byte for byte as written (without the whitespace around it),
    in order, flat objects and all other kinds alike, whether an element sits within one
    read or is cut by the end of several; with the C cut of flat objects and without it."""
    from logwatchd import reader

    if c_path and reader._scan is None:
        pytest.skip("logwatchd._scan is not built (no C compiler at install)")
    if not c_path:
        monkeypatch.setattr(reader, "_scan", None)

    seps = [b",", b" ,\n", b"\r\n,\t", b","]
    elements = TRICKY * 3
    data = b"[\n" + b"".join(seps[i % len(seps)] + e for i, e in enumerate(elements))[1:] + b"\n]\n"
    for read_bytes in (5, 64, 1 << 20):
        reader.READ_BYTES, saved = read_bytes, reader.READ_BYTES
        try:
            chunks = _scan(data, 1 << 20)
        finally:
            reader.READ_BYTES = saved
        got = [e for c in chunks if isinstance(c, Elements) for e in c.items]
        assert got == elements, read_bytes
        assert [c.first for c in chunks] == [1]
