"""Compaction benchmark: one day partition of 2,000 small files, before and after a pass, queried by DuckDB.

The partition is built through the real pipeline (2,000 inputs of ~100 records, processed
in-process against a real ledger), then compacted by `run_pass`. Reported: file count and
bytes before and after, and the median time of 5 runs DuckDB takes for
`SELECT action, count(*) … GROUP BY action` over the partition, before and after, as a ratio.

    .venv/bin/python -m bench.compaction_bench [--files N] [--records N] [WORKDIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DAY = "2026-11-24"
ACTIONS = ["login", "logout", "view", "click", "purchase", "search", "upload", "download"]
QUERY = "SELECT action, count(*) AS n FROM read_parquet('{glob}') GROUP BY action ORDER BY action"
RUNS = 5


def _record(rng: random.Random, at: datetime) -> str:
    return json.dumps({
        "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user_id": f"user-{rng.randrange(100_000)}", "action": rng.choice(ACTIONS),
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "session": f"{rng.getrandbits(64):016x}", "latency_ms": rng.randrange(2000),
        "path": f"/api/v1/items/{rng.randrange(10**6)}", "agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        separators=(",", ":"))


def _write_inputs(directory: Path, files: int, records: int, seed: int) -> list[Path]:
    """Small inputs spread over one day, as a producer flushing every ~40 s would drop them."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    start = datetime.fromisoformat(f"{DAY}T00:00:00+00:00").astimezone(UTC)
    step = timedelta(seconds=86_000 / max(1, files * records))
    paths = []
    for i in range(files):
        base = start + step * (i * records)
        lines = [_record(rng, base + step * j) for j in range(records)]
        path = directory / f"app-{i:05d}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _duckdb_median(glob: str) -> tuple[float, list[tuple[Any, ...]]]:
    """Median wall time (seconds) of RUNS runs of the query, after one warm-up; and its answer."""
    import duckdb

    con = duckdb.connect()
    sql = QUERY.format(glob=glob.replace("'", "''"))
    answer = con.sql(sql).fetchall()
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        con.sql(sql).fetchall()
        times.append(time.perf_counter() - t0)
    con.close()
    return statistics.median(times), answer


def measure(workdir: Path, files: int = 2000, records: int = 100, seed: int = 1) -> dict[str, Any]:
    """Builds the partition in `workdir`, measures, compacts, measures again; returns the figures."""
    from logwatchd.compaction import run_pass
    from logwatchd.config import parse_config
    from logwatchd.pipeline import Pipeline
    from logwatchd.runtime import open_runtime

    workdir.mkdir(parents=True, exist_ok=True)
    config = parse_config({"paths": {"root": str(workdir / "var")},
                           "ingest": {"workers": 1}}, workdir)
    inputs = _write_inputs(workdir / "src", files, records, seed)
    rt = open_runtime(config)
    try:
        pipeline = Pipeline(config, rt.ledger)
        t0 = time.perf_counter()
        for path in inputs:
            outcome = pipeline.process(path)
            if outcome.status != "ok" or outcome.errors:
                raise RuntimeError(f"{path.name}: {outcome.summary()}")
        ingest_s = time.perf_counter() - t0

        partition = config.paths.clean / f"date={DAY}"
        glob = str(partition / "*.parquet")
        before = sorted(partition.glob("*.parquet"))
        bytes_before = sum(f.stat().st_size for f in before)
        before_s, before_answer = _duckdb_median(glob)

        marks: dict[str, float] = {}

        def mark(step: str, _day: str) -> None:
            marks.setdefault(step, time.perf_counter())

        t0 = time.perf_counter()
        results = run_pass(config, rt.ledger, date=DAY, on_step=mark)
        compaction_s = time.perf_counter() - t0
        if not results or not all(r.ok for r in results):
            raise RuntimeError(f"compaction failed: {[r.summary() for r in results]}")

        after = sorted(partition.glob("*.parquet"))
        # The window in which a directory listing can see both generations runs from the
        # first rename (the merged file's ctime) to the last unlink (the directory's mtime).
        window_ns = partition.stat().st_mtime_ns - min(f.stat().st_ctime_ns for f in after)
        after_s, after_answer = _duckdb_median(glob)
        if after_answer != before_answer:
            raise RuntimeError(f"DuckDB answers differ: {before_answer} vs {after_answer}")
    finally:
        rt.close()
    return {
        "partition": f"date={DAY}",
        "rows": sum(n for _action, n in after_answer),
        "files_before": len(before),
        "files_after": len(after),
        "bytes_before": bytes_before,
        "bytes_after": sum(p.stat().st_size for p in after),
        "ingest_s": round(ingest_s, 2),
        "compaction_s": round(compaction_s, 2),
        # From the ledger commit to the journal cleared: renames, unlinks, directory fsync.
        "publish_ms": round((marks["published"] - marks["committed"]) * 1000, 1),
        "reader_window_ms": round(window_ns / 1e6, 1),
        "duckdb_group_by_before_ms": round(before_s * 1000, 2),
        "duckdb_group_by_after_ms": round(after_s * 1000, 2),
        "duckdb_speedup": round(before_s / after_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", nargs="?", type=Path, help="kept afterwards (default: a temporary directory)")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--records", type=int, default=100)
    args = ap.parse_args()
    from logwatchd import logs

    logs.configure("info", "console", stream=sys.stderr)   # stdout carries only the figures
    if args.workdir is not None:
        print(json.dumps(measure(args.workdir, args.files, args.records), indent=2))
        return
    tmp = Path(tempfile.mkdtemp(prefix="logwatchd-compaction-bench-"))
    try:
        print(json.dumps(measure(tmp, args.files, args.records), indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
