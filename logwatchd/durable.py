"""Durable file-system steps: fsync a file or directory, create directories, publish by rename.

Publish = temp file in the same directory → fsync(file) → rename → fsync(directory).
A rename between two directories fsyncs both.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def sha256_stream(fh: BinaryIO, progress: Callable[[], None] | None = None) -> str:
    """SHA-256 of what is left to read in an open file; `progress` is called per MiB."""
    h = hashlib.sha256()
    while block := fh.read(1 << 20):
        h.update(block)
        if progress is not None:
            progress()  # a multi-GB file is still proof of life for the watchdog
    return h.hexdigest()


def sha256_file(path: Path, progress: Callable[[], None] | None = None) -> str | None:
    """SHA-256 of a regular file's content; None for a link, a special file or no file
    (never followed, never blocked on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return sha256_stream(fh, progress)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_close(fh: BinaryIO) -> int:
    """Flushes, fsyncs and closes a file being written; returns its size in bytes."""
    fh.flush()
    os.fsync(fh.fileno())
    size = fh.tell()
    fh.close()
    return size


def ensure_dir(path: Path) -> None:
    """Creates a directory and its missing parents; each new entry's parent is fsynced."""
    missing = []
    p = path
    while not p.is_dir():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def staged_name(final: Path) -> Path:
    """The hidden staging path of a final output, in the same directory (same filesystem)."""
    return final.with_name(f".{final.name}.tmp")


def is_staging_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def write_staged(final: Path, data: bytes) -> Path:
    """Writes `data` under the staging name of `final` and fsyncs it; returns the staged path."""
    ensure_dir(final.parent)
    staged = staged_name(final)
    with open(staged, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return staged


def move(src: Path, dst: Path | None, synced: set[Path]) -> None:
    """Renames src over dst (or deletes src when dst is None); adds the directories to fsync."""
    if dst is None:
        os.unlink(src)
    else:
        ensure_dir(dst.parent)
        os.replace(src, dst)
        synced.add(dst.parent)
    synced.add(src.parent)


def sync_dirs(dirs: set[Path]) -> None:
    for d in dirs:
        try:
            fsync_dir(d)
        except FileNotFoundError:
            continue
