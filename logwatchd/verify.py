"""`logwatchd verify`: an offline check of the ledger against the dataset against the archive.

Returns a list of problems; `cli.py` prints them and picks the exit code. The ledger is
opened read-only (`file:…?mode=ro`) and no lock is taken: run it while nothing writes
(the daemon stopped), or expect the files in hand to show as pending or missing.

Paths stored in the ledger (`outputs.path`, the journal) are resolved against
`paths.root` when they are relative, so older ledgers (absolute paths) and newer ones
(relative to the root) are checked alike.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from .config import Config
from .durable import sha256_file
from .errors import LedgerError
from .layout import partition_date
from .writers import iter_staging_files

# The kinds of problem, each one line of output.
MISSING_OUTPUT = "missing_output"          # a live output of the ledger is not on disk
SIZE_MISMATCH = "size_mismatch"            # on disk, but not the size the ledger recorded
ROWS_MISMATCH = "rows_mismatch"            # Parquet num_rows / JSON Lines lines differ from the ledger
UNREADABLE_OUTPUT = "unreadable_output"    # cannot be read as Parquet / JSON Lines
ORPHAN_FILE = "orphan_file"                # a data or error file the ledger does not list
STAGING_FILE = "staging_file"              # a hidden `.NAME.tmp` left behind
PENDING_JOURNAL = "pending_journal"        # committed moves not yet carried out
COUNT_MISMATCH = "count_mismatch"          # daily_counts differ from the dataset's rows
COUNTER_MISMATCH = "counter_mismatch"      # records_valid / records_errors differ from the outputs
UNKNOWN_ARCHIVED_INPUT = "unknown_archived_input"  # an archived file whose content the ledger never saw
LEDGER_CORRUPT = "ledger_corrupt"          # SQLite's integrity check fails: nothing else is trusted


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str
    path: str | None = None

    def line(self) -> str:
        return f"{self.kind}: {self.detail}"

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def verify(config: Config) -> list[Problem]:
    """Every disagreement between the ledger, the files on disk and the archive."""
    conn = open_read_only(config.paths.ledger)
    try:
        corrupt = _check_integrity(conn)
        if corrupt:  # the other checks would read a damaged file: its verdict comes first
            return corrupt
        problems: list[Problem] = []
        problems += _check_journal(config, conn)
        live = _live_outputs(config, conn)
        problems += _check_outputs(config, live)
        problems += _check_orphans(config, live)
        problems += _check_staging(config)
        problems += _check_counts(config, conn)
        problems += _check_counters(conn)
        problems += _check_archive(config, conn)
        return problems
    finally:
        conn.close()


def _check_integrity(conn: sqlite3.Connection) -> list[Problem]:
    """SQLite's full integrity check of the ledger (every page, index and constraint)."""
    try:
        found = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [Problem(LEDGER_CORRUPT, f"the ledger cannot be checked: {exc}")]
    if found == ["ok"]:
        return []
    return [Problem(LEDGER_CORRUPT, f"the ledger fails SQLite's integrity check: {line}")
            for line in found[:20]]


def open_read_only(path: Path) -> sqlite3.Connection:
    """The ledger opened read-only: verify never writes it, nor creates it."""
    if not path.is_file():
        raise LedgerError(f"no ledger at {path}; nothing to verify against")
    uri = f"file:{quote(os.fsencode(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT 1 FROM outputs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"the ledger {path} cannot be read: {exc}") from None
    return conn


def resolve(root: Path, stored: str | bytes) -> Path:
    """A path as the ledger stores it: relative to `paths.root`, or (older ledgers) absolute."""
    path = Path(os.fsdecode(stored))
    return path if path.is_absolute() else root / path


def _shown(config: Config, path: Path) -> str:
    """A path for a message: relative to the root when under it, as valid UTF-8."""
    try:
        text = str(path.relative_to(config.paths.root))
    except ValueError:
        text = str(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass(frozen=True)
class _Live:
    path: Path
    kind: str
    date: str
    rows: int
    bytes: int


def _live_outputs(config: Config, conn: sqlite3.Connection) -> list[_Live]:
    rows = conn.execute("SELECT path, kind, date, rows, bytes FROM outputs ORDER BY path")
    return [_Live(resolve(config.paths.root, p), k, d, r, b) for p, k, d, r, b in rows]


def _check_journal(config: Config, conn: sqlite3.Connection) -> Iterator[Problem]:
    for txn, n, src in conn.execute("SELECT txn, count(*), min(src) FROM journal GROUP BY txn ORDER BY min(id)"):
        first = _shown(config, resolve(config.paths.root, src))
        yield Problem(PENDING_JOURNAL, f"transaction {txn} has {n} move(s) not yet done (first: {first}); "
                                       "the next start-up completes them")


def _check_outputs(config: Config, live: list[_Live]) -> Iterator[Problem]:
    import pyarrow.parquet as pq

    for out in live:
        shown = _shown(config, out.path)
        try:
            size = os.lstat(out.path).st_size
        except FileNotFoundError:
            yield Problem(MISSING_OUTPUT, f"{shown} is live in the ledger but not on disk", shown)
            continue
        if size != out.bytes:
            yield Problem(SIZE_MISMATCH, f"{shown} has {size} bytes, the ledger says {out.bytes}", shown)
        try:
            if out.kind == "clean":
                rows = pq.ParquetFile(out.path).metadata.num_rows
            else:
                rows = _count_lines(out.path)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            yield Problem(UNREADABLE_OUTPUT, f"{shown} cannot be read: {exc}", shown)
            continue
        if rows != out.rows:
            yield Problem(ROWS_MISMATCH, f"{shown} holds {rows} rows, the ledger says {out.rows}", shown)


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return n


def _data_files(root: Path, suffix: str, hidden: tuple[str, ...] = (".", "_")) -> Iterator[tuple[str, Path]]:
    """(date, file) of every file under `root/date=*/` ending in `suffix`, but for `hidden` names
    (in the dataset, names starting with `.` or `_` are not data)."""
    if not root.is_dir():
        return
    for part in sorted(root.iterdir()):
        day = partition_date(part.name)
        if day is None or not part.is_dir():
            continue
        for f in sorted(part.iterdir()):
            if not f.name.startswith(hidden) and f.name.endswith(suffix):
                yield day, f


def _check_orphans(config: Config, live: list[_Live]) -> Iterator[Problem]:
    known = {os.path.normpath(out.path) for out in live}
    for root, suffix, what in ((config.paths.clean, ".parquet", "data"),
                               (config.paths.errors, ".jsonl", "error")):
        for _day, f in _data_files(root, suffix):
            if os.path.normpath(f) not in known:
                shown = _shown(config, f)
                yield Problem(ORPHAN_FILE, f"{shown} is a {what} file the ledger does not list", shown)


def _check_staging(config: Config) -> Iterator[Problem]:
    p = config.paths
    for staged in iter_staging_files(p.clean, p.errors, p.quarantine, p.dead_letter):
        shown = _shown(config, staged)
        yield Problem(STAGING_FILE, f"{shown} is a staging file left behind", shown)


def _check_counts(config: Config, conn: sqlite3.Connection) -> Iterator[Problem]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    scanned: Counter[tuple[str, str]] = Counter()
    for day, f in _data_files(config.paths.clean, ".parquet"):
        try:
            actions = pq.read_table(f, columns=["action"])["action"]
        except Exception:  # noqa: BLE001, S112 - an unreadable file is reported by the output check
            continue
        for item in pc.value_counts(actions).to_pylist():
            scanned[(day, item["values"])] += item["counts"]
    recorded = {(d, a): n for d, a, n in conn.execute("SELECT date, action, n FROM daily_counts")}
    for key in sorted(set(scanned) | set(recorded)):
        want, got = recorded.get(key, 0), scanned.get(key, 0)
        if want != got:
            day, action = key
            yield Problem(COUNT_MISMATCH, f"date {day}, action {action!r}: daily_counts says {want}, "
                                          f"the dataset holds {got}")


def _check_counters(conn: sqlite3.Connection) -> Iterator[Problem]:
    counters = dict(conn.execute("SELECT name, n FROM counters").fetchall())
    sums = dict(conn.execute("SELECT kind, coalesce(sum(rows), 0) FROM outputs GROUP BY kind").fetchall())
    for counter, kind in (("records_valid", "clean"), ("records_errors", "errors")):
        want, got = counters.get(counter, 0), sums.get(kind, 0)
        if want != got:
            yield Problem(COUNTER_MISMATCH, f"{counter} is {want}, the live {kind} outputs hold {got} rows")


def _check_archive(config: Config, conn: sqlite3.Connection) -> Iterator[Problem]:
    if config.paths.archive is None:
        return
    # An input may be named `_x.jsonl`: only hidden (staging) names are skipped here.
    for _day, f in _data_files(config.paths.archive, "", hidden=(".",)):
        if not f.is_file() or f.is_symlink():
            continue
        sha = sha256_file(f)
        if sha is None or conn.execute("SELECT 1 FROM inputs WHERE sha256 = ? LIMIT 1", (sha,)).fetchone() is None:
            shown = _shown(config, f)
            yield Problem(UNKNOWN_ARCHIVED_INPUT,
                          f"{shown} is archived but the ledger has no input with its content", shown)
