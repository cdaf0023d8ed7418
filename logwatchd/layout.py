"""The dataset's layout, in one place: partition paths, file, staging and sidecar names, the
clean schema and the metadata every Parquet file carries (SPEC §5).

The daemon's directories and the Lambda's S3 prefixes share it: a path here is relative to
the root of its kind of output (`clean/`, `errors/`, a `s3://bucket/prefix`), with `/`
between partition and name. Adding a column is one edit here plus `SCHEMA_VERSION`.

    clean/date=YYYY-MM-DD/<stem>-<worker>.parquet      rows of one input, one worker's part
    clean/date=YYYY-MM-DD/<stem>-<worker>-<n>.parquet  the same part rolled over (n = 1, 2, ...)
    errors/date=YYYY-MM-DD/<stem>.jsonl                error lines (by processing date)
    .<name>.tmp                                         a staged file, not yet published
    <name>.reason.json                                  why an entry was set aside

`<stem>` is the input's SHA-256 (`<sha256>-r<k>` for the k-th repeat of a content when
dedupe is off). Names starting with `.` or `_` are never data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # imported where Parquet is written: a coordinating process never needs it
    import pyarrow as pa

# --- partitions --------------------------------------------------------------------------
PARTITION_KEY = "date"
_PARTITION = re.compile(r"date=([0-9]{4}-[0-9]{2}-[0-9]{2})")


def partition(day: str) -> str:
    """The partition directory (or key segment) of a date: `date=YYYY-MM-DD`."""
    return f"{PARTITION_KEY}={day}"


def partition_date(name: str) -> str | None:
    """The date of a partition directory name, None for anything else."""
    m = _PARTITION.fullmatch(name)
    return m.group(1) if m else None


def is_data_name(name: str) -> bool:
    """False for names that readers skip (Hive convention: leading `.` or `_`)."""
    return not name.startswith((".", "_"))


# --- names of one input's outputs --------------------------------------------------------
def repeat_stem(sha256: str, seen: int) -> str:
    """The stem of a content's outputs, the `seen`-th time it is processed (dedupe off)."""
    return sha256 if not seen else f"{sha256}-r{seen}"


def part_stem(stem: str, worker: int) -> str:
    """The stem of one worker's Parquet part of an input (the Lambda has worker 0)."""
    return f"{stem}-{worker}"


def part_name(stem: str, n: int = 0) -> str:
    """A part's file name; `n` counts rollovers (a writer closed to bound open files)."""
    return f"{stem}.parquet" if n == 0 else f"{stem}-{n}.parquet"


def clean_path(day: str, name: str) -> str:
    """A clean file relative to the dataset's root."""
    return f"{partition(day)}/{name}"


def errors_path(day: str, stem: str) -> str:
    """An input's error lines relative to the errors root (`day` is the processing date)."""
    return f"{partition(day)}/{stem}.jsonl"


def stem_globs(stem: str) -> tuple[str, str]:
    """SQL LIKE patterns matching the outputs named after `stem`: its parts, its error file."""
    return f"%/{stem}-%.parquet", f"%/{stem}.jsonl"


# --- staging and sidecars ----------------------------------------------------------------
REASON_SUFFIX = ".reason.json"
# The inbox's hidden subdirectory holding the file being processed (`durable.take`): a
# writer that reopens the inbox name meanwhile creates a new file, never appends to it.
IN_HAND_DIR = ".logwatchd-in-hand"


def staged_name(final: Path) -> Path:
    """The hidden staging path of a final output, in the same directory (same filesystem)."""
    return final.with_name(f".{final.name}.tmp")


def is_staging_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def sidecar_name(name: str) -> str:
    """The reason file beside a quarantined, dead-lettered or refused entry."""
    return name + REASON_SUFFIX


def display_name(name: str) -> str:
    """A file name as valid UTF-8 text (undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def reason_json(reason: str, detail: str, at: str, sha: str | None, name: str) -> bytes:
    """The sidecar: why, when (`at`, ISO-8601 UTC), and the name as dropped (`file`; its
    bytes in hex as `file_bytes` when they are not UTF-8), which replay gives the file back."""
    doc: dict[str, Any] = {"reason": reason, "detail": detail, "at": at,
                           "file": display_name(name)}
    raw = os.fsencode(name)
    if doc["file"].encode() != raw:
        doc["file_bytes"] = raw.hex()
    if sha:
        doc["sha256"] = sha
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


# --- the clean schema and its metadata ---------------------------------------------------
# Version of the columns below, in every Parquet file's key-value metadata. 1: the columns
# of SPEC §5. Files without it were written before it existed and hold version 1's columns.
SCHEMA_VERSION = 1
META_SCHEMA_VERSION = b"logwatchd.schema_version"
META_INPUT_SHA = b"logwatchd.input_sha256"     # an ingested file: its input's SHA-256
META_SOURCE_FILE = b"logwatchd.source_file"    # ... and its name as dropped (or object key)

PARQUET_COMPRESSION = "zstd"
# A part known to hold fewer rows than this is written with Snappy: zstd's set-up per column
# chunk (~0.25 ms a file) costs more than its better ratio saves on a few KB, and an input
# spanning thousands of dates writes thousands of such parts. Compaction merges them with zstd.
SMALL_PART_ROWS = 8_192
SMALL_PART_COMPRESSION = "snappy"
# Dictionary encoding pays only for columns with few distinct values per row group; on
# the others (attributes, ts, source_line, user_id) it is tried, then abandoned, at a cost.
DICTIONARY_COLUMNS = ["timestamp", "day_of_week", "action", "source_file"]


def clean_schema() -> pa.Schema:
    """The clean dataset's columns (SPEC §5), without the partition column or metadata."""
    import pyarrow as pa

    return pa.schema([
        ("timestamp", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("day_of_week", pa.string()),
        ("user_id", pa.string()),
        ("action", pa.string()),
        ("attributes", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ])


def schema_with(metadata: Mapping[bytes, bytes]) -> pa.Schema:
    """The clean schema carrying `metadata` and the schema version: what every file is written with."""
    return clean_schema().with_metadata({META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
                                         **metadata})


def parquet_schema(input_sha: str, source_file: str) -> pa.Schema:
    """An ingested file's schema, carrying its input's SHA-256 and name so the ledger can be
    rebuilt from the files."""
    return schema_with({
        META_INPUT_SHA: input_sha.encode(),
        META_SOURCE_FILE: source_file.encode("utf-8", "surrogateescape"),
    })


def schema_version(metadata: Mapping[bytes, bytes] | None) -> int:
    """The schema version a file was written with (1 for files older than the version key)."""
    raw = (metadata or {}).get(META_SCHEMA_VERSION)
    return int(raw) if raw and raw.isdigit() else 1
