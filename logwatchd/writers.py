"""The Parquet and JSON Lines writers of one input's outputs, over a `storage.Store`.

On a local directory nothing is written under a final name directly: parts are staged
(hidden, `.tmp`), fsynced, and published by the ledger's rename, so a crash leaves at most
hidden staging files, which recovery removes or publishes according to the ledger. On S3
each part is written at its final key and appears whole when its upload completes.
"""

from __future__ import annotations

import bisect
import functools
import os
import posixpath
import re
import sys
from array import array
from collections import OrderedDict
from collections.abc import Container, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .durable import SYNC_THREADS
from .failpoints import failpoint
from .layout import (
    DICTIONARY_COLUMNS,
    PARQUET_COMPRESSION,
    PARTITION_KEY,
    SMALL_PART_COMPRESSION,
    SMALL_PART_ROWS,
    clean_path,
    is_staging_name,
    part_name,
)
from .storage import OutputFile, Store, as_store

if TYPE_CHECKING:  # imported where Parquet is written: a coordinating process never needs it
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["DICTIONARY_COLUMNS", "PARQUET_COMPRESSION", "JsonlOutput", "PartitionedParquet",
           "WrittenPart", "iter_staging_files", "writer_cap"]


class JsonlOutput:
    """An append-only JSON Lines output (an input's error lines), durable on close."""

    def __init__(self, store: Store, relative: str) -> None:
        self.store = store
        self.relative = relative
        self.file = store.create(relative)
        self.lines = 0
        self.size = 0   # bytes, once closed

    def write(self, lines: list[bytes]) -> None:
        if lines:
            self.file.stream.write(b"".join(lines))
            self.lines += len(lines)

    def close(self) -> int:
        """Makes it durable; returns the size in bytes."""
        self.size = self.file.close()
        self.store.sync()
        return self.size

    def abort(self) -> None:
        self.file.abort()


class WrittenPart(NamedTuple):
    """One closed Parquet part: durable, not yet published on a local store."""

    date: str
    name: str         # its file name in the date's partition (text: handed between processes)
    rows: int
    bytes: int


# A row group of this many rows is written as soon as one date has buffered it: DuckDB's
# own row-group size, and the most a date's buffer holds.
ROW_GROUP_ROWS = 122_880
# A date's rows set aside are written at the end in row groups of about this many rows:
# what is held while one is encoded (~20 MB), half DuckDB's size, far from tiny.
MERGED_ROW_GROUP_ROWS = 65_536
# Rows buffered per process across all dates, in Arrow bytes. When they reach this, dates
# holding at least DIRECT_ROWS rows are written out as a row group of their part, and the
# others are set aside in the spill file: bounds memory whatever the number of dates.
BUFFER_BYTES = 16 << 20
DIRECT_ROWS = 16_384
# At the end of an input, a process that set nothing aside shares its buffered dates with
# the other processes (through its spill file) only when there are more than this many:
# few dates cost few parts, and setting rows aside costs disk space.
SHARE_MIN_DATES = 64
# Rows per record batch of a spill file: while its dates are written, one batch of each
# run set aside (each time the buffer was) is held, ~150 KB.
SPILL_BATCH_ROWS = 512
# Small dates set aside (each under SMALL_PART_ROWS rows) are read back this many rows at a
# time, over a range of consecutive dates: one slice per run and range instead of one per
# run and date, one sort, then each date's part from one contiguous slice (~3 MB held,
# twice while sorted: 32,768 rows put ten-year 5M lines at 402 MB of PSS, over its bound).
BLOCK_ROWS = 8_192
# A spill file is written plain up to this size, then compressed with LZ4: the first is
# cheaper in CPU (one-year 1M lines ~10 % faster), the second bounds the disk it takes.
SPILL_PLAIN_BYTES = 256 << 20
# Open Parquet writers per process: each holds a descriptor and ~45 KB; at most this many,
# and never more than a quarter of the soft RLIMIT_NOFILE.
MAX_OPEN_WRITERS = 512
# Finished parts are handed to the sync threads this many at a time (fewer when the
# descriptors are few, see `PartitionedParquet._finish`): one task per part costs the
# writing process ~0.1 ms in hand-overs, a tenth of a small part's whole write.
SYNC_BATCH = 16


def spill_path(store: Store, file_stem: str) -> Path:
    """Where the writer of `file_stem` sets rows aside (a hidden staging name)."""
    return store.scratch(f".{file_stem}.spill.tmp")


def release_memory() -> None:
    """Hands the C heap's free pages back to the system (glibc's malloc_trim).

    Arrow buffers (the system allocator) and large Python objects come from the C heap,
    whose freed pages glibc keeps for reuse; the buffered rows of a wide input are freed
    in large, scattered pieces, so a process's footprint would stay at its high-water
    mark. Elsewhere (another C library) this does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_SYNC_POOL: ThreadPoolExecutor | None = None


def _sync_pool() -> ThreadPoolExecutor:
    """This process's threads that close finished parts (created on first use)."""
    global _SYNC_POOL
    if _SYNC_POOL is None:
        _SYNC_POOL = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="logwatchd-sync")
    return _SYNC_POOL


def _close_in_turn(outs: list[OutputFile]) -> list[int]:
    """Closes (flush, fsync) finished parts one after the other; their sizes. Every one is
    closed even when one fails (the first failure is raised after)."""
    sizes: list[int] = []
    failure: BaseException | None = None
    for out in outs:
        try:
            sizes.append(out.close())
        except BaseException as exc:  # noqa: BLE001 - raised below, once the rest are closed
            failure = failure or exc
            sizes.append(-1)
    if failure is not None:
        raise failure
    return sizes


def raise_nofile_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit where allowed; returns the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # not allowed here: the current soft limit it is
    return soft


def writer_cap() -> int:
    """How many Parquet writers this process may keep open at once."""
    return max(4, min(MAX_OPEN_WRITERS, raise_nofile_limit() // 4))


class SpillRun(NamedTuple):
    """One chunk's rows set aside, in date order: its dates (ascending), where each date's
    rows start (`starts[i]` to `starts[i + 1]`), and its record batches in the file (the
    first one's number, and the row where each begins). Arrays, not objects per date: an
    input spanning thousands of dates sets thousands of runs aside."""

    days: list[str]
    starts: array[int]
    first_batch: int
    batch_starts: array[int]   # row of each batch in the run, and the run's rows at the end


class SpillIndex(NamedTuple):
    """A finished spill file: where it is, its record batches (offset, length), its runs.
    Picklable: a worker hands it to the worker that writes those dates (`PartitionedParquet.close`)."""

    path: str
    batches: array[int]   # offset, length, offset, length, ...
    runs: list[SpillRun]

    def rows(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            for i, day in enumerate(run.days):
                out[day] = out.get(day, 0) + run.starts[i + 1] - run.starts[i]
        return out


class SpillFile:
    """Rows set aside during an input, in an Arrow IPC stream of date-sorted runs.

    Read back one date at a time at the end, so that each date is written once, whatever
    the number of dates and however the input orders them. Locally it lives in the
    dataset's root under a hidden staging name (start-up removes one a crash left);
    elsewhere in the temporary directory.
    """

    def __init__(self, path: Path, schema: pa.Schema, plain_bytes: int | None = None) -> None:
        import pyarrow as pa

        self.path = path
        self.schema = schema
        self.plain_bytes = SPILL_PLAIN_BYTES if plain_bytes is None else plain_bytes
        self.batches: array[int] = array("q")
        self.runs: list[SpillRun] = []
        self._sink = pa.OSFile(str(path), "wb")
        self._compressed = False
        try:
            self._writer = self._stream(None)
        except BaseException:
            self.discard()
            raise
        self._done = False

    def _stream(self, compression: str | None) -> Any:
        """A stream writer on the file: batches are read back one message at a time, so a
        second writer (compressed) can follow the first on the same file."""
        import pyarrow as pa

        writer = pa.ipc.new_stream(self._sink, self.schema,
                                   options=pa.ipc.IpcWriteOptions(compression=compression))
        # The schema message goes out with the first batch: an empty one, never read.
        writer.write_batch(pa.RecordBatch.from_pylist([], schema=self.schema))
        return writer

    def add(self, run: SortedRows) -> None:
        """Appends date-sorted rows, in batches of at most SPILL_BATCH_ROWS rows."""
        first = len(self.batches) // 2
        if not self._compressed and self._sink.tell() >= self.plain_bytes:
            # Past the first SPILL_PLAIN_BYTES, LZ4: ~0.4x the size on disk, for ~10 % more CPU.
            self._compressed = True
            self._writer.close()  # its end-of-stream marker is never read
            self._writer = self._stream("lz4")
        batch_starts = array("q", [0])
        for batch in run.table.to_batches(max_chunksize=SPILL_BATCH_ROWS):
            offset = self._sink.tell()
            self._writer.write_batch(batch)
            self.batches.extend((offset, self._sink.tell() - offset))
            batch_starts.append(batch_starts[-1] + batch.num_rows)
        starts = array("q", (start for _day, start, _n in run.ranges))
        starts.append(run.table.num_rows)
        self.runs.append(SpillRun([sys.intern(day) for day, _s, _n in run.ranges], starts, first,
                                  batch_starts))

    @property
    def index(self) -> SpillIndex:
        """What the file holds so far."""
        return SpillIndex(str(self.path), self.batches, self.runs)

    def finish(self) -> SpillIndex:
        """Closes the file for reading (`SpillReader`); it stays until `discard`."""
        if not self._done:
            self._done = True
            self._writer.close()
            self._sink.close()
        return self.index

    def discard(self) -> None:
        try:
            self._sink.close()
        except OSError:
            pass  # flushing fails again on a full disk: the file goes anyway
        self.path.unlink(missing_ok=True)


class SpillReader:
    """Reads the rows of a finished spill file (this process's or another's) one date at a
    time, dates in increasing order: a cursor per run, and one batch of each run held."""

    def __init__(self, spill: SpillIndex, schema: pa.Schema) -> None:
        self.spill = spill
        self.schema = schema
        self.dates = {day for run in spill.runs for day in run.days}
        self._file: Any = None
        self._cursor = [0] * len(spill.runs)          # per run: its next date
        self._held: list[tuple[int, Any]] = [(-1, None)] * len(spill.runs)  # per run: (batch, rows)

    def _find(self, k: int, day: str) -> int:
        """The position of `day` in run k (advancing its cursor past earlier dates), or -1."""
        days, i = self.spill.runs[k].days, self._cursor[k]
        while i < len(days) and days[i] < day:
            i += 1
        self._cursor[k] = i
        return i if i < len(days) and days[i] == day else -1

    def counts(self) -> dict[str, int]:
        """Rows per date in the whole file."""
        return self.spill.rows()

    def rows(self, day: str) -> int:
        n = 0
        for k, run in enumerate(self.spill.runs):
            i = self._find(k, day)
            if i >= 0:
                n += run.starts[i + 1] - run.starts[i]
        return n

    def read(self, day: str) -> Iterator[pa.RecordBatch]:
        for k, run in enumerate(self.spill.runs):
            i = self._find(k, day)
            if i < 0:
                continue
            yield from self._slices(k, run.starts[i], run.starts[i + 1])

    def read_range(self, first: str, last: str, pos: dict[str, int],
                   out: list[pa.RecordBatch], labels: list[tuple[int, int]]) -> None:
        """Appends the rows of the dates from `first` to `last` (inclusive) to `out`, and
        (position of the date in `pos`, or -1 for a date not there; rows) to `labels`, in
        the order of those rows. The cursors move past `last`."""
        for k, run in enumerate(self.spill.runs):
            days = run.days
            i = bisect.bisect_left(days, first, self._cursor[k])
            j = bisect.bisect_right(days, last, i)
            self._cursor[k] = j
            if i == j:
                continue
            for d in range(i, j):
                labels.append((pos.get(days[d], -1), run.starts[d + 1] - run.starts[d]))
            out.extend(self._slices(k, run.starts[i], run.starts[j]))

    def _slices(self, k: int, start: int, end: int) -> Iterator[pa.RecordBatch]:
        """Rows [start, end) of run k, as slices of its batches."""
        run = self.spill.runs[k]
        b = bisect.bisect_right(run.batch_starts, start) - 1
        while start < end:
            batch = self._batch(k, run.first_batch + b)
            n = min(end, run.batch_starts[b + 1]) - start
            yield batch.slice(start - run.batch_starts[b], n)
            start += n
            b += 1

    def _batch(self, k: int, b: int) -> pa.RecordBatch:
        import pyarrow as pa

        held = self._held[k]
        if held[0] != b:
            if self._file is None:
                self._file = pa.OSFile(self.spill.path, "rb")
            offset, length = self.spill.batches[2 * b], self.spill.batches[2 * b + 1]
            message = pa.ipc.read_message(self._file.read_at(length, offset))
            held = self._held[k] = (b, pa.ipc.read_record_batch(message, self.schema))
        return held[1]

    def close(self) -> None:
        self._held = [(-1, None)] * len(self.spill.runs)
        if self._file is not None:
            self._file.close()
            self._file = None


class SortedRows:
    """Rows in date order (cast to the part schema), with (date, start, rows) of each date."""

    def __init__(self, table: pa.Table, ranges: list[tuple[str, int, int]]) -> None:
        self.table = table
        self.ranges = ranges
        self.dates = {day: (start, n) for day, start, n in ranges}

    def counts(self) -> dict[str, int]:
        return {day: n for day, (_start, n) in self.dates.items()}

    def rows(self, day: str) -> int:
        return self.dates[day][1] if day in self.dates else 0

    def read(self, day: str) -> Iterator[pa.RecordBatch]:
        if day in self.dates:
            start, n = self.dates[day]
            yield from self.table.slice(start, n).to_batches()

    def read_range(self, first: str, last: str, pos: dict[str, int],
                   out: list[pa.RecordBatch], labels: list[tuple[int, int]]) -> None:
        """As `SpillReader.read_range`."""
        inside = [(day, start, n) for day, start, n in self.ranges if first <= day <= last]
        if inside:
            labels.extend((pos.get(day, -1), n) for day, _start, n in inside)
            begin = inside[0][1]
            out.extend(self.table.slice(begin, inside[-1][1] + inside[-1][2] - begin).to_batches())


class PartitionedParquet:
    """Parquet parts per event date for one input: memory and open files bounded.

    Chunks' rows are buffered as they come, with a count per date. A date is written as a
    row group of its part as soon as it holds `ROW_GROUP_ROWS` rows. When the buffer holds
    `buffer_bytes`, its rows are sorted by date in one pass: the dates with at least
    `DIRECT_ROWS` rows are written the same way, the others are set aside in a spill file
    (`SpillFile`). At close, each date's rows set aside and still buffered are written,
    one date at a time, to its part. So an input spanning thousands of dates gives one
    part per date with real row groups and one writer open at a time for the small dates;
    busy dates keep a writer open, at most `max_open` of them (the least recently used one
    is closed, and the date's next rows go to a new part).

    Names are deterministic for a given input and worker (`layout.part_name`):
    `<stem>.parquet`, then `<stem>-1.parquet`, ... so that a retry after a crash overwrites
    the same names.
    """

    def __init__(self, clean: Path | Store, file_stem: str, schema: pa.Schema,
                 buffer_bytes: int = BUFFER_BYTES, max_open: int | None = None) -> None:
        self.store: Store = as_store(clean)
        self.file_stem = file_stem
        self.schema = schema
        self.buffer_bytes = buffer_bytes
        self.max_open = max_open or self.store.max_writers or writer_cap()
        # date -> open writer, its output and its relative path; insertion order is the LRU order
        self._open: OrderedDict[str, tuple[pq.ParquetWriter, OutputFile, str]] = OrderedDict()
        self._rows: dict[str, int] = {}        # rows per part (open or closed)
        self._closed: list[WrittenPart] = []   # durable
        # Parts closed, waiting for their fsync: handed to the sync threads in batches
        # (`_unsynced` until a batch is full), each batch's future with its parts' (date, relative).
        self._unsynced: list[tuple[OutputFile, str, str]] = []
        self._closing: list[tuple[Future[list[int]], list[tuple[str, str]]]] = []
        self._files: list[OutputFile] = []     # every part opened (abort drops them)
        self._parts: dict[str, int] = {}       # date -> parts opened so far
        self._spill: SpillFile | None = None
        self._handed = False                   # the spill file was handed over (`hand_over`)
        # Buffered rows: chunks' tables as they came (with their `date` column), each with
        # its dates, and the rows buffered per date.
        self._held: list[tuple[pa.Table, set[str]]] = []
        self._buffered_rows: dict[str, int] = {}
        self._held_bytes = 0

    @property
    def rows(self) -> dict[str, int]:
        """Rows written, set aside or buffered per date."""
        out = dict(self._buffered_rows)
        if self._spill is not None:
            for day, n in self._spill.index.rows().items():
                out[day] = out.get(day, 0) + n
        written = [(p.date, p.rows) for p in self._closed]
        written += [(day, self._rows[rel]) for _o, day, rel in self._unsynced]
        written += [(day, self._rows[rel]) for _f, parts in self._closing for day, rel in parts]
        written += [(d, self._rows[r]) for d, (_w, _o, r) in self._open.items()]
        for day, n in written:
            out[day] = out.get(day, 0) + n
        return out

    def relative_path(self, day: str, part: int = 0) -> str:
        return clean_path(day, part_name(self.file_stem, part))

    def write_chunk(self, table: pa.Table) -> None:
        """Buffers a chunk's rows (with their `date` column); writes what is due."""
        import pyarrow.compute as pc

        if not table.num_rows:
            return
        counts = pc.value_counts(table[PARTITION_KEY]).to_pylist()
        self._held.append((table, {c["values"] for c in counts}))
        self._held_bytes += table.nbytes
        due = []
        for c in counts:
            day = c["values"]
            n = self._buffered_rows[day] = self._buffered_rows.get(day, 0) + c["counts"]
            if n >= ROW_GROUP_ROWS:
                due.append(day)
        for day in due:
            self._write_rows(day, self._take(day))
        if self._held_bytes >= self.buffer_bytes:
            self._relieve()

    def _take(self, day: str) -> pa.Table:
        """One date's buffered rows, cast to the schema; taken out of the buffer."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts, kept = [], []
        for table, days in self._held:
            if day not in days:
                kept.append((table, days))
                continue
            self._held_bytes -= table.nbytes
            if len(days) == 1:
                parts.append(table)
                continue
            mask = pc.equal(table[PARTITION_KEY], day)
            parts.append(table.filter(mask))
            rest = table.filter(pc.invert(mask))
            kept.append((rest, days - {day}))
            self._held_bytes += rest.nbytes
        self._held = kept
        self._buffered_rows.pop(day)
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        return table.drop_columns([PARTITION_KEY]).cast(self.schema)

    def _runs(self) -> Iterator[SortedRows]:
        """The buffered rows in date order (at most one run), the buffer emptied.

        One sort of the whole buffer: its rows are copied once, in date order, and the
        chunks' tables are released before the run is used.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self._held:
            return
        table = pa.concat_tables([t for t, _days in self._held])
        dates = len(self._buffered_rows)
        self._held, self._held_bytes, self._buffered_rows = [], 0, {}
        if dates > 1:
            # By the dates as date32 (a stable sort of integers, ~8x faster than of strings).
            table = table.take(pc.sort_indices(table[PARTITION_KEY].cast(pa.date32())))
        ranges, start = [], 0
        for c in pc.value_counts(table[PARTITION_KEY]).to_pylist():  # in order of appearance
            ranges.append((c["values"], start, c["counts"]))
            start += c["counts"]
        run = SortedRows(table.drop_columns([PARTITION_KEY]).cast(self.schema), ranges)
        del table
        yield run

    def _relieve(self) -> None:
        """Empties the buffer: busy dates written as row groups, the others set aside."""
        import pyarrow as pa

        busy_days = {d for d, n in self._buffered_rows.items() if n >= DIRECT_ROWS}
        busy: dict[str, list[pa.Table]] = {}
        for run in self._runs():
            quiet = [r for r in run.ranges if r[0] not in busy_days]
            for day, start, n in run.ranges:
                if day in busy_days:
                    busy.setdefault(day, []).append(run.table.slice(start, n))
            if not quiet:
                continue
            if len(quiet) < len(run.ranges):  # the quiet dates' rows, still in date order
                pieces, ranges, at = [], [], 0
                for day, start, n in quiet:
                    pieces.append(run.table.slice(start, n))
                    ranges.append((day, at, n))
                    at += n
                run = SortedRows(pa.concat_tables(pieces), ranges)
            if self._spill is None:
                self._spill = SpillFile(spill_path(self.store, self.file_stem), self.schema)
            self._spill.add(run)
        for day in [d for d in self._open if d in busy] + sorted(d for d in busy if d not in self._open):
            pieces = busy.pop(day)
            self._write_rows(day, pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces))
        release_memory()

    def hand_over(self) -> tuple[SpillIndex | None, list[str]]:
        """Ends the input's rows here: what is buffered is written or set aside, the spill
        file finished. Returns it (for whichever process writes its dates, see `close`)
        and the dates with an open part here.

        Rows are set aside only where that pays: when some already were, or when the
        buffer spans more than SHARE_MIN_DATES dates. Otherwise each date buffered here
        is written here, to a part of its own (at most one per process and date).
        The spill file then belongs to the caller: `close` leaves it, `abort` removes it.
        """
        if self._spill is None and len(self._buffered_rows) <= SHARE_MIN_DATES:
            for run in self._runs():
                for day, start, n in run.ranges:
                    self._write_rows(day, run.table.slice(start, n))
        self._relieve()
        self._handed = True
        spill = self._spill.finish() if self._spill is not None else None
        return spill, sorted(self._open)

    def _write_rows(self, day: str, table: pa.Table, total: int | None = None) -> None:
        """Writes rows of a date as one row group; `total`: all the rows its part will get."""
        writer, _out, rel = self._writer(day, total)
        writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._rows[rel] += table.num_rows

    def _writer(self, day: str, total: int | None = None) -> tuple[pq.ParquetWriter, OutputFile, str]:
        import pyarrow.parquet as pq

        entry = self._open.get(day)
        if entry is not None:
            self._open.move_to_end(day)
            return entry
        while len(self._open) >= self.max_open:
            self._finish(*self._open.popitem(last=False))
        part = self._parts.get(day, 0)
        self._parts[day] = part + 1
        rel = self.relative_path(day, part)
        # An open stream handed to the writer: ~0.5 ms less per file than a path, and a
        # local file's descriptor is fsynced before it is closed.
        out = self.store.create(rel, arrow=True)
        self._files.append(out)
        try:
            small = total is not None and total < SMALL_PART_ROWS
            writer = pq.ParquetWriter(out.stream, self.schema,
                                      compression=SMALL_PART_COMPRESSION if small else PARQUET_COMPRESSION,
                                      use_dictionary=DICTIONARY_COLUMNS)
        except BaseException:
            out.abort()
            raise
        self._rows[rel] = 0
        entry = self._open[day] = (writer, out, rel)
        return entry

    def _finish(self, day: str, entry: tuple[pq.ParquetWriter, OutputFile, str]) -> None:
        """Closes one part: its footer written here, its data made durable by a sync thread;
        it is final from now on."""
        writer, out, rel = entry
        try:
            writer.close()
        except BaseException:
            out.abort()
            raise
        failpoint("parquet.part_closed")
        self._unsynced.append((out, day, rel))
        if len(self._unsynced) < max(1, min(SYNC_BATCH, self.max_open // 4)):
            return
        self._hand_to_sync()
        # A part being synced holds its descriptor until it is closed: no more of them than
        # writers may be open (a quarter of the descriptors), however slow the disk.
        limit = min(4 * SYNC_THREADS, self.max_open)
        if self._syncing() >= limit:
            self._collect(block=False)
            while self._syncing() >= limit:
                self._closing[0][0].result()
                self._collect(block=False)

    def _hand_to_sync(self) -> None:
        """Hands the parts closed so far to a sync thread, as one task: one per part would
        cost the writing thread more in hand-overs than the part's own write."""
        if self._unsynced:
            outs = [out for out, _day, _rel in self._unsynced]
            parts = [(day, rel) for _out, day, rel in self._unsynced]
            self._closing.append((_sync_pool().submit(_close_in_turn, outs), parts))
            self._unsynced = []

    def _syncing(self) -> int:
        return sum(len(parts) for _f, parts in self._closing)

    def _collect(self, block: bool = True) -> None:
        """Parts whose sync is done join the closed ones (all of them when `block`);
        the first failure is raised."""
        if block:
            self._hand_to_sync()
        pending = []
        for future, parts in self._closing:
            if block or future.done():
                for (day, rel), size in zip(parts, future.result(), strict=True):
                    self._closed.append(WrittenPart(day, posixpath.basename(rel), self._rows[rel], size))
            else:
                pending.append((future, parts))
        self._closing = pending

    def close(self, mine: Container[str] | None = None,
              others: Sequence[SpillIndex] = ()) -> list[WrittenPart]:
        """Writes every date's rows set aside and buffered, closes every part and makes it durable.

        After `hand_over`, the processes of one input share the dates out: this one writes
        the dates in `mine` from its own spill file and the `others`, and closes its open
        parts of the rest as they are.
        """
        spill = self._spill
        readers: list[SpillReader | SortedRows] = [SpillReader(s, self.schema) for s in others]
        if spill is not None:
            readers.insert(0, SpillReader(spill.finish(), self.schema))
        readers.extend(self._runs())
        try:
            days: set[str] = set()
            for r in readers:
                days.update(r.dates)
            if mine is not None:
                days = {d for d in days if d in mine}
            totals: dict[str, int] = {}
            for r in readers:
                for day, n in r.counts().items():
                    totals[day] = totals.get(day, 0) + n
            order = sorted(days | set(self._open))
            k = 0
            while k < len(order):
                j, rows = k, 0
                while (j < len(order) and order[j] in days and order[j] not in self._open
                       and totals[order[j]] < SMALL_PART_ROWS and (j == k or rows + totals[order[j]] <= BLOCK_ROWS)):
                    rows += totals[order[j]]
                    j += 1
                if j > k:  # small dates, consecutive here: read back together
                    self._write_block(order[k:j], readers)
                    k = j
                    continue
                day = order[k]
                k += 1
                if day in days:
                    rows = sum(r.rows(day) for r in readers)
                    self._write_batches(day, chain.from_iterable(r.read(day) for r in readers),
                                        None if day in self._open else rows)
                entry = self._open.pop(day, None)
                if entry is not None:
                    self._finish(day, entry)
        finally:
            for r in readers:
                if isinstance(r, SpillReader):
                    r.close()
        if spill is not None and not self._handed:
            spill.discard()
        self._spill = None
        self._collect()
        self.store.sync()
        out, self._closed, self._files = self._closed, [], []
        release_memory()
        return out

    def _write_block(self, block: list[str], readers: Sequence[SpillReader | SortedRows]) -> None:
        """Small dates, consecutive among this process's dates, each to a part of its own:
        their rows read back at once (one slice per run), put in date order by one stable
        sort (each date's rows keep their order), and written from one contiguous slice each.
        Rows of dates in that range that are not this process's are dropped here."""
        import pyarrow as pa
        import pyarrow.compute as pc

        pos = {day: j for j, day in enumerate(block)}
        pieces: list[pa.RecordBatch] = []
        labels: list[tuple[int, int]] = []
        for r in readers:
            r.read_range(block[0], block[-1], pos, pieces, labels)
        table = pa.Table.from_batches(pieces, schema=self.schema)
        codes: list[int] = []
        counts = [0] * len(block)
        for j, n in labels:
            codes.extend([j] * n)
            if j >= 0:
                counts[j] += n
        code = pa.array(codes, pa.int32())
        if len(block) == 1 and len(labels) == 1:
            pass  # one slice of one date: already in order
        else:
            if any(j < 0 for j, _n in labels):
                keep = pc.greater_equal(code, 0)
                table, code = table.filter(keep), code.filter(keep)
            table = table.take(pc.sort_indices(code))
        del pieces
        start = 0
        for j, day in enumerate(block):
            n = counts[j]
            if n:
                self._write_rows(day, table.slice(start, n), n)
                start += n
            entry = self._open.pop(day, None)
            if entry is not None:
                self._finish(day, entry)

    def _write_batches(self, day: str, batches: Iterable[pa.RecordBatch], total: int | None) -> None:
        """One date's batches (`total` rows, if known), in row groups of about
        `MERGED_ROW_GROUP_ROWS` rows."""
        import pyarrow as pa

        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= MERGED_ROW_GROUP_ROWS:
                self._write_rows(day, pa.Table.from_batches(pending, schema=self.schema), total)
                pending, rows = [], 0
        if rows:
            table = pa.Table.from_batches(pending, schema=self.schema)
            if len(pending) > 1 and rows < SMALL_PART_ROWS:
                # A small date arrives in many slices (one per run and spill file): one
                # chunk per column is written ~0.4 ms faster than 30 small ones.
                table = table.combine_chunks()
            self._write_rows(day, table, total)

    def abort(self) -> None:
        """Drops every part of this input, open or closed."""
        self._held, self._held_bytes = [], 0
        self._buffered_rows.clear()
        if self._spill is not None:
            self._spill.discard()
            self._spill = None
        for writer, _out, _rel in self._open.values():
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 - best effort: the part is dropped anyway
                pass
        self._open.clear()
        for future, _parts in self._closing:
            try:
                future.result()
            except Exception:  # noqa: BLE001, S110 - dropped below either way
                pass
        self._closing, self._unsynced = [], []
        for out in self._files:
            out.abort()
        self._files, self._closed = [], []


def remove_staged_parts(root: Path, stem: str) -> int:
    """Deletes the staged Parquet parts of the input named `stem` under a local dataset
    (`.<stem>-<worker>[-<n>].parquet.tmp` in any partition); returns how many."""
    pattern = re.compile(rf"\.{re.escape(stem)}-[0-9]+(?:-[0-9]+)?\.parquet\.tmp")
    removed = 0
    if not root.is_dir():
        return 0
    for entry in os.scandir(root):
        if not entry.is_dir(follow_symlinks=False):
            continue
        for sub in os.scandir(entry.path):
            if pattern.fullmatch(sub.name):
                try:
                    os.unlink(sub.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def iter_staging_files(*roots: Path) -> Iterator[Path]:
    """Every hidden staging file under the given output roots (one level of partitions)."""
    for root in roots:
        if not root.is_dir():
            continue
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                for sub in os.scandir(entry.path):
                    if is_staging_name(sub.name):
                        yield Path(sub.path)
            elif is_staging_name(entry.name):
                yield Path(entry.path)
