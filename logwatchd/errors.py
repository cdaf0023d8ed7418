"""The exception hierarchy; `pipeline` is the one place that turns these into a file's outcome.

    LogwatchdError
    ├── ConfigError       bad configuration                  → exit 2, never READY
    ├── LedgerError       ledger corrupt, emptied, or locked → refuse to start (exit 1)
    ├── CatalogChanged    (ledger.py) a compaction's sources changed meanwhile → partition skipped
    ├── MalformedFile     the file is not log data           → quarantine, with the reason
    ├── RefusedFile       symlink, FIFO, device, hard link   → quarantine the entry itself
    ├── FileVanished      removed before it could be read    → nothing to do, logged
    ├── Cancelled         shutdown while a file was in hand  → staged work dropped, file stays
    ├── TransientIOError  file still changing                → the file waits, retried later
    └── PublishPending    committed, its moves failed        → intake pauses until they are done

Low-level errors (OSError by errno, sqlite3 by result code, pyarrow by message) are
translated at one boundary, `classify`, into a `Disposition`: quarantine, refuse, vanished,
cancelled, pause (the host cannot take any file: disk full), retry (this file cannot be
taken now: permission denied) or bug. A file waiting on pause or retry has its own backoff
while the others go on, and is dead-lettered once it has failed for
`ingest.max_retry_seconds`; a bug (anything not in the table) is logged with its traceback,
counted, and dead-lettered after `ingest.max_attempts` — counted across restarts, a
process that died while holding the file included.
"""

from __future__ import annotations

import enum
import errno
import os
import sqlite3

from .layout import IN_HAND_DIR


class LogwatchdError(Exception):
    """Base of every error logwatchd raises on purpose."""


class ConfigError(LogwatchdError):
    """The configuration is invalid; the message names the key."""


class LedgerError(LogwatchdError):
    """The ledger cannot be trusted or opened; the daemon refuses to start."""


class MalformedFile(LogwatchdError):
    """The file as a whole is not log data (corrupt gzip, broken array, binary)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RefusedFile(LogwatchdError):
    """The inbox entry is not a regular, singly-linked file and must never be read."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FileVanished(LogwatchdError):
    """The file disappeared between being seen and being opened."""


class FileBusy(LogwatchdError):
    """A writer holds the file open: it is taken once that writer has closed it."""


class ForeignInHand(LogwatchdError):
    """The inbox's in-hand name is taken by something that is not logwatchd's directory
    (a symlink, a file): it is never followed nor written through; it is set aside."""


class Cancelled(LogwatchdError):
    """Processing was abandoned for shutdown; the file stays in the inbox for next time."""


class TransientIOError(LogwatchdError):
    """An I/O condition expected to clear by itself; the file stays in the inbox."""


class PublishPending(LogwatchdError):
    """A file's outcome is committed, but moving its files into place failed (a rename or
    a directory's fsync). The host's trouble, never the file's: the journal is finished
    before any other file is taken, at the next attempt or start-up. `outcome` is what
    was committed, reported once the moves are done."""

    def __init__(self, cause: BaseException, outcome: object) -> None:
        super().__init__(f"its outcome is committed, but moving its files into place failed "
                         f"({cause}); they are moved before any other file is taken")
        self.outcome = outcome


class Disposition(enum.Enum):
    """What a failure while processing a file means for that file (see `classify`)."""

    QUARANTINE = "quarantine"  # MalformedFile: the content is not log data
    REFUSE = "refuse"          # RefusedFile: never read, set aside as it is
    VANISHED = "vanished"      # the input is gone: nothing to do
    CANCELLED = "cancelled"    # shutdown: staged work dropped, the file stays
    PAUSE = "pause"            # the host cannot take any file now (disk full, read-only, I/O
                               # error): intake pauses, this file waits with its own backoff
    RETRY = "retry"            # this file cannot be taken now (permission denied, too many
                               # open files, still changing): it waits, the others go on
    BUG = "bug"                # anything else: counted toward ingest.max_attempts


# errno names → disposition. An errno not listed is a bug (counted, then dead-lettered).
ERRNO_DISPOSITION: dict[int, Disposition] = {
    **dict.fromkeys((errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO), Disposition.PAUSE),
    **dict.fromkeys((errno.EBUSY, errno.EAGAIN, errno.EMFILE,
                     errno.ENFILE, errno.ENOMEM, errno.EFBIG, errno.ETXTBSY, errno.EINTR,
                     errno.ESTALE), Disposition.RETRY),
    errno.ENOENT: Disposition.VANISHED,
}

# Permission denied is the file's own trouble when it is about the input (a producer left
# it unreadable: it waits, the others go on), and the host's otherwise (an output or state
# directory made unwritable: intake pauses).
ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM})

# SQLite primary result codes (`sqlite3.Error.sqlite_errorcode & 0xff`) → disposition.
SQLITE_DISPOSITION: dict[int, Disposition] = {
    13: Disposition.PAUSE,   # SQLITE_FULL
    10: Disposition.PAUSE,   # SQLITE_IOERR
    8: Disposition.PAUSE,    # SQLITE_READONLY
    14: Disposition.PAUSE,   # SQLITE_CANTOPEN
    3: Disposition.PAUSE,    # SQLITE_PERM
    5: Disposition.RETRY,    # SQLITE_BUSY
    6: Disposition.RETRY,    # SQLITE_LOCKED
    7: Disposition.RETRY,    # SQLITE_NOMEM
}

# The same conditions as text, for libraries that raise without an errno (pyarrow's C++
# errors carry the message of the failed system call only).
TEXT_DISPOSITION: tuple[tuple[str, Disposition], ...] = (
    ("no space left", Disposition.PAUSE),
    ("disk quota exceeded", Disposition.PAUSE),
    ("read-only file system", Disposition.PAUSE),
    ("database or disk is full", Disposition.PAUSE),
    ("disk i/o error", Disposition.PAUSE),
    ("input/output error", Disposition.PAUSE),
    ("permission denied", Disposition.PAUSE),  # pyarrow: an output it could not write
    ("too many open files", Disposition.RETRY),
    ("database is locked", Disposition.RETRY),
    ("cannot allocate memory", Disposition.RETRY),
    ("file too large", Disposition.RETRY),
)


def classify(exc: BaseException, subject: os.PathLike[str] | str | None = None) -> Disposition:
    """The one table from an exception to what it means for the file in hand (`subject`)."""
    if isinstance(exc, MalformedFile):
        return Disposition.QUARANTINE
    if isinstance(exc, RefusedFile):
        return Disposition.REFUSE
    if isinstance(exc, FileVanished):
        return Disposition.VANISHED
    if isinstance(exc, Cancelled):
        return Disposition.CANCELLED
    if isinstance(exc, TransientIOError):
        return Disposition.RETRY
    if isinstance(exc, ForeignInHand):  # planted again as fast as it is set aside: the
        return Disposition.PAUSE        # inbox cannot take any file now, no file's fault
    if isinstance(exc, PublishPending):  # nothing else is taken until its journal is done
        return Disposition.PAUSE
    if isinstance(exc, MemoryError):  # also pyarrow's ArrowMemoryError
        return Disposition.RETRY
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and (code & 0xFF) in SQLITE_DISPOSITION:
            return SQLITE_DISPOSITION[code & 0xFF]
    if isinstance(exc, OSError) and exc.errno in ACCESS_ERRNOS:
        about = {os.fspath(f) for f in (exc.filename, exc.filename2) if f is not None}
        if subject is None:
            return Disposition.PAUSE
        # The file itself, or it in hand (durable.take): this file's trouble, not the host's.
        path = os.fspath(subject)
        head, name = os.path.split(path)
        return Disposition.RETRY if about & {path, os.path.join(head, IN_HAND_DIR, name)} \
            else Disposition.PAUSE
    if isinstance(exc, OSError) and exc.errno in ERRNO_DISPOSITION:
        return ERRNO_DISPOSITION[exc.errno]
    if isinstance(exc, (OSError, sqlite3.Error)):
        text = str(exc).lower()
        for needle, disposition in TEXT_DISPOSITION:
            if needle in text:
                return disposition
    return Disposition.BUG


def is_transient(exc: BaseException) -> bool:
    """True for errors that make a file wait rather than condemn it (PAUSE or RETRY)."""
    return classify(exc) in (Disposition.PAUSE, Disposition.RETRY)
