"""Compaction over S3 against moto's server: every row exactly once, the catalog equal to the
objects, after a crash at any step, beside ingestion and beside another pass."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ReadTimeoutError

from logwatchd.aws import compact_handler
from logwatchd.aws.compact import MAX_ACTIONS, ORPHAN_AGE_SECONDS, CompactionFailed, S3Compaction
from logwatchd.aws.ledger import CatalogFile, DynamoLedger
from logwatchd.aws.settings import Settings, SettingsError, s3_filesystem
from logwatchd.compaction import META_INPUT_SHAS, Source
from logwatchd.config import CompactionConfig, Config, parse_config

from .conftest import AwsEnv

DAYS = ("2026-03-01", "2026-03-02")
ACTIONS = ("login", "view", "click")


class Crash(BaseException):
    """Stands for the invocation dying at a step (a timeout, an out-of-memory kill): nothing
    of the pass's own clean-up runs."""


@dataclass
class Seeded:
    """One input processed by the daemon's pipeline: its clean files and its counts."""

    name: str
    sha256: str
    files: list[tuple[str, Path, int, int]]        # key ("date=…/x.parquet"), local file, rows, bytes
    counts: dict[tuple[str, str], int] = field(default_factory=dict)


def _inputs(directory: Path, n: int, seed: int, records: int = 24,
            days: tuple[str, ...] = DAYS) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        lines = [json.dumps({
            "timestamp": f"{rng.choice(days)}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
            "user_id": f"u{rng.randrange(50)}", "action": rng.choice(ACTIONS), "n": j})
            for j in range(records)]
        path = directory / f"app-{seed}-{i:03d}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _through_the_pipeline(work: Path, inputs: list[Path]) -> list[Seeded]:
    """Real small Parquet files, written by the daemon's own pipeline and writers."""
    from logwatchd.pipeline import Pipeline
    from logwatchd.runtime import open_runtime

    config = parse_config({"paths": {"root": str(work / "var")}, "ingest": {"workers": 1}}, work)
    rt = open_runtime(config)
    try:
        pipeline = Pipeline(config, rt.ledger)
        outcomes = [pipeline.process(path) for path in inputs]
        assert all(o.status == "ok" for o in outcomes), [o.summary() for o in outcomes]
        by_sha: dict[str, list[tuple[str, Path, int, int]]] = {}
        for row in rt.ledger.live_outputs("clean"):
            path = Path(row["path"])
            key = f"{path.parent.name}/{path.name}"
            by_sha.setdefault(row["input_sha256"], []).append((key, path, row["rows"], row["bytes"]))
    finally:
        rt.close()
    return [Seeded(o.file, o.sha256 or "", sorted(by_sha[o.sha256 or ""]), dict(o.counts))
            for o in outcomes]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Seeded]]:
    """Inputs processed once for the module: a two-day set, one late input, a one-day set of 90."""
    work = tmp_path_factory.mktemp("seed")
    src = work / "src"
    src.mkdir()
    out = _through_the_pipeline(work, _inputs(src, 7, seed=1) + _inputs(src, 1, seed=2)
                                + _inputs(src, 90, seed=3, records=6, days=DAYS[:1]))
    return {"small": out[:7], "late": out[7:8], "many": out[8:]}


def register(aws: AwsEnv, ledger: DynamoLedger, inputs: list[Seeded]) -> None:
    """Uploads the files and completes each input in the ledger, as the ingest Lambda does."""
    s3 = aws.s3()

    def one(inp: Seeded) -> None:
        files = []
        for key, path, rows, size in inp.files:
            s3.put_object(Bucket=aws.output_bucket, Key=f"clean/{key}", Body=path.read_bytes())
            files.append(CatalogFile(key.split("/")[0][len("date="):], key, rows, size, inp.sha256))
        claim = ledger.claim(inp.sha256, key=inp.name, bucket=aws.input_bucket, owner="seed",
                             lease_seconds=60)
        assert claim.state == "claimed"
        valid = sum(inp.counts.values())
        ledger.complete(inp.sha256, owner="seed", outcome="ok",
                        summary={"processed": valid, "valid": valid, "errors": 0},
                        files=files, counts=inp.counts)

    for inp in inputs:
        one(inp)


def register_at_once(aws: AwsEnv, ledger: DynamoLedger, inputs: list[Seeded]) -> None:
    """The same catalog as `register`, in one completion (a few transactions instead of one per
    input: moto's server copies the whole table for each transaction)."""
    s3 = aws.s3()
    files = []
    for inp in inputs:
        for key, path, rows, size in inp.files:
            s3.put_object(Bucket=aws.output_bucket, Key=f"clean/{key}", Body=path.read_bytes())
            files.append(CatalogFile(key.split("/")[0][len("date="):], key, rows, size, inp.sha256))
    counts = Counter[tuple[str, str]]()
    for inp in inputs:
        counts.update(inp.counts)
    batch = "b" * 64
    ledger.claim(batch, key="batch", bucket=aws.input_bucket, owner="seed", lease_seconds=60)
    ledger.complete(batch, owner="seed", outcome="ok", summary={}, files=files, counts=dict(counts))
    # Each input's own item, completed, as its ingestion would have left it.
    items = [{"PutRequest": {"Item": {"pk": {"S": f"input#{inp.sha256}"}, "sk": {"S": "input"},
                                      "status": {"S": "completed"}, "outcome": {"S": "ok"}}}}
             for inp in inputs]
    for i in range(0, len(items), 25):
        ledger.client.batch_write_item(RequestItems={aws.table: items[i:i + 25]})


def read_dataset(aws: AwsEnv) -> Any:
    """What a reader sees: the clean prefix as a hive-partitioned dataset, over pyarrow's S3 client."""
    dataset = ds.dataset(f"{aws.output_bucket}/clean", filesystem=s3_filesystem(), partitioning="hive")
    return dataset.to_table(columns=["source_file", "source_line", "date"])


def rows(aws: AwsEnv) -> Counter[tuple[str, int]]:
    """(source_file, source_line) of every row the dataset shows a reader, with multiplicity."""
    table = read_dataset(aws)
    return Counter(zip(table["source_file"].to_pylist(), table["source_line"].to_pylist(), strict=True))


def expected_rows(inputs: list[Seeded]) -> Counter[tuple[str, int]]:
    out: Counter[tuple[str, int]] = Counter()
    for inp in inputs:
        for _key, path, _rows, _size in inp.files:
            t = pq.read_table(path, columns=["source_file", "source_line"])
            out.update(zip(t["source_file"].to_pylist(), t["source_line"].to_pylist(), strict=True))
    return out


def objects(aws: AwsEnv) -> list[str]:
    """Every object under the clean prefix, relative to it."""
    keys = []
    for page in aws.s3().get_paginator("list_objects_v2").paginate(Bucket=aws.output_bucket,
                                                                   Prefix="clean/"):
        keys.extend(o["Key"][len("clean/"):] for o in page.get("Contents", []))
    return sorted(keys)


def hidden(key: str) -> bool:
    return any(part.startswith((".", "_")) for part in key.split("/"))


def assert_converged(aws: AwsEnv, ledger: DynamoLedger, want: Counter[tuple[str, int]],
                     staging_left: bool = False) -> None:
    """Every row once; the catalog lists exactly the data objects, with their rows; each
    date's count of files agrees; no journal is pending; no staging object is left."""
    assert rows(aws) == want
    catalog = {f.key: f for day in ledger.partitions() for f in ledger.live_files(day)}
    assert {k for k in objects(aws) if not hidden(k)} == set(catalog)
    per_date = Counter(str(d) for d in read_dataset(aws)["date"].to_pylist())
    for day, n in ledger.partitions().items():
        files = [f for f in catalog.values() if f.date == day]
        assert n == len(files)
        assert sum(f.rows for f in files) == per_date[day]
    if not staging_left:
        assert [k for k in objects(aws) if hidden(k)] == []
    for day in ledger.partitions():
        assert ledger.client.get_item(TableName=ledger.table, ConsistentRead=True, Key={
            "pk": {"S": f"compaction#{day}"}, "sk": {"S": "journal"}}).get("Item") is None


def counts(ledger: DynamoLedger) -> dict[str, dict[str, int]]:
    return {day: ledger.counts(day) for day in sorted(ledger.partitions())}


def crash_at(step: str, times: int = 1) -> Callable[[str, str], None]:
    left = [times]

    def hook(at: str, _day: str) -> None:
        if at == step and left[0] > 0:
            left[0] -= 1
            raise Crash(step)

    return hook


def later(seconds: float = 2 * ORPHAN_AGE_SECONDS) -> Callable[[], float]:
    return lambda: time.time() + seconds


# --- the tests --------------------------------------------------------------------------------
def test_handler_merges_each_partition_and_keeps_every_row_once(
        aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """compact_handler merges each date's small files into one, sorted, every row exactly once;
    the catalog then lists exactly the objects, counts are untouched, and a second run has nothing to do."""
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    want = expected_rows(seeded["small"])
    before = counts(ledger)
    files_before = ledger.partitions()
    assert all(n >= 4 for n in files_before.values())

    out = compact_handler({}, None)

    summary = {p["partition"]: p for p in out["partitions"]}
    assert set(summary) == {f"date={d}" for d in DAYS}
    for day in DAYS:
        p = summary[f"date={day}"]
        assert (p["files_in"], p["files_out"]) == (files_before[day], 1) and "error" not in p
        assert p["rows"] == sum(f.rows for f in ledger.live_files(day))
    assert_converged(aws, ledger, want)
    assert counts(ledger) == before
    for day in DAYS:
        [merged] = ledger.live_files(day)
        assert merged.key.startswith(f"date={day}/compacted-") and merged.input_sha256 is None
        assert set(merged.inputs) == {i.sha256 for i in seeded["small"]
                                      if any(k.startswith(f"date={day}/") for k, *_ in i.files)}
        with s3_filesystem().open_input_file(f"{aws.output_bucket}/clean/{merged.key}") as fh:
            pf = pq.ParquetFile(fh)
            assert set(json.loads(pf.schema_arrow.metadata[META_INPUT_SHAS])) == set(merged.inputs)
            ts = pf.read(columns=["ts"])["ts"].to_pylist()
        assert ts == sorted(ts) and len(ts) == merged.rows
    assert compact_handler({}, None)["partitions"] == []


def test_bad_settings_or_date_name_the_problem_and_write_nothing(
        aws: AwsEnv, seeded: dict[str, list[Seeded]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing variable or a bad event date is an error naming it, and nothing is written."""
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    present = objects(aws)
    monkeypatch.delenv("LOGWATCHD_LEDGER_TABLE")
    with pytest.raises(SettingsError, match="LOGWATCHD_LEDGER_TABLE"):
        compact_handler({}, None)
    monkeypatch.setenv("LOGWATCHD_LEDGER_TABLE", aws.table)
    monkeypatch.setenv("LOGWATCHD_CLEAN_URI", "http://nope")
    with pytest.raises(SettingsError, match="LOGWATCHD_CLEAN_URI"):
        compact_handler({}, None)
    monkeypatch.setenv("LOGWATCHD_CLEAN_URI", aws.clean_uri)
    for bad in ("2026-02-30", "yesterday", 20260301):
        with pytest.raises(ValueError, match="date"):
            compact_handler({"date": bad}, None)
    assert objects(aws) == present


def test_event_date_limits_the_pass_to_that_partition(aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """{"date": D} compacts D only."""
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    before = ledger.partitions()
    out = compact_handler({"date": DAYS[1]}, None)
    assert [p["partition"] for p in out["partitions"]] == [f"date={DAYS[1]}"]
    assert ledger.partitions() == {DAYS[0]: before[DAYS[0]], DAYS[1]: 1}
    assert_converged(aws, ledger, expected_rows(seeded["small"]))


@pytest.mark.parametrize("step", ["staged", "committed", "copied", "deleted"])
def test_crash_after_each_step_then_a_rerun_converges(
        aws: AwsEnv, seeded: dict[str, list[Seeded]], step: str) -> None:
    """A pass that dies after staging, after its transaction, after its copies or after its
    deletions leaves a state from which the next run converges: every row once, the catalog
    equal to the objects, counts unchanged, and (once the orphan age has passed) no staging
    object, journal or mark left."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    want = expected_rows(seeded["small"])
    before = counts(ledger)

    with pytest.raises(Crash):
        S3Compaction(settings, on_step=crash_at(step)).run(DAYS[0])
    seen = rows(aws)
    if step in ("staged", "committed"):
        assert seen == want                   # the merged objects are not visible yet
    else:
        assert set(seen) == set(want)         # both generations, never neither
    assert counts(ledger) == before

    out = S3Compaction(settings).run()
    assert out["journals_replayed"] == (0 if step == "staged" else 1)
    assert_converged(aws, ledger, want, staging_left=step == "staged")
    assert ledger.partitions()[DAYS[0]] == 1 and ledger.partitions()[DAYS[1]] == 1
    assert counts(ledger) == before

    # The orphan age later: what a dead pass staged is removed, and the marks are cleared.
    out = S3Compaction(settings, now=later()).run()
    assert out["orphans_removed"] == (1 if step == "staged" else 0)
    assert_converged(aws, ledger, want)
    items = ledger.partition_items()
    assert all("compacting" not in item for item in items.values()), items


@pytest.mark.parametrize("age", ["young", "old"])
def test_a_sweep_never_takes_the_staging_of_a_pass_that_will_swap(
        aws: AwsEnv, seeded: dict[str, list[Seeded]], age: str) -> None:
    """A sweep leaves a staging object younger than the orphan age alone, and its pass swaps
    and publishes; a sweep that does remove it (as if the pass had run past the age) makes
    that pass's swap fail, changing nothing: never a catalog entry without its object."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    swept: list[Any] = []

    def meanwhile(at: str, day: str) -> None:
        if at == "staged" and not swept:
            mark = float(ledger.partition_items()[day]["compacting"]["N"])
            sweeper = S3Compaction(settings, now=later() if age == "old" else time.time)
            swept.append(sweeper.recover(day, mark))

    out = S3Compaction(settings, on_step=meanwhile).run(DAYS[0])
    [p] = out["partitions"]
    if age == "young":
        assert swept[0].orphans_removed == 0
        assert (p["files_out"], p.get("error")) == (1, None)
    else:
        assert swept[0].orphans_removed == 1
        assert p["files_in"] == 0 and "sweep removed staging objects" in p["error"]
    assert_converged(aws, ledger, expected_rows(seeded["small"]))


def test_a_file_ingested_during_a_pass_is_kept(aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """An input completed while a pass merges the same date is not in the pass's snapshot:
    it stays live, its rows once, and the partition's file count includes it."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    before = counts(ledger)

    def ingest_now(at: str, _day: str) -> None:
        if at == "staged" and not ledger.input(seeded["late"][0].sha256):
            register(aws, ledger, seeded["late"])

    files_before = ledger.partitions()
    out = S3Compaction(settings, on_step=ingest_now).run(DAYS[0])
    assert [(p["files_in"], p.get("error")) for p in out["partitions"]] == [(files_before[DAYS[0]], None)]
    late_keys = {k for k, *_ in seeded["late"][0].files}
    assert {k.split("/")[0] for k in late_keys} == {f"date={d}" for d in DAYS}
    assert late_keys <= {f.key for d in DAYS for f in ledger.live_files(d)}
    assert ledger.partitions() == {DAYS[0]: 1 + 1, DAYS[1]: files_before[DAYS[1]] + 1}
    assert_converged(aws, ledger, expected_rows(seeded["small"] + seeded["late"]))
    late_counts = Counter({f"{d}/{a}": n for (d, a), n in seeded["late"][0].counts.items()})
    want_counts = Counter({f"{d}/{a}": n for d, c in before.items() for a, n in c.items()}) + late_counts
    assert Counter({f"{d}/{a}": n for d, c in counts(ledger).items() for a, n in c.items()}) == want_counts


@pytest.mark.parametrize("reply", ["refused", "lost"])
def test_a_swap_that_committed_is_published_whatever_the_reply(
        aws: AwsEnv, seeded: dict[str, list[Seeded]], reply: str) -> None:
    """A swap request that committed but whose reply was lost (a timeout), or answered by the
    refusal of its own retry, is published, never discarded: its journal says it committed."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    client = ledger.client
    real = client.transact_write_items

    def twice(**kwargs: Any) -> Any:
        real(**kwargs)
        if reply == "lost":
            raise ReadTimeoutError(endpoint_url=aws.endpoint)
        return real(**kwargs)         # the retry: its conditions fail on what the first did

    client.transact_write_items = twice
    out = S3Compaction(settings, ledger=ledger).run(DAYS[0])
    assert [(p["files_out"], p.get("error")) for p in out["partitions"]] == [(1, None)]
    assert_converged(aws, ledger, expected_rows(seeded["small"]))


def test_a_second_concurrent_pass_loses_cleanly(aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """Two passes merging the same files: the one that swaps second changes nothing and
    removes its own staging objects at once."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    other: list[dict[str, Any]] = []

    def race(at: str, day: str) -> None:
        if at == "staged" and not other:
            other.append(S3Compaction(settings).run(day))

    out = S3Compaction(settings, on_step=race).run(DAYS[0])
    assert [p["files_out"] for p in other[0]["partitions"]] == [1]
    [lost] = out["partitions"]
    assert lost["files_in"] == 0 and "CatalogChanged" in lost["error"]
    assert out["failed"] == []        # a lost race is no failure: the next pass goes on
    assert_converged(aws, ledger, expected_rows(seeded["small"]))


def test_two_passes_started_together_compact_once(aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """Two invocations running at once, each in its own thread: at most one swaps the files,
    and the dataset ends every row once with the catalog equal to the objects."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    start = threading.Barrier(2)
    results: list[dict[str, Any]] = []
    # moto's server runs a transaction as copy the table, apply, restore the copy on failure,
    # without a lock: a request beside a failing transaction can be undone. DynamoDB isolates
    # them; this lock stands in for that, for DynamoDB only (S3, merging, publishing overlap).
    isolation = threading.Lock()

    def one() -> None:
        client = DynamoLedger(aws.table).client
        real = client._make_api_call

        def isolated(operation: str, params: dict[str, Any]) -> Any:
            with isolation:
                return real(operation, params)

        client._make_api_call = isolated
        compaction = S3Compaction(settings, ledger=DynamoLedger(aws.table, client))
        start.wait()
        results.append(compaction.run(DAYS[0]))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    day0 = sum(k.startswith(f"date={DAYS[0]}/") for i in seeded["small"] for k, *_ in i.files)
    assert sorted(sum(p["files_in"] for p in r["partitions"]) for r in results) == [0, day0]
    S3Compaction(settings, now=later()).run()     # whatever the loser staged is an orphan by then
    assert_converged(aws, ledger, expected_rows(seeded["small"]))


@pytest.mark.parametrize("when", ["copying", "copied"])
def test_a_run_replaying_a_journal_while_its_pass_publishes(
        aws: AwsEnv, seeded: dict[str, list[Seeded]], when: str) -> None:
    """A run that finds the journal of a pass still publishing replays it, just before the
    pass's own copy or just after it; the two publishes interleave harmlessly and the pass
    ends without error."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    other: list[dict[str, Any]] = []

    def replay_now(day: str) -> None:
        if not other:
            other.append(S3Compaction(settings).run(day))

    s3 = aws.s3()
    real_copy = s3.copy
    if when == "copying":
        def copy(*args: Any, **kwargs: Any) -> Any:
            replay_now(DAYS[0])         # after the pass found the final object missing
            return real_copy(*args, **kwargs)

        s3.copy = copy
    out = S3Compaction(settings, s3=s3, on_step=lambda at, day: replay_now(day) if at == when else None
                       ).run(DAYS[0])
    assert other[0]["journals_replayed"] == 1
    assert [(p["files_out"], p.get("error")) for p in out["partitions"]] == [(1, None)]
    assert_converged(aws, ledger, expected_rows(seeded["small"]))


def test_no_swap_while_another_publish_is_pending_on_the_date(
        aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """A pass that died after its swap leaves its journal; another pass swapping other files of
    the same date before anyone replays it fails cleanly instead of overwriting it, and the
    next run publishes the first."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    with pytest.raises(Crash):
        S3Compaction(settings, on_step=crash_at("committed")).run(DAYS[0])
    newcomers = seeded["many"][:2]
    register(aws, ledger, newcomers)
    sources = [Source(k, r, b, i.sha256) for i in newcomers for k, _p, r, b in i.files]
    result = S3Compaction(settings).compact(DAYS[0], sources)
    assert result.files_in == 0 and "publish is pending" in (result.error or "")
    assert [k for k in objects(aws) if hidden(k) and "compacted-" in k and k.startswith(
        f"date={DAYS[0]}/")], "the first pass's staging object is still there"
    out = S3Compaction(settings).run()
    assert out["journals_replayed"] == 1
    assert_converged(aws, ledger, expected_rows(seeded["small"] + newcomers))


def test_a_journal_whose_objects_are_gone_is_kept_and_reported(
        aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """A journal naming a merged object that exists neither staged nor final (removed by hand)
    cannot be replayed: the run reports it for that partition and leaves the partition and
    the journal alone; the other partitions are compacted."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    with pytest.raises(Crash):
        S3Compaction(settings, on_step=crash_at("committed")).run(DAYS[0])
    [staging] = [k for k in objects(aws) if hidden(k)]
    aws.s3().delete_object(Bucket=aws.output_bucket, Key=f"clean/{staging}")
    left = objects(aws)
    out = S3Compaction(settings).run()
    broken = {p["partition"]: p for p in out["partitions"]}
    assert "JournalBroken" in broken[f"date={DAYS[0]}"]["error"]
    assert broken[f"date={DAYS[1]}"]["files_out"] == 1
    assert [k for k in objects(aws) if k.startswith(f"date={DAYS[0]}/")] == [
        k for k in left if k.startswith(f"date={DAYS[0]}/")]
    assert ledger.client.get_item(TableName=ledger.table, ConsistentRead=True, Key={
        "pk": {"S": f"compaction#{DAYS[0]}"}, "sk": {"S": "journal"}}).get("Item") is not None
    assert out["failed"] == [f"date={DAYS[0]}"]
    with pytest.raises(CompactionFailed, match=f"date={DAYS[0]}"):
        compact_handler({}, None)     # the invocation fails: the template alarms on that


def test_a_large_partition_swaps_in_transactions_of_at_most_100_actions(
        aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """90 small files of one date: several groups, each swap one transaction within DynamoDB's
    100 actions, and still one merged file at the end of the pass (a group's file under the
    target is merged again with the next); every row once."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register_at_once(aws, ledger, seeded["many"])
    sizes: list[int] = []
    real = ledger.client.transact_write_items

    def counting(**kwargs: Any) -> Any:
        sizes.append(len(kwargs["TransactItems"]))
        return real(**kwargs)

    ledger.client.transact_write_items = counting
    out = S3Compaction(settings, ledger=ledger).run()
    [p] = out["partitions"]
    assert (p["files_in"], p["files_out"], p.get("error")) == (90, 1, None)
    assert p["rows"] == sum(f[2] for i in seeded["many"] for f in i.files)
    assert len(sizes) >= 2 and max(sizes) <= MAX_ACTIONS
    [merged] = ledger.live_files(DAYS[0])
    assert p["bytes_after"] == merged.bytes and len(merged.inputs) == 90
    assert_converged(aws, ledger, expected_rows(seeded["many"]))


def test_merged_files_are_cut_near_the_target(aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """With a small target, a partition becomes several merged files, all but one at least the
    target; together they hold every row once, each sorted by time."""
    settings = Settings.from_env()
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    target = 4096
    config = Config(compaction=CompactionConfig(target_file_bytes=target, min_files=4))
    out = S3Compaction(settings, config=config).run(DAYS[0])
    [p] = out["partitions"]
    merged = ledger.live_files(DAYS[0])
    assert p["files_out"] == len(merged) >= 2 and "error" not in p
    assert sum(f.bytes < target for f in merged) <= 1
    for f in merged:
        with s3_filesystem().open_input_file(f"{aws.output_bucket}/clean/{f.key}") as fh:
            ts = pq.read_table(fh, columns=["ts"])["ts"].to_pylist()
        assert ts == sorted(ts)
    assert_converged(aws, ledger, expected_rows(seeded["small"]))


def test_too_little_time_left_compacts_nothing(aws: AwsEnv, seeded: dict[str, list[Seeded]]) -> None:
    """An invocation with less than the margin left starts no merge."""
    ledger = DynamoLedger(aws.table)
    register(aws, ledger, seeded["small"])
    present = objects(aws)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 20_000

    assert compact_handler({}, Context())["partitions"] == []
    assert objects(aws) == present


def test_files_of_an_input_whose_completion_was_cut_short_wait(
        aws: AwsEnv, seeded: dict[str, list[Seeded]], monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingestion that registered its files but died before completing is resumed by
    rewriting them: until it completes, compaction must not merge them (rows twice)."""
    ledger = DynamoLedger(aws.table)
    done, cut = seeded["small"][:5], seeded["small"][5]
    register(aws, ledger, done)
    s3 = aws.s3()
    files = []
    for key, path, rows_, size in cut.files:
        s3.put_object(Bucket=aws.output_bucket, Key=f"clean/{key}", Body=path.read_bytes())
        files.append(CatalogFile(key.split("/")[0][len("date="):], key, rows_, size, cut.sha256))
    assert ledger.claim(cut.sha256, key=cut.name, bucket=aws.input_bucket, owner="one",
                        lease_seconds=600).state == "claimed"
    real = ledger.client.transact_write_items
    calls = [0]

    def dies_after_the_first(**kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > 1:
            raise Crash("the invocation timed out")
        return real(**kwargs)

    ledger.client.transact_write_items = dies_after_the_first
    # One action per transaction: the first file's catalog entry lands, the completion does not.
    monkeypatch.setattr("logwatchd.aws.ledger.ACTIONS_PER_TRANSACTION", 1)
    with pytest.raises(Crash):
        ledger.complete(cut.sha256, owner="one", outcome="ok", summary={}, files=files,
                        counts=cut.counts)
    ledger.client.transact_write_items = real
    registered = {f.key for d in ledger.partitions() for f in ledger.live_files(d)}
    assert registered & {f.key for f in files}, "the cut-short completion registered a file"
    config = Config(compaction=CompactionConfig(min_files=2))
    S3Compaction(Settings.from_env(), config=config).run()
    live = {f.key for d in ledger.partitions() for f in ledger.live_files(d)}
    assert registered & {f.key for f in files} <= live, "a file of the unfinished input was merged"
    # The resumed completion rewrites its files; then compaction may take them.
    for key, path, _rows, _size in cut.files:
        s3.put_object(Bucket=aws.output_bucket, Key=f"clean/{key}", Body=path.read_bytes())
    again = ledger.claim(cut.sha256, key=cut.name, bucket=aws.input_bucket, owner="two",
                         lease_seconds=600, now=time.time() + 601)
    ledger.complete(cut.sha256, owner="two", outcome="ok", summary={}, files=files,
                    counts=cut.counts, start_batch=again.batches_done)
    assert rows(aws) == expected_rows(done + [cut])
    S3Compaction(Settings.from_env(), config=config).run()
    assert rows(aws) == expected_rows(done + [cut])
    assert {f.key for d in ledger.partitions() for f in ledger.live_files(d)}.isdisjoint(f.key for f in files)
