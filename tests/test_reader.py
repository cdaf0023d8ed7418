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


def _numbered(chunks: list[tuple]) -> list[tuple]:
    """Every line with its number: what the record path sees, however the file was cut."""
    lines = []
    for kind, first, content, extra in chunks:
        if kind == "long":
            lines.append((first, "long", content, extra))
            continue
        data = content[3:] if extra and content.startswith(b"\xef\xbb\xbf") else content
        parts = data.split(b"\n")
        if parts and parts[-1] == b"":
            parts.pop()
        lines += [(first + k, "line", p, None) for k, p in enumerate(parts)]
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
    want = _numbered(_chunks(path, chunk, max_line, spans=False))
    got = _numbered(_chunks(path, chunk, max_line, spans=True))
    assert [(n, k, c[:1024]) for n, k, c, _ in got] == [(n, k, c[:1024]) for n, k, c, _ in want]
    assert [x[3] for x in got if x[1] == "long"] == [x[3] for x in want if x[1] == "long"]


def test_spans_stay_near_the_chunk_size(tmp_path: Path) -> None:
    """A 3 MB file in 256 kB chunks is cut into newline-aligned spans of about that size."""
    path = tmp_path / "big.jsonl"
    path.write_bytes((b'{"k": "' + b"v" * 90 + b'"}\n') * 30000)
    fh, _ = open_input(path)
    with fh:
        chunks = list(iter_chunks(HashingReader(fh), path.name, 256 * 1024, 1 << 20))
    sizes = [c.length for c in chunks if isinstance(c, Lines)]
    assert sum(sizes) == path.stat().st_size
    assert all(256 * 1024 <= s <= 256 * 1024 + (1 << 20) for s in sizes[:-1])


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
