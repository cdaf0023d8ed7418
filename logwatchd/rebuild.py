"""`logwatchd rebuild-ledger`: a new ledger from what is on disk, for when the old one is lost.

Every output names or carries the SHA-256 of its input: Parquet files in their metadata
(`logwatchd.input_sha256`), error files in their name, archived and quarantined inputs by
their content. Per-day counts are recounted from the `action` column. The old ledger, if
any, is kept beside the new one with a `.broken-<time>` suffix; nothing is deleted.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .compaction import META_INPUT_SHAS
from .config import Config
from .durable import fsync_dir, sha256_file
from .layout import META_INPUT_SHA, META_SOURCE_FILE, is_data_name, partition_date
from .ledger import Ledger, utc_iso
from .runtime import TIMEZONE_KEY, acquire_lock

# Reasons of entries the inbox refused (reader.check_regular): quarantined as they are,
# never read, never recorded in the ledger. Their content must not come back as processed,
# or the same content dropped later as a normal file would be taken for a duplicate.
REFUSED_REASONS = frozenset({"hard_link", "symlink", "special_file"})


def rebuild_ledger(config: Config) -> int:
    p = config.paths
    lock = acquire_lock(config)
    try:
        tmp = p.state / ".ledger.rebuild.tmp"
        for f in p.state.glob(".ledger.rebuild.tmp*"):
            f.unlink()
        ledger = Ledger.open(tmp, root=p.root)
        try:
            ledger.set_meta(TIMEZONE_KEY, config.transform.timezone)  # the zone it is rebuilt for
            counts_summary = _fill(config, ledger)
        finally:
            ledger.close()
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = None
        for suffix in ("", "-wal", "-shm"):
            old = Path(str(p.ledger) + suffix)
            if old.exists():
                aside = Path(f"{p.ledger}.broken-{stamp}{suffix}")
                os.replace(old, aside)
                moved = moved or str(aside)
        os.replace(tmp, p.ledger)
        for suffix in ("-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        fsync_dir(p.state)
        summary: dict[str, Any] = dict(counts_summary, old_ledger=moved)
        sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")
        return 0
    finally:
        lock.close()


def _fill(config: Config, ledger: Ledger) -> dict[str, int]:
    p = config.paths
    names: dict[str, str] = {}
    valid: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    sizes: dict[str, int] = {}
    counts: Counter[tuple[str, str]] = Counter()
    outputs: list[tuple[str, str | None, str, str, int, int]] = []
    total_rows = 0
    for day, f in _partition_files(p.clean, ".parquet"):
        pf = pq.ParquetFile(f)
        meta = pf.schema_arrow.metadata or {}
        sha = meta.get(META_INPUT_SHA, b"").decode() or None
        rows = pf.metadata.num_rows
        total_rows += rows
        for merged in orjson.loads(meta.get(META_INPUT_SHAS, b"[]")):  # a compacted file
            names.setdefault(merged, "")
        actions = pf.read(columns=["action"])["action"]
        for item in pc.value_counts(actions).to_pylist():
            counts[(day, item["values"])] += item["counts"]
        if sha:
            valid[sha] += rows
            names.setdefault(sha, meta.get(META_SOURCE_FILE, b"").decode("utf-8", "replace"))
        outputs.append((str(f), sha, "clean", day, rows, f.stat().st_size))
    for day, f in _partition_files(p.errors, ".jsonl"):
        sha = f.name[:64]
        lines = f.read_bytes().count(b"\n")
        errors[sha] += lines
        if sha not in names:
            with open(f, "rb") as fh:
                first = fh.readline()
            names[sha] = orjson.loads(first).get("source_file", f.name) if first else f.name
        outputs.append((str(f), sha, "errors", day, lines, f.stat().st_size))
    if p.archive is not None:
        for _day, f in _partition_files(p.archive, ""):
            sha = _content_sha(f)
            if not names.get(sha):
                names[sha] = f.name
            sizes[sha] = f.stat().st_size
    quarantined: dict[str, tuple[str, int, str | None]] = {}
    if p.quarantine.is_dir():
        for f in sorted(p.quarantine.iterdir()):
            if f.name.endswith(".reason.json") or f.name.startswith(".") or f.is_symlink() or not f.is_file():
                continue
            sidecar = f.with_name(f.name + ".reason.json")
            reason = orjson.loads(sidecar.read_bytes()).get("reason") if sidecar.exists() else None
            if reason in REFUSED_REASONS or (reason is None and f.stat().st_nlink > 1):
                continue  # a refused entry: moved aside unread, its content never processed
            quarantined[_content_sha(f)] = (f.name, f.stat().st_size, reason)
    # Rows of compacted files cannot be told apart per input: per-input `valid` is known
    # only for files not yet compacted; the totals below are exact either way.
    inputs: list[tuple[str, str, str, int, int, int, int, str | None]] = [
        (sha, name, "ok", sizes.get(sha, 0), valid[sha] + errors[sha], valid[sha], errors[sha], None)
              for sha, name in sorted(names.items())]
    inputs += [(sha, name, "quarantined", size, 0, 0, 0, reason)
               for sha, (name, size, reason) in sorted(quarantined.items()) if sha not in names]
    error_lines = sum(errors.values())
    ledger.restore(inputs=inputs, outputs=outputs, counts=dict(counts), at=utc_iso(), counters={
        "files_ok": len(names), "files_quarantined": len(inputs) - len(names),
        "records_processed": total_rows + error_lines, "records_valid": total_rows,
        "records_errors": error_lines})
    return {"inputs": len(names), "quarantined": len(quarantined), "outputs": len(outputs),
            "rows": total_rows, "error_lines": error_lines}


def _partition_files(root: Path, suffix: str) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if not root.is_dir():
        return out
    for part in sorted(root.iterdir()):
        day = partition_date(part.name)
        if day is None or not part.is_dir():
            continue
        for f in sorted(part.iterdir()):
            if not is_data_name(f.name) or not f.name.endswith(suffix) or not f.is_file():
                continue
            out.append((day, f))
    return out


def _content_sha(path: Path) -> str:
    sha = sha256_file(path)
    if sha is None:
        raise OSError(f"cannot read {path} as a regular file")
    return sha
