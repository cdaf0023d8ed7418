"""The ledger (SQLite): which inputs were processed, which data files are live, per-day counts.

Every outcome is committed in one `BEGIN IMMEDIATE` transaction together with a journal of
the file moves it implies (staged → final, inbox → archive, sources → deleted). The moves
run after the commit; `recover()` replays whatever journal a crash left behind, so a
committed outcome is always completed and an uncommitted one leaves no visible trace.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from .durable import fsync_dir, fsync_file, keep, move, sha256_file, split_grown, sync_dirs
from .errors import LedgerError, LogwatchdError, is_transient
from .failpoints import failpoint
from .layout import stem_globs

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE inputs (              -- one row per processing (dedupe = false allows repeats)
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    outcome TEXT NOT NULL,            -- ok | quarantined
    bytes INTEGER NOT NULL,
    processed INTEGER NOT NULL,
    valid INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    reason TEXT,
    committed_at TEXT NOT NULL
);
CREATE INDEX inputs_by_sha ON inputs (sha256);
CREATE TABLE outputs (               -- the catalog of live data and error files
    path TEXT PRIMARY KEY,
    input_sha256 TEXT,                -- NULL for a compacted file (rows of many inputs)
    kind TEXT NOT NULL,               -- clean | errors
    date TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX outputs_by_date ON outputs (kind, date);
CREATE TABLE daily_counts (
    date TEXT NOT NULL, action TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (date, action)
) WITHOUT ROWID;
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE journal (               -- file moves committed but maybe not yet done
    id INTEGER PRIMARY KEY,
    txn TEXT NOT NULL,
    src TEXT NOT NULL,
    dst TEXT,                         -- NULL: delete src
    src_sha256 TEXT,                  -- when set, src is moved only if its content matches
    src_ident TEXT                    -- when set, src is moved only if it is still that file
);
"""

# Added after the first release: created on open where missing (no data changes).
_ADDITIONS = """
CREATE TABLE IF NOT EXISTS attempts (  -- inbox files that failed or are in hand right now
    name BLOB PRIMARY KEY,            -- the name in the inbox (bytes: need not be UTF-8)
    ident TEXT,                       -- device:inode of the file these attempts were at
    failures INTEGER NOT NULL DEFAULT 0,  -- bugs and process deaths (toward max_attempts)
    first_failed_at REAL,             -- Unix time of the first failure of any kind
    last_error TEXT,
    in_hand INTEGER NOT NULL DEFAULT 0    -- 1 while a process works on it: still 1 after a crash
);
"""
# One row per outcome, for the status page ("today", the last files, throughput); rows older
# than HISTORY_KEEP_SECONDS are pruned now and then, so it stays small.
_HISTORY = (
    """CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,                 -- when committed, ISO-8601 UTC (the ledger's format)
    name TEXT NOT NULL,
    outcome TEXT NOT NULL,            -- ok | quarantined | duplicate | refused | dead_lettered
    processed INTEGER NOT NULL, valid INTEGER NOT NULL, errors INTEGER NOT NULL,
    duration_ms REAL,
    reason TEXT
)""",
    "CREATE INDEX IF NOT EXISTS history_by_at ON history (at)",
)
HISTORY_KEEP_SECONDS = 3 * 86400  # "today" in any zone began less than 2 days ago
_HISTORY_PRUNE_EVERY = 256        # commits between two prunes

class CatalogChanged(LogwatchdError):
    """A compaction's sources are no longer all live: its transaction changed nothing."""


COUNTERS = ("files_ok", "files_quarantined", "files_duplicate", "files_dead_lettered",
            "files_refused", "records_processed", "records_valid", "records_errors")

# What a crash while a file was in hand is recorded as, at the next attempt.
DIED_IN_HAND = "the process stopped while processing it (crash, kill -9, out of memory or watchdog)"


@dataclass
class Output:
    path: Path
    staged: Path
    kind: str
    date: str
    rows: int
    bytes: int


@dataclass
class Move:
    src: Path
    dst: Path | None          # None: delete
    src_sha256: str | None = None
    src_ident: str | None = None   # device:inode the source must still be (an input, not a
                                   # file renamed over its name meanwhile)
    keep: bool = False             # dst is in a folder where nothing is ever overwritten


@dataclass
class AttemptState:
    """What is known of earlier attempts at an inbox file (durable across restarts)."""

    failures: int = 0
    first_failed_at: float | None = None
    last_error: str | None = None
    died: bool = False        # the previous attempt ended with the process (counted in failures)


Name = bytes  # an inbox file's name as the kernel has it (an alias: Commit has a `bytes` field)


@dataclass
class Commit:
    """Everything one input's outcome changes, applied atomically."""

    sha256: str
    name: str
    outcome: str                  # ok | quarantined | duplicate | refused | dead_lettered
    bytes: int = 0
    processed: int = 0
    valid: int = 0
    errors: int = 0
    reason: str | None = None
    outputs: list[Output] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    attempt: Name | None = None   # the inbox name whose attempts this outcome ends
    duration_ms: float | None = None  # time spent on the file up to this commit (history)


def utc_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Ledger:
    """The SQLite ledger. Writes are serialised; each thread reads on its own connection."""

    def __init__(self, path: Path, conn: sqlite3.Connection, root: Path | None = None) -> None:
        self.path = path
        # Paths are stored relative to the root, so a root can be moved or copied; a ledger
        # opened without one (and rows of older versions) keeps absolute paths.
        self.root = root
        # `root/` as text: rel() strips it ("/" stays "/").
        self._root_prefix = None if root is None else str(root).rstrip("/") + "/"
        self._conn = conn
        self._write_lock = threading.Lock()
        self._journal_lock = threading.RLock()
        self._local = threading.local()

    # --- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, data_dirs: tuple[Path, ...] = (), root: Path | None = None) -> Ledger:
        """Opens the ledger, creating it only where no output exists yet.

        Refuses (LedgerError) a ledger that is empty, corrupt, or not ours, and a missing
        ledger beside existing outputs: recreating it silently would process everything again.
        """
        exists = path.exists()
        if exists and not path.is_file():
            raise LedgerError(f"the ledger {path} is not a regular file; refusing to start. "
                              "Move it aside and restore the ledger from a backup or run "
                              "`logwatchd rebuild-ledger`.")
        if exists and path.stat().st_size == 0:
            raise LedgerError(f"the ledger {path} is empty (0 bytes); refusing to start. "
                              "Restore it from a backup or run `logwatchd rebuild-ledger`.")
        if not exists:
            for d in data_dirs:
                if d.is_dir() and any(_has_files(d)):
                    raise LedgerError(
                        f"the ledger {path} is missing but {d} holds outputs; refusing to "
                        "start a new one. Run `logwatchd rebuild-ledger` to rebuild it.")
            path.parent.mkdir(parents=True, exist_ok=True)
        if not exists:
            _create(path)
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(path)  # a file that is not SQLite fails here, at `journal_mode`
            _verify(conn, path)
            _upgrade(conn)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if is_transient(exc):  # the disk, not the ledger: nothing to restore
                raise LedgerError(f"the ledger {path} cannot be opened now ({exc}): the disk is "
                                  "full, failing or not writable; the ledger itself is not "
                                  "known to be damaged. Free space (or fix the disk) and start "
                                  "again.") from None
            raise LedgerError(f"the ledger {path} is corrupt ({exc}); refusing to start. "
                              "Restore it from a backup or run `logwatchd rebuild-ledger`.") from None
        except LedgerError:
            if conn is not None:
                conn.close()
            raise
        return cls(path, conn, root)

    def close(self) -> None:
        self._conn.close()

    # --- facts about the data (the `meta` table) ----------------------------------------
    def meta(self, key: str) -> str | None:
        """The value recorded under `key` (e.g. "timezone"), or None."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Records `value` under `key`, durably, replacing any earlier value."""
        with self._write_lock, _immediate(self._conn) as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (for the status queries of overview.py)."""
        return self._reader()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
        return conn

    # --- paths ------------------------------------------------------------------------
    def rel(self, path: Path) -> str:
        """A path as the ledger stores it: relative to the root when under it.

        Compared as text (what `Path.relative_to` does, ~10x faster: a commit of a
        ten-year input stores ~11,000 paths)."""
        text = str(path)
        if self._root_prefix is not None and text.startswith(self._root_prefix):
            return text[len(self._root_prefix):]
        return text

    def abs(self, stored: str | bytes) -> Path:
        return Path(self._abs_text(stored))

    def _enc(self, path: Path | None) -> bytes | None:
        """A path as bytes for the journal: file names need not be valid UTF-8."""
        return None if path is None else os.fsencode(self.rel(path))

    # --- writing ----------------------------------------------------------------------
    def commit(self, c: Commit, now: datetime | None = None) -> str:
        """Records an outcome and its journal in one transaction; returns the journal id."""
        at = utc_iso(now)
        txn = f"input:{c.sha256 or c.outcome}:{at}:{uuid.uuid4().hex[:8]}"
        with self._write_lock, _immediate(self._conn) as conn:
            if c.attempt is not None:
                conn.execute("DELETE FROM attempts WHERE name = ?", (c.attempt,))
            if c.outcome in ("duplicate", "refused", "dead_lettered"):
                self._bump(conn, {f"files_{c.outcome}": 1})
            else:
                conn.execute(
                    "INSERT INTO inputs (sha256, name, outcome, bytes, processed, valid, errors,"
                    " reason, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (c.sha256, c.name, c.outcome, c.bytes, c.processed, c.valid, c.errors,
                     c.reason, at))
                conn.executemany(
                    "INSERT INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(self.rel(o.path), c.sha256, o.kind, o.date, o.rows, o.bytes, at)
                     for o in c.outputs])
                conn.executemany(
                    "INSERT INTO daily_counts VALUES (?, ?, ?) "
                    "ON CONFLICT (date, action) DO UPDATE SET n = n + excluded.n",
                    [(d, a, n) for (d, a), n in c.counts.items()])
                self._bump(conn, {
                    "files_ok" if c.outcome == "ok" else "files_quarantined": 1,
                    "records_processed": c.processed, "records_valid": c.valid,
                    "records_errors": c.errors})
            _record_history(conn, c, at, now)
            moves = [Move(o.staged, o.path) for o in c.outputs] + c.moves
            conn.executemany(
                "INSERT INTO journal (txn, src, dst, src_sha256, src_ident) VALUES (?, ?, ?, ?, ?)",
                [(txn, self._enc(m.src), self._enc(m.dst), m.src_sha256,
                  _ident_text(m)) for m in moves])
        return txn

    # --- attempts (durable, so a file that kills the process is counted) ----------------
    def begin_attempt(self, name: bytes, ident: str, now: float) -> AttemptState:
        """Marks an inbox file in hand and returns what earlier attempts left.

        A mark still set from an earlier attempt means the process died holding the file:
        that counts as a failure. Written without waiting for the disk (a process crash
        keeps the page cache; only power loss could forget an attempt, which is harmless).
        """
        with self._write_lock:
            self._conn.execute("PRAGMA synchronous = OFF")
            try:
                with _immediate(self._conn) as conn:
                    row = conn.execute("SELECT ident, failures, first_failed_at, last_error, in_hand"
                                       " FROM attempts WHERE name = ?", (name,)).fetchone()
                    state = AttemptState()
                    if row is not None and row[0] == ident:
                        state = AttemptState(row[1], row[2], row[3])
                        if row[4]:
                            state = AttemptState(row[1] + 1, row[2] or now, DIED_IN_HAND, died=True)
                    conn.execute(
                        "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, 1)",
                        (name, ident, state.failures, state.first_failed_at, state.last_error))
            finally:
                self._conn.execute("PRAGMA synchronous = FULL")
        return state

    def attempt_failed(self, name: bytes, error: str, bug: bool, now: float) -> AttemptState:
        """Records a failed attempt (a bug counts toward max_attempts); returns the new state."""
        with self._write_lock, _immediate(self._conn) as conn:
            conn.execute(
                "UPDATE attempts SET failures = failures + ?, in_hand = 0, last_error = ?,"
                " first_failed_at = coalesce(first_failed_at, ?) WHERE name = ?",
                (1 if bug else 0, error, now, name))
            row = conn.execute("SELECT failures, first_failed_at, last_error FROM attempts"
                               " WHERE name = ?", (name,)).fetchone()
        return AttemptState(*row) if row else AttemptState(int(bug), now, error)

    def end_attempt(self, name: bytes, forget: bool = False) -> None:
        """The file is no longer in hand (shutdown: keep its failures), or gone (`forget`)."""
        with self._write_lock, _immediate(self._conn) as conn:
            if forget:
                conn.execute("DELETE FROM attempts WHERE name = ?", (name,))
            else:
                conn.execute("UPDATE attempts SET in_hand = 0 WHERE name = ?", (name,))

    def failing(self) -> list[tuple[bytes, float]]:
        """(inbox name, first failure time) of every file that has failed and is not done."""
        return [(bytes(r[0]), float(r[1])) for r in self._reader().execute(
            "SELECT name, first_failed_at FROM attempts WHERE first_failed_at IS NOT NULL")]

    def prune_attempts(self, present: set[bytes]) -> None:
        """Forgets the attempts of names no longer in the inbox (taken by hand, replayed)."""
        with self._write_lock, _immediate(self._conn) as conn:
            names = [bytes(r[0]) for r in conn.execute("SELECT name FROM attempts")]
            conn.executemany("DELETE FROM attempts WHERE name = ?",
                             [(n,) for n in names if n not in present])

    def forget(self, sha256: str) -> bool:
        """Drops a quarantined input's record so its content can be processed again (replay)."""
        with self._write_lock, _immediate(self._conn) as conn:
            cur = conn.execute("DELETE FROM inputs WHERE sha256 = ? AND outcome = 'quarantined'", (sha256,))
            return cur.rowcount > 0

    def restore(self, inputs: list[tuple], outputs: list[tuple],
                counts: dict[tuple[str, str], int], at: str, counters: dict[str, int]) -> None:
        """Fills an empty ledger in one transaction (rebuild-ledger)."""
        with self._write_lock, _immediate(self._conn) as conn:
            conn.executemany(
                "INSERT INTO inputs (sha256, name, outcome, bytes, processed, valid, errors, reason,"
                " committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(*i, at) for i in inputs])
            conn.executemany("INSERT INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(self.rel(Path(o[0])), *o[1:], at) for o in outputs])
            conn.executemany("INSERT INTO daily_counts VALUES (?, ?, ?)",
                             [(d, a, n) for (d, a), n in counts.items()])
            self._bump(conn, counters)

    @staticmethod
    def _bump(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
        conn.executemany("UPDATE counters SET n = n + ? WHERE name = ?",
                         [(n, name) for name, n in deltas.items() if n])

    # --- the journal ------------------------------------------------------------------
    def complete(self, txn: str, progress: Callable[[], None] | None = None,
                 known: dict[Path, FileIdentity] | None = None) -> list[Grown]:
        """Carries out a committed transaction's moves, then forgets them; returns the
        inputs that had grown since they were read (`durable.split_grown`).

        A move guarded by a content hash re-reads its source, unless `known` vouches for
        it: the identity (device, inode, size, mtime) the caller saw when it hashed the
        file, still the same now. Recovery after a crash has no such knowledge and re-reads.
        Serialised per ledger: two threads never replay the same transaction at once.
        """
        with self._journal_lock:
            with self._write_lock:  # the write connection is shared: never read mid-transaction
                rows = self._conn.execute(
                    "SELECT src, dst, src_sha256, src_ident FROM journal WHERE txn = ? ORDER BY id",
                    (txn,)).fetchall()
            synced: set[Path | str] = set()
            grown: list[Grown] = []
            for n, (src, dst, sha, ident) in enumerate(rows):
                if sha is None and ident is None and dst is not None and self._beside(src, dst, synced):
                    pass  # a staged output published in its own directory (the bulk of a commit)
                else:
                    path = self.abs(src)
                    vouched = known is not None and path in known and identity(path) == known[path]
                    tail = _apply_move(path, None if dst is None else self.abs(dst),
                                       None if vouched else sha, ident, synced, progress,
                                       self._committed_bytes)
                    if tail is not None:
                        grown.append(tail)
                failpoint(f"{txn.split(':', 1)[0]}.moved-{'first' if n == 0 else 'more'}")
            failpoint(f"{txn.split(':', 1)[0]}.moved")
            sync_dirs(synced)
            failpoint(f"{txn.split(':', 1)[0]}.synced")
            with self._write_lock, _immediate(self._conn) as conn:
                conn.execute("DELETE FROM journal WHERE txn = ?", (txn,))
        return grown

    def _beside(self, src: bytes, dst: bytes, synced: set[Path | str]) -> bool:
        """Renames a journal's source over its destination when both are in one directory
        (a staged output and its final name); False for any other move.

        Paths as text, without the checks an input's move needs: a commit of an input
        spanning ten years publishes 3,650 parts, and a Path per name costs more than the
        rename. Done already (a crash after it): nothing to rename, but the directory is
        still fsynced, as the crash may have come before it was."""
        src_text, dst_text = self._abs_text(src), self._abs_text(dst)
        directory = os.path.dirname(src_text)
        if os.path.dirname(dst_text) != directory:
            return False
        try:
            os.replace(src_text, dst_text)
        except FileNotFoundError:
            if not os.path.isdir(directory):
                return True  # its partition is gone as a whole (deleted by hand): nothing to sync
        synced.add(directory)
        return True

    def _abs_text(self, stored: bytes | str) -> str:
        """A stored path as absolute text: under the root unless stored absolute."""
        text = os.fsdecode(stored)
        if self._root_prefix is None or os.path.isabs(text):
            return text
        return self._root_prefix + text

    def _committed_bytes(self, sha256: str) -> int | None:
        """The size of the committed input with this content, if any."""
        with self._write_lock:
            row = self._conn.execute("SELECT bytes FROM inputs WHERE sha256 = ? LIMIT 1",
                                     (sha256,)).fetchone()
        return None if row is None else int(row[0])

    def recover(self, prefix: str = "") -> int:
        """Completes every committed transaction whose moves are not done (a crash, a failed
        rename); `prefix` limits it to one kind (`input:`, `compact:`). Returns how many."""
        with self._write_lock:
            txns = [r[0] for r in self._conn.execute(
                "SELECT txn FROM journal WHERE substr(txn, 1, ?) = ? GROUP BY txn ORDER BY min(id)",
                (len(prefix), prefix))]
        for txn in txns:
            self.complete(txn)
        return len(txns)

    def pending(self, prefix: str = "") -> bool:
        with self._write_lock:
            return self._conn.execute("SELECT 1 FROM journal WHERE substr(txn, 1, ?) = ? LIMIT 1",
                                      (len(prefix), prefix)).fetchone() is not None

    def pending_paths(self) -> set[Path]:
        """Sources of moves not yet done (staged files recovery must not delete)."""
        with self._write_lock:
            return {self.abs(r[0]) for r in self._conn.execute("SELECT src FROM journal")}

    # --- reading ----------------------------------------------------------------------
    def stem_in_use(self, stem: str) -> bool:
        """True when a live output is already named after `stem` (<stem>-N.parquet, <stem>.jsonl)."""
        row = self._reader().execute(
            "SELECT 1 FROM outputs WHERE path LIKE ? OR path LIKE ? LIMIT 1",
            stem_globs(stem)).fetchone()
        return row is not None

    def occurrences(self, sha256: str) -> int:
        """How many times this content was committed (more than once only with dedupe off)."""
        row = self._reader().execute("SELECT count(*) FROM inputs WHERE sha256 = ?", (sha256,)).fetchone()
        return int(row[0])

    def counts(self, day: str) -> dict[str, int]:
        rows = self._reader().execute(
            "SELECT action, n FROM daily_counts WHERE date = ? ORDER BY action", (day,))
        return {a: n for a, n in rows}

    def count(self, day: str, action: str) -> int:
        row = self._reader().execute(
            "SELECT n FROM daily_counts WHERE date = ? AND action = ?", (day, action)).fetchone()
        return row[0] if row else 0

    def counters(self) -> dict[str, int]:
        return {name: n for name, n in self._reader().execute("SELECT name, n FROM counters")}

    def live_outputs(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The catalog of live files (paths absolute), ordered by path."""
        sql = "SELECT * FROM outputs" + (" WHERE kind = ?" if kind else "") + " ORDER BY path"
        return [self._row(r) for r in self._reader().execute(sql, (kind,) if kind else ())]

    def _row(self, row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["path"] = str(self.abs(d["path"]))
        return d

    def last_committed_at(self, outcome: str = "ok") -> str | None:
        """When the latest input with this outcome was committed (ISO-8601 UTC), if ever."""
        # Newest first by id: stops at the first match instead of scanning every input.
        row = self._reader().execute(
            "SELECT committed_at FROM inputs WHERE outcome = ? ORDER BY id DESC LIMIT 1",
            (outcome,)).fetchone()
        return None if row is None else str(row[0])

    # --- compaction -------------------------------------------------------------------
    def compaction_snapshot(self, kind: str = "clean") -> list[dict[str, Any]]:
        """The live files a compaction pass may merge, ordered by partition and age.

        One statement, so one consistent read: files whose publishing rename is still in
        the journal (committed, not yet on disk under their final name) are left out.
        """
        return [self._row(r) for r in self._reader().execute(
            "SELECT * FROM outputs WHERE kind = ? AND path NOT IN "
            "(SELECT CAST(dst AS TEXT) FROM journal WHERE dst IS NOT NULL)"
            " ORDER BY date, created_at, path",
            (kind,))]

    def commit_compaction(self, replaced: list[Path], merged: list[Output],
                          now: datetime | None = None) -> str:
        """Swaps `replaced` for `merged` (staged, fsynced) in the catalog; returns the journal id.

        One transaction: every replaced file must still be live and the row counts must
        agree, else CatalogChanged and nothing changes. The journal lists the publishing
        renames first and the deletions after them, so a reader listing the directory may
        briefly see both generations but never neither. Counts are untouched: compaction
        moves rows, it never adds or removes one.
        """
        at = utc_iso(now)
        txn = f"compact:{merged[0].date if merged else ''}:{at}:{uuid.uuid4().hex}"
        with self._write_lock, _immediate(self._conn) as conn:
            rows = 0
            for path in replaced:
                row = conn.execute("SELECT kind, rows FROM outputs WHERE path = ?",
                                   (self.rel(path),)).fetchone()
                if row is None or row[0] != "clean":
                    raise CatalogChanged(f"{path} is no longer a live data file")
                rows += row[1]
            if rows != sum(o.rows for o in merged):
                raise CatalogChanged(f"the merged files hold {sum(o.rows for o in merged)} rows, "
                                     f"their sources {rows}")
            conn.executemany("DELETE FROM outputs WHERE path = ?", [(self.rel(p),) for p in replaced])
            # A plain INSERT: a name that is already live is a bug, and aborts the swap.
            conn.executemany(
                "INSERT INTO outputs VALUES (?, NULL, ?, ?, ?, ?, ?)",
                [(self.rel(o.path), o.kind, o.date, o.rows, o.bytes, at) for o in merged])
            moves = ([(txn, self._enc(o.staged), self._enc(o.path), None) for o in merged]
                     + [(txn, self._enc(p), None, None) for p in replaced])
            conn.executemany("INSERT INTO journal (txn, src, dst, src_sha256) VALUES (?, ?, ?, ?)",
                             moves)
        return txn


def _record_history(conn: sqlite3.Connection, c: Commit, at: str, now: datetime | None) -> None:
    cur = conn.execute(
        "INSERT INTO history (at, name, outcome, processed, valid, errors, duration_ms, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (at, c.name, c.outcome, c.processed, c.valid, c.errors, c.duration_ms, c.reason))
    if (cur.lastrowid or 0) % _HISTORY_PRUNE_EVERY == 0:
        cutoff = (now or datetime.now(UTC)).timestamp() - HISTORY_KEEP_SECONDS
        conn.execute("DELETE FROM history WHERE at < ?",
                     (utc_iso(datetime.fromtimestamp(cutoff, UTC)),))


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _create(path: Path) -> None:
    """Creates a new ledger beside its final name, then renames it into place.

    A crash while creating leaves only the `.new` file (removed next time), never a
    schema-less ledger that start-up would have to refuse.
    """
    new = path.with_name(path.name + ".new")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(new) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(new, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = FULL")
        counters = "".join(f"INSERT INTO counters VALUES ('{c}', 0);" for c in COUNTERS)
        conn.executescript(
            "BEGIN IMMEDIATE;" + _SCHEMA + counters
            + f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
            + f"INSERT INTO meta VALUES ('created_at', '{utc_iso()}');COMMIT;")
    finally:
        conn.close()
    fsync_file(new)
    os.replace(new, path)
    fsync_dir(path.parent)


def _verify(conn: sqlite3.Connection, path: Path) -> None:
    check = conn.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise LedgerError(f"the ledger {path} failed its integrity check ({check}); refusing to start.")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        raise LedgerError(f"the ledger {path} holds no logwatchd schema (emptied or not ours); "
                          "refusing to start. Run `logwatchd rebuild-ledger` to rebuild it.")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        raise LedgerError(f"the ledger {path} has schema version {row and row[0]!r}, "
                          f"expected {SCHEMA_VERSION!r}; refusing to start.")


def _upgrade(conn: sqlite3.Connection) -> None:
    """Adds what later versions keep in a ledger of an earlier one (tables, a column, counters)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(journal)")}
    with _immediate(conn):
        conn.execute(_ADDITIONS)
        for statement in _HISTORY:
            conn.execute(statement)
        if "src_ident" not in columns:
            conn.execute("ALTER TABLE journal ADD COLUMN src_ident TEXT")
        conn.executemany("INSERT OR IGNORE INTO counters VALUES (?, 0)", [(c,) for c in COUNTERS])


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _has_files(root: Path) -> Iterator[bool]:
    for _dirpath, _dirs, files in os.walk(root):
        for f in files:
            if not f.startswith("."):
                yield True
                return


FileIdentity = tuple[int, int, int, int]


def identity(path: Path | os.stat_result) -> FileIdentity | None:
    """(device, inode, size, mtime_ns) of a path (not followed) or of a stat result."""
    try:
        st = path if isinstance(path, os.stat_result) else os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def inode_of(path: Path | os.stat_result) -> str | None:
    """`device:inode` of a path (not followed) or stat result: which file a name holds."""
    try:
        st = path if isinstance(path, os.stat_result) else os.lstat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def _ident_text(m: Move) -> str | None:
    return None if m.src_ident is None else ("keep:" if m.keep else "") + m.src_ident


class Grown(NamedTuple):
    """An input that grew after it was read: its first `size` bytes were committed, the
    rest is the inbox file `tail` (`durable.split_grown`)."""

    src: Path
    size: int
    tail: Path


def _apply_move(src: Path, dst: Path | None, sha: str | None, ident: str | None,
                synced: set[Path | str], progress: Callable[[], None] | None = None,
                committed_bytes: Callable[[str], int | None] | None = None) -> Grown | None:
    """One journal move, idempotent: done already, or source gone, is fine. An input that
    only grew since it was read is cut back first, its new bytes the next input."""
    keep_dst = ident is not None and ident.startswith("keep:")
    ident = ident[5:] if keep_dst and ident is not None else ident
    if not os.path.lexists(src):  # already moved (or deleted) before the crash, perhaps
        # before its directories were fsynced: they are now
        synced.update(d for d in (src.parent, None if dst is None else dst.parent)
                      if d is not None and os.path.isdir(d))
        return None
    if ident and inode_of(src) != ident:
        return None  # another file was renamed over the name: it is processed on its own
    grown = None
    if sha is not None and sha256_file(src, progress) != sha:
        size = committed_bytes(sha) if committed_bytes is not None else None
        tail = None if size is None else split_grown(src, sha, size, progress)
        if size is None or tail is None:
            return None  # the name now holds other content: leave it for its own processing
        grown = Grown(src, size, tail)
    if keep_dst and dst is not None:
        keep(src, dst, synced)
    else:
        move(src, dst, synced)
    return grown
