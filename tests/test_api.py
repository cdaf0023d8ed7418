"""The HTTP endpoint (SPEC §6): every route and error through `app.test_client()`, then the
same app served by waitress on a real socket, over a real ledger in a temporary directory."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from logwatchd.api import ASSETS, ApiServer, create_app
from logwatchd.config import Config, parse_config
from logwatchd.metrics import FILE_OUTCOMES, Metrics
from logwatchd.openapi import MAX_ACTION_CHARS, openapi_document
from logwatchd.pipeline import FileOutcome, Pipeline
from logwatchd.runtime import Runtime, open_runtime

NOON = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


class Clock:
    """A wall clock the test moves by hand (aware datetimes, UTC)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Seconds:
    """An epoch-seconds clock the test moves by hand, for Metrics."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    """The app over a real ledger, with hand-moved clocks."""

    base: Path
    config: Config
    runtime: Runtime
    clock: Clock
    seconds: Seconds
    metrics: Metrics
    app: Flask
    watcher: list[bool] = field(default_factory=lambda: [True])
    n: int = 0

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def commit(self, *records: Any, extra: str = "") -> FileOutcome:
        """Processes one real file of these records through the pipeline into the ledger."""
        self.n += 1
        src = self.base / f"in-{self.n}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)
        return Pipeline(self.config, self.runtime.ledger, clock=self.clock).process(src)


def make_api(base: Path, timezone_name: str = "UTC", now: datetime = NOON, **api: Any) -> Api:
    config = parse_config({"transform": {"timezone": timezone_name}, "api": api}, base_dir=base)
    runtime = open_runtime(config)
    clock, seconds = Clock(now), Seconds()
    metrics = Metrics(clock=seconds)
    watcher = [True]
    app = create_app(runtime.ledger, config, metrics, clock=clock,
                     watcher_alive=lambda: watcher[0])
    return Api(base, config, runtime, clock, seconds, metrics, app, watcher)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = make_api(tmp_path)
    yield a
    a.runtime.close()


def rec(ts: str, action: str = "login", user: int = 1) -> dict[str, Any]:
    return {"timestamp": ts, "user_id": user, "action": action}


# --- /logins_today and /counts --------------------------------------------------------------
def test_logins_today_counts_exactly_todays_logins(api: Api) -> None:
    """Only action == "login" (exact match) with today's event date is counted."""
    assert api.client.get("/logins_today").get_json() == {
        "logins_today": 0, "date": "2026-03-14", "timezone": "UTC"}
    api.commit(rec("2026-03-14T00:00:00Z"), rec("2026-03-14T23:59:59Z"), rec("2026-03-14T08:00:00Z"),
               rec("2026-03-13T23:59:59Z"), rec("2026-03-14T09:00:00Z", "Login"),
               rec("2026-03-14T09:00:00Z", "logout"), extra="not json\n")
    r = api.client.get("/logins_today")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.get_json() == {"logins_today": 3, "date": "2026-03-14", "timezone": "UTC"}


def test_logins_today_crosses_midnight_in_the_configured_zone(tmp_path: Path) -> None:
    """"Today" is the clock's date in Europe/Berlin: it flips at 23:00 UTC in winter, not at 00:00 UTC."""
    api = make_api(tmp_path, "Europe/Berlin", now=datetime(2026, 1, 31, 22, 59, 59, 999000, tzinfo=UTC))
    # 21:30Z and 22:30Z are still 31 January in Berlin; 23:10Z, 23:20Z, 23:30Z are 1 February.
    api.commit(rec("2026-01-31T21:30:00Z"), rec("2026-01-31T22:30:00Z"), rec("2026-01-31T23:10:00Z"),
               rec("2026-01-31T23:20:00Z"), rec("2026-01-31T23:30:00Z"))
    assert api.client.get("/logins_today").get_json() == {
        "logins_today": 2, "date": "2026-01-31", "timezone": "Europe/Berlin"}
    api.clock.now += timedelta(milliseconds=1)
    assert api.client.get("/logins_today").get_json() == {
        "logins_today": 3, "date": "2026-02-01", "timezone": "Europe/Berlin"}
    api.runtime.close()


def test_counts_by_day_and_by_action(api: Api) -> None:
    """/counts gives every action of a day, or one action's count (0 when absent)."""
    api.commit(rec("2026-03-10T10:00:00Z"), rec("2026-03-10T11:00:00Z"), rec("2026-03-10T12:00:00Z", "view"),
               rec("2026-03-10T12:00:00Z", "a b&c=d"), rec("2026-03-11T00:00:00Z"))
    assert api.client.get("/counts?date=2026-03-10").get_json() == {
        "date": "2026-03-10", "counts": {"a b&c=d": 1, "login": 2, "view": 1}}
    assert api.client.get("/counts", query_string={"date": "2026-03-10", "action": "a b&c=d"}).get_json() == {
        "date": "2026-03-10", "action": "a b&c=d", "count": 1}
    assert api.client.get("/counts?date=2026-03-10&action=nope").get_json() == {
        "date": "2026-03-10", "action": "nope", "count": 0}
    assert api.client.get("/counts?date=1999-01-01").get_json() == {"date": "1999-01-01", "counts": {}}


@pytest.mark.parametrize("query, names", [
    ("", "date"),
    ("?date=", "date"),
    ("?date=2026-02-30", "date"),
    ("?date=2026-13-01", "date"),
    ("?date=0000-01-01", "date"),
    ("?date=2026-2-3", "date"),
    ("?date=20260203", "date"),
    ("?date=2026-02-03T00:00:00", "date"),
    ("?date=%EF%BC%92026-02-03", "date"),          # a full-width digit is not [0-9]
    ("?date=2026-02-03&date=2026-02-04", "date"),
    ("?date=2026-02-03&action=", "action"),
    (f"?date=2026-02-03&action={'x' * (MAX_ACTION_CHARS + 1)}", "action"),
    ("?date=2026-02-03&action=a&action=b", "action"),
])
def test_bad_parameters_are_400_json_naming_the_parameter(api: Api, query: str, names: str) -> None:
    """A missing, repeated, malformed or impossible parameter is a 400 with a JSON error."""
    r = api.client.get("/counts" + query)
    assert r.status_code == 400 and r.mimetype == "application/json"
    assert r.get_json()["error"].startswith(names + ":")


def test_longest_allowed_action_is_accepted(api: Api) -> None:
    """An action of exactly the documented maximum length is a query, not an error."""
    r = api.client.get("/counts", query_string={"date": "2026-02-03", "action": "x" * MAX_ACTION_CHARS})
    assert r.status_code == 200 and r.get_json()["count"] == 0


# --- errors ----------------------------------------------------------------------------------
def test_unknown_path_is_404_json(api: Api) -> None:
    """Unknown paths, including near-misses, answer 404 with a JSON error."""
    for path in ("/nope", "/static/other.js", "/logins_today/", "/counts/2026-01-01", "/docs/other.js"):
        r = api.client.get(path)
        assert r.status_code == 404 and r.mimetype == "application/json", path
        assert "error" in r.get_json()


ROUTES = ["/logins_today", "/counts?date=2026-01-01", "/stats", "/healthz", "/metrics",
          "/openapi.json", "/", *ASSETS]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_json_with_allow(api: Api, route: str, method: str) -> None:
    """Every route answers anything but GET/HEAD with 405, a JSON error and an Allow header."""
    r = api.client.open(route, method=method, data=b'{"x": 1}')
    assert r.status_code == 405 and r.mimetype == "application/json"
    assert "GET" in r.headers["Allow"] and "error" in r.get_json()


def test_head_is_answered_like_get_without_a_body(api: Api) -> None:
    """HEAD works on a GET route (monitoring probes use it) and sends no body."""
    r = api.client.head("/healthz")
    assert r.status_code == 200 and r.data == b""


def test_unexpected_error_is_500_json(tmp_path: Path) -> None:
    """A bug while answering gives a JSON 500, not an HTML page or a dropped connection."""
    api = make_api(tmp_path)

    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")
    app = create_app(api.runtime.ledger, api.config, api.metrics, clock=broken_clock)
    r = app.test_client().get("/logins_today")
    assert r.status_code == 500 and r.get_json() == {"error": "internal error; see the daemon's log"}
    api.runtime.close()


def test_unreadable_ledger_is_503_json(api: Api) -> None:
    """When the ledger cannot be read, data routes say so with a JSON 503 and /healthz fails."""
    con = sqlite3.connect(api.config.paths.ledger)
    con.execute("DROP TABLE counters")  # a real damage to the real file, from outside
    con.commit()
    con.close()
    r = api.client.get("/stats")
    assert r.status_code == 503 and "ledger" in r.get_json()["error"]
    h = api.client.get("/healthz")
    assert h.status_code == 503 and h.get_json()["checks"]["ledger"]["ok"] is False
    assert any(reason.startswith("ledger:") for reason in h.get_json()["reasons"])


# --- /stats ----------------------------------------------------------------------------------
def test_stats_totals_come_from_the_ledger_and_live_figures_from_metrics(api: Api) -> None:
    """/stats adds the ledger's persistent totals to this process's backlog, uptime and last success."""
    ok = api.commit(rec("2026-03-14T01:00:00Z"), rec("2026-03-14T02:00:00Z", "view"), extra="oops\n")
    api.commit(rec("2026-03-14T01:00:00Z"), rec("2026-03-14T02:00:00Z", "view"), extra="oops\n")  # duplicate
    api.metrics.file_done("ok", ok.processed, ok.valid, ok.errors, 0.02)
    api.seconds.now += 5
    api.metrics.set_backlog(4, 2.5)
    api.metrics.file_retry()
    api.seconds.now += 1.5
    s = api.client.get("/stats").get_json()
    assert s["files"] == {"processed": 1, "quarantined": 0, "dead_lettered": 0, "duplicate": 1,
                          "refused": 0}
    assert s["records"] == {"processed": 3, "valid": 2, "errors": 1}
    assert s["backlog"] == 4 and s["oldest_waiting_age_seconds"] == 4.0  # 2.5 s then 1.5 s more
    assert s["uptime_seconds"] == 6.5 and s["retries"] == 1 and s["intake_paused"] is False
    assert s["last_success_at"] is not None and s["started_at"].endswith("Z")


def test_stats_last_success_survives_a_restart(api: Api) -> None:
    """A fresh process (new Metrics) still reports the last success the ledger committed."""
    assert api.client.get("/stats").get_json()["last_success_at"] is None
    api.commit(rec("2026-03-14T01:00:00Z"))
    s = api.client.get("/stats").get_json()
    assert s["last_success_at"] == NOON.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- /healthz --------------------------------------------------------------------------------
def test_healthz_ok_when_every_check_passes(api: Api) -> None:
    """Watcher alive, ledger answering, disk above the bound, no old file: 200 ok."""
    r = api.client.get("/healthz")
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "ok" and body["reasons"] == []
    assert all(c["ok"] for c in body["checks"].values())
    assert body["checks"]["disk"]["free_bytes"] > 0


def test_healthz_503_when_the_watcher_is_not_alive(api: Api) -> None:
    """A dead watcher makes /healthz answer 503 with the reason."""
    api.watcher[0] = False
    r = api.client.get("/healthz")
    assert r.status_code == 503 and r.get_json()["status"] == "failing"
    assert r.get_json()["reasons"] == ["watcher: the inbox watcher is not running"]


def test_healthz_503_when_the_watcher_probe_raises(api: Api) -> None:
    """A watcher probe that raises counts as a failing watcher, not as a 500."""
    def probe() -> bool:
        raise RuntimeError("observer gone")
    app = create_app(api.runtime.ledger, api.config, api.metrics, watcher_alive=probe)
    r = app.test_client().get("/healthz")
    assert r.status_code == 503 and "observer gone" in r.get_json()["reasons"][0]


def test_healthz_503_when_free_disk_is_below_the_bound(tmp_path: Path) -> None:
    """api.min_free_bytes above the real free space of paths.root fails the disk check."""
    api = make_api(tmp_path, min_free_bytes=2**50)
    r = api.client.get("/healthz")
    disk = r.get_json()["checks"]["disk"]
    assert r.status_code == 503 and disk["ok"] is False and disk["min_free_bytes"] == 2**50
    assert "api.min_free_bytes" in r.get_json()["reasons"][0]
    api.runtime.close()


def test_healthz_503_when_the_oldest_waiting_file_is_too_old(tmp_path: Path) -> None:
    """The oldest file's age keeps growing without new reports, and past the bound /healthz fails."""
    api = make_api(tmp_path, max_oldest_file_seconds=60.0)
    api.metrics.set_backlog(2, 30.0)
    assert api.client.get("/healthz").status_code == 200
    api.seconds.now += 30.5  # no further report, as when the worker is stuck
    r = api.client.get("/healthz")
    assert r.status_code == 503 and r.get_json()["checks"]["backlog"]["oldest_waiting_age_seconds"] == 60.5
    api.metrics.set_backlog(0, 0.0)
    assert api.client.get("/healthz").status_code == 200
    api.runtime.close()


# --- /metrics --------------------------------------------------------------------------------
def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_every_series_exists_at_zero_from_start(api: Api) -> None:
    """Before any file, every logwatchd series is already exposed, at zero."""
    r = api.client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    s = _samples(r.get_data(as_text=True))
    for outcome in FILE_OUTCOMES:
        assert s[("logwatchd_files_total", (("outcome", outcome),))] == 0
    for outcome in ("valid", "error"):
        assert s[("logwatchd_records_total", (("outcome", outcome),))] == 0
    for name in ("logwatchd_file_retries_total", "logwatchd_backlog_files",
                 "logwatchd_oldest_waiting_file_age_seconds", "logwatchd_intake_paused",
                 "logwatchd_last_success_timestamp_seconds", "logwatchd_compactions_total",
                 "logwatchd_compaction_rows_total", "logwatchd_compaction_seconds_total",
                 "logwatchd_file_processing_seconds_count"):
        assert s[(name, ())] == 0, name
    assert s[("logwatchd_compaction_bytes_total", (("stage", "before"),))] == 0
    assert s[("logwatchd_compaction_files_total", (("direction", "in"),))] == 0
    assert s[("logwatchd_start_time_seconds", ())] == api.seconds.now
    assert not any(name.endswith("_created") for name, _ in s)


def test_metrics_follow_the_daemons_reports(api: Api) -> None:
    """Each report of the daemon moves the matching series and the snapshot alike."""
    m = api.metrics
    m.file_done("ok", 10, 8, 2, 0.3)
    m.file_done("quarantined", 0, 0, 0, 0.01)
    m.file_done("duplicate", 0, 0, 0, 0.002)
    m.file_retry()
    m.set_backlog(7, 12.0)
    m.set_intake_paused(True)
    m.compaction_done(5, 1, 1000, 50_000, 20_000, 1.5)
    s = _samples(api.client.get("/metrics").get_data(as_text=True))
    assert s[("logwatchd_files_total", (("outcome", "ok"),))] == 1
    assert s[("logwatchd_files_total", (("outcome", "duplicate"),))] == 1
    assert s[("logwatchd_records_total", (("outcome", "error"),))] == 2
    assert s[("logwatchd_file_processing_seconds_count", ())] == 3
    assert s[("logwatchd_file_processing_seconds_bucket", (("le", "0.5"),))] == 3
    assert s[("logwatchd_file_processing_seconds_bucket", (("le", "0.25"),))] == 2
    assert s[("logwatchd_backlog_files", ())] == 7 and s[("logwatchd_intake_paused", ())] == 1
    assert s[("logwatchd_oldest_waiting_file_age_seconds", ())] == 12.0
    assert s[("logwatchd_compaction_bytes_total", (("stage", "after"),))] == 20_000
    assert s[("logwatchd_last_success_timestamp_seconds", ())] == api.seconds.now
    snap = m.snapshot()
    assert snap["files"] == {"ok": 1, "quarantined": 1, "duplicate": 1, "dead_lettered": 0,
                             "refused": 0, "failed": 0}
    assert (snap["records_valid"], snap["records_errors"], snap["retries"]) == (8, 2, 1)
    assert snap["compaction"] == {"runs": 1, "files_in": 5, "files_out": 1, "rows": 1000,
                                  "bytes_before": 50_000, "bytes_after": 20_000, "seconds": 1.5}
    json.dumps(snap)  # plain JSON-able values only
    with pytest.raises(ValueError):
        m.file_done("exploded", 0, 0, 0, 0.0)


def test_metrics_speak_openmetrics_when_asked(api: Api) -> None:
    """A scraper that asks for OpenMetrics gets it (Prometheus does by default)."""
    r = api.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.mimetype == "application/openmetrics-text"
    assert r.get_data(as_text=True).rstrip().endswith("# EOF")


# --- /openapi.json and /docs -----------------------------------------------------------------
def test_openapi_describes_exactly_the_routes_served(api: Api) -> None:
    """/openapi.json is the OpenAPI 3 document, naming every served route and no other."""
    doc = api.client.get("/openapi.json").get_json()
    assert doc == json.loads(json.dumps(openapi_document()))
    assert doc["openapi"].startswith("3.")
    served = {r.rule for r in api.app.url_map.iter_rules()} - (set(ASSETS) - {"/docs"})
    assert set(doc["paths"]) == served
    assert all(set(item) == {"get"} for item in doc["paths"].values())


def test_docs_page_is_swagger_ui_served_locally(api: Api) -> None:
    """/docs is Swagger UI from the installed flask-swagger-ui, every asset from this server."""
    page = api.client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'src="docs/swagger-ui-bundle.js"' in html and 'href="docs/swagger-ui.css"' in html
    assert "http://" not in html and "https://" not in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "connect-src 'self'" in csp
    bundle = api.client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and bundle.mimetype == "text/javascript"
    assert b"SwaggerUIBundle" in bundle.data and len(bundle.data) > 500_000
    css = api.client.get("/docs/swagger-ui.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and b".swagger-ui" in css.data
    init = api.client.get("/docs/init.js").get_data(as_text=True)
    assert "validatorUrl: null" in init and "openapi.json" in init


# --- over a real socket ----------------------------------------------------------------------
def request(server: ApiServer, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(server: ApiServer, path: str) -> tuple[int, Any]:
    status, headers, body = request(server, path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Api, ApiServer]]:
    a = make_api(tmp_path, "Europe/Berlin")
    server = ApiServer(a.app, a.config.api.host, 0)
    server.start()
    yield a, server
    server.close()
    a.runtime.close()


def test_real_socket_count_moves_exactly_when_a_file_is_committed(served: tuple[Api, ApiServer]) -> None:
    """Over HTTP, /logins_today goes from 0 to the file's logins at its commit, not before or partly."""
    api, server = served
    assert get_json(server, "/logins_today") == (200, {"logins_today": 0, "date": "2026-03-14",
                                                        "timezone": "Europe/Berlin"})
    out = api.commit(rec("2026-03-14T08:00:00Z"), rec("2026-03-14T09:00:00Z"), rec("2026-03-14T10:00:00Z"),
                     rec("2026-03-14T10:00:00Z", "logout"))
    assert out.status == "ok"
    assert get_json(server, "/logins_today")[1]["logins_today"] == 3
    assert get_json(server, "/counts?date=2026-03-14") == (
        200, {"date": "2026-03-14", "counts": {"login": 3, "logout": 1}})


def test_real_socket_readers_never_see_half_a_file(served: tuple[Api, ApiServer]) -> None:
    """While files are committed, every answer is a whole number of files' logins, never decreasing."""
    api, server = served
    per_file, files = 7, 12
    seen: list[int] = []
    done = threading.Event()

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        while not done.is_set():
            conn.request("GET", "/logins_today")
            seen.append(json.loads(conn.getresponse().read())["logins_today"])
        conn.close()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(files):
            # Several chunks and actions per file: the counts of one file land in one transaction.
            api.commit(*[rec(f"2026-03-14T{h:02d}:00:00Z", user=i) for h in range(per_file)],
                       rec("2026-03-14T10:00:00Z", "logout", i))
    finally:
        done.set()
        poller.join(30)
    assert seen, "the poller got no answer"
    assert all(n % per_file == 0 for n in seen), sorted(set(seen))
    assert seen == sorted(seen)
    assert get_json(server, "/logins_today")[1]["logins_today"] == per_file * files


def test_real_socket_midnight_in_berlin_without_sleeping(served: tuple[Api, ApiServer]) -> None:
    """The injected clock crosses midnight Europe/Berlin and the next request counts the new day."""
    api, server = served
    # All on 14 March in UTC; in Berlin two on the 14th, three on the 15th.
    api.commit(rec("2026-03-14T22:30:00Z"), rec("2026-03-14T22:59:00Z"), rec("2026-03-14T23:00:00Z"),
               rec("2026-03-14T23:30:00Z"), rec("2026-03-14T23:45:00Z"))
    api.clock.now = datetime(2026, 3, 14, 22, 59, 59, tzinfo=UTC)  # 23:59:59 in Berlin
    assert get_json(server, "/logins_today")[1] == {"logins_today": 2, "date": "2026-03-14",
                                                    "timezone": "Europe/Berlin"}
    api.clock.now += timedelta(seconds=1)                                  # 00:00:00 in Berlin
    assert get_json(server, "/logins_today")[1] == {"logins_today": 3, "date": "2026-03-15",
                                                    "timezone": "Europe/Berlin"}


def test_real_socket_errors_are_json(served: tuple[Api, ApiServer]) -> None:
    """Over HTTP: a bad date is 400, POST is 405 with Allow, an unknown path 404, all JSON."""
    _api, server = served
    status, body = get_json(server, "/counts?date=2026-02-30")
    assert status == 400 and body["error"].startswith("date:")
    status, headers, raw = request(server, "/logins_today", "POST", b"{}",
                                   {"Content-Type": "application/json"})
    assert status == 405 and headers["content-type"] == "application/json"
    assert "GET" in headers["allow"] and "error" in json.loads(raw)
    status, body = get_json(server, "/no/such/path")
    assert status == 404 and "error" in body


def _raw_status(server: ApiServer, head: bytes) -> int:
    """Sends raw request bytes and returns the status code of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_real_socket_refuses_large_bodies_and_headers(served: tuple[Api, ApiServer]) -> None:
    """waitress's limits are lowered: a 1 MB body or a 64 KB header is refused before it is read."""
    _api, server = served
    assert _raw_status(server, b"POST /logins_today HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: 1000000\r\n\r\n") == 413
    assert _raw_status(server, b"GET /logins_today HTTP/1.1\r\nHost: x\r\nX-Big: "
                               + b"y" * 65536 + b"\r\n\r\n") == 431
    assert get_json(server, "/logins_today")[0] == 200  # and the server is still fine


def _raw_answer(server: ApiServer, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends raw request bytes; returns the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        try:
            while chunk := sock.recv(65536):  # waitress closes the connection after an error
                answer += chunk
        except ConnectionResetError:  # closed with request bytes unread: after the answer
            pass
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


@pytest.mark.parametrize(("head", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n", 400),
    (b"POST /logins_today HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", 413),
    (b"GET /logins_today HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 65536 + b"\r\n\r\n", 431),
    (b"POST /logins_today HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
], ids=["bad-request-line", "bad-header", "body-too-large", "headers-too-large", "transfer-encoding"])
def test_real_socket_errors_of_waitress_itself_are_json(served: tuple[Api, ApiServer], head: bytes,
                                                         status: int) -> None:
    """Requests waitress refuses before the app sees them get SPEC §6's JSON error, right status."""
    _api, server = served
    got, headers, body = _raw_answer(server, head)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert isinstance(json.loads(body)["error"], str) and json.loads(body)["error"]
    assert get_json(server, "/logins_today")[0] == 200  # and the server is still fine


def test_real_socket_metrics_docs_and_health(served: tuple[Api, ApiServer]) -> None:
    """The non-JSON routes and /healthz work over HTTP too."""
    _api, server = served
    status, headers, body = request(server, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"logwatchd_files_total" in body
    status, headers, body = request(server, "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert get_json(server, "/healthz")[0] == 200
    assert headers["server"] == "logwatchd"


def test_server_binds_only_the_configured_address() -> None:
    """Bound to 127.0.0.1, the port is not reachable on another loopback address."""
    server = ApiServer(Flask("empty"), "127.0.0.1", 0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", server.port), timeout=5).close()
    finally:
        server.close()


def test_close_stops_serving_even_with_open_connections(served: tuple[Api, ApiServer]) -> None:
    """close() ends the server thread, drops idle keep-alive connections, frees the port; twice is fine."""
    _api, server = served
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    idle.request("GET", "/logins_today")
    assert idle.getresponse().read()  # the connection stays open (keep-alive)
    server.close()
    assert not server.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    with pytest.raises((OSError, http.client.HTTPException)):
        idle.request("GET", "/logins_today")
        idle.getresponse()
    idle.close()
    server.close()
    again = ApiServer(Flask("again"), "127.0.0.1", server.port)  # the port is free again
    again.close()  # closing a server never started works too


def test_port_zero_is_a_real_port_and_start_twice_is_refused() -> None:
    """Port 0 binds a free port, reported in .port; a second start() is a usage error."""
    server = ApiServer(Flask("empty"), "127.0.0.1", 0)
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
    server.start()
    with pytest.raises(RuntimeError):
        server.start()
    server.close()


def test_close_under_load_returns_and_stops(served: tuple[Api, ApiServer]) -> None:
    """close() while clients keep requests in flight still stops the server and its threads."""
    _api, server = served
    stop = threading.Event()
    answered = [0]

    def hammer() -> None:
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
                while not stop.is_set():
                    conn.request("GET", "/logins_today")
                    conn.getresponse().read()
                    answered[0] += 1
            except (OSError, http.client.HTTPException):
                continue  # expected once the server closes

    clients = [threading.Thread(target=hammer) for _ in range(8)]
    for t in clients:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while answered[0] < 50 and time.monotonic() < deadline:  # the load is really on
            time.sleep(0.01)
        assert answered[0] >= 50
        server.close(timeout=10)
        assert not server.running
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    finally:
        stop.set()
        for t in clients:
            t.join(30)
