"""Durable output: staged files (hidden, `.tmp`) fsynced, then published by rename + directory fsync.

Nothing is written under a final name directly; a crash leaves at most hidden staging
files, which recovery removes or publishes according to the ledger.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .durable import ensure_dir, fsync_close, fsync_dir, is_staging_name, staged_name
from .records import clean_schema, group_by_date

if TYPE_CHECKING:  # imported where Parquet is written: a coordinating process never needs it
    import pyarrow as pa
    import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"
# Dictionary encoding pays only for columns with few distinct values per row group; on
# the others (attributes, ts, source_line, user_id) it is tried, then abandoned, at a cost.
DICTIONARY_COLUMNS = ["timestamp", "day_of_week", "action", "source_file"]
META_INPUT_SHA = b"logwatchd.input_sha256"
META_SOURCE_FILE = b"logwatchd.source_file"


class StagedJsonl:
    """An append-only staged JSON Lines file, fsynced on close."""

    def __init__(self, final: Path) -> None:
        ensure_dir(final.parent)
        self.final = final
        self.staged = staged_name(final)
        self._fh = open(self.staged, "wb")  # noqa: SIM115 - appended to until close()/abort()
        self.lines = 0

    def write(self, lines: list[bytes]) -> None:
        if lines:
            self._fh.write(b"".join(lines))
            self.lines += len(lines)

    def close(self) -> int:
        """Flushes and fsyncs; returns the size in bytes."""
        return fsync_close(self._fh)

    def abort(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass  # closing flushes, which fails again on a full disk
        self.staged.unlink(missing_ok=True)


def parquet_schema(input_sha: str, source_file: str) -> pa.Schema:
    """The clean schema, carrying the input's SHA-256 so the ledger can be rebuilt from files."""
    return clean_schema().with_metadata({
        META_INPUT_SHA: input_sha.encode(),
        META_SOURCE_FILE: source_file.encode("utf-8", "surrogateescape"),
    })


# A row group of this many rows is written as soon as one date has buffered it: DuckDB's
# own row-group size, and the most a date's buffer holds.
ROW_GROUP_ROWS = 122_880
# Rows buffered per process across all dates, in Arrow bytes, before every buffer is
# written out as one row group per date: bounds memory whatever the number of dates.
BUFFER_BYTES = 32 << 20
# Open Parquet writers per process: each holds a descriptor and ~45 KB; at most this many,
# and never more than a quarter of the soft RLIMIT_NOFILE.
MAX_OPEN_WRITERS = 512


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


class PartitionedParquet:
    """Staged Parquet files per event date for one input: memory and descriptors bounded.

    Rows are buffered per date and written in large row groups: a date's buffer once it
    holds `ROW_GROUP_ROWS` rows, every buffer once all of them hold `buffer_bytes`. At most
    `max_open` writers are open; the least recently used one is closed (its file is then
    final) and that date's next rows go to a new part. Names are deterministic for a given
    input and worker: `<stem>.parquet`, then `<stem>-1.parquet`, `<stem>-2.parquet`, ...
    so that a retry after a crash overwrites the same staged names.
    """

    def __init__(self, clean_dir: Path, file_stem: str, schema: pa.Schema,
                 buffer_bytes: int = BUFFER_BYTES, max_open: int | None = None) -> None:
        self.clean_dir = clean_dir
        self.file_stem = file_stem
        self.schema = schema
        self.buffer_bytes = buffer_bytes
        self.max_open = max_open if max_open is not None else writer_cap()
        # date -> open writer and its final path; insertion order is the LRU order
        self._open: OrderedDict[str, tuple[pq.ParquetWriter, pa.NativeFile, Path]] = OrderedDict()
        self._rows: dict[Path, int] = {}       # rows per part file (open or closed)
        self._closed: list[tuple[str, Path, int, int]] = []  # (date, final, rows, bytes), fsynced
        self._files: list[Path] = []           # every part opened (abort removes them)
        self._made: set[str] = set()           # partition directories known to exist
        self._new_dirs = False                 # made some: the dataset's directory needs an fsync
        self._parts: dict[str, int] = {}       # date -> parts opened so far
        # Buffered rows: the sorted tables of chunks (`group_by_date`) and, per date, its
        # ranges in them. A table is held until the last of its ranges is written; ranges,
        # not slices, because a slice costs ~2 KB of objects and a chunk spanning thousands of
        # dates would hold thousands of them.
        self._tables: dict[int, list[Any]] = {}      # id -> [table, ranges left, bytes]
        self._buffers: dict[str, list[tuple[int, int, int]]] = {}  # date -> [(id, start, rows)]
        self._buffered_rows: dict[str, int] = {}
        self._held = 0                                # bytes of the tables held
        self._next_id = 0

    @property
    def rows(self) -> dict[str, int]:
        """Rows written or buffered per date."""
        out = dict(self._buffered_rows)
        for day, final in [(d, f) for d, f, _r, _b in self._closed] + [(d, f) for d, (_w, _s, f) in self._open.items()]:
            out[day] = out.get(day, 0) + self._rows[final]
        return out

    def final_path(self, day: str, part: int = 0) -> Path:
        name = f"{self.file_stem}.parquet" if part == 0 else f"{self.file_stem}-{part}.parquet"
        return self.clean_dir / f"date={day}" / name

    def write_chunk(self, table: pa.Table) -> None:
        """Buffers a chunk's rows (with their `date` column); writes what is due."""
        ordered, ranges = group_by_date(table)
        self.write_ranges(ordered, ranges)

    def write(self, day: str, table: pa.Table) -> None:
        """Buffers one date's rows."""
        self.write_ranges(table, [(day, 0, table.num_rows)])

    def write_ranges(self, table: pa.Table, ranges: list[tuple[str, int, int]]) -> None:
        """Buffers the rows of `table` that `ranges` (date, start, rows) give to each date."""
        ranges = [r for r in ranges if r[2] > 0]
        if not ranges:
            return
        tid = self._next_id
        self._next_id += 1
        self._tables[tid] = [table, len(ranges), table.nbytes]
        self._held += table.nbytes
        for day, start, n in ranges:
            self._buffers.setdefault(day, []).append((tid, start, n))
            self._buffered_rows[day] = self._buffered_rows.get(day, 0) + n
        for day in [d for d, n in self._buffered_rows.items() if n >= ROW_GROUP_ROWS]:
            self._flush(day)
        if self._held >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Writes every buffered date as one row group: dates with an open writer first."""
        days = [d for d in self._open if d in self._buffers]
        days += sorted(d for d in self._buffers if d not in self._open)
        for day in days:
            self._flush(day)

    def _flush(self, day: str) -> None:
        import pyarrow as pa

        ranges = self._buffers.pop(day)
        n = self._buffered_rows.pop(day)
        writer, _sink, final = self._writer(day)
        parts = [self._tables[tid][0].slice(start, rows) for tid, start, rows in ranges]
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        writer.write_table(table.cast(self.schema), row_group_size=n)
        self._rows[final] += n
        del parts, table
        for tid, _start, _rows in ranges:
            entry = self._tables[tid]
            entry[1] -= 1
            if entry[1] == 0:
                self._held -= entry[2]
                del self._tables[tid]

    def _writer(self, day: str) -> tuple[pq.ParquetWriter, pa.NativeFile, Path]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        entry = self._open.get(day)
        if entry is not None:
            self._open.move_to_end(day)
            return entry
        while len(self._open) >= self.max_open:
            self._finish(*self._open.popitem(last=False))
        part = self._parts.get(day, 0)
        self._parts[day] = part + 1
        final = self.final_path(day, part)
        self._mkdir(final.parent)
        # An open file handed to the writer: ~0.5 ms less per file than a path, and its
        # descriptor is fsynced before it is closed.
        sink = pa.OSFile(str(staged_name(final)), "wb")
        try:
            writer = pq.ParquetWriter(sink, self.schema, compression=PARQUET_COMPRESSION,
                                      use_dictionary=DICTIONARY_COLUMNS)
        except BaseException:
            sink.close()
            raise
        self._rows[final] = 0
        self._files.append(final)
        entry = self._open[day] = (writer, sink, final)
        return entry

    def _mkdir(self, directory: Path) -> None:
        """A partition directory; the dataset directory is fsynced once, in `close`."""
        if directory.name in self._made:
            return
        if not self._made:
            ensure_dir(self.clean_dir)
        try:
            os.mkdir(directory)
            self._new_dirs = True
        except FileExistsError:
            pass
        self._made.add(directory.name)

    def _finish(self, day: str, entry: tuple[pq.ParquetWriter, pa.NativeFile, Path]) -> None:
        """Closes one part: its footer written, its data fsynced; it is final from now on."""
        writer, sink, final = entry
        try:
            writer.close()
            os.fsync(sink.fileno())
            size = sink.tell()
        finally:
            sink.close()
        self._closed.append((day, final, self._rows[final], size))

    def close(self) -> list[tuple[str, Path, int, int]]:
        """Writes what is buffered, closes and fsyncs every file: [(date, final path, rows, bytes)]."""
        self.flush()
        while self._open:
            self._finish(*self._open.popitem(last=False))
        if self._new_dirs:
            fsync_dir(self.clean_dir)
            self._new_dirs = False
        out, self._closed, self._files = self._closed, [], []
        return out

    def abort(self) -> None:
        self._buffers.clear()
        self._buffered_rows.clear()
        self._tables.clear()
        self._held = 0
        for writer, sink, _final in self._open.values():
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 - best effort: the staged file is removed anyway
                pass
            sink.close()
        self._open.clear()
        for final in self._files:
            staged_name(final).unlink(missing_ok=True)
        self._files, self._closed = [], []


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
