"""The worker pool lives as long as its owner: idle periods and slow chunks do not end it."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
from conftest import Env

from logwatchd.parallel import JobSpec, PoolRunner
from logwatchd.reader import HashingReader, iter_chunks, open_input

BIG = "9" * 4000  # an integer the exact parser converts slowly (quadratic in its digits)


def _slow_file(path: Path) -> int:
    """A file whose first chunk takes seconds in a worker; the other chunks are quick.

    Its first line holds ~20 MB of 4,000-digit integers (parsed and re-serialised exactly,
    ~0.13 s per MB: > 2 s); naive Berlin timestamps take the per-value path too.
    """
    lines = ['{"timestamp": "2026-03-29T02:30:00", "user_id": "u0", "action": "slow", "big": ['
             + ",".join([BIG] * 5000) + "]}"]
    lines += [f'{{"timestamp": "2026-07-01 12:{i % 60:02d}:00", "user_id": {i}, "action": "a",'
              f' "n": {BIG}}}' for i in range(1, 400)]
    lines += [f'{{"timestamp": "2026-07-01 12:00:00", "user_id": "u{i}", "action": "b"}}'
              for i in range(400, 40000)]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def test_a_slow_chunk_does_not_kill_the_idle_workers(env: Env) -> None:
    """With 2 workers and 1 MB chunks, a chunk that takes >2 s while the other worker idles is processed: status ok, every row present."""
    env.write_config(ingest={"workers": 2, "chunk_bytes": 1 << 20, "max_line_bytes": 32 << 20},
                     transform={"timezone": "Europe/Berlin"})
    path = env.base / "slow.jsonl"
    n = _slow_file(path)
    [summary] = env.process(path)
    assert summary["status"] == "ok", summary
    assert summary["valid"] == n and summary["errors"] == 0
    rows = env.clean_rows()
    assert [r["source_line"] for r in rows] == list(range(1, n + 1))
    assert rows[0]["action"] == "slow" and rows[0]["timestamp"] == "2026-03-29 03:30:00"  # skipped hour, fold=0


def test_workers_outlive_an_idle_period_between_files(tmp_path: Path) -> None:
    """After a file, the same worker processes are still running 3 s later and serve the next file."""
    pool = PoolRunner(2)
    try:
        for k in range(2):
            path = tmp_path / f"in{k}.jsonl"
            path.write_bytes(b'{"timestamp": 1764000000, "user_id": "u", "action": "a"}\n' * 2000)
            fh, _ = open_input(path)
            with fh:
                spec = JobSpec(f"{k}e" * 32, f"{k}e" * 32, path.name, tmp_path / "clean", "UTC", "x",
                               1 << 20)
                results = list(pool.run(spec, iter_chunks(HashingReader(fh), path.name, 16 * 1024,
                                                          1 << 20)))
            assert sum(r.valid for r in results[:-1]) == 2000
            pids = [p.pid for p in pool._procs]
            if k == 0:
                first = pids
                time.sleep(3)
                assert all(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                           for pid in first)
        assert pids == first
    finally:
        pool.close()
