"""Live metrics of one daemon process: Prometheus series for /metrics and a plain snapshot for /stats.

Every series exists from start-up, at zero, so that its absence can be alerted on. The
counters here cover this process's lifetime (Prometheus handles the reset at a restart);
the totals since the ledger was created live in the ledger itself (`Ledger.counters()`).

Updates come from the daemon's threads and reads from the HTTP threads: the Prometheus
objects are thread-safe on their own, the snapshot's plain numbers are kept under one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# Without this every counter and histogram also exposes a `*_created` timestamp series,
# doubling what is scraped for no use here (the start time is its own gauge).
disable_created_metrics()

FILE_OUTCOMES = ("ok", "quarantined", "duplicate", "dead_lettered", "refused", "failed")
# Outcomes after which the input's content is accounted for: "the last successful file".
SUCCESS_OUTCOMES = frozenset({"ok", "duplicate"})

# Per-file processing time: from a few milliseconds (small files) to minutes (GB files).
PROCESSING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 120.0, 300.0, 600.0)

COMPACTION_FIELDS = ("runs", "files_in", "files_out", "rows", "bytes_before", "bytes_after",
                     "seconds")


def iso_utc(epoch: float) -> str:
    """An epoch time as ISO-8601 UTC with milliseconds, the ledger's format."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _notifies(method: Callable[..., None]) -> Callable[..., None]:
    """An update that sets `changed` once it is done (readers then see the new figures)."""
    def update(self: Metrics, *args: Any, **kwargs: Any) -> None:
        method(self, *args, **kwargs)
        self.changed.set()
    update.__doc__ = method.__doc__
    return update


class Metrics:
    """The daemon's counters, gauges and histogram, in a registry of their own."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.started_at = clock()
        self._files = dict.fromkeys(FILE_OUTCOMES, 0)
        self._records = {"valid": 0, "errors": 0}
        self._retries = 0
        self._backlog = 0
        # The oldest waiting file is kept as the time it started waiting, not as an age:
        # the age then keeps growing between updates, also when the worker is stuck and
        # stops reporting — exactly when /healthz must notice it.
        self._oldest_since: float | None = None
        self._paused = False
        self._failing = 0                       # files waiting to be retried
        self._failing_since: float | None = None  # Unix time the oldest of them first failed
        self._last_success: float | None = None
        self._compaction = dict.fromkeys(COMPACTION_FIELDS, 0.0)
        self.changed = threading.Event()  # set after every update: the HTTP process is told

        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._files_total = Counter(
            "logwatchd_files", "Input files by outcome, since start-up.", ["outcome"], registry=r)
        for outcome in FILE_OUTCOMES:
            self._files_total.labels(outcome)
        self._records_total = Counter(
            "logwatchd_records", "Input records by outcome (valid rows, error lines), since start-up.",
            ["outcome"], registry=r)
        for outcome in ("valid", "error"):
            self._records_total.labels(outcome)
        self._retries_total = Counter(
            "logwatchd_file_retries", "Attempts at a file that will be retried (transient errors, bugs).",
            registry=r)
        self._duration = Histogram(
            "logwatchd_file_processing_seconds", "Time to process one input file, by any outcome.",
            buckets=PROCESSING_BUCKETS, registry=r)
        self._backlog_gauge = Gauge(
            "logwatchd_backlog_files", "Files waiting in the inbox.", registry=r)
        Gauge("logwatchd_oldest_waiting_file_age_seconds",
              "Age of the oldest file waiting in the inbox; 0 when none waits.",
              registry=r).set_function(self._oldest_age)
        self._paused_gauge = Gauge(
            "logwatchd_intake_paused", "1 while intake is paused (disk low, permission denied).",
            registry=r)
        self._failing_gauge = Gauge(
            "logwatchd_failing_files", "Files that failed and wait to be retried.", registry=r)
        Gauge("logwatchd_oldest_failing_file_age_seconds",
              "Time since the first failure of the longest-failing file; 0 when none fails.",
              registry=r).set_function(self._oldest_failing_age)
        self._last_success_gauge = Gauge(
            "logwatchd_last_success_timestamp_seconds",
            "Unix time of the last file processed ok or found duplicate; 0 before the first.",
            registry=r)
        Gauge("logwatchd_start_time_seconds", "Unix time the daemon started.",
              registry=r).set(self.started_at)
        self._compactions = Counter(
            "logwatchd_compactions", "Compaction passes that merged files.", registry=r)
        self._compaction_files = Counter(
            "logwatchd_compaction_files", "Parquet files read (in) and written (out) by compaction.",
            ["direction"], registry=r)
        for direction in ("in", "out"):
            self._compaction_files.labels(direction)
        self._compaction_rows = Counter(
            "logwatchd_compaction_rows", "Rows rewritten by compaction.", registry=r)
        self._compaction_bytes = Counter(
            "logwatchd_compaction_bytes", "Bytes of the files compaction replaced (before) and wrote (after).",
            ["stage"], registry=r)
        for stage in ("before", "after"):
            self._compaction_bytes.labels(stage)
        self._compaction_seconds = Counter(
            "logwatchd_compaction_seconds", "Time spent compacting.", registry=r)

    # --- updates (called by the daemon) ---------------------------------------------------
    @_notifies
    def file_done(self, status: str, processed: int, valid: int, errors: int,
                  duration_s: float) -> None:
        """Counts one file's outcome, its records and its processing time."""
        if status not in self._files:
            raise ValueError(f"unknown file outcome {status!r} (known: {', '.join(FILE_OUTCOMES)})")
        now = self._clock()
        self._files_total.labels(status).inc()
        if valid:
            self._records_total.labels("valid").inc(valid)
        if errors:
            self._records_total.labels("error").inc(errors)
        self._duration.observe(max(0.0, duration_s))
        if status in SUCCESS_OUTCOMES:
            self._last_success_gauge.set(now)
        with self._lock:
            self._files[status] += 1
            self._records["valid"] += valid
            self._records["errors"] += errors
            if status in SUCCESS_OUTCOMES:
                self._last_success = now

    @_notifies
    def file_retry(self) -> None:
        """Counts one failed attempt that will be tried again."""
        self._retries_total.inc()
        with self._lock:
            self._retries += 1

    @_notifies
    def set_backlog(self, files: int, oldest_age_s: float) -> None:
        """Records how many files wait in the inbox and how long the oldest has waited."""
        now = self._clock()
        self._backlog_gauge.set(files)
        with self._lock:
            self._backlog = files
            self._oldest_since = now - max(0.0, oldest_age_s) if files > 0 else None

    @_notifies
    def set_failing(self, files: int, oldest_since: float | None) -> None:
        """Records how many files are failing and since when the oldest of them has."""
        self._failing_gauge.set(files)
        with self._lock:
            self._failing = files
            self._failing_since = oldest_since if files else None

    def _oldest_failing_age(self) -> float:
        since = self._failing_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    @_notifies
    def set_intake_paused(self, paused: bool) -> None:
        self._paused_gauge.set(1 if paused else 0)
        with self._lock:
            self._paused = paused

    @_notifies
    def compaction_done(self, files_in: int, files_out: int, rows: int, bytes_before: int,
                        bytes_after: int, duration_s: float) -> None:
        """Counts one compaction of a partition."""
        self._compactions.inc()
        self._compaction_files.labels("in").inc(files_in)
        self._compaction_files.labels("out").inc(files_out)
        self._compaction_rows.inc(rows)
        self._compaction_bytes.labels("before").inc(bytes_before)
        self._compaction_bytes.labels("after").inc(bytes_after)
        self._compaction_seconds.inc(max(0.0, duration_s))
        with self._lock:
            c = self._compaction
            c["runs"] += 1
            c["files_in"] += files_in
            c["files_out"] += files_out
            c["rows"] += rows
            c["bytes_before"] += bytes_before
            c["bytes_after"] += bytes_after
            c["seconds"] += max(0.0, duration_s)

    # --- reading --------------------------------------------------------------------------
    def _oldest_age(self) -> float:
        since = self._oldest_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def state(self) -> dict[str, Any]:
        """This process's figures as plain values, with instants rather than ages, so that
        another process (the HTTP endpoint's) can compute the ages when it answers."""
        with self._lock:
            return {
                "started_at": self.started_at,
                "files": dict(self._files),
                "records_valid": self._records["valid"],
                "records_errors": self._records["errors"],
                "retries": self._retries,
                "backlog": self._backlog,
                "oldest_since": self._oldest_since,
                "intake_paused": self._paused,
                "failing_files": self._failing,
                "failing_since": self._failing_since,
                "last_success": self._last_success,
                "compaction": dict(self._compaction),
            }

    def snapshot(self) -> dict[str, Any]:
        """This process's figures as plain JSON-able values (see `snapshot_of`)."""
        return snapshot_of(self.state(), self._clock())


def snapshot_of(state: dict[str, Any], now: float) -> dict[str, Any]:
    """Figures as `/stats` and `/healthz` use them, ages computed at `now`.

    Keys: `started_at`, `uptime_s`, `files` (count per outcome), `records_valid`,
    `records_errors`, `retries`, `backlog`, `oldest_waiting_age_s`, `intake_paused`,
    `failing_files`, `oldest_failing_age_s`, `last_success_at` (ISO-8601 UTC, or None before
    the first success), `compaction` (`runs`, `files_in`, `files_out`, `rows`,
    `bytes_before`, `bytes_after`, `seconds`).
    """
    def age(since: float | None) -> float:
        return 0.0 if since is None else round(max(0.0, now - since), 3)

    compaction: dict[str, float | int] = {
        k: (round(v, 6) if k == "seconds" else int(v)) for k, v in state["compaction"].items()}
    last = state["last_success"]
    return {
        "started_at": iso_utc(state["started_at"]),
        "uptime_s": round(max(0.0, now - state["started_at"]), 3),
        "files": dict(state["files"]),
        "records_valid": state["records_valid"],
        "records_errors": state["records_errors"],
        "retries": state["retries"],
        "backlog": state["backlog"],
        "oldest_waiting_age_s": age(state["oldest_since"]),
        "intake_paused": state["intake_paused"],
        "failing_files": state["failing_files"],
        "oldest_failing_age_s": age(state["failing_since"]),
        "last_success_at": None if last is None else iso_utc(last),
        "compaction": compaction,
    }
