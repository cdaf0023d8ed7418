"""Durable output: staged files (hidden, `.tmp`) fsynced, then published by rename + directory fsync.

Nothing is written under a final name directly; a crash leaves at most hidden staging
files, which recovery removes or publishes according to the ledger.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .durable import ensure_dir, fsync_close, fsync_file, is_staging_name, staged_name
from .records import clean_schema

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


class PartitionedParquet:
    """One staged Parquet file per event date, for one input, grown a row group per batch."""

    def __init__(self, clean_dir: Path, file_stem: str, schema: pa.Schema) -> None:
        self.clean_dir = clean_dir
        self.file_stem = file_stem
        self.schema = schema
        self._writers: dict[str, tuple[pq.ParquetWriter, Path]] = {}  # date -> open writer
        self.rows: dict[str, int] = {}

    def final_path(self, day: str) -> Path:
        return self.clean_dir / f"date={day}" / f"{self.file_stem}.parquet"

    def write(self, day: str, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        entry = self._writers.get(day)
        if entry is None:
            final = self.final_path(day)
            ensure_dir(final.parent)
            staged = staged_name(final)
            writer = pq.ParquetWriter(staged, self.schema, compression=PARQUET_COMPRESSION,
                                      use_dictionary=DICTIONARY_COLUMNS)
            entry = self._writers[day] = (writer, final)
        entry[0].write_table(table.cast(self.schema))
        self.rows[day] = self.rows.get(day, 0) + table.num_rows

    def close(self) -> list[tuple[str, Path, int, int]]:
        """Closes and fsyncs every file: [(date, final path, rows, bytes)]."""
        out = []
        for day, (writer, final) in self._writers.items():
            writer.close()
            staged = staged_name(final)
            fsync_file(staged)
            out.append((day, final, self.rows[day], staged.stat().st_size))
        self._writers.clear()
        return out

    def abort(self) -> None:
        for writer, final in self._writers.values():
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 - best effort: the staged file is removed anyway
                pass
            staged_name(final).unlink(missing_ok=True)
        self._writers.clear()


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
