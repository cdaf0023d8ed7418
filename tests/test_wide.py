"""Wide inputs (a file spanning hundreds or thousands of event dates): bounded open files and
memory, few files per date, row groups that are not tiny, and outputs that still compact."""

from __future__ import annotations

import random
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Env
from daemon_harness import DaemonProc, daemon_config, drop

from logwatchd import writers
from logwatchd.layout import clean_schema
from logwatchd.writers import PartitionedParquet

START = 1_704_067_200  # 2024-01-01T00:00:00Z
ACTIONS = ["login", "logout", "view", "click"]


def wide_file(path: Path, records: int, days: int, seed: int = 7) -> Path:
    """`records` valid JSON lines, event times uniformly at random over `days` days, mixed forms."""
    rng = random.Random(seed)
    offsets = ["Z", "+05:30", "-08:00", "+01:00"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(records):
            t = START + rng.randrange(days * 86400)
            if i % 3 == 0:
                ts = str(t)
            else:  # a UTC instant written with Z (the offsets others are in the epoch lines)
                ts = f'"{time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))}{offsets[0]}"'
            fh.write(f'{{"timestamp":{ts},"user_id":"u{i % 977}","action":"{ACTIONS[i % 4]}",'
                     f'"city":"Zürich","n":{i}}}\n')
    return path


def files_per_date(clean: Path) -> Counter[str]:
    return Counter(f.parent.name for f in clean.glob("date=*/*.parquet"))


def configure(env: Env) -> None:
    env.write_config(ingest={"workers": 2, "chunk_bytes": 1 << 20})


def run_process(env: Env, src: Path, nofile: int | None = None) -> tuple[subprocess.CompletedProcess[str], int]:
    """`logwatchd process SRC` with an optional RLIMIT_NOFILE; also the peak PSS (bytes) of its tree."""
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    cmd = [sys.executable, "-m", "logwatchd", "process", "-c", str(env.config), str(src)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit, cwd=env.base)  # noqa: PLW1509 - only setrlimit
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in tree:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)
            time.sleep(0.1)

    thread = threading.Thread(target=sample)
    thread.start()
    out, err = proc.communicate(timeout=600)
    done.set()
    thread.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak[0]


@pytest.fixture(scope="module")
def ten_years(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wide_file(tmp_path_factory.mktemp("wide") / "decade.jsonl", 300_000, 3650)


@pytest.mark.slow
def test_ten_years_under_ulimit_1024(env: Env, ten_years: Path) -> None:
    """300k records over 3,650 dates under `ulimit -n 1024`: ok, every row once, one file per date, small tree."""
    configure(env)
    proc, peak = run_process(env, ten_years, nofile=1024)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"status":"ok"' in proc.stdout.replace(" ", "")
    table = pq.read_table(env.path("clean"), columns=["source_line"])
    lines = table["source_line"].to_pylist()
    assert len(lines) == 300_000 and len(set(lines)) == 300_000
    per_date = files_per_date(env.path("clean"))
    assert len(per_date) >= 3640
    assert max(per_date.values()) == 1, per_date.most_common(3)
    assert peak < 400 << 20, f"peak PSS of the process tree {peak >> 20} MB"
    assert env.cli("verify").returncode == 0


@pytest.mark.slow
def test_ten_years_under_ulimit_64(env: Env, ten_years: Path) -> None:
    """As few as 64 descriptors: parts still being synced count against the budget too (they
    hold theirs until closed), so a slow disk never runs a worker out of them (EMFILE)."""
    configure(env)
    proc, _peak = run_process(env, ten_years, nofile=64)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"status":"ok"' in proc.stdout.replace(" ", ""), proc.stdout[-2000:]
    assert pq.read_table(env.path("clean"), columns=["source_line"]).num_rows == 300_000
    assert max(files_per_date(env.path("clean")).values()) == 1


@pytest.mark.slow
def test_ten_years_under_ulimit_32(env: Env, ten_years: Path) -> None:
    """32 descriptors (a service's tight LimitNOFILE): the commit fsyncs its 3,650 partition
    directories with as many threads as descriptors are left, not 16 regardless; before,
    it failed with EMFILE after the outcome was recorded, and said `failed`."""
    configure(env)
    proc, _peak = run_process(env, ten_years, nofile=32)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert '"status":"ok"' in proc.stdout.replace(" ", ""), proc.stdout[-2000:]
    assert pq.read_table(env.path("clean"), columns=["source_line"]).num_rows == 300_000
    assert env.cli("verify").returncode == 0


@pytest.mark.slow
def test_the_daemon_takes_ten_years_under_ulimit_32_too(env: Env, ten_years: Path) -> None:
    """The daemon (HTTP off) under 32 descriptors: the wide file is processed and logged,
    not committed and then retried forever with its moves failing (EMFILE)."""
    daemon_config(env, ingest={"workers": 2, "chunk_bytes": 1 << 20})
    d = DaemonProc(env, prefix=("prlimit", "--nofile=32:32", "--"))
    try:
        d.wait_ready()
        drop(env, "decade.jsonl", ten_years.read_bytes())
        [done] = d.wait_event("file_processed", timeout=120)
        assert done["valid"] == 300_000
        d.wait_inbox_empty()
        assert not d.named("file_retry"), d.named("file_retry")[:2]
    finally:
        assert d.stop() == 0, d.tail()
    assert env.cli("verify").returncode == 0


@pytest.mark.slow
def test_one_year_few_files_per_date_and_real_row_groups(env: Env, tmp_path: Path) -> None:
    """120k records over 366 dates, cut among two workers: one file per date, one row group per file."""
    configure(env)
    src = wide_file(tmp_path / "year.jsonl", 120_000, 366)
    [summary] = env.process(src)
    assert summary["status"] == "ok" and summary["valid"] == 120_000
    per_date = files_per_date(env.path("clean"))
    assert len(per_date) == 366 and max(per_date.values()) == 1
    sizes = []
    for f in env.path("clean").glob("date=*/*.parquet"):
        md = pq.ParquetFile(f).metadata
        assert md.num_row_groups == 1, f
        sizes.append(md.row_group(0).num_rows)
    assert sorted(sizes)[len(sizes) // 2] >= 100, "median rows per row group"
    rows = env.clean_rows()
    assert [r["source_line"] for r in rows] == list(range(1, 120_001))


@pytest.mark.slow
def test_wide_outputs_compact(env: Env, tmp_path: Path) -> None:
    """Five inputs over 30 dates: compaction merges each date's parts; rows, verify and rebuild agree."""
    configure(env)
    srcs = [wide_file(tmp_path / f"w{i}.jsonl", 12_000, 30, seed=i) for i in range(5)]
    for s in srcs:
        [summary] = env.process(s)
        assert summary["status"] == "ok"
    before = sorted((r["source_file"], r["source_line"], r["ts"]) for r in env.clean_rows())
    assert max(files_per_date(env.path("clean")).values()) >= 4
    env.cli("compact")
    assert max(files_per_date(env.path("clean")).values()) == 1
    after = sorted((r["source_file"], r["source_line"], r["ts"]) for r in env.clean_rows())
    assert after == before
    assert env.cli("verify").returncode == 0


def _day_table(schema: pa.Schema, day: str, first: int, rows: int = 40) -> pa.Table:
    return pa.table({
        "timestamp": [f"{day} 00:00:00"] * rows,
        "ts": pa.array([0] * rows, pa.timestamp("us", tz="UTC")),
        "day_of_week": ["Monday"] * rows, "user_id": ["u"] * rows, "action": ["a"] * rows,
        "attributes": [None] * rows, "source_file": ["f"] * rows,
        "source_line": list(range(first, first + rows)),
        "date": [day] * rows}, schema=schema.append(pa.field("date", pa.string())))


def _staged_rows(root: Path, parts: list) -> dict[str, list[int]]:
    """source_line per date of closed parts, read from their staged files under `root`
    (sizes and counts checked)."""
    got: dict[str, list[int]] = {}
    for day, name, n, size in parts:
        staged = root / f"date={day}" / f".{name}.tmp"
        assert staged.stat().st_size == size and pq.ParquetFile(staged).metadata.num_rows == n
        got.setdefault(day, []).extend(pq.read_table(staged)["source_line"].to_pylist())
    return got


def _three_rounds(w: PartitionedParquet, schema: pa.Schema, days: list[str], spill_dir: Path | None = None) -> None:
    """Three chunks of 40 rows a date (lines 1000·round + 100·date index + k); at most two
    parts open; with `spill_dir`, rows set aside there after each chunk."""
    for rnd in range(3):
        w.write_chunk(pa.concat_tables([_day_table(schema, d, 1000 * rnd + 100 * i) for i, d in enumerate(days)]))
        assert len(w._open) <= 2
        if spill_dir is not None:
            assert list(spill_dir.glob(".*.spill.tmp")), "rows set aside in a spill file"


@pytest.mark.parametrize("plain_bytes", [writers.SPILL_PLAIN_BYTES, 0], ids=["plain", "lz4"])
def test_writer_sets_quiet_dates_aside_and_writes_each_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            plain_bytes: int) -> None:
    """A buffer that spills at every chunk: each date still gets one part, every row once and
    in line order; no spill file stays; abort removes everything. The spill file is written
    plain, or (past SPILL_PLAIN_BYTES) compressed after its first run."""
    monkeypatch.setattr(writers, "SPILL_PLAIN_BYTES", plain_bytes)
    schema = clean_schema()
    days = [f"2024-01-0{d}" for d in range(1, 6)]
    w = PartitionedParquet(tmp_path / "clean", "stem-0", schema, buffer_bytes=1, max_open=2)
    _three_rounds(w, schema, days, tmp_path / "clean")
    assert w._spill is not None and w._spill._compressed == (plain_bytes == 0)
    assert sum(w.rows.values()) == 3 * 5 * 40
    parts = w.close()
    assert sorted(p.date for p in parts) == days and {p.name for p in parts} == {"stem-0.parquet"}
    got = _staged_rows(tmp_path / "clean", parts)
    for i, day in enumerate(days):
        assert got[day] == [1000 * r + 100 * i + k for r in range(3) for k in range(40)]
    assert not list((tmp_path / "clean").glob(".*.spill.tmp"))

    w = PartitionedParquet(tmp_path / "clean2", "stem-1", schema, buffer_bytes=1, max_open=2)
    w.write_chunk(pa.concat_tables([_day_table(schema, d, 0) for d in days]))
    w.write_chunk(pa.concat_tables([_day_table(schema, d, 100) for d in days]))
    w.abort()
    assert not [p for p in (tmp_path / "clean2").rglob("*") if p.is_file()]


def test_writer_busy_dates_bounded_open_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy dates are written as they come, at most `max_open` parts open: a date whose
    writer was closed continues in a numbered part; every row once."""
    monkeypatch.setattr(writers, "DIRECT_ROWS", 10)
    schema = clean_schema()
    days = [f"2024-01-0{d}" for d in range(1, 6)]
    w = PartitionedParquet(tmp_path / "clean", "stem-0", schema, buffer_bytes=1, max_open=2)
    _three_rounds(w, schema, days)
    parts = w.close()
    names = {p.name for p in parts}
    assert "stem-0.parquet" in names and "stem-0-1.parquet" in names
    got = _staged_rows(tmp_path / "clean", parts)
    for i, day in enumerate(days):
        assert sorted(got[day]) == [1000 * r + 100 * i + k for r in range(3) for k in range(40)]


def test_workers_share_dates_out_one_part_per_date(tmp_path: Path) -> None:
    """Two writers of one input hand over what they set aside; each date is written by one of
    them (reading the other's spill file), so a date spread over both gets one part."""
    schema = clean_schema()
    days = [f"2024-02-{d:02d}" for d in range(1, 21)]
    a = PartitionedParquet(tmp_path / "clean", "s-0", schema, buffer_bytes=1)
    b = PartitionedParquet(tmp_path / "clean", "s-1", schema, buffer_bytes=1)
    for k, d in enumerate(days):
        a.write_chunk(_day_table(schema, d, 10_000 + 100 * k, rows=30))
        b.write_chunk(_day_table(schema, d, 20_000 + 100 * k, rows=30))
    spill_a, open_a = a.hand_over()
    spill_b, open_b = b.hand_over()
    assert spill_a is not None and spill_b is not None and not open_a and not open_b
    mine_a = set(days[::2])
    parts = a.close(mine_a, [spill_b]) + b.close(set(days) - mine_a, [spill_a])
    assert Path(spill_a.path).exists() and Path(spill_b.path).exists()  # the caller removes them
    assert sorted(p.date for p in parts) == days
    got = _staged_rows(tmp_path / "clean", parts)
    for k, d in enumerate(days):
        assert sorted(got[d]) == sorted([10_000 + 100 * k + i for i in range(30)] +
                                        [20_000 + 100 * k + i for i in range(30)])
        for base in (10_000, 20_000):  # each writer's rows of the date keep their order
            assert [n for n in got[d] if base <= n < base + 10_000] == [base + 100 * k + i for i in range(30)]


def test_parts_synced_in_batches_a_failed_sync_closes_the_rest(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished parts are synced a batch at a time: every part reported is durable and
    counted once; a sync that fails (a full disk) is raised from `close`, every other part
    of its batch is still closed (no descriptor left open), and `abort` removes them all."""
    from logwatchd import storage

    schema = clean_schema()
    days = [f"2024-03-{d:02d}" for d in range(1, 31)] + [f"2024-04-{d:02d}" for d in range(1, 11)]
    w = PartitionedParquet(tmp_path / "clean", "s-0", schema, buffer_bytes=1, max_open=256)
    for k, d in enumerate(days):
        w.write_chunk(_day_table(schema, d, 100 * k, rows=5))
    parts = w.close()
    assert sorted(p.date for p in parts) == days
    got = _staged_rows(tmp_path / "clean", parts)
    assert all(got[d] == [100 * k + i for i in range(5)] for k, d in enumerate(days))

    closed: list[str] = []
    real_close = storage.LocalFile.close

    def close(self: storage.LocalFile) -> int:
        closed.append(self.final.parent.name)
        if self.final.parent.name == "date=2024-03-20":
            self.stream.close()
            raise OSError(28, "No space left on device")
        return real_close(self)

    monkeypatch.setattr(storage.LocalFile, "close", close)
    fds = psutil.Process().num_fds()
    w = PartitionedParquet(tmp_path / "clean2", "s-1", schema, buffer_bytes=1, max_open=256)
    for k, d in enumerate(days):
        w.write_chunk(_day_table(schema, d, 100 * k, rows=5))
    with pytest.raises(OSError, match="No space"):
        w.close()
    batch = days[writers.SYNC_BATCH:2 * writers.SYNC_BATCH]  # the failing part's batch
    assert "2024-03-20" in batch and {f"date={d}" for d in batch} <= set(closed)
    w.abort()
    assert psutil.Process().num_fds() == fds
    assert not [p for p in (tmp_path / "clean2").rglob("*") if p.is_file()]


@pytest.mark.parametrize("block_rows", [writers.BLOCK_ROWS, 100], ids=["one-block", "blocks-of-100"])
def test_small_dates_read_back_in_ranges_around_a_busy_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           block_rows: int) -> None:
    """Small dates set aside are written a range at a time; a busy date (its part open) and
    the other writer's dates in between break or cross the ranges: every date one part,
    every row once, each writer's rows of a date in line order."""
    monkeypatch.setattr(writers, "DIRECT_ROWS", 50)
    monkeypatch.setattr(writers, "BLOCK_ROWS", block_rows)
    schema = clean_schema()
    days = [f"2024-03-{d:02d}" for d in range(1, 16)]
    busy = days[7]
    a = PartitionedParquet(tmp_path / "clean", "s-0", schema, buffer_bytes=1)
    b = PartitionedParquet(tmp_path / "clean", "s-1", schema, buffer_bytes=1)
    for rnd in range(3):
        for k, d in enumerate(days):
            rows = 60 if d == busy else 10
            a.write_chunk(_day_table(schema, d, 10_000 + 1000 * k + 100 * rnd, rows=rows))
            if d != busy:
                b.write_chunk(_day_table(schema, d, 50_000 + 1000 * k + 100 * rnd, rows=rows))
    spill_a, open_a = a.hand_over()
    spill_b, open_b = b.hand_over()
    assert open_a == [busy] and not open_b and spill_a is not None and spill_b is not None
    mine_b = {days[2], days[3], days[11]}  # inside a's ranges
    parts = a.close(set(days) - mine_b, [spill_b]) + b.close(mine_b, [spill_a])
    assert sorted(p.date for p in parts) == days
    got = _staged_rows(tmp_path / "clean", parts)
    for k, d in enumerate(days):
        rows = 60 if d == busy else 10
        want_a = [10_000 + 1000 * k + 100 * rnd + i for rnd in range(3) for i in range(rows)]
        want_b = [] if d == busy else [50_000 + 1000 * k + 100 * rnd + i for rnd in range(3) for i in range(rows)]
        assert [n for n in got[d] if n < 50_000] == want_a
        assert [n for n in got[d] if n >= 50_000] == want_b
