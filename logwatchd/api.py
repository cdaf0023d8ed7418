"""The daemon's HTTP endpoint (SPEC §6): the count API plus its own routes, served by waitress.

`create_app` takes every dependency (ledger, config, metrics, clock, watcher probe), so
tests drive it with `app.test_client()` or over a real socket and cross midnight without
sleeping. The routes any host serves (counts, health, OpenAPI, /docs, JSON errors) are
webapp.py's; this module adds what only a daemon has — /stats, the status page /, the
Prometheus /metrics and a health that checks the watcher, disk and backlog — and
`ApiServer`, which runs waitress on a background thread of the daemon, bound to the
configured address only, with small request limits: this endpoint only ever answers GETs.

Counts come from the ledger's per-(date, action) table, committed in the same transaction
as each file, so an answer is exact and never shows half a file; it never scans Parquet.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask, Response, request
from prometheus_client.exposition import choose_encoder
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.trigger import trigger

from .config import Config
from .ledger import COUNTERS, Ledger
from .metrics import Metrics
from .openapi import openapi_document
from .overview import build_stats
from .records import utc_now
from .statuspage import render as render_page
from .webapp import (
    CSS,
    DOCS_ASSETS,
    HTML,
    JS,
    PAGE_CSP,
    BadParameter,
    Clock,
    FastLoginsToday,
    add_assets,
    create_count_app,
    json_response,
)

__all__ = ["ASSETS", "ApiServer", "BadParameter", "FastLoginsToday", "create_app",
           "free_bytes", "json_response"]

# The status page's own script and style, beside the /docs assets every host serves.
STATUS_ASSETS = {"/static/status.js": ("logwatchd", "static/status.js", JS),
                 "/static/status.css": ("logwatchd", "static/status.css", CSS)}
ASSETS = {**DOCS_ASSETS, **STATUS_ASSETS}


def create_app(ledger: Ledger, config: Config, metrics: Metrics, clock: Clock = utc_now,
               watcher_alive: Callable[[], bool] = lambda: True) -> Flask:
    """The Flask application of SPEC §6 over these dependencies."""
    app = create_count_app(ledger, config.transform, clock=clock,
                           health=lambda: _health(ledger, config, metrics, watcher_alive),
                           document=openapi_document(), unavailable=(sqlite3.Error,))

    def stats_now() -> dict[str, Any]:
        return build_stats(ledger.reader(), config, metrics.snapshot(), clock().timestamp())

    @app.get("/stats")
    def stats() -> Response:
        return json_response(stats_now())

    @app.get("/")
    def status_page() -> Response:
        health = _health(ledger, config, metrics, watcher_alive)
        page = render_page(stats_now(), health, "the running daemon")
        response = Response(page, content_type=HTML)
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = Response(encoder(metrics.registry), status=200)
        response.headers["Content-Type"] = content_type
        response.headers["Cache-Control"] = "no-store"
        return response

    add_assets(app, STATUS_ASSETS)
    return app


# --- answers -----------------------------------------------------------------------------
def free_bytes(path: os.PathLike[str] | str) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _health(ledger: Ledger, config: Config, metrics: Metrics,
            watcher_alive: Callable[[], bool]) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []

    def fail(name: str, reason: str) -> None:
        checks[name]["ok"] = False
        checks[name]["detail"] = reason
        reasons.append(f"{name}: {reason}")

    checks["watcher"] = {"ok": True}
    try:
        if not watcher_alive():
            fail("watcher", "the inbox watcher is not running")
    except Exception as exc:  # noqa: BLE001 - a probe that raises means the watcher is not fine
        fail("watcher", f"the watcher probe failed: {exc!r}")

    checks["ledger"] = {"ok": True}
    try:
        # A read of a real table, not just `SELECT 1`: proves the file and its schema answer.
        missing = set(COUNTERS) - set(ledger.counters())
        if missing:
            fail("ledger", f"the ledger lacks counters {', '.join(sorted(missing))}")
    except Exception as exc:  # noqa: BLE001 - any failure to read is "not answering"
        fail("ledger", f"the ledger does not answer: {exc}")

    bound = config.api.min_free_bytes
    checks["disk"] = {"ok": True, "min_free_bytes": bound}
    try:
        free = free_bytes(config.paths.root)
        checks["disk"]["free_bytes"] = free
        if free < bound:
            fail("disk", f"{free} bytes free under {config.paths.root}, below api.min_free_bytes ({bound})")
    except OSError as exc:
        fail("disk", f"cannot read free space of {config.paths.root}: {exc.strerror or exc}")

    snap = metrics.snapshot()
    age, limit = snap["oldest_waiting_age_s"], config.api.max_oldest_file_seconds
    checks["backlog"] = {"ok": True, "backlog": snap["backlog"], "oldest_waiting_age_seconds": age,
                         "max_oldest_file_seconds": limit}
    if age > limit:
        fail("backlog", f"the oldest waiting file has waited {age:.0f} s, "
                        f"longer than api.max_oldest_file_seconds ({limit:g})")

    failing_age = snap["oldest_failing_age_s"]
    checks["intake"] = {"ok": True, "paused": snap["intake_paused"],
                        "failing_files": snap["failing_files"],
                        "oldest_failing_age_seconds": failing_age}
    if snap["intake_paused"]:
        fail("intake", "intake is paused: the last file failed for a reason of the host "
                       "(disk full, read-only or I/O error)")
    elif failing_age > limit:
        fail("intake", f"a file has been failing for {failing_age:.0f} s, "
                       f"longer than api.max_oldest_file_seconds ({limit:g})")

    return {"status": "failing" if reasons else "ok", "reasons": reasons, "checks": checks}


# --- the server --------------------------------------------------------------------------
# waitress reads and writes every connection on one event-loop thread and runs the app on
# a pool of workers; a keep-alive connection holds no worker between requests. With 32
# concurrent clients, 16 workers measured best here (4 and 32 gave a worse p99): with
# the GIL, more only adds switching, fewer makes requests queue behind one slow statvfs
# or busy ledger read.
DEFAULT_THREADS = 16

# Limits far below waitress's defaults (1 GiB body): this endpoint only answers GETs.
SERVER_LIMITS: dict[str, Any] = {
    "max_request_body_size": 4096,
    "max_request_header_size": 16384,
    "inbuf_overflow": 65536,
    "connection_limit": 256,
    "channel_timeout": 30,
    "cleanup_interval": 10,
    "expose_tracebacks": False,
    "asyncore_use_poll": True,   # select() breaks past 1024 descriptors
    "ident": "logwatchd",
}


# A request (head and body) must arrive whole within this many seconds of its first byte.
# waitress's channel_timeout counts inactivity only: a client trickling a byte every few
# seconds kept its connection, and 256 of them took every slot (healthz included) forever.
REQUEST_DEADLINE_SECONDS = 5.0
# Connection slots kept free for new clients: at the limit, the connections that have been
# waiting longest (idle keep-alives, requests still arriving) are closed to make room,
# rather than no longer accepting at all as waitress does.
SPARE_CONNECTIONS = 16
_GUARD_INTERVAL_SECONDS = 0.25


class JsonErrorTask(ErrorTask):
    """waitress's own error answers (malformed request, body or headers too large) as
    SPEC §6's `{"error": "…"}` instead of its plain text."""

    def execute(self) -> None:
        error = self.request.error
        # The detail can quote request bytes: never let them break the encoder.
        detail = str(error.body).encode("utf-8", "replace").decode("utf-8")
        body = orjson.dumps({"error": f"{error.reason}: {detail}" if detail else error.reason})
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("Cache-Control", "no-store"),
                                      ("X-Content-Type-Options", "nosniff")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):
    """An HTTP connection that knows since when its current request has been arriving."""

    error_task_class = JsonErrorTask
    receiving_since: float | None = None   # monotonic time of the current request's first byte
    evicted = False
    _timed_request: Any = None

    def received(self, data: bytes) -> bool:
        result = bool(super().received(data))
        if self.request is None:
            self.receiving_since = self._timed_request = None
        elif self.request is not self._timed_request:  # a new request began in this read
            self._timed_request = self.request
            self.receiving_since = time.monotonic()
        return result

    def waiting_since(self, mono_now: float, wall_now: float) -> float:
        """Monotonic time since which this connection has been waiting on its client."""
        if self.receiving_since is not None:
            return self.receiving_since
        return mono_now - max(0.0, wall_now - self.last_activity)

    def readable(self) -> bool:
        return not self.evicted and bool(super().readable())

    def writable(self) -> bool:
        return not self.evicted and bool(super().writable())

    def evict(self) -> None:
        # Never registered with poll again (see readable/writable), then closed now: a
        # client that reads nothing could hold off a close queued behind its full buffer.
        self.evicted = True
        self.handle_close()


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server, plus a deadline per request and room kept for new clients.

    Both run on the event-loop thread, from `readable()`, which the loop calls before each
    poll. The server is registered in the map before any of its connections, so a
    connection closed here is never registered in that poll round.
    """

    channel_class = GuardedChannel
    _next_guard = 0.0

    def readable(self) -> bool:
        now = time.monotonic()
        if now >= self._next_guard:
            self._next_guard = now + _GUARD_INTERVAL_SECONDS
            self._enforce_deadline(now)
        self._keep_room(now)
        return bool(super().readable())

    def _idle_channels(self) -> list[GuardedChannel]:
        """Connections waiting on their client: no request with a worker, nothing to send."""
        return [c for c in list(self.active_channels.values())
                if isinstance(c, GuardedChannel) and not c.evicted and not c.requests
                and not c.total_outbufs_len]

    def _enforce_deadline(self, now: float) -> None:
        cutoff = now - REQUEST_DEADLINE_SECONDS
        for channel in self._idle_channels():
            if channel.receiving_since is not None and channel.receiving_since < cutoff:
                channel.evict()

    def _keep_room(self, now: float) -> None:
        excess = len(self._map) + SPARE_CONNECTIONS - self.adj.connection_limit
        if excess <= 0:
            return
        wall = time.time()
        waiting = sorted(self._idle_channels(), key=lambda c: c.waiting_since(now, wall))
        for channel in waiting[:excess]:
            channel.evict()


class ApiServer:
    """waitress serving one WSGI app on a background thread, bound exactly to host:port.

    The socket is bound at construction (port 0 picks a free port, then in `.port`);
    `start()` begins answering; `close()` stops serving, closes every connection and
    joins the threads.
    """

    def __init__(self, app: Callable[..., Any], host: str, port: int,
                 threads: int = DEFAULT_THREADS) -> None:
        self.host = host
        # waitress warns on stderr whenever requests wait for a worker, which under a burst is
        # every few milliseconds: that shows as latency, not as a log line per request.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._map: dict[int, Any] = {}
        # What waitress's create_server does for TCP, with our server and channel classes.
        self._adj = Adjustments(host=host, port=port, threads=threads, **SERVER_LIMITS)
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(threads)
        # A name that resolves to several addresses gets one listening socket each.
        self._servers = [GuardedServer(app, self._map, dispatcher=self._dispatcher, adj=self._adj,
                                       sockinfo=sockinfo) for sockinfo in self._adj.listen]
        # Our own wake-up channel into the server's event loop: close() hands it the
        # shutdown so that the loop thread itself closes its sockets (no cross-thread races).
        self._trigger = trigger(self._map)
        self.port: int = int(self._servers[0].effective_port)
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None or self._closed:
            raise RuntimeError("ApiServer.start() called twice or after close()")
        self._thread = threading.Thread(target=self._run, name="logwatchd-http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wasyncore.loop(timeout=self._adj.asyncore_loop_timeout, map=self._map,
                       use_poll=self._adj.asyncore_use_poll)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stops accepting, lets requests in hand finish, closes every connection. Idempotent.

        The order matters: workers finishing a request wake the event loop to send it, so
        the loop and its wake-up pipe must outlive them; only then are connections closed.
        """
        if self._closed:
            return
        self._closed = True
        if self.running:
            self._in_loop(self._close_listeners, timeout)
            self._dispatcher.shutdown(timeout=timeout)  # cancels queued requests
            self._trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            assert self._thread is not None
            self._thread.join(timeout)
        if not self.running:
            # Never started, or the loop has ended: nothing else touches the map now.
            wasyncore.close_all(self._map)
            self._dispatcher.shutdown(timeout=timeout)

    def _in_loop(self, fn: Callable[[], None], timeout: float) -> None:
        """Runs fn on the event-loop thread and waits for it (the map is that thread's)."""
        done = threading.Event()

        def thunk() -> None:
            try:
                fn()
            finally:
                done.set()
        self._trigger.pull_trigger(thunk)
        done.wait(timeout)

    def _close_listeners(self) -> None:
        # The listening sockets only: each server object also owns the wake-up pipe its
        # connections use, which must stay open until the workers are done.
        for obj in list(self._map.values()):
            if isinstance(obj, BaseWSGIServer):
                wasyncore.dispatcher.close(obj)
