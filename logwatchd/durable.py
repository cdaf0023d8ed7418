"""Durable file-system steps: fsync a file or directory, create directories, publish by rename.

Publish = temp file in the same directory → fsync(file) → rename → fsync(directory).
A rename between two directories fsyncs both.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

# staged_name is also imported from here by compaction and the tests.
from .errors import FileBusy, ForeignInHand
from .layout import IN_HAND_DIR, REASON_SUFFIX, sidecar_name, staged_name


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


def fsync_dir(path: Path | str) -> None:
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


def move(src: Path, dst: Path | None, synced: set[Path | str]) -> None:
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


def sync_dirs(dirs: AbstractSet[Path | str]) -> None:
    """fsyncs every directory (one gone meanwhile is skipped); many of them in parallel,
    as many as the descriptors left allow."""
    threads = min(SYNC_THREADS, _spare_descriptors() // 2) if len(dirs) >= _PARALLEL_FROM else 1
    if threads <= 1:
        for d in dirs:
            _sync_dir_if_there(d)
        return
    # One task per thread, each with its share of the directories: a task per directory
    # would cost more in hand-overs between threads than the fsyncs themselves.
    ordered = list(dirs)
    shares = [ordered[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads, thread_name_prefix="logwatchd-dirsync") as pool:
        for _ in pool.map(_sync_dirs_in_turn, shares):
            pass  # raises the first failure


def _spare_descriptors() -> int:
    """Descriptors this process may still open: the soft RLIMIT_NOFILE less those open.
    Each fsync in flight holds one; under a low `ulimit -n` (a service's LimitNOFILE) the
    threads would otherwise take the last ones, and a commit fail with EMFILE after it
    was recorded."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 2 * SYNC_THREADS
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return 2 * SYNC_THREADS if soft >= 1024 else 0  # no /proc: parallel only with room to spare
    return soft - used


def _sync_dirs_in_turn(dirs: list[Path | str]) -> None:
    for d in dirs:
        _sync_dir_if_there(d)


def _sync_dir_if_there(d: Path | str) -> None:
    for wait in _EMFILE_WAITS:
        try:
            fsync_dir(d)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # Out of descriptors: another thread of this process (an fsync, a reader) gives
            # its own back within moments; only a limit that stays exhausted fails.
            if exc.errno != errno.EMFILE or wait is None:
                raise
            time.sleep(wait)


_EMFILE_WAITS = (0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, None)


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
    stem, suffixes = _tag_room(name, len(tag) + 1 + 8)  # 8: "-NNNNNNN"
    n = 0
    while True:
        target = directory / f"{stem}.{tag}{'' if n == 0 else f'-{n}'}{suffixes}"
        if _free(target):
            return target
        n += 1


def tagged_name(name: str, tag: str) -> str:
    """`name` tagged before its first suffix (`a.<tag>.jsonl`), its stem cut to fit."""
    stem, suffixes = _tag_room(name, len(tag) + 1)
    return f"{stem}.{tag}{suffixes}"


def _tag_room(name: str, extra: int) -> tuple[str, str]:
    """`name` split into its stem and suffixes, the stem cut so that `extra` more bytes
    fit within KEPT_NAME_MAX."""
    dot = name.find(".", 1)
    stem, suffixes = (name, "") if dot < 0 else (name[:dot], name[dot:])
    while len(os.fsencode(suffixes)) > 32:  # a pathological "suffix": keep its last parts
        dot = suffixes.find(".", 1)
        stem, suffixes = (stem + suffixes, "") if dot < 0 else (stem + suffixes[:dot], suffixes[dot:])
    room = KEPT_NAME_MAX - len(os.fsencode(suffixes)) - extra
    raw = os.fsencode(stem)
    if len(raw) > room:
        cut = raw[:max(room, 1)]
        if raw.decode(errors="ignore").encode() == raw:  # valid UTF-8: never cut a character
            cut = cut.decode(errors="ignore").encode() or cut
        stem = os.fsdecode(cut)
    return stem, suffixes


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


def keep(src: Path, dst: Path, synced: set[Path | str], tag: str | None = None) -> Path:
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


# --- the file in hand -------------------------------------------------------------------
# How long a file just taken may stay open by a writer that had opened it in that instant
# (its open resolved the inbox name before the rename), before it is given back.
TAKE_SETTLE_S = 2.0


def read_lease(fd: int) -> bool | None:
    """Takes a read lease on `fd` (open read-only): True when taken, so no process has the
    file open for writing and none can open it so without waiting until `drop_lease`;
    False when one has it open; None when leases are not this process's to take (the file
    is another user's and there is no CAP_LEASE, or leases are disabled).

    A writer opening the file meanwhile breaks the lease, which the kernel signals with
    SIGIO: the process must ignore it (`run_daemon` does), or it ends the process."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return False if exc.errno == errno.EAGAIN else None
    return True


def drop_lease(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def lease_probe(fd: int) -> bool | None:
    """`read_lease`, dropped again at once: whether no process has the file open for
    writing now (None: leases are not this process's to take)."""
    leased = read_lease(fd)
    if leased:
        drop_lease(fd)
    return leased


def take(path: Path) -> Path:
    """Moves an inbox file into the inbox's in-hand directory before it is read, durably
    (its outputs' commit moves it on from there); returns where it is now.

    A producer that opens the inbox name again (to append, say) then creates a new file:
    what it writes is the next input, never lines added to one being processed (they were
    counted twice when the grown file came again, or lost when archived with it). The
    move is made under a read lease, so never while a writer has the file open
    (FileBusy); a writer whose open raced with it is waited for, up to TAKE_SETTLE_S,
    after which the file is given back (FileBusy). Where leases are not ours to take,
    the inbox's open/close bookkeeping and settle time alone decide (inbox.py).
    FileNotFoundError when the file is gone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError:
        fd = -1  # a symlink, a socket, unreadable: moved as it is (and refused or retried)
    try:
        leased = None
        if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            leased = read_lease(fd)
            if leased is False:
                raise FileBusy(f"{path.name} is open for writing")
        try:
            dst = _move_in_hand(path)
        finally:
            if leased:
                drop_lease(fd)
        if leased:
            _settle_taken(fd, dst)
    finally:
        if fd >= 0:
            os.close(fd)
    # The commit's journal names the in-hand path: the move must not be undone by a crash.
    fsync_dir(dst.parent)
    fsync_dir(path.parent)
    return dst


def split_grown(path: Path, sha: str, size: int, progress: Callable[[], None] | None = None) -> Path | None:
    """A file in hand that grew after its outcome was committed: a writer without a lease
    to keep it out (see `take`) appended to it. When its first `size` bytes are still
    what was committed (`sha`), the bytes after them become a new inbox file, durably,
    and the file is cut back to what was committed; returns the new file. None when the
    file did not only grow: it is left as it is.

    The new name is the same for the same commit, so a crash before the cut only makes
    the copy again. What the writer adds after this is not seen (without leases nothing
    tells the daemon that a writer still holds the file).
    """
    if path.parent.name != IN_HAND_DIR:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    inbox = path.parent.parent
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= size:
            return None
        h, left = hashlib.sha256(), size
        while left and (block := fh.read(min(left, 1 << 20))):
            h.update(block)
            left -= len(block)
            if progress is not None:
                progress()
        if left or h.hexdigest() != sha:
            return None
        target = inbox / tagged_name(path.name, f"{sha[:12]}+{size}")
        staged = staged_name(target)
        with open(staged, "wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    try:
        rename_noreplace(staged, target)
    except FileExistsError:
        # Made before a crash and not read since (recovery runs before intake): the
        # longer copy replaces it. Anything else under that name is not ours.
        if _starts_with(staged, target):
            os.replace(staged, target)
        else:
            target = free_name(inbox, target.name, None)
            rename_noreplace(staged, target)
    fsync_dir(inbox)
    try:
        os.truncate(path, size)  # what is archived is what was committed
    except OSError:
        pass  # not ours to cut (no write permission): archived as it grew
    return target


def _starts_with(path: Path, prefix: Path) -> bool:
    """Whether the file at `prefix` holds a prefix of the file at `path`'s bytes."""
    with open(path, "rb") as a, open(prefix, "rb") as b:
        while block := b.read(1 << 20):
            if a.read(len(block)) != block:
                return False
    return True


def in_hand_dir(inbox: Path) -> Path | None:
    """The inbox's in-hand directory if it is there (None if not). ForeignInHand when its
    name holds anything but a directory: a symlink there would take inputs elsewhere, and
    bring files from elsewhere back as inputs; it is never followed."""
    hand = inbox / IN_HAND_DIR
    try:
        st = os.lstat(hand)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise ForeignInHand(f"{IN_HAND_DIR} in the inbox is not logwatchd's directory "
                            f"({_kind(st.st_mode)}): set aside, never followed")
    return hand


def _kind(mode: int) -> str:
    return ("a symlink" if stat.S_ISLNK(mode) else "a regular file" if stat.S_ISREG(mode)
            else "a special file")


def _move_in_hand(path: Path) -> Path:
    hand = in_hand_dir(path.parent) or path.parent / IN_HAND_DIR
    dst = hand / path.name
    try:
        rename_noreplace(path, dst)
    except FileNotFoundError:
        if not os.path.lexists(path):
            raise
        # The file is there, the directory is not (it exists only while a file is in
        # hand): made here, durable with the inbox's fsync that follows the move. Only
        # this process's user may enter it.
        with contextlib.suppress(FileExistsError):
            os.mkdir(hand, 0o700)
        in_hand_dir(path.parent)  # a directory, not something made in its place meanwhile
        rename_noreplace(path, dst)
    except FileExistsError:  # left there by a process that died holding it: back first
        give_back(dst)
        rename_noreplace(path, dst)
    return dst


def _settle_taken(fd: int, taken: Path) -> None:
    """Waits until no writer has the taken file open (an open that raced with the move
    may still reach it); gives it back (FileBusy) when one still has after TAKE_SETTLE_S."""
    deadline = time.monotonic() + TAKE_SETTLE_S
    while True:
        if lease_probe(fd) is not False:
            return
        if time.monotonic() >= deadline:
            give_back(taken)
            raise FileBusy(f"{taken.name} is open for writing")
        time.sleep(0.005)


def put_down(inbox: Path) -> None:
    """The file in hand has moved on (or back): the in-hand directory goes, if nothing is
    left in it (a move still journalled, say)."""
    with contextlib.suppress(OSError):
        os.rmdir(inbox / IN_HAND_DIR)


def give_back(taken: Path) -> Path:
    """Moves a file in hand back into the inbox (it was not committed): under its own name,
    or a free name beside it when a producer has made a new file of that name meanwhile."""
    inbox = taken.parent.parent
    synced: set[Path | str] = set()
    dst = keep(taken, free_name(inbox, taken.name, None, limit=NAME_MAX), synced)
    sync_dirs(synced)
    return dst


def give_back_all(inbox: Path) -> int:
    """Moves every file left in hand (by a process that died) back into the inbox.
    Something else under the in-hand name is left alone (the first take sets it aside)."""
    try:
        hand = in_hand_dir(inbox)
    except ForeignInHand:
        return 0
    if hand is None:
        return 0
    try:
        names = os.listdir(hand)
    except FileNotFoundError:
        return 0
    for name in names:
        give_back(hand / name)
    put_down(inbox)
    return len(names)
