"""The Parquet and JSON Lines writers of one input's outputs, over a `storage.Store`.

On a local directory nothing is written under a final name directly: parts are staged
(hidden, `.tmp`), fsynced, and published by the ledger's rename, so a crash leaves at most
hidden staging files, which recovery removes or publishes according to the ledger. On S3
each part is written at its final key and appears whole when its upload completes.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, NamedTuple

from .layout import (
    DICTIONARY_COLUMNS,
    PARQUET_COMPRESSION,
    clean_path,
    is_staging_name,
    part_name,
)
from .records import group_by_date
from .storage import LocalDir, OutputFile, Store

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
    final: PurePath   # a Path under a local store; the key relative to an S3 prefix
    rows: int
    bytes: int


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
    """Parquet parts per event date for one input: memory and open files bounded.

    Rows are buffered per date and written in large row groups: a date's buffer once it
    holds `ROW_GROUP_ROWS` rows, every buffer once all of them hold `buffer_bytes`. At most
    `max_open` writers are open; the least recently used one is closed (its file is then
    final) and that date's next rows go to a new part. Names are deterministic for a given
    input and worker (`layout.part_name`): `<stem>.parquet`, then `<stem>-1.parquet`, ...
    so that a retry after a crash overwrites the same names.
    """

    def __init__(self, clean: Path | Store, file_stem: str, schema: pa.Schema,
                 buffer_bytes: int = BUFFER_BYTES, max_open: int | None = None) -> None:
        self.store: Store = LocalDir(clean) if isinstance(clean, Path) else clean
        self.file_stem = file_stem
        self.schema = schema
        self.buffer_bytes = buffer_bytes
        self.max_open = max_open or self.store.max_writers or writer_cap()
        # date -> open writer, its output and its relative path; insertion order is the LRU order
        self._open: OrderedDict[str, tuple[pq.ParquetWriter, OutputFile, str]] = OrderedDict()
        self._rows: dict[str, int] = {}        # rows per part (open or closed)
        self._closed: list[WrittenPart] = []   # durable
        self._files: list[OutputFile] = []     # every part opened (abort drops them)
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
        for day, n in [(p.date, p.rows) for p in self._closed] + \
                [(d, self._rows[r]) for d, (_w, _o, r) in self._open.items()]:
            out[day] = out.get(day, 0) + n
        return out

    def relative_path(self, day: str, part: int = 0) -> str:
        return clean_path(day, part_name(self.file_stem, part))

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
        writer, _out, rel = self._writer(day)
        parts = [self._tables[tid][0].slice(start, rows) for tid, start, rows in ranges]
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        writer.write_table(table.cast(self.schema), row_group_size=n)
        self._rows[rel] += n
        del parts, table
        for tid, _start, _rows in ranges:
            entry = self._tables[tid]
            entry[1] -= 1
            if entry[1] == 0:
                self._held -= entry[2]
                del self._tables[tid]

    def _writer(self, day: str) -> tuple[pq.ParquetWriter, OutputFile, str]:
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
            writer = pq.ParquetWriter(out.stream, self.schema, compression=PARQUET_COMPRESSION,
                                      use_dictionary=DICTIONARY_COLUMNS)
        except BaseException:
            out.abort()
            raise
        self._rows[rel] = 0
        entry = self._open[day] = (writer, out, rel)
        return entry

    def _finish(self, day: str, entry: tuple[pq.ParquetWriter, OutputFile, str]) -> None:
        """Closes one part: its footer written, its data durable; it is final from now on."""
        writer, out, rel = entry
        try:
            writer.close()
        except BaseException:
            out.abort()
            raise
        size = out.close()
        self._closed.append(WrittenPart(day, self.store.final(rel), self._rows[rel], size))

    def close(self) -> list[WrittenPart]:
        """Writes what is buffered, closes every part and makes it durable."""
        self.flush()
        while self._open:
            self._finish(*self._open.popitem(last=False))
        self.store.sync()
        out, self._closed, self._files = self._closed, [], []
        return out

    def abort(self) -> None:
        """Drops every part of this input, open or closed."""
        self._buffers.clear()
        self._buffered_rows.clear()
        self._tables.clear()
        self._held = 0
        for writer, _out, _rel in self._open.values():
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 - best effort: the part is dropped anyway
                pass
        self._open.clear()
        for out in self._files:
            out.abort()
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
