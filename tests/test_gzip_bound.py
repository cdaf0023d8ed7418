"""A compressed input expands only up to ingest.max_decompressed_bytes; beyond, it is quarantined."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path

import pytest
from conftest import Env, write

from logwatchd.errors import MalformedFile
from logwatchd.reader import HashingReader, iter_chunks, open_input


def test_a_gzip_bomb_is_quarantined_as_decompressed_too_large(env: Env) -> None:
    """A 5 KB gzip of 5 MB of invalid lines, with a 64 KiB bound, is quarantined with reason decompressed_too_large and writes nothing."""
    env.write_config(ingest={"max_decompressed_bytes": 65536})
    bomb = gzip.compress(b"x\n" * 2_500_000, 9)
    assert len(bomb) < 8000
    path = write(env.inbox / "bomb.jsonl.gz", bomb)
    [summary] = env.process(path)
    assert (summary["status"], summary["reason"]) == ("quarantined", "decompressed_too_large"), summary
    sidecar = json.loads((env.path("quarantine") / "bomb.jsonl.gz.reason.json").read_text())
    assert sidecar["reason"] == "decompressed_too_large"
    assert env.error_rows() == [] and env.clean_rows() == []


def test_within_the_bound_a_gzip_is_processed(env: Env) -> None:
    """A gzip that expands to exactly the bound is processed normally."""
    data = b'{"timestamp": 1764000000, "user_id": "u", "action": "a"}\n' * 100
    env.write_config(ingest={"max_decompressed_bytes": len(data)})
    path = write(env.base / "ok.jsonl.gz", gzip.compress(data))
    [summary] = env.process(path)
    assert (summary["status"], summary["valid"]) == ("ok", 100), summary


def test_the_bound_stops_decompression_at_once(tmp_path: Path) -> None:
    """With a 1 MiB bound, a 128 MiB bomb fails after ~1 MiB of inflating: a few ms of CPU, not the ~0.7 s a full pass takes."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\n" * (1 << 20)
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(b"".join([comp.compress(block) for _ in range(128)] + [comp.flush()]))
    fh, _ = open_input(path)
    with fh:
        started = time.process_time()
        with pytest.raises(MalformedFile) as err:
            for _ in iter_chunks(HashingReader(fh), path.name, 1 << 20, 1 << 20, max_decompressed=1 << 20):
                pass
        cpu = time.process_time() - started
    assert err.value.reason == "decompressed_too_large"
    assert cpu < 0.25, cpu


def test_blank_lines_are_cheap() -> None:
    """Two million empty lines (what 2 KB of gzip expands to) cost well under a second of CPU, not ~3 s through the parser's exception path."""
    from logwatchd.records import RecordBatcher

    batcher = RecordBatcher("f", "UTC", "x", 1 << 20)
    started = time.process_time()
    table, res = batcher.process_lines(b"\n" * 2_000_000, 1)
    cpu = time.process_time() - started
    assert table is None and (res.processed, res.errors) == (0, 0)
    assert cpu < 1.0, cpu
