"""The daemon's lifecycle: start-up, the worker loop, signals, sd_notify, schedules, shutdown.

The only module that wires threads together:

    inotify thread (watchdog)   ─┐
    inbox tick thread (settle,   ├─► Intake (bounded) ─► worker thread ─► Pipeline ─► ledger
      rescan)                   ─┘
    scheduler (APScheduler): compaction pass (in a child process), metrics event
    HTTP process (apiproc: waitress), fed the metrics by a publisher thread
    main thread: signals (flags only), WATCHDOG=1 / STATUS= pings, shutdown

HTTP serving and compaction run in processes of their own: the worker thread shares the
interpreter lock with nothing busy, so neither HTTP load nor a compaction pass slows
ingestion down.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from . import logs
from .config import Config, load_config
from .errors import ConfigError, Disposition, FileBusy, LedgerError, PublishPending, classify
from .inbox import InboxWatcher, Intake, writer_active
from .layout import display_name
from .ledger import AttemptState, inode_of
from .metrics import Metrics
from .notify import Notifier, watchdog_interval
from .parallel import PoolRunner
from .pipeline import FileOutcome, Pipeline
from .procs import start_forkserver
from .records import warm_up
from .runtime import Runtime, open_runtime

QUEUE_CAPACITY = 1024
MAX_BACKOFF_S = 60.0
STOP_DEADLINE_S = 8.0          # SIGTERM → exit well within 10 s
STOP_GRACE_S = 2.0             # how long the file in hand may run on after SIGTERM


class ErrorRatioWindow:
    """errors / processed over the last `window` seconds, and whether it crossed the threshold."""

    def __init__(self, window: float, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self._events: deque[tuple[float, int, int]] = deque()
        self.alerting = False

    def add(self, now: float, processed: int, errors: int) -> None:
        if processed:
            self._events.append((now, processed, errors))

    def ratio(self, now: float) -> tuple[float, int, int]:
        while self._events and self._events[0][0] < now - self.window:
            self._events.popleft()
        processed = sum(e[1] for e in self._events)
        errors = sum(e[2] for e in self._events)
        return (errors / processed if processed else 0.0), processed, errors


class Daemon:
    """Owns start-up, the main loop and shutdown (uvicorn's Server, for files)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.log = logs.get_logger()
        self.notifier = Notifier()
        self.stop_event = threading.Event()
        self.reload_flag = threading.Event()
        self.cancel = threading.Event()
        self.metrics = Metrics()
        self.intake = Intake(QUEUE_CAPACITY)
        self.heartbeat = time.monotonic()
        self._in_hand: bytes | None = None   # the inbox name the worker is processing
        self._rewatch_failed = False
        self.paused = False                  # the host cannot take files (disk full)
        self._pause_until = 0.0              # monotonic time of the next probe while paused
        self._pause_backoff = 1.0
        self._backoff: dict[Path, float] = {}  # each failing file's own next backoff
        self._failing: dict[Path, float] = {}  # failing files -> Unix time of first failure
        self._failing_lock = threading.Lock()
        # Files whose outcome is committed but whose moves failed: reported once they are done.
        self._unpublished: dict[Path, FileOutcome] = {}
        self.window = ErrorRatioWindow(config.metrics.alert_window_seconds,
                                       config.metrics.alert_error_ratio)
        self._window_lock = threading.Lock()
        self.rt: Runtime | None = None
        self.pipeline: Pipeline | None = None
        self.watcher: InboxWatcher | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.api: Any = None
        self.worker: threading.Thread | None = None
        self._last_metrics = (time.monotonic(), 0, 0)
        self._compacting = threading.Lock()

    # --- start-up ---------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        self.rt = open_runtime(cfg)
        start_forkserver()  # from the main thread: every child process dies with this one
        workers = cfg.ingest.workers or os.cpu_count() or 1
        self.pipeline = Pipeline(cfg, self.rt.ledger, pool=PoolRunner(workers) if workers > 1 else None,
                                 cancel=self.cancel, progress=self._beat)
        warm_up(cfg.transform.timezone)  # before READY: the first file pays no import cost
        self._load_failing()
        self.watcher = InboxWatcher(cfg.paths.inbox, cfg.ingest, self.intake)
        self.worker = threading.Thread(target=self._work_loop, name="worker", daemon=True)
        self.watcher.start()          # the backlog is queued before any new arrival is taken
        self._start_api()             # before the worker: a port in use fails start-up before
        self.worker.start()           # any file is taken, and /healthz sees a running watcher
        self._start_scheduler()
        self.log.info(logs.DAEMON_STARTED, pid=os.getpid(), inbox=str(cfg.paths.inbox),
                      recovered=self.rt.recovered, removed_staging=self.rt.removed_staging,
                      backlog=self.watcher.backlog,
                      api=cfg.api.listen if self.api is not None else None)
        self.notifier.send("READY=1", f"STATUS={self._status()}", f"MAINPID={os.getpid()}")

    def _load_failing(self) -> None:
        """Attempts survive restarts: drop those of names gone from the inbox, and show the
        rest in /healthz until each file is done."""
        assert self.rt is not None
        inbox = self.config.paths.inbox
        ledger = self.rt.ledger
        ledger.prune_attempts({os.fsencode(e) for e in os.listdir(inbox)})
        for name, since in ledger.failing():
            self._note_failing(inbox / os.fsdecode(name), since)

    def _start_api(self) -> None:
        if not self.config.api.enabled:
            return
        from .apiproc import ApiProcess

        assert self.watcher is not None
        self.api = ApiProcess(self.config, self.metrics, self.watcher.alive)
        self.api.start()

    def _start_scheduler(self) -> None:
        sched = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1,
                                                  "misfire_grace_time": None})
        sched.add_job(self._compaction_job, "interval", id="compaction",
                      seconds=self.config.compaction.interval_seconds)
        sched.add_job(self._metrics_job, "interval", id="metrics",
                      seconds=self.config.metrics.interval_seconds)
        sched.start()
        self.scheduler = sched

    # --- the worker -------------------------------------------------------------------------
    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _work_loop(self) -> None:
        while not self.stop_event.is_set():
            self._beat()
            paused_for = self._pause_until - time.monotonic()
            if paused_for > 0:  # the host cannot take files (disk full): probe after a while
                self.stop_event.wait(min(0.5, paused_for))
                continue
            path = self.intake.take(timeout=0.5)
            if path is None:
                continue
            try:
                retry_in = self._handle(path)
            except BaseException as exc:  # noqa: BLE001 - the worker must never die
                self.log.error(logs.INTERNAL_ERROR, file=display_name(path.name), error=repr(exc),
                               traceback=traceback.format_exc())
                retry_in = MAX_BACKOFF_S
            self._in_hand = None
            if retry_in is None:
                self.intake.done(path)
                self._forget_failing(path)
            else:
                self.intake.retry(path, retry_in)
            if not self.intake.queued():  # drained: recounted now, not up to 2 s later
                self._refresh_backlog()

    def _handle(self, path: Path) -> float | None:
        """Processes one file; returns seconds to wait before retrying it, or None when done."""
        assert self.pipeline is not None and self.rt is not None and self.watcher is not None
        ledger = self.rt.ledger
        key = os.fsencode(path.name)
        if path in self._unpublished:  # committed, its moves failed: they come first
            try:
                self.pipeline.finish_pending()
            except Exception as exc:  # noqa: BLE001 - still the host's trouble
                return self._failed(path, key, display_name(path.name), exc, Disposition.PAUSE)
            self._done(path, self._unpublished.pop(path))
        ident = inode_of(path)
        if ident is None:
            try:  # gone: taken by an outcome committed whose move failed, say
                self.pipeline.finish_pending()
            except Exception as exc:  # noqa: BLE001 - classified like any failure of this file
                return self._failed(path, key, display_name(path.name), exc, classify(exc, path))
            ledger.end_attempt(key, forget=True)
            return None
        if writer_active(path):
            self.watcher.defer(path)
            return None
        name = display_name(path.name)
        try:
            state = ledger.begin_attempt(key, ident, time.time())
        except Exception as exc:  # noqa: BLE001 - the ledger cannot be written: the host's trouble
            return self._failed(path, key, name, exc, classify(exc), recorded=False)
        if state.died:
            self.log.error(logs.FILE_RETRY, file=name, attempt=state.failures,
                           error=state.last_error, disposition=Disposition.BUG.value)
        verdict = self._exhausted(state)
        if verdict is not None:
            return self._dead_letter(path, key, name, *verdict)
        self._in_hand = key
        try:
            outcome = self.pipeline.process(path)
        except FileBusy:  # a writer opened it meanwhile: not an attempt, settle it again
            ledger.end_attempt(key)
            self.watcher.defer(path)
            return None
        except Exception as exc:  # noqa: BLE001 - every failure is classified, in errors.py
            disposition = classify(exc, path)
            if isinstance(exc, PublishPending) and isinstance(exc.outcome, FileOutcome):
                self._unpublished[path] = exc.outcome
            if self.cancel.is_set():  # shutdown abandoned it: whatever broke, not an attempt
                disposition = Disposition.CANCELLED
            if disposition is Disposition.VANISHED and not os.path.lexists(path):
                ledger.end_attempt(key, forget=True)
                self.log.info(logs.FILE_VANISHED, file=name)
                return None
            if disposition is Disposition.CANCELLED:
                ledger.end_attempt(key)
                return None
            return self._failed(path, key, name, exc, disposition)
        self._done(path, outcome)
        return None

    def _exhausted(self, state: AttemptState) -> tuple[str, str, int] | None:
        """(reason, detail, attempts) when a file has failed too often or too long, else None."""
        ingest = self.config.ingest
        if state.failures >= ingest.max_attempts:
            reason = "process_died" if state.died else "internal_error"
            return reason, f"failed {state.failures} times; last error: {state.last_error}", state.failures
        if state.first_failed_at is not None:
            failing_for = time.time() - state.first_failed_at
            if failing_for >= ingest.max_retry_seconds:
                detail = (f"failing for {failing_for:.0f} s, longer than ingest.max_retry_seconds "
                          f"({ingest.max_retry_seconds:g}); last error: {state.last_error}")
                return "failing_too_long", detail, state.failures
        return None

    def _failed(self, path: Path, key: bytes, name: str, exc: Exception,
                disposition: Disposition, recorded: bool = True) -> float | None:
        """Counts a failed attempt, in the ledger when it can be written; returns the wait."""
        assert self.rt is not None
        bug = disposition not in (Disposition.PAUSE, Disposition.RETRY)
        error = repr(exc) if bug else (str(exc) or repr(exc))
        now = time.time()
        state: AttemptState | None = None
        if recorded:
            try:
                state = self.rt.ledger.attempt_failed(key, error, bug, now)
            except Exception as ledger_exc:  # noqa: BLE001 - e.g. the disk is full
                if classify(ledger_exc) is Disposition.PAUSE:
                    disposition = Disposition.PAUSE
        if state is None:  # the ledger cannot be written: count in memory until it can
            with self._failing_lock:
                since = self._failing.get(path, now)
            state = AttemptState(0, since, error)
        self._note_failing(path, state.first_failed_at)
        self.metrics.file_retry()
        verdict = self._exhausted(state)
        if bug:
            wait = min(2.0 ** (state.failures - 1), MAX_BACKOFF_S)
            self.log.error(logs.FILE_RETRY, file=name, attempt=state.failures, error=error,
                           traceback=traceback.format_exc(), disposition=disposition.value,
                           retry_in_s=None if verdict else wait)
        if verdict is not None:
            return self._dead_letter(path, key, name, *verdict)
        if bug:
            return wait
        wait = self._backoff.get(path, 1.0)
        self._backoff[path] = min(wait * 2, MAX_BACKOFF_S)
        if disposition is Disposition.PAUSE:
            # The host, not this file: nothing else is taken until the next probe.
            self._pause_until = time.monotonic() + self._pause_backoff
            if not self.paused:
                self.paused = True
                self.metrics.set_intake_paused(True)
                self.log.warning(logs.INTAKE_PAUSED, file=name, error=error,
                                 retry_in_s=self._pause_backoff)
            self._pause_backoff = min(self._pause_backoff * 2, MAX_BACKOFF_S)
        self.log.info(logs.FILE_RETRY, file=name, error=error, transient=True,
                      disposition=disposition.value, retry_in_s=wait)
        return wait

    def _dead_letter(self, path: Path, key: bytes, name: str, reason: str, detail: str,
                     attempts: int) -> float | None:
        assert self.pipeline is not None
        try:
            self.pipeline.dead_letter(path, reason, detail)
        except Exception as exc:  # noqa: BLE001 - cannot even set it aside: it stays, retried
            if not os.path.lexists(path):
                return None
            self.log.error(logs.INTERNAL_ERROR, file=name, error=repr(exc), during="dead_letter",
                           traceback=traceback.format_exc())
            return MAX_BACKOFF_S
        self.metrics.file_done("dead_lettered", 0, 0, 0, 0.0)
        self.log.error(logs.FILE_DEAD_LETTERED, file=name, reason=reason, detail=detail,
                       attempts=attempts)
        return None

    def _note_failing(self, path: Path, since: float | None) -> None:
        with self._failing_lock:
            if since is not None:
                self._failing.setdefault(path, since)
            self.metrics.set_failing(len(self._failing), min(self._failing.values(), default=None))

    def _forget_failing(self, path: Path) -> None:
        self._backoff.pop(path, None)
        with self._failing_lock:
            if self._failing.pop(path, None) is not None:
                self.metrics.set_failing(len(self._failing), min(self._failing.values(), default=None))

    def _done(self, path: Path, o: FileOutcome) -> None:
        if self.paused:
            self.paused = False
            self.metrics.set_intake_paused(False)
            self.log.info(logs.INTAKE_RESUMED, file=o.file)
        self._pause_backoff = 1.0
        if o.status == "refused":
            self.metrics.file_done("refused", 0, 0, 0, o.duration_ms / 1000)
            self.log.warning(logs.FILE_REFUSED, file=o.file, reason=o.reason, detail=o.detail)
            return
        self.metrics.file_done(o.status, o.processed, o.valid, o.errors, o.duration_ms / 1000)
        if o.grown_into is not None:
            self.log.warning(logs.FILE_GREW, file=o.file, bytes=o.bytes, new_file=o.grown_into,
                             detail="written to after it was taken: the bytes read are this "
                                    "outcome, the rest is the new inbox file; a producer "
                                    "should write under a temporary name and rename")
        if o.status == "ok":
            self.log.info(logs.FILE_PROCESSED, file=o.file, sha256=o.sha256, bytes=o.bytes,
                          processed=o.processed, valid=o.valid, errors=o.errors,
                          duration_ms=o.duration_ms)
            with self._window_lock:
                self.window.add(time.monotonic(), o.processed, o.errors)
            self._check_alert()
        elif o.status == "quarantined":
            self.log.warning(logs.FILE_QUARANTINED, file=o.file, sha256=o.sha256, reason=o.reason,
                             detail=o.detail)
        else:
            self.log.info(logs.FILE_DUPLICATE, file=o.file, sha256=o.sha256, bytes=o.bytes)

    # --- scheduled jobs ---------------------------------------------------------------------
    def _compaction_job(self) -> None:
        """One compaction pass, in a process of its own (compaction.run_in_process): its
        CPU and its interpreter lock are not the worker's, so ingestion goes on meanwhile."""
        from .compaction import run_in_process

        assert self.rt is not None
        with self._compacting:  # shutdown waits on this before closing the ledger
            if self.stop_event.is_set():
                return
            try:
                run_in_process(self.config, self.metrics, self.stop_event)
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried next interval
                self.log.error(logs.COMPACTION_FAILED, error=repr(exc),
                               traceback=traceback.format_exc())
            try:
                # A pass that died mid-swap left committed moves: they are finished here.
                self.rt.ledger.recover("compact:")
            except Exception as exc:  # noqa: BLE001 - start-up recovers them otherwise
                self.log.error(logs.COMPACTION_FAILED, error=repr(exc), during="recovery")

    def _check_alert(self) -> None:
        with self._window_lock:
            ratio, processed, errors = self.window.ratio(time.monotonic())
            threshold = self.window.threshold
            if not self.window.alerting and processed and ratio > threshold:
                self.window.alerting = True
                self.log.warning(logs.ALERT, error_ratio=round(ratio, 4), threshold=threshold,
                                 processed=processed, errors=errors,
                                 window_s=self.window.window)
            elif self.window.alerting and ratio <= threshold:
                self.window.alerting = False
                self.log.info(logs.ALERT_CLEARED, error_ratio=round(ratio, 4), threshold=threshold,
                              processed=processed, errors=errors, window_s=self.window.window)

    def _metrics_job(self) -> None:
        assert self.rt is not None
        self._refresh_backlog()
        totals = self.rt.ledger.counters()
        now = time.monotonic()
        t0, files0, records0 = self._last_metrics
        files = totals["files_ok"] + totals["files_quarantined"] + totals["files_duplicate"]
        records = totals["records_processed"]
        dt = max(now - t0, 1e-9)
        self._last_metrics = (now, files, records)
        with self._window_lock:
            ratio, _p, _e = self.window.ratio(now)
        snap = self.metrics.snapshot()
        self.log.info(logs.METRICS, **totals, files_per_s=round((files - files0) / dt, 3),
                      records_per_s=round((records - records0) / dt, 1),
                      error_ratio_window=round(ratio, 4), backlog=snap.get("backlog"),
                      oldest_waiting_age_s=snap.get("oldest_waiting_age_s"),
                      intake_paused=self.paused)
        self._check_alert()

    def _update_backlog(self) -> None:
        assert self.watcher is not None
        oldest = self.watcher.oldest_seen
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        self.metrics.set_backlog(self.watcher.backlog, age)

    # --- reload -----------------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: re-reads logging, metrics and compaction settings; the rest needs a restart.

        All or nothing: the new config is validated and its schedules built before anything
        changes; if any step fails, for any reason, `config_reload_failed` is logged and the
        running settings stay (a job already rescheduled gets its old trigger back).
        """
        from datetime import datetime

        from apscheduler.triggers.interval import IntervalTrigger

        sched = self.scheduler
        changed: dict[str, Any] = {}  # job id → its trigger before this reload
        try:
            new = load_config(self.config.source)
            zone = sched.timezone if sched is not None else None
            triggers = {"compaction": IntervalTrigger(seconds=new.compaction.interval_seconds, timezone=zone),
                        "metrics": IntervalTrigger(seconds=new.metrics.interval_seconds, timezone=zone)}
            for trigger in triggers.values():  # an interval too large to schedule fails here
                trigger.get_next_fire_time(None, datetime.now(trigger.timezone))
            for job_id, trigger in triggers.items():
                if sched is not None:
                    old = sched.get_job(job_id).trigger
                    sched.reschedule_job(job_id, trigger=trigger)
                    changed[job_id] = old
        except Exception as exc:  # noqa: BLE001 - whatever failed, the old settings stay
            for job_id, old in changed.items():
                if sched is not None:
                    sched.reschedule_job(job_id, trigger=old)
            self.log.error("config_reload_failed", error=str(exc) or repr(exc))
            return
        with self._window_lock:
            self.window.window = new.metrics.alert_window_seconds
            self.window.threshold = new.metrics.alert_error_ratio
        ignored = [name for name in ("paths", "ingest", "transform", "api")
                   if getattr(new, name) != getattr(self.config, name)]
        self.config = dataclasses.replace(self.config, logging=new.logging, metrics=new.metrics,
                                          compaction=new.compaction)
        # Logged before the new logging settings apply, so a stricter level cannot hide it.
        self.log.info("config_reloaded", applied=["logging", "metrics", "compaction"],
                      needs_restart=ignored)
        logs.configure(new.logging.level, new.logging.format)
        self.log = logs.get_logger()

    # --- the main loop and shutdown ---------------------------------------------------------
    def serve(self) -> None:
        ping = watchdog_interval()
        tick = min(ping or 1.0, 1.0)
        last_ping = last_count = 0.0
        while not self.stop_event.wait(tick):
            if self.reload_flag.is_set():
                self.reload_flag.clear()
                self.reload()
            self._rewatch_inbox()
            now = time.monotonic()
            if now - last_count >= 2.0:
                last_count = now
                self._refresh_backlog()
            if ping is not None and now - last_ping >= ping:
                # WATCHDOG=1 only while the worker loop makes progress, not from a timer alone.
                if now - self.heartbeat < max(ping * 2, 5.0):
                    self.notifier.send("WATCHDOG=1", f"STATUS={self._status()}")
                    last_ping = now
            elif self.notifier.enabled:
                self.notifier.send(f"STATUS={self._status()}")

    def _rewatch_inbox(self) -> None:
        """The inbox deleted or moved away (and maybe made anew): watched again at once."""
        assert self.watcher is not None
        try:
            if self.watcher.rewatch():
                self.log.warning(logs.INBOX_REWATCHED, inbox=str(self.config.paths.inbox),
                                 detail="the inbox directory was deleted or moved away: its "
                                        "path is watched again (made anew if it was gone)")
        except OSError as exc:  # not there and cannot be made: /healthz keeps saying so
            if not self._rewatch_failed:
                self.log.error(logs.INBOX_REWATCHED, inbox=str(self.config.paths.inbox),
                               error=str(exc), detail="the inbox is gone and cannot be watched")
            self._rewatch_failed = True
        else:
            self._rewatch_failed = False

    def _refresh_backlog(self) -> None:
        assert self.watcher is not None
        try:
            self.watcher.refresh_backlog()
        except OSError:
            return
        self._update_backlog()

    def _status(self) -> str:
        if self.rt is None:
            return "starting"
        c = self.rt.ledger.counters()
        backlog = self.watcher.backlog if self.watcher else 0
        return (f"{c['files_ok']} files ok, {c['files_quarantined']} quarantined, "
                f"{c['files_duplicate']} duplicate, {c['files_dead_lettered']} dead-lettered; "
                f"backlog {backlog}" + ("; intake paused" if self.paused else ""))

    def request_stop(self) -> None:
        self.stop_event.set()
        self.intake.wake()

    def shutdown(self) -> None:
        """Stops intake, finishes or abandons the file in hand, closes everything; < 10 s."""
        self.notifier.send("STOPPING=1")
        self.log.info(logs.DAEMON_STOPPING)
        deadline = time.monotonic() + STOP_DEADLINE_S
        self.stop_event.set()
        self.intake.wake()
        if self.watcher is not None:
            self.watcher.stop()
        if self.worker is not None and self.worker.ident is not None:  # started (a failed
            # start-up may stop before it is). A small file in hand finishes within this
            # grace; a large one is abandoned.
            self.worker.join(timeout=min(STOP_GRACE_S, max(0.0, deadline - time.monotonic() - 3.0)))
            if self.worker.is_alive():
                self.cancel.set()  # abandon the file in hand: staged outputs are dropped
                self.worker.join(timeout=max(0.0, deadline - time.monotonic() - 1.0))
            if self.worker.is_alive() and self._in_hand is not None and self.rt is not None:
                # Still stuck: a stop is not a crash, the next start must not count it.
                try:
                    self.rt.ledger.end_attempt(self._in_hand)
                except Exception:  # noqa: BLE001, S110 - at worst it counts as one attempt
                    pass
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        # A compaction pass sees stop_event and stops between partitions.
        compaction_idle = self._compacting.acquire(timeout=max(0.1, deadline - time.monotonic() - 0.5))
        if self.api is not None:
            self.api.close()
        if self.pipeline is not None:
            self.pipeline.close()
        if self.rt is not None and compaction_idle and (self.worker is None or not self.worker.is_alive()):
            self.rt.close()
        self.notifier.close()


def run_daemon(config: Config) -> int:
    """`logwatchd run`: the daemon in the foreground. Returns the exit code."""
    logs.configure(config.logging.level, config.logging.format)
    daemon = Daemon(config)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        daemon.reload_flag.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    # A writer opening a file while `writer_active` holds its read lease breaks the lease,
    # which the kernel signals with SIGIO, whose default action ends the process. The
    # lease is dropped at once anyway; nothing here uses signal-driven I/O.
    signal.signal(signal.SIGIO, signal.SIG_IGN)

    def startup_failed(message: str, exc: Exception, code: int, trace: str | None = None) -> int:
        extra = {"traceback": trace} if trace else {}
        daemon.log.error("startup_failed", error=str(exc) or repr(exc), **extra)
        print(f"logwatchd: {message}", file=sys.stderr)
        daemon.shutdown()
        return code

    try:
        daemon.start()
    except ConfigError as exc:  # found at start-up (e.g. not the data's time zone): exit 2, never READY
        return startup_failed(f"config error: {exc}", exc, 2)
    except LedgerError as exc:
        return startup_failed(str(exc), exc, 1)
    except OSError as exc:
        return startup_failed(f"cannot start: {exc}", exc, 1)
    except Exception as exc:  # noqa: BLE001 - a bug at start-up: say so, the traceback in the log
        return startup_failed(f"cannot start: {exc!r}", exc, 1, traceback.format_exc())
    try:
        daemon.serve()
    finally:
        daemon.shutdown()
    return 0
