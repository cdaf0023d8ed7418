"""The exception hierarchy; `pipeline` is the one place that turns these into a file's outcome.

    LogwatchdError
    ├── ConfigError       bad configuration                  → exit 2, never READY
    ├── LedgerError       ledger corrupt, emptied, or locked → refuse to start (exit 1)
    ├── MalformedFile     the file is not log data           → quarantine, with the reason
    ├── RefusedFile       symlink, FIFO, device, hard link   → quarantine the entry itself
    ├── FileVanished      removed before it could be read    → nothing to do, logged
    └── TransientIOError  disk full, permission denied, file still growing
                                                             → intake pauses, retry with backoff

Anything else raised while processing a file is a bug: the traceback is logged, the
attempt counted, and the file dead-lettered after `ingest.max_attempts`.
"""

from __future__ import annotations

import errno


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


class TransientIOError(LogwatchdError):
    """An I/O condition expected to clear by itself; the file stays in the inbox."""


# errno values that mean "wait and try again", not "this file is broken".
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EBUSY,
     errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EFBIG, errno.EIO}
)


def is_transient(exc: BaseException) -> bool:
    """True for OS errors that pause intake rather than condemn the file."""
    return isinstance(exc, TransientIOError) or (
        isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS
    )
