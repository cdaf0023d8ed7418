"""The streaming reader: spans of an uncompressed file cover it exactly as in-memory chunks do."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from logwatchd.errors import TransientIOError
from logwatchd.reader import HashingReader, Lines, LongLine, iter_chunks, open_input, read_span


def _chunks(path: Path, chunk_bytes: int, max_line: int, spans: bool) -> list[tuple]:
    """(kind, first line, content) of every chunk, with spans read back from the file."""
    fh, _ = open_input(path)
    with fh:
        out = []
        src = HashingReader(fh)
        fd = os.open(path, os.O_RDONLY)
        try:
            for c in iter_chunks(src, path.name, chunk_bytes, max_line, spans=spans):
                if isinstance(c, Lines):
                    if spans:
                        assert not c.data and c.length > 0
                        c = read_span(fd, c)
                    out.append(("lines", c.first, c.data, c.strip_bom))
                else:
                    assert isinstance(c, LongLine)
                    out.append(("long", c.number, c.prefix, c.length))
        finally:
            os.close(fd)
        src.drain()
        assert src.bytes_read == path.stat().st_size
    return out


def _numbered(chunks: list[tuple], max_line: int) -> list[tuple]:
    """Every line with its number as the record path sees it, however the file was cut.

    An over-long line is ("long", its first 1,024 bytes) whether the reader streamed it
    past (LongLine) or it fitted in a chunk (the record path then cuts it the same way).
    """
    lines = []
    for kind, first, content, _extra in chunks:
        if kind == "long":
            lines.append((first, "long", content[:1024]))
            continue
        data = content[3:] if _extra and content.startswith(b"\xef\xbb\xbf") else content
        parts = data.split(b"\n")
        if parts and parts[-1] == b"":
            parts.pop()
        for k, p in enumerate(parts):
            p = p[:-1] if p.endswith(b"\r") else p
            lines.append((first + k, "long", p[:1024]) if len(p) > max_line else (first + k, "line", p))
    return lines


def _random_file(rng: random.Random, path: Path) -> bytes:
    parts = [b"\xef\xbb\xbf"] if rng.random() < 0.3 else []
    for _ in range(rng.randrange(0, 400)):
        kind = rng.random()
        if kind < 0.05:
            parts.append(b"x" * rng.randrange(2000, 30000))   # over max_line_bytes
        elif kind < 0.1:
            parts.append(b"")                                 # blank
        else:
            parts.append(b'{"a": "' + b"y" * rng.randrange(0, 300) + b'"}' + (b"\r" if kind < 0.2 else b""))
    data = b"\n".join(parts) + (b"\n" if rng.random() < 0.5 else b"")
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("seed", range(40))
def test_spans_number_every_line_as_in_memory_chunks_do(tmp_path: Path, seed: int) -> None:
    """Random files (BOM, CRLF, blanks, over-long lines, small chunks): same lines, same numbers."""
    rng = random.Random(seed)
    path = tmp_path / "f.jsonl"
    _random_file(rng, path)
    chunk, max_line = rng.choice([(512, 1000), (4096, 1000), (1 << 20, 1000), (700, 5000)])
    want = _numbered(_chunks(path, chunk, max_line, spans=False), max_line)
    got = _numbered(_chunks(path, chunk, max_line, spans=True), max_line)
    assert got == want


def test_spans_stay_near_the_chunk_size(tmp_path: Path) -> None:
    """A 3 MB file in 256 kB chunks is cut into newline-aligned spans of about that size."""
    path = tmp_path / "big.jsonl"
    path.write_bytes((b'{"k": "' + b"v" * 90 + b'"}\n') * 30000)
    fh, _ = open_input(path)
    with fh:
        chunks = list(iter_chunks(HashingReader(fh), path.name, 256 * 1024, 1 << 20))
    sizes = [c.length for c in chunks if isinstance(c, Lines)]
    assert sum(sizes) == path.stat().st_size
    assert len(sizes) >= 8
    assert all(256 * 1024 - 100 <= s <= 2 * 256 * 1024 for s in sizes[:-1])  # cut at a newline


def test_a_span_changed_after_hashing_is_a_transient_error(tmp_path: Path) -> None:
    """A worker re-reading a span that no longer matches its CRC refuses it (file rewritten)."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    fh, _ = open_input(path)
    with fh:
        [span] = list(iter_chunks(HashingReader(fh), path.name, 1 << 20, 1 << 20))
    with open(path, "r+b") as w:
        w.write(b'{"b": 2}')
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(TransientIOError):
            read_span(fd, span)
    finally:
        os.close(fd)


def test_workers_that_cannot_reopen_the_input_get_its_bytes(tmp_path: Path) -> None:
    """When a worker may not open /proc/PID/fd/N, the parent sends the span's bytes instead."""
    from logwatchd.parallel import JobSpec, PoolRunner

    path = tmp_path / "in.jsonl"
    lines = [f'{{"timestamp": {1764000000 + i}, "user_id": "u{i}", "action": "a"}}' for i in range(3000)]
    path.write_bytes(("\n".join(lines) + "\n").encode())
    fh, _ = open_input(path)
    with fh:
        chunks = list(iter_chunks(HashingReader(fh), path.name, 16 * 1024, 1 << 20))
        assert len(chunks) > 4 and all(isinstance(c, Lines) and not c.data for c in chunks)
        # An origin no worker can open (no such process), the descriptor still valid here.
        bad = [Lines(c.first, b"", c.strip_bom, c.offset, "/proc/0/fd/0", c.length, c.crc, c.fd)
               for c in chunks]
        spec = JobSpec("ab" * 32, "ab" * 32, path.name, tmp_path / "clean", "UTC",
                       "2026-01-01T00:00:00Z", 1 << 20)
        pool = PoolRunner(2)
        try:
            results = list(pool.run(spec, bad))
        finally:
            pool.close()
    assert not pool.spans_ok
    assert sum(r.valid for r in results[:-1]) == 3000
    parts = results[-1]
    assert sum(rows for _day, _name, rows, _size in parts) == 3000


def test_prestarted_pool_is_the_one_that_runs(tmp_path: Path) -> None:
    """Workers started ahead with prestart() are reused by run(), not started again."""
    from logwatchd.parallel import JobSpec, PoolRunner

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"timestamp": 1764000000, "user_id": "u", "action": "a"}\n' * 2000)
    pool = PoolRunner(2)
    try:
        pool.prestart()
        pids = [p.pid for p in pool._procs]
        assert len(pids) == 2 and all(p.is_alive() for p in pool._procs)
        fh, _ = open_input(path)
        with fh:
            spec = JobSpec("cd" * 32, "cd" * 32, path.name, tmp_path / "clean", "UTC", "x", 1 << 20)
            results = list(pool.run(spec, iter_chunks(HashingReader(fh), path.name, 16 * 1024, 1 << 20)))
        assert sum(r.valid for r in results[:-1]) == 2000
        assert [p.pid for p in pool._procs] == pids
    finally:
        pool.close()


@pytest.mark.parametrize("gz", [False, True])
def test_a_long_run_of_blank_lines_is_read_in_bounded_memory(tmp_path: Path, gz: bool) -> None:
    """32 MB of blank lines before the first record: it was all held (and stripped again on
    every read) to tell an array from JSON Lines; now about a chunk is (the blank lines
    beyond it are dropped, counted), and the record keeps its line number."""
    import gzip
    import tracemalloc

    blank = 32 << 20
    data = b"\n" * blank + b'{"timestamp": "2026-01-01T00:00:00Z", "user_id": "u", "action": "a"}\n'
    path = tmp_path / ("blank.jsonl.gz" if gz else "blank.jsonl")
    path.write_bytes(gzip.compress(data, 1) if gz else data)
    lines = 0
    last_line = 0
    first_line = None
    tracemalloc.start()
    try:
        with open(path, "rb") as fh:
            for chunk in iter_chunks(HashingReader(fh), path.name, 1 << 20, 1 << 20, spans=False):
                assert isinstance(chunk, Lines)
                first_line = chunk.first if first_line is None else first_line
                lines += chunk.data.count(b"\n")
                if chunk.data.strip():
                    last_line = chunk.first + chunk.data.rstrip(b"\n").count(b"\n")
                del chunk
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first_line is not None and first_line - 1 + lines == blank + 1  # every line numbered once
    assert last_line == blank + 1
    assert peak < 12 << 20, f"peak {peak / 2**20:.0f} MiB for 32 MiB of blank lines"
