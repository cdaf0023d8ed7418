"""`logwatchd status`: the status page's picture for a terminal, from the daemon or from the ledger.

When the daemon's endpoint answers, the picture is its /stats and /healthz. Otherwise it is
built from the ledger opened read-only (`file:…?mode=ro`, as `verify` does; no lock is
taken, nothing is written), by the same function as /stats (overview.build_stats), and the
report says so. Library code: returns a report and an exit code; `cli.py` prints.

Exit codes: 0 healthy, 1 unhealthy (or running but its endpoint does not answer), 3 not running.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .config import Config
from .errors import LedgerError
from .overview import build_stats
from .verify import open_read_only

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_NOT_RUNNING = 0, 1, 3
TIMEOUT_S = 3.0


@dataclass
class StatusReport:
    body: dict[str, Any]
    exit_code: int


def endpoint_url(config: Config) -> str:
    host = config.api.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{config.api.port}" if ":" in host else f"http://{host}:{config.api.port}"


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with its JSON body
        return exc.code, orjson.loads(exc.read())


def lock_held(lock: Path) -> bool:
    """True when some process holds the state lock (`flock`), read from /proc/locks so that
    asking never takes the lock itself (a daemon starting meanwhile would be refused)."""
    try:
        st = os.stat(lock)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(line.split()[1] == "FLOCK" and ident in line.split() for line in locks.splitlines()
               if len(line.split()) > 5)


def gather(config: Config, now: float | None = None) -> StatusReport:
    """The status of the root `config` describes: from its daemon, else from its ledger."""
    now = time.time() if now is None else now
    url = endpoint_url(config)
    problem = "the HTTP endpoint is off (api.enabled = false)"
    if config.api.enabled:
        try:
            _code, stats = _get(url + "/stats")
            health_code, health = _get(url + "/healthz")
            healthy = health_code == 200 and health.get("status") == "ok"
            answer = {"source": "daemon", "url": url, "running": True,
                    "health": {"status": health["status"], "reasons": health["reasons"]},
                    "stats": stats}
            return StatusReport(answer, EXIT_HEALTHY if healthy else EXIT_UNHEALTHY)
        except (OSError, ValueError) as exc:
            problem = f"the endpoint {url} does not answer ({_reason(exc)})"
    running = lock_held(config.paths.lock)
    body: dict[str, Any] = {"source": "ledger", "ledger": str(config.paths.ledger),
                            "running": running}
    try:
        conn = open_read_only(config.paths.ledger)
    except LedgerError as exc:
        body["stats"] = None
        body["problem"] = str(exc)
    else:
        try:
            body["stats"] = build_stats(conn, config, None, now)
        finally:
            conn.close()
    if not running:
        held = f"no logwatchd process holds {config.paths.lock}"
        body["health"] = {"status": "not_running", "reasons": [held]}
        return StatusReport(body, EXIT_NOT_RUNNING)
    if config.api.enabled:
        body["health"] = {"status": "failing", "reasons": [f"the daemon runs but {problem}"]}
        return StatusReport(body, EXIT_UNHEALTHY)
    # Running without an endpoint: its health cannot be asked; say so and do not fail.
    body["health"] = {"status": "unknown", "reasons": [problem]}
    return StatusReport(body, EXIT_HEALTHY)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


# --- the terminal table ----------------------------------------------------------------
def _safe(value: Any) -> str:
    """Text for a terminal: control characters (a name may hold ESC) shown escaped."""
    text = "-" if value is None else str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render_text(report: dict[str, Any]) -> str:
    """The report as a few aligned blocks of text (what a terminal shows)."""
    out: list[str] = []
    src = (f"the running daemon at {report['url']}" if report["source"] == "daemon"
           else f"the ledger {report['ledger']} (read-only; the daemon "
                f"{'runs' if report['running'] else 'is not running'})")
    health = report["health"]
    out.append(f"logwatchd status, from {_safe(src)}")
    out.append(f"health: {_safe(health['status'])}")
    out += [f"  - {_safe(r)}" for r in health["reasons"]]
    s = report.get("stats")
    if s is None:
        out.append(_safe(report.get("problem", "no figures")))
        return "\n".join(out) + "\n"
    rows = [
        ("backlog", f"{s['backlog']} files waiting, the oldest for {s['oldest_waiting_age_seconds']} s"),
        ("failing", f"{s['failing_files']} files, the oldest failing for {s['oldest_failing_age_seconds']} s"),
        ("intake paused", s["intake_paused"]),
        ("last success", s["last_success_at"]),
        ("uptime", None if s["uptime_seconds"] is None else f"{s['uptime_seconds']} s since {s['started_at']}"),
    ]
    width = max(len(k) for k, _ in rows)
    out += [f"{k.ljust(width)}  {_safe(v)}" for k, v in rows]
    t = s["today"]
    out.append("")
    out.append(f"{'':14}{'today':>12}{'all time':>12}   (today: {t['date']}, {_safe(t['timezone'])})")
    for k in s["files"]:
        out.append(f"{'files ' + k:14}{t['files'][k]:>12}{s['files'][k]:>12}")
    for k in s["records"]:
        out.append(f"{'records ' + k:14}{t['records'][k]:>12}{s['records'][k]:>12}")
    out.append(f"error ratio today: {t['error_ratio']}")
    tp = s["throughput"]
    out.append(f"last hour: {sum(tp['records'])} records in {sum(tp['files'])} files")
    c = s["catalog"]
    out.append(f"compaction: {c['live_files']} live data files in {c['partitions']} partitions, "
               f"{c['small_files']} small, {c['partitions_due']} partitions due")
    if s["recent_files"]:
        out.append("")
        out.append("last files:")
        for f in s["recent_files"][:10]:
            out.append(f"  {f['at']}  {_safe(f['outcome']):<13} {f['processed']:>8} records "
                       f"{_safe(f['duration_ms']):>10} ms  {_safe(f['file'])}"
                       + (f"  ({_safe(f['reason'])})" if f["reason"] else ""))
    if s["failing"]:
        out.append("")
        out.append("failing files:")
        for f in s["failing"]:
            out.append(f"  {_safe(f['file'])}: {f['failures']} failures since "
                       f"{f['first_failed_at']}; last error: {_safe(f['last_error'])}")
    for key, title in (("quarantine", "quarantine"), ("dead_letter", "dead-letter")):
        block = s[key]
        if block["count"]:
            out.append("")
            out.append(f"{title}: {block['count']} files")
            for f in block["files"]:
                out.append(f"  {_safe(f['file'])}: {_safe(f['reason'])} — {_safe(f['detail'])}")
                out.append(f"    {_safe(f['replay'])}")
    return "\n".join(out) + "\n"
