"""Compaction on real files from the real pipeline: rows kept exactly, files fewer, the ledger right."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import Env, write

from logwatchd.compaction import MERGED_PREFIX, META_INPUT_SHAS, run_pass
from logwatchd.config import Config, load_config
from logwatchd.pipeline import Pipeline
from logwatchd.records import CLEAN_SCHEMA
from logwatchd.runtime import Runtime, open_runtime

DAYS = ("2026-03-01", "2026-03-02")


def make_input(path: Path, rng: random.Random, records: int, days: tuple[str, ...] = DAYS,
               bad_every: int = 17) -> Path:
    """A JSON Lines input whose records fall on `days` in random order, with a few bad lines."""
    lines = []
    for i in range(records):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append('{"timestamp": "not a time", "user_id": "u", "action": "a"}')
            continue
        day = rng.choice(days)
        lines.append(json.dumps({
            "timestamp": f"{day}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
            "user_id": f"user-{rng.randrange(500)}", "action": rng.choice(["login", "view", "click"]),
            "latency_ms": rng.randrange(2000), "path": f"/items/{rng.randrange(10**6)}"}))
    return write(path, "\n".join(lines) + "\n")


@pytest.fixture
def runtime(env: Env) -> Iterator[Runtime]:
    """The real runtime (lock, ledger, recovery) for the env's config; closed afterwards."""
    rt = open_runtime(load_config(env.config))
    yield rt
    rt.close()


def reopen(env: Env, rt: Runtime, **compaction: Any) -> Runtime:
    """Closes `rt` and opens the runtime again with a new [compaction] table."""
    rt.close()
    env.write_config(compaction=compaction)
    return open_runtime(load_config(env.config))


def ingest(env: Env, rt: Runtime, names: list[str], rng: random.Random, records: int = 60,
           days: tuple[str, ...] = DAYS) -> None:
    """Writes and processes inputs through the real pipeline and ledger."""
    pipeline = Pipeline(rt.config, rt.ledger)
    for name in names:
        outcome = pipeline.process(make_input(env.base / "src" / name, rng, records, days))
        assert outcome.status == "ok", outcome


def rows_multiset(env: Env) -> Counter[tuple[Any, ...]]:
    """Every clean row, all columns plus its partition, as a multiset."""
    return Counter(tuple(sorted(r.items())) for r in env.clean_rows())


def partition_files(env: Env, day: str) -> list[Path]:
    d = env.path("clean") / f"date={day}"
    return sorted(p for p in d.iterdir() if not p.name.startswith((".", "_")))


def assert_catalog_matches_disk(env: Env, config: Config) -> None:
    """The ledger's live outputs are exactly the data and error files on disk; no staging left."""
    con = sqlite3.connect(config.paths.ledger)
    live = {r[0] for r in con.execute("SELECT path FROM outputs")}
    assert con.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    con.close()
    on_disk = {str(p.relative_to(config.paths.root)) for root in (config.paths.clean, config.paths.errors)
               for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert live == on_disk
    assert list(env.root.rglob(".*.tmp")) == []


def daily_counts(config: Config) -> dict[tuple[str, str], int]:
    con = sqlite3.connect(config.paths.ledger)
    try:
        return {(d, a): n for d, a, n in con.execute("SELECT date, action, n FROM daily_counts")}
    finally:
        con.close()


def assert_sorted_by_ts(path: Path) -> None:
    ts = pq.read_table(path, columns=["ts"])["ts"].to_pylist()
    assert ts == sorted(ts), f"{path.name} is not sorted by ts"


class Recorder:
    """Collects what run_pass reports to a metrics object."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def compaction_done(self, *args: Any) -> None:
        self.calls.append(args)


def test_rows_identical_counts_unchanged_one_file_per_partition(env: Env, runtime: Runtime) -> None:
    """With the default target every partition becomes one sorted zstd file holding exactly the same rows."""
    rng = random.Random(1)
    ingest(env, runtime, [f"in{i:02d}.jsonl" for i in range(12)], rng)
    before_rows, before_counts = rows_multiset(env), daily_counts(runtime.config)
    errors_before = sorted(p.read_bytes() for p in env.path("errors").rglob("*.jsonl"))
    sizes = {day: sum(p.stat().st_size for p in partition_files(env, day)) for day in DAYS}
    assert all(len(partition_files(env, day)) == 12 for day in DAYS)

    metrics = Recorder()
    results = run_pass(runtime.config, runtime.ledger, metrics=metrics)

    assert sorted((r.partition, r.files_in, r.files_out, r.ok) for r in results) == [
        (f"date={day}", 12, 1, True) for day in DAYS]
    assert rows_multiset(env) == before_rows
    assert daily_counts(runtime.config) == before_counts
    assert sorted(p.read_bytes() for p in env.path("errors").rglob("*.jsonl")) == errors_before
    assert_catalog_matches_disk(env, runtime.config)
    con = sqlite3.connect(runtime.config.paths.ledger)
    shas = {row[0] for row in con.execute("SELECT sha256 FROM inputs")}
    con.close()
    for r in results:
        [merged] = partition_files(env, r.date)
        assert merged.name.startswith(MERGED_PREFIX)
        assert r.bytes_before == sizes[r.date] and r.bytes_after == merged.stat().st_size
        assert r.rows == pq.ParquetFile(merged).metadata.num_rows
        assert_sorted_by_ts(merged)
        meta = pq.ParquetFile(merged).metadata
        assert pq.read_schema(merged).remove_metadata().equals(CLEAN_SCHEMA)
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert set(json.loads(pq.read_schema(merged).metadata[META_INPUT_SHAS])) == shas
    assert sorted(c[:5] for c in metrics.calls) == sorted(
        (r.files_in, r.files_out, r.rows, r.bytes_before, r.bytes_after) for r in results)


def test_small_target_gives_the_fewest_files(env: Env, runtime: Runtime) -> None:
    """With a target of a fraction of the partition, every merged file but one reaches it, each sorted."""
    rng = random.Random(2)
    # Files large enough that a merged file's footer (its list of inputs) is small beside it.
    ingest(env, runtime, [f"in{i:02d}.jsonl" for i in range(30)], rng, records=600, days=DAYS[:1])
    before = rows_multiset(env)
    # About an eighth of the partition: merged, it makes some 3 to 6 files.
    target = sum(p.stat().st_size for p in partition_files(env, DAYS[0])) // 8
    rt = reopen(env, runtime, target_file_bytes=target, min_files=4)
    try:
        [result] = run_pass(rt.config, rt.ledger)
        files = partition_files(env, DAYS[0])
        sizes = sorted(p.stat().st_size for p in files)
        assert result.files_in == 30 and result.files_out == len(files) >= 3
        # All but one reached the target, so no smaller number of target-sized files holds these rows.
        assert all(s >= target for s in sizes[1:]), sizes
        assert all(s <= 1.25 * target for s in sizes), sizes      # a last slice and the footer over
        for f in files:
            assert_sorted_by_ts(f)
        assert rows_multiset(env) == before
        assert_catalog_matches_disk(env, rt.config)

        # The next pass leaves the full files alone and merges only the rest with new arrivals.
        full = {p.name: p.stat().st_ino for p in files if p.stat().st_size >= target}
        ingest(env, rt, [f"late{i}.jsonl" for i in range(4)], rng, records=200, days=DAYS[:1])
        before = rows_multiset(env)
        [second] = run_pass(rt.config, rt.ledger)
        assert second.files_in == 4 + (len(files) - len(full))   # at most one was not full
        now = {p.name: p.stat().st_ino for p in partition_files(env, DAYS[0])}
        assert all(now.get(name) == ino for name, ino in full.items())
        assert rows_multiset(env) == before
        assert_catalog_matches_disk(env, rt.config)
    finally:
        rt.close()


def test_partition_with_fewer_than_min_files_is_untouched(env: Env, runtime: Runtime) -> None:
    """A partition with fewer small files than min_files keeps its files, inodes and times."""
    rng = random.Random(3)
    ingest(env, runtime, [f"a{i}.jsonl" for i in range(5)], rng, days=DAYS[:1])
    ingest(env, runtime, [f"b{i}.jsonl" for i in range(3)], rng, days=DAYS[1:])
    untouched = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in partition_files(env, DAYS[1])}
    before = rows_multiset(env)
    results = run_pass(runtime.config, runtime.ledger)          # min_files = 4 by default
    assert [(r.date, r.files_in) for r in results] == [(DAYS[0], 5)]
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in partition_files(env, DAYS[1])} == untouched
    assert len(partition_files(env, DAYS[0])) == 1
    assert rows_multiset(env) == before
    assert run_pass(runtime.config, runtime.ledger, date=DAYS[1]) == []


def test_file_committed_during_a_pass_stays_live_and_is_not_doubled(env: Env, runtime: Runtime) -> None:
    """A file committed between the snapshot and the publish is left alone, live, and counted once."""
    rng = random.Random(4)
    ingest(env, runtime, [f"in{i}.jsonl" for i in range(6)], rng, days=DAYS[:1])
    late = make_input(env.base / "src" / "late.jsonl", rng, 80, DAYS[:1])
    pipeline = Pipeline(runtime.config, runtime.ledger)
    seen: list[str] = []

    def during(step: str, day: str) -> None:
        seen.append(step)
        if step == "staged" and not late.with_suffix(".done").exists():
            assert pipeline.process(late).status == "ok"
            late.with_suffix(".done").touch()

    [result] = run_pass(runtime.config, runtime.ledger, on_step=during)
    assert seen == ["staged", "committed", "published"]
    assert result.files_in == 6
    files = partition_files(env, DAYS[0])
    late_files = [p for p in files if not p.name.startswith(MERGED_PREFIX)]
    assert len(late_files) == 1 and len(files) == 2
    sha = pq.read_schema(late_files[0]).metadata[b"logwatchd.input_sha256"].decode()
    [merged] = [p for p in files if p.name.startswith(MERGED_PREFIX)]
    assert sha not in json.loads(pq.read_schema(merged).metadata[META_INPUT_SHAS])
    lines = Counter(r["source_line"] for r in env.clean_rows() if r["source_file"] == "late.jsonl")
    assert lines and set(lines.values()) == {1}
    assert_catalog_matches_disk(env, runtime.config)


def test_ingestion_in_another_thread_during_passes_keeps_exactly_once(env: Env, runtime: Runtime) -> None:
    """Passes running while another thread commits files (as in the daemon) lose and double nothing."""
    rng = random.Random(5)
    names = [f"in{i:02d}.jsonl" for i in range(40)]
    inputs = [make_input(env.base / "src" / n, rng, 80) for n in names]
    rt = reopen(env, runtime, target_file_bytes=20_000, min_files=2)
    pipeline = Pipeline(rt.config, rt.ledger)
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            for path in inputs:
                assert pipeline.process(path).status == "ok"
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    passes = merged = 0
    try:
        while feeder.is_alive() or passes == 0:
            results = run_pass(rt.config, rt.ledger)
            assert all(r.ok for r in results), [r.error for r in results]
            merged += sum(r.files_in for r in results)
            passes += 1
        feeder.join()
        assert not failures, failures
        assert merged > 0, "no pass overlapped the ingestion"
        seen = Counter((r["source_file"], r["source_line"]) for r in env.clean_rows())
        seen.update((e["source_file"], e["source_line"]) for e in env.error_rows())
        assert seen == Counter({(n, line): 1 for n in names for line in range(1, 81)})
        scanned = Counter((str(r["date"]), r["action"]) for r in env.clean_rows())
        assert daily_counts(rt.config) == dict(scanned)
        assert_catalog_matches_disk(env, rt.config)
    finally:
        rt.close()


def test_a_partition_that_fails_keeps_its_files_and_the_others_go_ahead(env: Env, runtime: Runtime) -> None:
    """A source gone from disk fails its partition only: catalog, files and rows stay; no staging left."""
    rng = random.Random(6)
    ingest(env, runtime, [f"a{i}.jsonl" for i in range(5)], rng, days=DAYS[:1])
    ingest(env, runtime, [f"b{i}.jsonl" for i in range(5)], rng, days=DAYS[1:])
    victim = partition_files(env, DAYS[0])[-1]
    victim.unlink()
    kept = sorted(p.name for p in partition_files(env, DAYS[0]))
    results = {r.date: r for r in run_pass(runtime.config, runtime.ledger)}
    assert not results[DAYS[0]].ok and "FileNotFoundError" in str(results[DAYS[0]].error)
    assert results[DAYS[1]].ok and results[DAYS[1]].files_out == 1
    assert sorted(p.name for p in partition_files(env, DAYS[0])) == kept
    live = {Path(r["path"]).name for r in runtime.ledger.live_outputs("clean") if r["date"] == DAYS[0]}
    assert live == set(kept) | {victim.name}
    assert list(env.root.rglob(".*.tmp")) == []


def test_compact_command_prints_one_line_per_partition(env: Env) -> None:
    """`logwatchd compact` in a subprocess compacts, prints JSON lines, logs compaction_done, and validates --date."""
    rng = random.Random(7)
    files = [make_input(env.base / "src" / f"in{i}.jsonl", rng, 40) for i in range(5)]
    env.process(*files)
    before = rows_multiset(env)

    proc = env.cli("compact", "--date", DAYS[1])
    [line] = [json.loads(x) for x in proc.stdout.splitlines()]
    assert line["partition"] == f"date={DAYS[1]}" and line["files_in"] == 5 and line["files_out"] == 1
    assert set(line) == {"partition", "files_in", "files_out", "rows", "bytes_before", "bytes_after",
                         "duration_ms"}
    events = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert next(e for e in events if e["event"] == "compaction_done")["rows"] == line["rows"]
    assert len(partition_files(env, DAYS[0])) == 5

    proc = env.cli("compact")
    assert [json.loads(x)["partition"] for x in proc.stdout.splitlines()] == [f"date={DAYS[0]}"]
    assert env.cli("compact").stdout == ""               # nothing left to merge
    assert rows_multiset(env) == before

    bad = env.cli("compact", "--date", "2026-13-01", check=False)
    assert bad.returncode == 2 and "--date" in bad.stderr and bad.stdout == ""


def test_compact_exits_1_when_a_partition_fails(env: Env) -> None:
    """`logwatchd compact` reports a failed partition with its error and exit code 1."""
    rng = random.Random(8)
    env.process(*[make_input(env.base / "src" / f"in{i}.jsonl", rng, 30, DAYS[:1]) for i in range(4)])
    os.unlink(partition_files(env, DAYS[0])[0])
    proc = env.cli("compact", check=False)
    assert proc.returncode == 1
    [line] = [json.loads(x) for x in proc.stdout.splitlines()]
    assert line["files_in"] == 0 and "FileNotFoundError" in line["error"]


def test_cancel_before_the_commit_leaves_everything_as_it_was(env: Env, runtime: Runtime) -> None:
    """A pass cancelled (shutdown) after staging commits nothing, removes its staged file and stops."""
    rng = random.Random(9)
    ingest(env, runtime, [f"in{i}.jsonl" for i in range(5)], rng)
    before = {day: [p.name for p in partition_files(env, day)] for day in DAYS}
    rows, live = rows_multiset(env), runtime.ledger.live_outputs()
    cancel = threading.Event()
    staged: list[Path] = []

    def on_step(step: str, day: str) -> None:
        staged.extend(env.path("clean").rglob(".compacted-*.tmp"))
        cancel.set()

    results = run_pass(runtime.config, runtime.ledger, on_step=on_step, cancel=cancel)
    assert staged, "the hook ran after staging"
    assert [(r.files_in, r.error) for r in results] == [(0, "compaction abandoned for shutdown")]
    assert {day: [p.name for p in partition_files(env, day)] for day in DAYS} == before
    assert rows_multiset(env) == rows and runtime.ledger.live_outputs() == live
    assert_catalog_matches_disk(env, runtime.config)


def test_snapshot_leaves_out_outputs_whose_rename_is_still_journaled(tmp_path: Path) -> None:
    """A file committed but not yet renamed into place is not offered to compaction."""
    from logwatchd.ledger import Commit, Ledger, Output
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    final = tmp_path / "clean" / "date=2026-11-25" / "abc-0.parquet"
    out = Output(final, final.with_name(".abc-0.parquet.tmp"), "clean", "2026-11-25", 1, 10)
    ledger.commit(Commit("abc", "a.jsonl", "ok", outputs=[out]))
    assert ledger.compaction_snapshot() == []
    ledger.close()
