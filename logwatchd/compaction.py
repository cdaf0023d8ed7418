"""Compaction: merges each partition's small Parquet files into few large ones, crash-safely.

Plain functions; only the daemon knows about the scheduler. The merge (`merge_group`: read
the small sources one by one, sort by SORT_KEYS, cut files near the target with row groups
of a sensible size, record the inputs in the schema metadata) reads and stages through a
`MergeStore`: the daemon's partition directory here, S3 in `logwatchd.aws.compact`, whose
catalog is the DynamoDB ledger. The daemon's pass:

1. snapshot the catalog of live clean files (the ledger's `outputs`) once, at the start;
   files committed later are not in it and are never touched by this pass;
2. for each partition holding at least `compaction.min_files` small files (smaller than
   `compaction.target_file_bytes`): read them file by file, sort the rows by `ts`, and
   write merged files under hidden staging names (`.compacted-<uuid>.parquet.tmp`), each
   closed once it reaches the target size; fsync them;
3. one ledger transaction swaps the sources for the merged files in the catalog and
   journals the publishing renames followed by the deletions of the sources;
4. `Ledger.complete` renames, deletes, fsyncs the directory and clears the journal.

A crash before step 3 leaves only staging files, which start-up removes; a crash after it
leaves a journal, which start-up replays. No lock is held while merging: ingestion waits
at most for the one transaction of step 3.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import logs
from .config import Config
from .durable import fsync_close, staged_name
from .errors import Cancelled, is_transient
from .failpoints import failpoint
from .ledger import Ledger, Output
from .procs import context, die_with_parent, ignore_stop_signals
from .records import CLEAN_SCHEMA, utc_now
from .writers import DICTIONARY_COLUMNS, PARQUET_COMPRESSION

MERGED_PREFIX = "compacted-"
# In the schema metadata, as `logwatchd.input_sha256` is for an ingested file: a JSON list of
# the inputs whose rows the merged file may hold (those of the rows it was cut from).
META_INPUT_SHAS = b"logwatchd.input_sha256s"
META_COMPACTED_AT = b"logwatchd.compacted_at"

SORT_KEYS = [("ts", "ascending"), ("source_file", "ascending"), ("source_line", "ascending")]
MAX_ROW_GROUP_ROWS = 131_072       # DuckDB and Spark parallelise by row group; ~DuckDB's own size
# Row groups are sized to about this fraction of the target; near the target the slices
# shrink, so a merged file passes it by a few rows and the rest of its footer only.
ROW_GROUPS_PER_FILE = 8
# Before the first merged file of a pass has been measured, rows are assumed to shrink to
# this share of their small files' bytes (their per-file footers go away). Too low only
# means reading a little more before writing; the writer then learns the real figure.
FIRST_GUESS_RATIO = 0.5
READ_AHEAD = 1.05                  # read this much more than one file's worth before writing
# Merged files of one transaction: bounds the disk a transaction stages before publishing.
MAX_FILES_PER_TRANSACTION = 8

_SRC = "__source_index"            # per-row index of the source file, while merging only
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

Clock = Callable[[], datetime]
Step = Callable[[str, str], None]


@dataclass
class PartitionResult:
    """What one partition's compaction did, as `compaction_done` logs it and `compact` prints it."""

    partition: str                 # the directory name, "date=YYYY-MM-DD"
    date: str
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    duration_ms: float = 0.0
    error: str | None = None       # set when the partition (or its rest) was left as it was

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"partition": self.partition, "files_in": self.files_in,
                               "files_out": self.files_out, "rows": self.rows,
                               "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                               "duration_ms": self.duration_ms}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Source:
    """One small live file a merge may read: a path (the daemon) or an object key (S3)."""

    name: str
    rows: int
    bytes: int
    input_sha256: str | None       # None: itself a merged file (its inputs are in its metadata)
    this_pass: bool = False        # merged by this very pass, and merged again (merge_again)


@dataclass
class Merged:
    """One merged file, complete under its staging name; `final` is where publishing puts it."""

    final: str
    staged: str
    rows: int
    bytes: int
    inputs: list[str]              # the inputs whose rows it holds (its schema metadata too)


@dataclass
class Group:
    """The sources one transaction replaces, and the merged files that replace them."""

    sources: list[Source] = field(default_factory=list)
    outputs: list[Merged] = field(default_factory=list)


class StagedOutput(Protocol):
    """A merged file being written under its staging name."""

    final: str
    staged: str
    stream: Any                    # what pq.ParquetWriter writes to; its tell() is the size so far

    def finish(self) -> int:
        """Closes the file durably (complete, never partial, once this returns); its size."""

    def abort(self) -> None:
        """Closes and removes what was staged."""


class MergeStore(Protocol):
    """Where a partition's merge reads its sources and stages merged files: the daemon's
    directory (`LocalStore`), or an S3 prefix (`logwatchd.aws.compact`)."""

    def open_source(self, src: Source) -> Any:
        """The source as pq.ParquetFile reads it (a path or a file object)."""

    def create(self, name: str) -> StagedOutput:
        """A new merged file to be published as `name`, inside the partition."""

    def discard(self, merged: Merged) -> None:
        """Removes a finished staged file that will not be published."""


class LocalStore:
    """The daemon's partition directory: staged files are hidden, written and fsynced in place."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open_source(self, src: Source) -> str:
        return src.name

    def create(self, name: str) -> _LocalStaged:
        return _LocalStaged(self.directory / name)

    def discard(self, merged: Merged) -> None:
        Path(merged.staged).unlink(missing_ok=True)


class _LocalStaged:
    def __init__(self, final: Path) -> None:
        staged = staged_name(final)
        self.final = str(final)
        self.staged = str(staged)
        # Kept open across row groups: its position is the file's size so far.
        self.stream = open(staged, "wb")  # noqa: SIM115

    def finish(self) -> int:
        return fsync_close(self.stream)

    def abort(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass  # closing flushes, which fails again on a full disk
        Path(self.staged).unlink(missing_ok=True)


def valid_date(text: str) -> bool:
    """True for a real calendar date written YYYY-MM-DD."""
    if not _DATE.fullmatch(text):
        return False
    try:
        Date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --- the daemon's pass ------------------------------------------------------------------------
def run_pass(config: Config, ledger: Ledger, clock: Clock = utc_now, date: str | None = None,
             metrics: Any = None, on_step: Step | None = None,
             cancel: threading.Event | None = None) -> list[PartitionResult]:
    """Compacts every partition (or only `date`) that has enough small files; one result each.

    A partition that fails (a source missing, disk full) keeps its files, is reported with
    `error` set, and is tried again on the next pass; the others go ahead. `on_step(step,
    date)` is called at each step of the commit protocol ("staged", "committed", "published").
    Setting `cancel` (shutdown) abandons the merge in hand within about one source file or
    row group, its staged files removed, and ends the pass; a swap already committed is
    always published first.
    """
    if date is not None and not valid_date(date):
        raise ValueError(f"not a date (YYYY-MM-DD): {date!r}")
    log = logs.get_logger()
    step = on_step or (lambda _step, _date: None)
    cfg = config.compaction
    partitions: dict[str, list[Source]] = {}
    for row in ledger.compaction_snapshot("clean"):
        if date is None or row["date"] == date:
            partitions.setdefault(row["date"], []).append(
                Source(row["path"], row["rows"], row["bytes"], row["input_sha256"]))
    results = []
    for day, files in partitions.items():
        if cancel is not None and cancel.is_set():
            break
        small = [s for s in files if s.bytes < cfg.target_file_bytes]
        if len(small) < max(cfg.min_files, 2):
            continue
        store = LocalStore(config.paths.clean / f"date={day}")
        result = compact_partition(store, day, small, cfg.target_file_bytes, clock,
                                   _local_publish(ledger, store, day, clock, step, cancel),
                                   _cancel_check(cancel))
        results.append(result)
        if result.files_in:
            log.info(logs.COMPACTION_DONE, **result.summary())
            if metrics is not None:
                metrics.compaction_done(result.files_in, result.files_out, result.rows,
                                        result.bytes_before, result.bytes_after,
                                        result.duration_ms / 1000)
    return results


def _local_publish(ledger: Ledger, store: LocalStore, day: str, clock: Clock, step: Step,
                   cancel: threading.Event | None) -> Callable[[Group], None]:
    """The daemon's commit protocol for one group: the ledger swaps the catalog and journals
    the renames (staged → final) and the deletions, then carries them out."""

    def publish(group: Group) -> None:
        outputs = [Output(Path(m.final), Path(m.staged), "clean", day, m.rows, m.bytes)
                   for m in group.outputs]
        step("staged", day)
        failpoint("compact.staged")
        try:
            _cancel_check(cancel)()
            txn = ledger.commit_compaction([Path(s.name) for s in group.sources], outputs, clock())
        except BaseException:
            _discard(store, group.outputs)
            raise
        step("committed", day)
        failpoint("compact.committed")
        ledger.complete(txn)
        step("published", day)

    return publish


def _cancel_check(cancel: threading.Event | None) -> Callable[[], None]:
    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("compaction abandoned for shutdown")

    return check


# --- one partition, whatever the store ----------------------------------------------------------
def compact_partition(store: MergeStore, day: str, small: list[Source], target: int,
                      clock: Clock, publish: Callable[[Group], None],
                      check: Callable[[], None], max_sources: int | None = None,
                      merge_again: bool = False) -> PartitionResult:
    """Merges `small` in groups, each handed to `publish` (which swaps it in the catalog and
    publishes it, or raises); returns what was done, from the sources it found to the files
    it leaves.

    `check()` is called between sources and row groups and raises Cancelled to abandon the
    merge in hand (its staged files removed). An error ends the partition with the groups
    published so far kept and `error` set; it is logged here (compaction_failed).
    `max_sources` bounds the sources of one group (a DynamoDB transaction's size); with
    `merge_again`, a published merged file still under the target joins the end of the
    queue, so that groups bounded that way still end in few files: each level of merging
    divides their number by about `max_sources`, and reads the partition's bytes once.
    """
    started = time.monotonic()
    result = PartitionResult(f"date={day}", day)
    pending = deque(small)
    # Output bytes per row: a first guess from the sources, then what the writer measured.
    bpr = [FIRST_GUESS_RATIO * sum(s.bytes for s in small) / max(1, sum(s.rows for s in small))]
    try:
        while len(pending) >= 2:
            group = merge_group(store, pending, target, bpr, clock, check, max_sources)
            publish(group)
            found = [s for s in group.sources if not s.this_pass]
            again = [s for s in group.sources if s.this_pass]
            result.files_in += len(found)
            result.files_out += len(group.outputs) - len(again)
            result.rows += sum(s.rows for s in found)
            result.bytes_before += sum(s.bytes for s in found)
            result.bytes_after += sum(o.bytes for o in group.outputs) - sum(s.bytes for s in again)
            if merge_again and len(group.sources) >= 2:
                # Only a group's last file can be under the target: the queue shrinks, so it ends.
                pending.extend(Source(o.final, o.rows, o.bytes, None, this_pass=True)
                               for o in group.outputs if o.bytes < target)
    except Cancelled as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one partition's trouble must not stop the others
        result.error = f"{type(exc).__name__}: {exc}"
        logs.get_logger().error(
            logs.COMPACTION_FAILED, partition=result.partition,
            transient=is_transient(exc), error=repr(exc),
            traceback=None if is_transient(exc) else traceback.format_exc())
    result.duration_ms = round((time.monotonic() - started) * 1000, 3)
    return result


# --- merging ----------------------------------------------------------------------------------
def merge_group(store: MergeStore, pending: deque[Source], target: int, bpr: list[float],
                clock: Clock, check: Callable[[], None], max_sources: int | None = None) -> Group:
    """Consumes sources from `pending` and writes them, sorted by SORT_KEYS, into staged merged files.

    Memory holds about one merged file's worth of rows: sources are read until their rows
    should fill one file, sorted, and written a row group at a time until the file reaches
    the target; the rows left over wait, sorted, for the next file. A file that runs out
    of rows before the target while sources remain is discarded and rewritten with more
    rows (rare: when the guess of bytes per row was too high); each retry reads at least
    one more source, so it ends. At most MAX_FILES_PER_TRANSACTION files are started from
    fresh sources, and at most `max_sources` sources are read.
    """
    group = Group()
    inputs_of: list[list[str]] = []        # per source index: the inputs whose rows it holds
    buffer: pa.Table | None = None
    stamp = clock().isoformat()

    def may_read() -> bool:
        return (bool(pending) and len(group.outputs) < MAX_FILES_PER_TRANSACTION
                and (max_sources is None or len(group.sources) < max_sources))

    try:
        while True:
            tables = [buffer] if buffer is not None else []
            rows = buffer.num_rows if buffer is not None else 0
            need = math.ceil(READ_AHEAD * target / bpr[0])
            while rows < need and may_read():
                check()
                src = pending.popleft()
                table, inputs = _read_source(store, src, len(group.sources))
                group.sources.append(src)
                inputs_of.append(inputs)
                tables.append(table)
                rows += table.num_rows
            last = not may_read()
            if rows == 0:
                break
            table = pa.concat_tables(tables)
            del tables
            order = pc.sort_indices(table, sort_keys=SORT_KEYS)
            # The file takes its rows from this table only, so its inputs are among the
            # table's; the schema metadata must be known before the first row group.
            inputs = sorted({sha for i in pc.unique(table[_SRC]).to_pylist() for sha in inputs_of[i]})
            out = _MergedFile(store.create(f"{MERGED_PREFIX}{uuid.uuid4().hex}.parquet"),
                              {META_INPUT_SHAS: orjson.dumps(inputs), META_COMPACTED_AT: stamp.encode()})
            rg_rows = max(1, min(MAX_ROW_GROUP_ROWS, int(target / ROW_GROUPS_PER_FILE / bpr[0])))
            done = 0
            try:
                while done < rows and out.at_least < target:
                    check()
                    # Near the target, smaller slices: the file ends just past it.
                    per_row = out.written / out.rows if out.rows else bpr[0]
                    n = min(rg_rows, max(1, rg_rows // 16,
                                         math.ceil((target - out.at_least) / per_row)))
                    part = table.take(order.slice(done, n))
                    out.write(part)
                    done += part.num_rows
            except BaseException:
                out.abort()
                raise
            if out.at_least < target and not last:
                # Not full, and more sources to read: learn the real row size and redo it.
                bpr[0] = max(1.0, out.written / done)
                out.abort()
                buffer = table
                continue
            try:
                size = out.close()
            except BaseException:
                out.abort()  # a failed footer, fsync or upload (disk full): nothing of it may stay
                raise
            group.outputs.append(Merged(out.staging.final, out.staging.staged, out.rows, size, inputs))
            bpr[0] = max(1.0, size / out.rows)
            buffer = table.take(order.slice(done)) if done < rows else None
            del table, order
            if buffer is None and last:
                break
    except BaseException:
        _discard(store, group.outputs)
        raise
    return group


def _read_source(store: MergeStore, src: Source, index: int) -> tuple[pa.Table, list[str]]:
    """One listed file (never a directory scan), in the clean schema, tagged with its index."""
    pf = pq.ParquetFile(store.open_source(src))
    inputs = [src.input_sha256] if src.input_sha256 else _inputs_of_merged(pf)
    table = pf.read(columns=CLEAN_SCHEMA.names).cast(CLEAN_SCHEMA)
    if table.num_rows != src.rows:
        raise ValueError(f"{src.name} holds {table.num_rows} rows, the ledger says {src.rows}")
    return table.append_column(_SRC, pa.repeat(pa.scalar(index, pa.int32()), table.num_rows)), inputs


def _inputs_of_merged(pf: pq.ParquetFile) -> list[str]:
    raw = (pf.schema_arrow.metadata or {}).get(META_INPUT_SHAS)
    return list(orjson.loads(raw)) if raw else []


class _MergedFile:
    """One merged file under its staging name, grown a row group at a time, made durable on close."""

    def __init__(self, staging: StagedOutput, metadata: dict[bytes, bytes]) -> None:
        self.staging = staging
        self.rows = 0
        schema = CLEAN_SCHEMA.with_metadata(metadata)
        # Part of the footer is known now: the schema (base64, with its metadata) and the
        # metadata again as key-value pairs. The rest grows a little with each row group.
        self._footer_floor = (4 * math.ceil(schema.serialize().size / 3)
                              + sum(len(k) + len(v) for k, v in metadata.items()))
        try:
            self._writer = pq.ParquetWriter(
                staging.stream, schema, compression=PARQUET_COMPRESSION,
                use_dictionary=DICTIONARY_COLUMNS,
                sorting_columns=[pq.SortingColumn(CLEAN_SCHEMA.get_field_index("ts"))])
        except BaseException:
            staging.abort()
            raise

    @property
    def written(self) -> int:
        return int(self.staging.stream.tell())   # each row group reaches the stream as it is written

    @property
    def at_least(self) -> int:
        """The size the file will have at least once closed."""
        return self.written + self._footer_floor

    def write(self, part: pa.Table) -> None:
        self._writer.write_table(part.drop_columns([_SRC]), row_group_size=part.num_rows)
        self.rows += part.num_rows

    def close(self) -> int:
        """Writes the footer and makes the file durable; returns its size in bytes."""
        self._writer.close()
        return self.staging.finish()

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001, S110 - the staged file is removed anyway
            pass
        self.staging.abort()


def _discard(store: MergeStore, outputs: list[Merged]) -> None:
    """Removes staged merged files that will not be committed (start-up would, too)."""
    for o in outputs:
        store.discard(o)


# --- `logwatchd compact` ----------------------------------------------------------------------
def cli_compact(config: Config, date: str | None) -> int:
    """One pass now; prints one JSON line per compacted partition. Exit 0, 1 on failure, 2 bad --date."""
    if date is not None and not valid_date(date):
        print(f"logwatchd: --date: must be a date written YYYY-MM-DD, got {date!r}", file=sys.stderr)
        return 2
    from .runtime import open_runtime

    logs.configure(config.logging.level, config.logging.format, stream=sys.stderr)
    rt = open_runtime(config)
    try:
        results = run_pass(config, rt.ledger, date=date)
    finally:
        rt.close()
    for r in results:
        sys.stdout.buffer.write(orjson.dumps(r.summary()) + b"\n")
    sys.stdout.flush()
    return 0 if all(r.ok for r in results) else 1


# --- a pass in a process of its own (the daemon's way) -----------------------------------
class _MetricsPipe:
    """What run_pass reports to `metrics`, sent to the daemon instead."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def compaction_done(self, *figures: Any) -> None:
        self.conn.send(figures)


def _pass_main(config: Config, conn: Any, cancel: Any) -> None:
    die_with_parent()
    ignore_stop_signals()  # the forkserver hands SIGINT's handler back to its children
    logs.configure(config.logging.level, config.logging.format)
    ledger = Ledger.open(config.paths.ledger, root=config.paths.root)
    try:
        run_pass(config, ledger, metrics=_MetricsPipe(conn), cancel=cancel)
    finally:
        ledger.close()
        conn.close()


def run_in_process(config: Config, metrics: Any, stop: threading.Event) -> None:
    """Runs one pass in a child process; its figures go to `metrics` as they come.

    Setting `stop` asks the pass to end (it does within about a row group); the child's
    partitions are published or abandoned exactly as in-process (see run_pass). Raises
    RuntimeError when the child exits with an error.
    """
    ctx = context()
    ours, theirs = ctx.Pipe(duplex=False)
    cancel = ctx.Event()
    proc = ctx.Process(target=_pass_main, args=(config, theirs, cancel),
                       name="logwatchd-compaction", daemon=True)
    proc.start()
    theirs.close()
    try:
        while True:
            if stop.is_set():
                cancel.set()
            if ours.poll(0.2):
                try:
                    figures = ours.recv()
                except EOFError:
                    break
                if metrics is not None:
                    metrics.compaction_done(*figures)
            elif not proc.is_alive():
                break
    finally:
        proc.join(30 if not stop.is_set() else 5)
        if proc.is_alive():
            proc.kill()
            proc.join(1)
        ours.close()
    if proc.exitcode != 0:
        raise RuntimeError(f"the compaction process exited with {proc.exitcode}")
