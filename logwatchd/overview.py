"""The operator's picture of one root: what /stats answers, the status page draws and `status` prints.

One function (`build_stats`) builds it from a read connection to the ledger — the daemon's
own, or a read-only one when the daemon is down — and, when the daemon runs, its live
metrics snapshot. The page, `logwatchd status` and /stats all show this one dictionary,
so they cannot disagree on a number.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import orjson

from .config import Config
from .layout import REASON_SUFFIX
from .metrics import COMPACTION_FIELDS, iso_utc

RECENT_FILES = 20          # last files listed
LIST_LIMIT = 20            # quarantine / dead-letter / failing entries listed (with a total)
THROUGHPUT_MINUTES = 60    # the chart: one bar per minute over the last hour
MAX_TEXT = 300             # a reason or error cut to this many characters

# The ledger's outcome names → the names /stats uses for files.
FILE_KEYS = {"ok": "processed", "quarantined": "quarantined", "dead_lettered": "dead_lettered",
             "duplicate": "duplicate", "refused": "refused"}


def display(name: str | bytes) -> str:
    """A file name as valid UTF-8 text (undecodable bytes become U+FFFD)."""
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    return raw.decode("utf-8", "replace")


def _cut(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = (),
          optional: bool = False) -> list[tuple[Any, ...]]:
    """Rows as tuples. With `optional`, a table that a ledger of an earlier version (opened
    read-only, so not upgraded) lacks reads as empty; any other missing table is an error."""
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    except sqlite3.OperationalError as exc:
        if optional and "no such table" in str(exc):
            return []
        raise


def today_start(config: Config, now: float) -> tuple[str, str]:
    """(today's date in the configured zone, the instant it began as the ledger writes instants)."""
    zone = config.transform.zone
    day = datetime.fromtimestamp(now, zone).date()
    start = datetime.combine(day, time(0), tzinfo=zone)  # fold=0 where midnight is ambiguous
    return day.isoformat(), iso_utc(start.timestamp())


def build_stats(conn: sqlite3.Connection, config: Config, live: dict[str, Any] | None,
                now: float) -> dict[str, Any]:
    """The whole picture. `live` is the daemon's `Metrics.snapshot()`, None when it is down
    (the backlog is then counted from the inbox and the figures of a process are null)."""
    counters = dict(_rows(conn, "SELECT name, n FROM counters"))
    out: dict[str, Any] = {
        "files": {"processed": counters.get("files_ok", 0),
                  "quarantined": counters.get("files_quarantined", 0),
                  "dead_lettered": counters.get("files_dead_lettered", 0),
                  "duplicate": counters.get("files_duplicate", 0),
                  "refused": counters.get("files_refused", 0)},
        "records": {"processed": counters.get("records_processed", 0),
                    "valid": counters.get("records_valid", 0),
                    "errors": counters.get("records_errors", 0)},
    }
    last_ok = _rows(conn, "SELECT committed_at FROM inputs WHERE outcome = 'ok' ORDER BY id DESC LIMIT 1")
    ledger_last = str(last_ok[0][0]) if last_ok else None
    failing = _failing(conn, now)
    if live is not None:
        out |= {
            "backlog": live["backlog"],
            "oldest_waiting_age_seconds": live["oldest_waiting_age_s"],
            "intake_paused": live["intake_paused"],
            "failing_files": live["failing_files"],
            "oldest_failing_age_seconds": live["oldest_failing_age_s"],
            # After a restart this process has seen no file yet; the ledger remembers the last.
            "last_success_at": _latest(live["last_success_at"], ledger_last),
            "started_at": live["started_at"],
            "uptime_seconds": live["uptime_s"],
            "retries": live["retries"],
            "compaction": live["compaction"],
        }
    else:
        backlog, oldest = inbox_backlog(config, now)
        out |= {
            "backlog": backlog, "oldest_waiting_age_seconds": oldest, "intake_paused": None,
            "failing_files": failing["count"],
            "oldest_failing_age_seconds": failing["oldest_age_seconds"],
            "last_success_at": ledger_last, "started_at": None, "uptime_seconds": None,
            "retries": None, "compaction": dict.fromkeys(COMPACTION_FIELDS, None),
        }
    out["today"] = _today(conn, config, now)
    out["recent_files"] = _recent(conn)
    out["failing"] = failing["files"]
    out["quarantine"] = set_aside(config, config.paths.quarantine, "quarantine")
    out["dead_letter"] = set_aside(config, config.paths.dead_letter, "dead-letter")
    out["catalog"] = _catalog(conn, config)
    out["throughput"] = _throughput(conn, now)
    return out


def _latest(*instants: str | None) -> str | None:
    """The latest of some ISO-8601 UTC instants (compared as instants, not as text)."""
    known = [i for i in instants if i]
    return max(known, key=lambda i: datetime.fromisoformat(i), default=None)


def _today(conn: sqlite3.Connection, config: Config, now: float) -> dict[str, Any]:
    day, start = today_start(config, now)
    files = dict.fromkeys(FILE_KEYS.values(), 0)
    records = {"processed": 0, "valid": 0, "errors": 0}
    for outcome, n, processed, valid, errors in _rows(
            conn, "SELECT outcome, count(*), sum(processed), sum(valid), sum(errors) FROM history"
                  " WHERE at >= ? GROUP BY outcome", (start,), optional=True):
        files[FILE_KEYS.get(outcome, outcome)] = n
        records["processed"] += processed or 0
        records["valid"] += valid or 0
        records["errors"] += errors or 0
    ratio = round(records["errors"] / records["processed"], 4) if records["processed"] else 0.0
    return {"date": day, "timezone": config.transform.timezone, "since": start,
            "files": files, "records": records, "error_ratio": ratio}


def _recent(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"file": display(name), "outcome": FILE_KEYS.get(outcome, outcome), "at": at,
             "processed": p, "valid": v, "errors": e, "duration_ms": d, "reason": _cut(reason)}
            for at, name, outcome, p, v, e, d, reason in _rows(
                conn, "SELECT at, name, outcome, processed, valid, errors, duration_ms, reason"
                      " FROM history ORDER BY id DESC LIMIT ?", (RECENT_FILES,), optional=True)]


def _failing(conn: sqlite3.Connection, now: float) -> dict[str, Any]:
    rows = _rows(conn, "SELECT name, failures, first_failed_at, last_error FROM attempts"
                       " WHERE first_failed_at IS NOT NULL ORDER BY first_failed_at", optional=True)
    oldest = round(max(0.0, now - float(rows[0][2])), 3) if rows else 0.0
    return {"count": len(rows), "oldest_age_seconds": oldest,
            "files": [{"file": display(bytes(name)), "failures": failures,
                       "first_failed_at": iso_utc(float(first)), "last_error": _cut(error)}
                      for name, failures, first, error in rows[:LIST_LIMIT]]}


def _catalog(conn: sqlite3.Connection, config: Config) -> dict[str, int]:
    """The compaction state of the dataset: live files, and how many wait to be merged."""
    target, min_files = config.compaction.target_file_bytes, config.compaction.min_files
    row = _rows(conn, "SELECT count(*), count(DISTINCT date), coalesce(sum(bytes < ?), 0)"
                      " FROM outputs WHERE kind = 'clean'", (target,))
    files, partitions, small = row[0] if row else (0, 0, 0)
    due = _rows(conn, "SELECT count(*) FROM (SELECT date FROM outputs WHERE kind = 'clean'"
                      " AND bytes < ? GROUP BY date HAVING count(*) >= ?)", (target, min_files))
    return {"live_files": files, "partitions": partitions, "small_files": small,
            "partitions_due": due[0][0] if due else 0}


def _throughput(conn: sqlite3.Connection, now: float) -> dict[str, Any]:
    """Files and records per minute over the last hour, oldest minute first."""
    minutes = THROUGHPUT_MINUTES
    this_minute = int(now // 60)
    files, records = [0] * minutes, [0] * minutes
    for at, processed in _rows(conn, "SELECT at, processed FROM history WHERE at >= ?",
                               (iso_utc((this_minute - minutes + 1) * 60),), optional=True):
        i = int(datetime.fromisoformat(at).timestamp() // 60) - this_minute + minutes - 1
        if 0 <= i < minutes:
            files[i] += 1
            records[i] += processed
    return {"minutes": minutes, "until": iso_utc((this_minute + 1) * 60),
            "files": files, "records": records}


def inbox_backlog(config: Config, now: float) -> tuple[int, float]:
    """(files waiting in the inbox, age of the oldest by its mtime) — without the daemon."""
    from .inbox import waiting_files

    try:
        found = waiting_files(config.paths.inbox, config.ingest)
    except FileNotFoundError:
        return 0, 0.0
    oldest = min((mtime for mtime, _path in found), default=None)
    return len(found), round(max(0.0, now - oldest), 3) if oldest is not None else 0.0


def replay_command(config: Config, source: str, name: str) -> str:
    """The shell command that moves this entry back into the inbox, exact for any name:
    `--` before it (a name may start with `-`), and bash's `$'…'` with a hex escape for every byte
    that is not printable ASCII (invalid UTF-8, control and format characters)."""
    cfg = f" -c {shell_word(str(config.source.resolve()))}" if config.source else ""
    return f"logwatchd replay{cfg} {source} -- {shell_word(name)}"


def shell_word(text: str) -> str:
    """`text` (surrogate-escaped bytes allowed) as one word that bash gives back exactly."""
    raw = os.fsencode(text)
    if all(0x20 <= b < 0x7F for b in raw):
        return shlex.quote(text)
    escaped = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b"'\\" else f"\\x{b:02x}"
                      for b in raw)
    return f"$'{escaped}'"


def set_aside(config: Config, directory: Path, source: str) -> dict[str, Any]:
    """Quarantine or dead-letter: how many entries, and the newest with reason and replay command."""
    entries: list[tuple[float, str]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith(".") or entry.name.endswith(REASON_SUFFIX):
                    continue
                try:
                    entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
                except FileNotFoundError:
                    continue
    except FileNotFoundError:
        pass
    entries.sort(reverse=True)
    files = []
    for _mtime, name in entries[:LIST_LIMIT]:
        reason: dict[str, Any] = {}
        try:
            reason = orjson.loads((directory / (name + REASON_SUFFIX)).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            pass
        if not isinstance(reason, dict):
            reason = {}
        files.append({"file": display(name), "reason": _cut(_text(reason.get("reason"))),
                      "detail": _cut(_text(reason.get("detail"))), "at": _text(reason.get("at")),
                      "replay": replay_command(config, source, name)})
    return {"count": len(entries), "files": files}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def now_utc() -> float:
    return datetime.now(UTC).timestamp()
