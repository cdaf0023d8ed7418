"""Compaction over S3 (`compact_handler`): the daemon's merge, with the DynamoDB ledger as the
catalog of live files.

S3 has no rename, so a group of small files is replaced in three steps, each safe to die after:

1. stage: the partition's item is marked `compacting` (when), then the merged objects are
   written under hidden keys in the partition, `date=D/.compacted-<uuid>.parquet.tmp`
   (Athena and pyarrow skip names starting with "." or "_"; `*.parquet` globs miss them);
2. swap, in one TransactWriteItems: delete the sources' catalog items (each must still be
   there with the rows that were read, so a concurrent pass that swapped them first makes
   this one fail, changing nothing), put the merged files' items, add (merged − sources)
   to the partition's file count, and put the journal (`compaction#<date>` / `journal`: the
   copies staging → final and the sources to delete; one per date at a time). A group has
   at most MAX_SOURCES_PER_GROUP sources, to stay within a transaction's 100 actions; a
   group's last file, when under the target, is merged again with the next group's;
3. publish: copy each staging object to its final key, delete the staging objects and the
   sources, delete the journal. Between the copies and the deletions a listing sees both
   generations (never neither), as with the daemon's renames.

A swap whose reply is lost is recognised by its journal's id: published if there, else
left for the sweep. Every run first recovers the partitions marked `compacting`: it replays
the journal left by a pass that died after its swap (idempotent: an object is copied only
while its final key is missing; deleting a missing object is not an error), removes staging
objects older than ORPHAN_AGE_SECONDS that no journal names (a pass that died before its
swap), and clears the mark once nothing of the kind can be left. A sweep that removes
objects first counts itself on the partition's item (`sweeps`), and a swap requires the
count its pass saw when it marked the partition: however slow a pass, a sweep never takes
an object it would publish. Files ingested during a pass are not in its snapshot and are
never touched; counts never change (compaction moves rows, it never adds or removes one).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import logs
from ..compaction import (
    MERGED_PREFIX,
    Group,
    Merged,
    PartitionResult,
    Source,
    compact_partition,
    valid_date,
)
from ..config import Config
from ..durable import staged_name
from ..errors import Cancelled
from ..ledger import CatalogChanged
from .ledger import PARTITIONS_PK, CatalogFile, DynamoLedger
from .settings import S3Location, Settings, s3_filesystem

# A staging object this old belongs to a pass that is over: a Lambda runs 15 minutes at most.
ORPHAN_AGE_SECONDS = 3600
JOURNAL_SK = "journal"
MARK = "compacting"            # attribute of the partition's item: when a pass began staging there
SWEEPS = "sweeps"              # and how many sweeps have removed staging objects there
# TransactWriteItems takes at most 100 actions: one per source, one per merged file (a group
# of this many sources gives a handful), the partition's count and the journal.
MAX_SOURCES_PER_GROUP = 80
MAX_ACTIONS = 100
# A merged file's catalog item lists its inputs up to this many (an item holds 400 KB); the
# file's schema metadata always lists them all.
MAX_CATALOG_INPUTS = 1000
# A source at most this big is fetched in one GET, up to FETCH_AHEAD of them ahead of the
# merge; a bigger one is read by ranges when its turn comes.
WHOLE_GET_BYTES = 8 << 20
FETCH_AHEAD = 8
# Copies above this size go by parts (CopyObject takes 5 GiB at most).
COPY_PART_BYTES = 1 << 30
# No new group is merged or swapped with less time left than this in the invocation.
DEADLINE_MARGIN_SECONDS = 60.0
TRANSACTION_ATTEMPTS = 5      # a transaction cancelled for a conflict changed nothing: try again

Step = Callable[[str, str], None]
OUT_OF_TIME = "compaction abandoned: the invocation's time is running out"


def _in_course(error: str) -> bool:
    """A partition left for the next pass in the normal course of things: a concurrent pass
    swapped first, or the invocation ran out of time."""
    return error.startswith((f"{CatalogChanged.__name__}:", OUT_OF_TIME))


class CompactionFailed(RuntimeError):
    """Raised by the handler, after its summary is logged, when a partition failed for another
    reason than a lost race or the invocation's deadline: the invocation then counts as an
    error (the template alarms on the function's errors)."""


class JournalBroken(RuntimeError):
    """A journal names a merged object that exists neither staged nor final: it is kept for a
    person to look at, and its partition is left alone."""


def handle(event: Any, context: Any) -> dict[str, Any]:
    """The scheduled entry point: `{"date": "YYYY-MM-DD"}` limits the pass to one partition."""
    settings = Settings.from_env()
    day = event.get("date") if isinstance(event, dict) else None
    if day is not None and not (isinstance(day, str) and valid_date(day)):
        raise ValueError(f"event \"date\": must be a date written YYYY-MM-DD, got {day!r}")
    _configure_logging()
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    deadline = None if remaining is None else time.monotonic() + remaining() / 1000
    summary = S3Compaction(settings, deadline=deadline).run(day)
    logs.get_logger().info(logs.COMPACTION_PASS, **summary)
    if summary["failed"]:
        raise CompactionFailed(f"compaction failed in {', '.join(summary['failed'])} "
                               "(their compaction_failed events say why)")
    return summary


_logging_configured = False


def _configure_logging() -> None:
    global _logging_configured
    if not _logging_configured:
        logs.configure("info", "json")     # stdout, one JSON object per line: CloudWatch Logs
        _logging_configured = True


@dataclass
class Journal:
    """One swap's pending publish; keys relative to the clean location."""

    id: str
    copies: list[tuple[str, str, int]]     # staging key, final key, bytes
    deletes: list[str]                     # the sources


@dataclass
class Recovery:
    replayed: bool = False
    orphans_removed: int = 0
    error: str | None = None
    mark_cleared: bool = False


class S3Compaction:
    """One run over the clean location: recover, then compact each partition that needs it.

    Everything but the settings may be injected: the clients, the compaction settings (the
    daemon's defaults otherwise), the clock (`now`, epoch seconds: orphan ages), the
    invocation's deadline (time.monotonic()), and `on_step(step, date)`, called after each
    step of a swap: staged, committed, copied, deleted, published.
    """

    def __init__(self, settings: Settings, *, ledger: DynamoLedger | None = None, s3: Any = None,
                 fs: Any = None, config: Config | None = None, now: Callable[[], float] = time.time,
                 deadline: float | None = None, orphan_age: float = ORPHAN_AGE_SECONDS,
                 on_step: Step | None = None) -> None:
        self.settings = settings
        self.clean: S3Location = settings.clean
        self.db = ledger or DynamoLedger(settings.ledger_table)
        self.s3 = s3 or _s3_client()
        self.fs = fs or s3_filesystem()
        self.config = config or settings.config()
        self.now = now
        self.deadline = deadline
        self.orphan_age = orphan_age
        self.on_step = on_step

    # --- the run --------------------------------------------------------------------------
    def run(self, date: str | None = None) -> dict[str, Any]:
        """Recovers, then compacts every partition (or only `date`) with enough small files."""
        if date is not None and not valid_date(date):
            raise ValueError(f"not a date (YYYY-MM-DD): {date!r}")
        log = logs.get_logger()
        cfg = self.config.compaction
        items = self.db.partition_items()
        days = sorted(d for d in items if date is None or d == date)
        recovered: dict[str, Recovery] = {}
        for day in days:
            if MARK in items[day]:
                rec = recovered[day] = self.recover(day, float(items[day][MARK]["N"]))
                if rec.replayed or rec.orphans_removed or rec.error:
                    log.info(logs.RECOVERY_DONE, partition=f"date={day}", replayed=rec.replayed,
                             orphans_removed=rec.orphans_removed, error=rec.error)
        results: list[PartitionResult] = []
        for day in days:
            error = recovered.get(day, Recovery()).error
            if error:                     # a journal that cannot be replayed blocks the partition
                results.append(PartitionResult(f"date={day}", day, error=error))
                continue
            if int(items[day].get("files", {"N": "0"})["N"]) < max(cfg.min_files, 2):
                continue
            if self._time_is_short():
                break
            live = self.db.live_files(day)
            candidates = [f for f in live if f.bytes < cfg.target_file_bytes]
            # An input whose completion was cut short is resumed by rewriting its files: merging
            # them before then would show their rows twice.
            done = self.db.completed(f.input_sha256 for f in candidates if f.input_sha256)
            small = [Source(f.key, f.rows, f.bytes, f.input_sha256) for f in candidates
                     if f.input_sha256 is None or f.input_sha256 in done]
            if len(small) < max(cfg.min_files, 2):
                continue
            result = self.compact(day, small)
            results.append(result)
            if result.files_in:
                log.info(logs.COMPACTION_DONE, **result.summary())
        return {"partitions": [r.summary() for r in results],
                "journals_replayed": sum(r.replayed for r in recovered.values()),
                "orphans_removed": sum(r.orphans_removed for r in recovered.values()),
                "failed": [r.partition for r in results if r.error and not _in_course(r.error)]}

    def compact(self, day: str, small: list[Source]) -> PartitionResult:
        """Merges one partition's small files (a snapshot of its catalog) group by group."""
        sweeps = self._mark(day)
        store = S3Store(self.fs, self.s3, self.clean, day, upcoming=small)
        try:
            return compact_partition(store, day, small, self.config.compaction.target_file_bytes,
                                     self._clock,
                                     lambda group: self._swap_and_publish(store, day, group, sweeps),
                                     self._check, MAX_SOURCES_PER_GROUP, merge_again=True)
        finally:
            store.close()

    # --- steps ----------------------------------------------------------------------------
    def _swap_and_publish(self, store: S3Store, day: str, group: Group, sweeps: int) -> None:
        self._step("staged", day)
        journal = Journal(uuid.uuid4().hex,
                          [(m.staged, m.final, m.bytes) for m in group.outputs],
                          [s.name for s in group.sources])
        try:
            self._check()
            if sum(m.rows for m in group.outputs) != sum(s.rows for s in group.sources):
                raise ValueError(f"the merged files hold {sum(m.rows for m in group.outputs)} rows, "
                                 f"their sources {sum(s.rows for s in group.sources)}")
        except (Cancelled, ValueError):
            self._discard(store, group)
            raise
        try:
            self._transact(self._swap_actions(day, group, journal, sweeps))
        except Exception as exc:
            # A refusal may answer a retry of a request that did commit (its reply lost): the
            # journal, under this swap's own id, is the proof either way.
            committed = self._committed(day, journal)
            if not committed:
                refused = (CatalogChanged, self.db.client.exceptions.TransactionCanceledException)
                if committed is False and isinstance(exc, refused):
                    self._discard(store, group)      # these will never be published
                raise                                # else unknown: the sweep decides, later
        self._step("committed", day)
        self.publish(day, journal)

    def _committed(self, day: str, journal: Journal) -> bool | None:
        """Whether this swap's journal is there (None: could not be read)."""
        try:
            found = self._journal(day)
        except Exception:  # noqa: BLE001 - unknown: nothing is removed
            return None
        return found is not None and found.id == journal.id

    @staticmethod
    def _discard(store: S3Store, group: Group) -> None:
        for m in group.outputs:
            store.discard(m)

    def _swap_actions(self, day: str, group: Group, journal: Journal,
                      sweeps: int) -> list[dict[str, Any]]:
        table = self.db.table
        actions: list[dict[str, Any]] = []
        for s in group.sources:
            actions.append({"Delete": {
                "TableName": table, "Key": {"pk": _s(f"files#{day}"), "sk": _s(s.name)},
                "ConditionExpression": "attribute_exists(pk) AND #rows = :rows",
                "ExpressionAttributeNames": {"#rows": "rows"},
                "ExpressionAttributeValues": {":rows": _n(s.rows)}}})
        for m in group.outputs:
            inputs = tuple(m.inputs) if len(m.inputs) <= MAX_CATALOG_INPUTS else ()
            item = self.db.file_item(CatalogFile(day, m.final, m.rows, m.bytes, None, inputs))
            actions.append({"Put": {"TableName": table, "Item": item,
                                    "ConditionExpression": "attribute_not_exists(pk)"}})
        # No sweep since this pass marked the partition: none can have taken its staging objects.
        count = self.db.partition_add(day, len(group.outputs) - len(group.sources))["Update"]
        actions.append({"Update": {
            **count, "ConditionExpression": "attribute_not_exists(#sweeps) OR #sweeps = :sweeps",
            "ExpressionAttributeNames": {**count["ExpressionAttributeNames"], "#sweeps": SWEEPS},
            "ExpressionAttributeValues": {**count["ExpressionAttributeValues"], ":sweeps": _n(sweeps)}}})
        actions.append({"Put": {"TableName": table, "Item": self._journal_item(day, journal),
                                "ConditionExpression": "attribute_not_exists(pk)"}})
        if len(actions) > MAX_ACTIONS:
            raise ValueError(f"a swap of {len(group.sources)} sources by {len(group.outputs)} "
                             f"merged files needs {len(actions)} actions, more than {MAX_ACTIONS}")
        return actions

    def _transact(self, actions: list[dict[str, Any]]) -> None:
        client = self.db.client
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                client.transact_write_items(TransactItems=actions)
                return
            except client.exceptions.TransactionCanceledException as exc:
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                if "ConditionalCheckFailed" in codes:
                    at = codes.index("ConditionalCheckFailed")
                    what = ("another compaction's publish is pending on this date"
                            if at == len(actions) - 1 else
                            "a sweep removed staging objects of this date since this pass began"
                            if at == len(actions) - 2 else
                            "a source is no longer live as read (a concurrent compaction swapped it)")
                    raise CatalogChanged(what) from None
                if attempt == TRANSACTION_ATTEMPTS - 1 or not set(codes) <= {"None", "TransactionConflict"}:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    def publish(self, day: str, journal: Journal) -> None:
        """Carries out a swapped group's journal, then deletes it; idempotent, so a replay of a
        journal whose publish died half-way (or is still running elsewhere) converges."""
        from boto3.s3.transfer import TransferConfig

        bucket = self.clean.bucket
        for staging, final, size in journal.copies:
            if self._size(self.clean.key(final)) == size:
                continue                      # copied before
            try:
                self.s3.copy({"Bucket": bucket, "Key": self.clean.key(staging)}, bucket,
                             self.clean.key(final),
                             Config=TransferConfig(multipart_threshold=COPY_PART_BYTES,
                                                   multipart_chunksize=COPY_PART_BYTES // 4))
            except self.s3.exceptions.ClientError as exc:
                if _status(exc) != 404:
                    raise
                if self._size(self.clean.key(final)) == size:
                    continue                  # copied (and its staging removed) by a replay meanwhile
                raise JournalBroken(f"{self.clean.uri(final)}: neither it nor its staging object "
                                    f"{self.clean.uri(staging)} exists") from None
        self._step("copied", day)
        self._delete_objects([s for s, _f, _b in journal.copies] + journal.deletes)
        self._step("deleted", day)
        try:
            self.db.client.delete_item(
                TableName=self.db.table, Key=_journal_key(day), ConditionExpression="#id = :id",
                ExpressionAttributeNames={"#id": "id"}, ExpressionAttributeValues={":id": _s(journal.id)})
        except self.db.client.exceptions.ConditionalCheckFailedException:
            pass                              # replayed and removed by another run meanwhile
        self._step("published", day)

    # --- recovery -------------------------------------------------------------------------
    def recover(self, day: str, marked_at: float) -> Recovery:
        """Replays the partition's journal, removes its orphan staging objects, and clears its
        mark once neither can be left (see the module's docstring)."""
        rec = Recovery()
        try:
            journal = self._journal(day)
            if journal is not None:
                self.publish(day, journal)
                rec.replayed = True
            now = self.now()
            staged = self._staged_objects(day)
            journal = self._journal(day)      # a swap committed meanwhile by a running pass
            named = {s for s, _f, _b in journal.copies} if journal is not None else set()
            orphans = [key for key, modified in staged.items()
                       if key not in named and modified < now - self.orphan_age]
            if orphans:
                # Counted first: a pass that marked the partition before cannot swap any more,
                # so an object removed here is never one a swap is about to publish.
                self._count_sweep(day)
                self._delete_objects(orphans)
            rec.orphans_removed = len(orphans)
            if journal is None and len(orphans) == len(staged) and marked_at < now - self.orphan_age:
                rec.mark_cleared = self._unmark(day, marked_at)
        except Exception as exc:  # noqa: BLE001 - one partition's trouble must not stop the others
            rec.error = f"{type(exc).__name__}: {exc}"
            logs.get_logger().error(logs.COMPACTION_FAILED, partition=f"date={day}",
                                    during="recovery", error=repr(exc))
        return rec

    def _staged_objects(self, day: str) -> dict[str, float]:
        """The partition's staging objects (key relative to the clean location → mtime)."""
        prefix = self.clean.key(f"date={day}/.{MERGED_PREFIX}")
        strip = len(self.clean.key(""))
        out: dict[str, float] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.clean.bucket,
                                                                      Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".tmp"):
                    out[obj["Key"][strip:]] = obj["LastModified"].timestamp()
        return out

    def _journal(self, day: str) -> Journal | None:
        got = self.db.client.get_item(TableName=self.db.table, Key=_journal_key(day),
                                      ConsistentRead=True)
        item = got.get("Item")
        if item is None:
            return None
        copies = [(c["M"]["staging"]["S"], c["M"]["final"]["S"], int(c["M"]["bytes"]["N"]))
                  for c in item["copies"]["L"]]
        return Journal(item["id"]["S"], copies, [d["S"] for d in item["deletes"]["L"]])

    def _journal_item(self, day: str, journal: Journal) -> dict[str, Any]:
        return {**_journal_key(day), "id": _s(journal.id), "created_at": _n(round(self.now(), 3)),
                "copies": {"L": [{"M": {"staging": _s(s), "final": _s(f), "bytes": _n(b)}}
                                 for s, f, b in journal.copies]},
                "deletes": {"L": [_s(k) for k in journal.deletes]}}

    def _mark(self, day: str) -> int:
        """Marks the partition as being staged in; returns its count of sweeps."""
        out = self._update_partition(day, UpdateExpression="SET #mark = :now",
                                     ExpressionAttributeNames={"#mark": MARK},
                                     ExpressionAttributeValues={":now": _n(round(self.now(), 3))},
                                     ReturnValues="ALL_NEW")
        return int(out["Attributes"].get(SWEEPS, {"N": "0"})["N"])

    def _count_sweep(self, day: str) -> None:
        self._update_partition(day, UpdateExpression="ADD #sweeps :one",
                               ExpressionAttributeNames={"#sweeps": SWEEPS},
                               ExpressionAttributeValues={":one": _n(1)})

    def _unmark(self, day: str, marked_at: float) -> bool:
        """Clears the mark unless a pass set it again since it was read."""
        try:
            self._update_partition(day, UpdateExpression="REMOVE #mark",
                                   ConditionExpression="#mark = :seen",
                                   ExpressionAttributeNames={"#mark": MARK},
                                   ExpressionAttributeValues={":seen": _n(marked_at)})
        except self.db.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _update_partition(self, day: str, **kwargs: Any) -> Any:
        """UpdateItem on the partition's item, which ingestion's transactions update too: a
        write that meets one of them in flight is refused (not retried by botocore), so it
        is tried again."""
        client = self.db.client
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                return client.update_item(TableName=self.db.table,
                                          Key={"pk": _s(PARTITIONS_PK), "sk": _s(day)}, **kwargs)
            except client.exceptions.TransactionConflictException:
                if attempt == TRANSACTION_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")

    # --- S3 -------------------------------------------------------------------------------
    def _size(self, key: str) -> int | None:
        try:
            return int(self.s3.head_object(Bucket=self.clean.bucket, Key=key)["ContentLength"])
        except self.s3.exceptions.ClientError as exc:
            if _status(exc) == 404:
                return None
            raise

    def _delete_objects(self, keys: list[str]) -> None:
        """Deletes objects (keys relative to the clean location); a missing one is not an error."""
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            out = self.s3.delete_objects(Bucket=self.clean.bucket, Delete={
                "Objects": [{"Key": self.clean.key(k)} for k in batch], "Quiet": True})
            if out.get("Errors"):
                first = out["Errors"][0]
                raise RuntimeError(f"deleting {len(out['Errors'])} objects failed, first "
                                   f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}")

    # --- time -----------------------------------------------------------------------------
    def _clock(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def _time_is_short(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline - DEADLINE_MARGIN_SECONDS

    def _check(self) -> None:
        if self._time_is_short():
            raise Cancelled(OUT_OF_TIME)

    def _step(self, step: str, day: str) -> None:
        if self.on_step is not None:
            self.on_step(step, day)


class S3Store:
    """One partition of the clean location as the merge's store: sources read from their
    objects, merged files streamed to hidden staging keys beside them.

    The merge reads its sources one after another; small ones are fetched a few ahead, in
    the order given (`upcoming`), so that it rarely waits for S3's latency.
    """

    def __init__(self, fs: Any, s3: Any, clean: S3Location, day: str,
                 upcoming: list[Source] | None = None) -> None:
        self.fs = fs
        self.s3 = s3
        self.clean = clean
        self.day = day
        self._upcoming = deque(s for s in upcoming or [] if s.bytes <= WHOLE_GET_BYTES)
        self._fetching: dict[str, Future[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def open_source(self, src: Source) -> Any:
        if src.bytes > WHOLE_GET_BYTES:
            return self.fs.open_input_file(self.clean.path(src.name))
        self._fetch_ahead()
        fetch = self._fetching.pop(src.name, None)
        if fetch is None and self._upcoming and self._upcoming[0].name == src.name:
            self._upcoming.popleft()
        self._fetch_ahead()
        return pa.BufferReader(fetch.result() if fetch is not None else self._get(src.name))

    def _fetch_ahead(self) -> None:
        """Keeps FETCH_AHEAD of the next sources fetching or fetched (at most that many bodies
        of at most WHOLE_GET_BYTES each are held)."""
        while self._upcoming and len(self._fetching) < FETCH_AHEAD:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(FETCH_AHEAD, thread_name_prefix="logwatchd-fetch")
            name = self._upcoming.popleft().name
            self._fetching[name] = self._pool.submit(self._get, name)

    def _get(self, name: str) -> bytes:
        """One request, where pyarrow makes three (HEAD, footer, columns)."""
        got = self.s3.get_object(Bucket=self.clean.bucket, Key=self.clean.key(name))
        return bytes(got["Body"].read())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._fetching.clear()

    def create(self, name: str) -> S3Staged:
        final = f"date={self.day}/{name}"
        staged = f"date={self.day}/{staged_name(Path(name)).name}"
        return S3Staged(self, final, staged)

    def discard(self, merged: Merged) -> None:
        self.delete(merged.staged)

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.clean.bucket, Key=self.clean.key(key))


class S3Staged:
    """A merged file streamed to its staging key (multipart upload); complete once closed."""

    def __init__(self, store: S3Store, final: str, staged: str) -> None:
        self.store = store
        self.final = final
        self.staged = staged
        self.stream = store.fs.open_output_stream(store.clean.path(staged))

    def finish(self) -> int:
        size = int(self.stream.tell())
        self.stream.close()                 # completes the upload: the object exists from here
        return size

    def abort(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001, S110 - the staging object is removed anyway
            pass
        try:
            self.store.delete(self.staged)
        except Exception as exc:  # noqa: BLE001 - an orphan: the next run's sweep removes it
            logs.get_logger().warning(logs.COMPACTION_FAILED, during="abort",
                                      staged=self.store.clean.uri(self.staged), error=repr(exc))


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}))


def _journal_key(day: str) -> dict[str, Any]:
    return {"pk": _s(f"compaction#{day}"), "sk": _s(JOURNAL_SK)}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(value)}


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
