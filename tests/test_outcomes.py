"""One table decides what a failure means for a file (errors.classify), in the style of httpx's
mapping test: every errno, SQLite result code and pyarrow error class lands where it should."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from logwatchd.errors import (
    ERRNO_DISPOSITION,
    SQLITE_DISPOSITION,
    Cancelled,
    Disposition,
    FileVanished,
    MalformedFile,
    RefusedFile,
    TransientIOError,
    classify,
)

HOST = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
THIS_FILE = {errno.EBUSY, errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EFBIG,
             errno.ETXTBSY, errno.EINTR, errno.ESTALE}
INPUT = Path("/inbox/a.jsonl")


@pytest.mark.parametrize("code", sorted(errno.errorcode), ids=lambda c: errno.errorcode[c])
def test_every_errno_has_one_meaning(code: int) -> None:
    """Each errno maps to exactly the disposition the table gives it; the rest are bugs."""
    got = classify(OSError(code, "x"))
    if code in HOST:
        assert got is Disposition.PAUSE
    elif code in THIS_FILE:
        assert got is Disposition.RETRY
    elif code == errno.ENOENT:
        assert got is Disposition.VANISHED
    elif code in (errno.EACCES, errno.EPERM):
        assert got is Disposition.PAUSE  # about no input: an output or state directory
    else:
        assert got is Disposition.BUG, errno.errorcode[code]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_permission_denied_on_the_input_is_the_files_trouble(code: int) -> None:
    """EACCES/EPERM naming the input makes the file wait; naming anything else pauses intake."""
    assert classify(PermissionError(code, "denied", str(INPUT)), INPUT) is Disposition.RETRY
    assert classify(PermissionError(code, "denied", "/var/clean/x"), INPUT) is Disposition.PAUSE
    assert classify(PermissionError(code, "denied", "/tmp/a", None, str(INPUT)), INPUT) \
        is Disposition.RETRY


def test_the_table_lists_only_real_errnos() -> None:
    """Every key of the errno table is an errno this platform knows."""
    assert set(ERRNO_DISPOSITION) <= set(errno.errorcode)


@pytest.mark.parametrize("code, want", [
    *SQLITE_DISPOSITION.items(),
    (11, Disposition.BUG),   # SQLITE_CORRUPT
    (19, Disposition.BUG),   # SQLITE_CONSTRAINT: our own bug
    (1, Disposition.BUG),    # SQLITE_ERROR
])
def test_sqlite_result_codes(code: int, want: Disposition) -> None:
    """sqlite3 errors are classified by their primary result code (extended codes too)."""
    exc = sqlite3.OperationalError("x")
    exc.sqlite_errorcode = code | (3 << 8)  # an extended code of that primary code
    assert classify(exc) is want


def test_real_sqlite_errors() -> None:
    """A locked database and a constraint violation, raised by SQLite itself."""
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (x PRIMARY KEY)")
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as exc:
        con.execute("INSERT INTO t VALUES (1)")
    assert classify(exc.value) is Disposition.BUG


@pytest.mark.parametrize("exc, want", [
    (pa.ArrowIOError("IOError: No space left on device. Detail: [errno 28]"), Disposition.PAUSE),
    (pa.ArrowIOError("Failed to open local file '/x': Permission denied"), Disposition.PAUSE),
    (pa.ArrowIOError("Too many open files"), Disposition.RETRY),
    (pa.ArrowMemoryError("malloc of size 1 failed"), Disposition.RETRY),
    (pa.ArrowInvalid("JSON parse error"), Disposition.BUG),
    (pa.ArrowTypeError("bad type"), Disposition.BUG),
    (pa.ArrowNotImplementedError("no kernel"), Disposition.BUG),
])
def test_pyarrow_errors(exc: Exception, want: Disposition) -> None:
    """pyarrow raises without an errno: its message decides, and non-I/O errors are bugs."""
    assert classify(exc) is want


@pytest.mark.parametrize("exc, want", [
    (MalformedFile("not_json", "x"), Disposition.QUARANTINE),
    (RefusedFile("symlink", "x"), Disposition.REFUSE),
    (FileVanished("x"), Disposition.VANISHED),
    (Cancelled("x"), Disposition.CANCELLED),
    (TransientIOError("changed while read"), Disposition.RETRY),
    (MemoryError(), Disposition.RETRY),
    (RecursionError(), Disposition.BUG),
    (RuntimeError("x"), Disposition.BUG),
    (KeyError("x"), Disposition.BUG),
])
def test_logwatchd_and_python_errors(exc: BaseException, want: Disposition) -> None:
    """Our own exception tree and Python's built-ins each have their place."""
    assert classify(exc) is want
