"""The exception hierarchy; `pipeline` is the one place that turns these into a file's outcome.

    LogwatchdError
    ├── ConfigError       bad configuration                  → exit 2, never READY
    ├── LedgerError       ledger corrupt, emptied, or locked → refuse to start (exit 1)
    ├── CatalogChanged    (ledger.py) a compaction's sources changed meanwhile → partition skipped
    ├── MalformedFile     the file is not log data           → quarantine, with the reason
    ├── RefusedFile       symlink, FIFO, device, hard link   → quarantine the entry itself
    ├── FileVanished      removed before it could be read    → nothing to do, logged
    ├── Cancelled         shutdown while a file was in hand  → staged work dropped, file stays
    └── TransientIOError  disk full, permission denied, file still growing
                                                             → intake pauses, retry with backoff

Anything else raised while processing a file is a bug: the traceback is logged, the
attempt counted, and the file dead-lettered after `ingest.max_attempts`.
"""

from __future__ import annotations

import errno
import sqlite3


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


class Cancelled(LogwatchdError):
    """Processing was abandoned for shutdown; the file stays in the inbox for next time."""


class TransientIOError(LogwatchdError):
    """An I/O condition expected to clear by itself; the file stays in the inbox."""


# errno values that mean "wait and try again", not "this file is broken".
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EBUSY,
     errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EFBIG, errno.EIO}
)


_TRANSIENT_TEXT = ("no space left", "disk quota exceeded", "permission denied",
                   "database or disk is full", "database is locked", "read-only file system",
                   "disk i/o error")


def is_transient(exc: BaseException) -> bool:
    """True for errors that pause intake rather than condemn the file.

    Covers OSError by errno, and the same conditions reported as text by pyarrow
    (which may raise without an errno) and by SQLite (SQLITE_FULL, SQLITE_BUSY, SQLITE_IOERR).
    """
    if isinstance(exc, TransientIOError):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    if isinstance(exc, (OSError, sqlite3.OperationalError)):
        text = str(exc).lower()
        return any(t in text for t in _TRANSIENT_TEXT)
    return False
