"""The HTTP endpoint in a process of its own, so that HTTP load never takes the GIL from ingestion.

    daemon process                                   HTTP process
    Metrics, watcher probe ─► publisher thread ─────► MetricsView: the same snapshot() and
      (on every change, at most every 20 ms,  pipe     Prometheus registry the app reads
       and every 0.25 s regardless)                  create_app(ledger, …) served by waitress
                                                      (counts read from the ledger: SQLite WAL)

One waitress thread pool in the daemon's own process once made a busy `/logins_today`
(~2,200 requests/s) starve the worker thread of the interpreter lock: drop-to-committed
went from 28 ms to 26 s. Here the daemon only pays for a snapshot per change. The HTTP
process exits when the daemon's end of the pipe closes (the daemon stopped, or was killed),
and the daemon starts a new one if it dies.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import logs
from .config import Config
from .metrics import Metrics, snapshot_of
from .procs import context, die_with_parent, ignore_stop_signals

PUBLISH_EVERY_S = 0.25       # a snapshot at least this often (ages, process_* series)
PUBLISH_GAP_S = 0.02         # and at most this often, however fast files are done
STALE_AFTER_S = 10.0         # no snapshot for this long: the daemon's process is stuck
START_TIMEOUT_S = 60.0


class MetricsView:
    """The daemon's metrics as last published, with the interface the app reads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._state: dict[str, Any] | None = None
        self._families: list[Any] = []
        self._alive = False
        self._received = 0.0

    def update(self, message: dict[str, Any]) -> None:
        self._state = message["state"]
        if message["families"] is not None:
            self._families = message["families"]
        self._alive = message["watcher_alive"]
        self._received = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        assert self._state is not None, "no snapshot received yet"
        return snapshot_of(self._state, self._clock())

    @property
    def registry(self) -> MetricsView:
        return self

    def collect(self) -> list[Any]:
        """The Prometheus metric families of the daemon's registry (prometheus_client API)."""
        return list(self._families)

    def watcher_alive(self) -> bool:
        """The daemon's inbox watcher runs, and the daemon itself still reports."""
        return self._alive and time.monotonic() - self._received < STALE_AFTER_S


def _http_main(config: Config, conn: Any) -> None:
    """The HTTP process: serves until the daemon's end of the pipe closes."""
    from .api import ApiServer, create_app
    from .ledger import Ledger

    die_with_parent()
    ignore_stop_signals()  # the forkserver hands SIGINT's handler back to its children
    logs.configure(config.logging.level, config.logging.format)
    try:
        view = MetricsView()
        view.update(conn.recv())
        ledger = Ledger.open(config.paths.ledger, root=config.paths.root)
        app = create_app(ledger, config, view, watcher_alive=view.watcher_alive)  # type: ignore[arg-type]
        server = ApiServer(app, config.api.host, config.api.port)
    except BaseException as exc:  # noqa: BLE001 - reported to the daemon, which refuses to start
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", server.port))
    server.start()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the daemon is gone
            if message is None:
                break
            view.update(message)
    finally:
        server.close()
        ledger.close()


class ApiProcess:
    """Starts, feeds, restarts and stops the HTTP process (from the daemon)."""

    def __init__(self, config: Config, metrics: Metrics, watcher_alive: Callable[[], bool]) -> None:
        self.config = config
        self.metrics = metrics
        self.watcher_alive = watcher_alive
        self.port: int | None = None
        self._proc: Any = None
        self._conn: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._families_at = 0.0
        self._log = logs.get_logger()

    def _message(self) -> dict[str, Any]:
        """The live figures; the Prometheus families (a walk of the registry and of /proc)
        only every PUBLISH_EVERY_S, not on every file done."""
        try:
            alive = bool(self.watcher_alive())
        except Exception:  # noqa: BLE001 - a probe that fails means "not alive"
            alive = False
        families = None
        now = time.monotonic()
        if now - self._families_at >= PUBLISH_EVERY_S:
            families, self._families_at = list(self.metrics.registry.collect()), now
        return {"state": self.metrics.state(), "families": families, "watcher_alive": alive}

    def start(self) -> None:
        """Starts the HTTP process and waits until it listens; OSError when it cannot."""
        ctx = context()
        ours, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_http_main, args=(self.config, theirs),
                           name="logwatchd-http", daemon=True)
        proc.start()
        theirs.close()
        self._families_at = 0.0  # a new process gets every family at once
        ours.send(self._message())
        if not ours.poll(START_TIMEOUT_S):
            proc.kill()
            raise OSError(f"the HTTP process did not start within {START_TIMEOUT_S:g} s")
        try:
            status, detail = ours.recv()
        except EOFError:
            status, detail = "error", f"the HTTP process exited ({proc.exitcode})"
        if status != "ready":
            proc.join(5)
            raise OSError(f"cannot serve HTTP on {self.config.api.listen}: {detail}")
        self.port, self._proc, self._conn = detail, proc, ours
        if self._thread is None:
            self._thread = threading.Thread(target=self._publish, name="http-publisher", daemon=True)
            self._thread.start()

    def _publish(self) -> None:
        changed = self.metrics.changed
        while not self._stop.is_set():
            changed.wait(PUBLISH_EVERY_S)
            changed.clear()
            if self._stop.is_set():
                return
            try:
                self._conn.send(self._message())
            except (OSError, ValueError):
                self._restart()
            self._stop.wait(PUBLISH_GAP_S)

    def _restart(self) -> None:
        """The HTTP process died: log it and start another (after a pause, if it keeps dying)."""
        code = None if self._proc is None else self._proc.exitcode
        self._log.error(logs.INTERNAL_ERROR, where="http", error=f"the HTTP process exited ({code})")
        while not self._stop.is_set():
            try:
                self.start()
                return
            except Exception as exc:  # noqa: BLE001 - keep trying: ingestion goes on meanwhile
                self._log.error(logs.INTERNAL_ERROR, where="http", error=repr(exc),
                                traceback=traceback.format_exc())
                self._stop.wait(5.0)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the HTTP process: it finishes the requests in hand, then exits."""
        self._stop.set()
        self.metrics.changed.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(1)
        if self._conn is not None:
            self._conn.close()
