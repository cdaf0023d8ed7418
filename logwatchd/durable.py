"""Durable file-system steps: fsync a file or directory, create directories, publish by rename.

Publish = temp file in the same directory → fsync(file) → rename → fsync(directory).
A rename between two directories fsyncs both.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

# staged_name is also imported from here by compaction and the tests.
from .layout import REASON_SUFFIX, sidecar_name, staged_name


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


# fsyncs run from this many threads where many are due (a commit's directories, an input's
# finished parts): each waits on the disk with the GIL released, and concurrent ones share
# the filesystem's commits (400 fsyncs of 30 KB files on a virtual disk: 2,300/s from 1
# thread, 2,600/s from 4, 4,400/s from 16). An input spanning thousands of dates is bound
# by them otherwise.
SYNC_THREADS = 16
_PARALLEL_FROM = 16


def sync_dirs(dirs: set[Path]) -> None:
    """fsyncs every directory (one gone meanwhile is skipped); many of them in parallel."""
    if len(dirs) < _PARALLEL_FROM:
        for d in dirs:
            _sync_dir_if_there(d)
        return
    with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="logwatchd-dirsync") as pool:
        for _ in pool.map(_sync_dir_if_there, dirs):
            pass  # raises the first failure


def _sync_dir_if_there(d: Path) -> None:
    try:
        fsync_dir(d)
    except FileNotFoundError:
        pass


# --- names in the folders where nothing is ever overwritten ------------------------------
NAME_MAX = 255
# `.NAME.reason.json.tmp`, the staging name of a sidecar, is the longest name derived from
# a kept file's name: NAME itself must leave room for it.
KEPT_NAME_MAX = NAME_MAX - len(REASON_SUFFIX) - len("..tmp")


def sidecar_of(path: Path) -> Path:
    """The reason file beside a quarantined, dead-lettered or refused entry."""
    return path.with_name(sidecar_name(path.name))


def free_name(directory: Path, name: str, tag: str | None, limit: int = KEPT_NAME_MAX) -> Path:
    """A name in `directory` that neither exists nor has a sidecar, and fits NAME_MAX with
    its sidecar's staging name: `name` itself when it can be, else the name tagged before
    its first suffix (`a.<tag>.jsonl.gz`, cut when too long), so a replay still matches
    the inbox patterns."""
    if len(os.fsencode(name)) <= limit and _free(directory / name):
        return directory / name
    tag = (tag or f"{time.time_ns():x}")[:12]
    dot = name.find(".", 1)
    stem, suffixes = (name, "") if dot < 0 else (name[:dot], name[dot:])
    while len(os.fsencode(suffixes)) > 32:  # a pathological "suffix": keep its last parts
        dot = suffixes.find(".", 1)
        stem, suffixes = (stem + suffixes, "") if dot < 0 else (stem + suffixes[:dot], suffixes[dot:])
    room = KEPT_NAME_MAX - len(os.fsencode(suffixes)) - len(tag) - 1 - 8  # 8: "-NNNNNNN"
    raw = os.fsencode(stem)
    if len(raw) > room:
        cut = raw[:max(room, 1)]
        if raw.decode(errors="ignore").encode() == raw:  # valid UTF-8: never cut a character
            cut = cut.decode(errors="ignore").encode() or cut
        stem = os.fsdecode(cut)
    n = 0
    while True:
        target = directory / f"{stem}.{tag}{'' if n == 0 else f'-{n}'}{suffixes}"
        if _free(target):
            return target
        n += 1


def _free(target: Path) -> bool:
    return not os.path.lexists(target) and not os.path.lexists(sidecar_of(target))


_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """Renames src to dst; FileExistsError when dst exists (never overwrites, atomically).

    renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it; else a hard link
    then an unlink of src, which fails the same way on an existing dst.
    """
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: the filesystem lacks the flag
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    os.link(src, dst, follow_symlinks=False)
    os.unlink(src)


def keep(src: Path, dst: Path, synced: set[Path], tag: str | None = None) -> Path:
    """Moves src to dst without overwriting anything: when dst was taken meanwhile, to a
    free name beside it. Returns where it went; adds the directories to fsync."""
    ensure_dir(dst.parent)
    while True:
        try:
            rename_noreplace(src, dst)
            break
        except FileExistsError:
            dst = free_name(dst.parent, dst.name, tag)
    synced.update((src.parent, dst.parent))
    return dst
