"""The operator's views against a real daemon: the page at `/`, `logwatchd status` and /stats agree; the page is safe."""

from __future__ import annotations

import fcntl
import html
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Env
from daemon_harness import DaemonProc, api_url, daemon_config, drop

HOSTILE = "<img src=x onerror=alert(1)>.json"
GOOD = ('{"timestamp": "2026-03-14T09:26:53Z", "user_id": 1, "action": "login"}\n'
        '{"timestamp": "2026-03-14T09:27:00Z", "user_id": "u2", "action": "view"}\n'
        'this is not json\n')
# Figures that move between two requests by themselves.
VOLATILE = {"uptime_seconds", "oldest_waiting_age_seconds", "oldest_failing_age_seconds"}


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def page_figures(page: str) -> dict[str, str]:
    """Every figure the page shows, by its /stats path (`data-stat`)."""
    return {m.group(1): html.unescape(m.group(2))
            for m in re.finditer(r'data-stat="([^"]+)">([^<]*)<', page)}


def shown(value: Any) -> str:
    """A /stats value as the page prints it."""
    if value is None or isinstance(value, bool):
        return {True: "yes", False: "no", None: "—"}[value]
    return str(value)


def lookup(stats: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        stats = stats[part]
    return stats


def populate(env: Env, d: DaemonProc) -> None:
    """One file with records and errors, one not log data (with a hostile name), one duplicate."""
    drop(env, "good.jsonl", GOOD)
    d.wait_event("file_processed", 1)
    drop(env, HOSTILE, b"\x00\x01binary garbage\xff\n")
    d.wait_event("file_quarantined", 1)
    drop(env, "again.jsonl", GOOD)
    d.wait_event("file_duplicate", 1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, DaemonProc, str]]:
    env = Env(tmp_path_factory.mktemp("status"))
    daemon_config(env, api=True)
    d = DaemonProc(env)
    try:
        d.wait_ready()
        populate(env, d)
        yield env, d, api_url(env)
    finally:
        assert d.stop() == 0


def status_cli(env: Env, *args: str) -> tuple[int, dict[str, Any]]:
    proc = env.cli("status", "--json", *args, check=False)
    assert proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_page_status_and_stats_agree_on_every_number(served: tuple[Env, DaemonProc, str]) -> None:
    """The page, `logwatchd status --json` and /stats show the same figures, every one of them."""
    env, _d, base = served
    stats = json.loads(get(base + "/stats")[1])
    code, page, _ = get(base + "/")
    rc, report = status_cli(env)
    stats_after = json.loads(get(base + "/stats")[1])
    assert code == 200 and rc == 0 and report["source"] == "daemon"
    assert report["health"] == {"status": "ok", "reasons": []}
    # What was dropped is what is counted.
    assert stats["files"] == {"processed": 1, "quarantined": 1, "dead_lettered": 0, "duplicate": 1,
                              "refused": 0}
    assert stats["records"] == {"processed": 3, "valid": 2, "errors": 1}
    assert stats["today"]["files"] == stats["files"] and stats["today"]["records"] == stats["records"]
    assert stats["today"]["error_ratio"] == round(1 / 3, 4)
    assert sum(stats["throughput"]["files"]) == 3 and sum(stats["throughput"]["records"]) == 3
    assert [f["outcome"] for f in stats["recent_files"]] == ["duplicate", "quarantined", "processed"]
    assert stats["quarantine"]["count"] == 1 and stats["quarantine"]["files"][0]["file"] == HOSTILE
    assert stats["catalog"]["live_files"] == 1
    # The page: every figure it shows is the /stats figure, and it shows all of these.
    figures = page_figures(page)
    expected_paths = ({f"files.{k}" for k in stats["files"]} | {f"records.{k}" for k in stats["records"]}
                      | {f"today.files.{k}" for k in stats["files"]}
                      | {f"today.records.{k}" for k in stats["records"]}
                      | {f"catalog.{k}" for k in stats["catalog"]}
                      | {"backlog", "failing_files", "intake_paused", "last_success_at",
                         "quarantine.count", "dead_letter.count", "today.error_ratio", "today.date",
                         "compaction.runs", "oldest_waiting_age_seconds"})
    assert expected_paths <= set(figures)
    for path, text in figures.items():
        if path == "health" or path.split(".")[-1] in VOLATILE:
            continue
        assert text == shown(lookup(stats, path)), path
    assert figures["health"] == "healthy"
    for f in stats["recent_files"]:
        assert html.escape(f["file"]) in page
    assert html.escape(stats["quarantine"]["files"][0]["replay"]) in page
    # `status`: the same dictionary as /stats, but for the figures that move by themselves.
    def steady(s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k not in VOLATILE | {"throughput"}}
    assert steady(report["stats"]) == steady(stats) == steady(stats_after)
    assert report["stats"]["throughput"]["files"][-3:] in (stats["throughput"]["files"][-3:],
                                                          stats_after["throughput"]["files"][-3:])


def test_page_escapes_hostile_names_and_has_a_strict_csp(served: tuple[Env, DaemonProc, str]) -> None:
    """A file name holding HTML is text on the page; the page allows no inline or outside script."""
    _env, _d, base = served
    code, page, headers = get(base + "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert HOSTILE not in page and html.escape(HOSTILE) in page
    assert "<img" not in page and "onerror=" not in page.replace("onerror=alert(1)&gt;", "")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
    assert "<script>" not in page and " style=" not in page
    assert "http://" not in page and "https://" not in page
    for asset in ("/static/status.js", "/static/status.css"):
        assert get(base + asset)[0] == 200


def test_status_from_the_ledger_when_the_daemon_is_down_then_from_the_daemon(env: Env) -> None:
    """Without a daemon `status` reads the ledger read-only and exits 3; with one, the same figures and exit 0."""
    daemon_config(env, api=True)
    rc, report = status_cli(env)
    assert rc == 3 and report["source"] == "ledger" and report["stats"] is None  # no ledger yet
    a = env.base / "a.jsonl"
    a.write_text(GOOD)
    (env.base / "junk.json").write_bytes(b"\x00\x00")
    env.process(a, env.base / "junk.json")
    drop(env, "waiting.jsonl", GOOD.replace("u2", "u3"))  # in the inbox: the backlog
    ledger = env.path("state/ledger.sqlite3")
    before = ledger.stat().st_mtime_ns, ledger.stat().st_size
    rc, offline = status_cli(env)
    assert (ledger.stat().st_mtime_ns, ledger.stat().st_size) == before  # read-only
    assert rc == 3 and offline["source"] == "ledger" and offline["running"] is False
    s = offline["stats"]
    assert s["files"]["processed"] == 1 and s["files"]["quarantined"] == 1
    assert s["records"] == {"processed": 3, "valid": 2, "errors": 1}
    assert s["backlog"] == 1 and s["uptime_seconds"] is None
    d = DaemonProc(env)
    try:
        d.wait_ready()
        d.wait_event("file_processed", 1)
        rc, online = status_cli(env)
        assert rc == 0 and online["source"] == "daemon" and online["running"] is True
        s2 = online["stats"]
        assert s2["files"]["processed"] == 2 and s2["records"]["processed"] == 6
        assert [f["file"] for f in s2["recent_files"]] == ["waiting.jsonl", "junk.json", "a.jsonl"]
        for key in ("quarantine", "dead_letter", "failing"):
            assert s2[key] == {**s[key]} if key != "failing" else s2[key] == s[key]
    finally:
        assert d.stop() == 0


def test_status_exits_1_when_the_daemon_is_unhealthy(env: Env) -> None:
    """A daemon whose /healthz fails (here: free disk below an impossible bound) makes `status` exit 1 with the reason."""
    daemon_config(env, api=True, api_settings={"min_free_bytes": 1 << 50})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        rc, report = status_cli(env)
        assert rc == 1 and report["health"]["status"] == "failing"
        assert any(r.startswith("disk:") for r in report["health"]["reasons"])
    finally:
        assert d.stop() == 0


def run_in_pty(args: list[str], cwd: str) -> tuple[int, str]:
    """Runs a command with stdin, stdout and stderr on a pseudo-terminal; returns its exit code and output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of its own, 120 columns wide like a real one
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, *args])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_status_on_a_terminal_is_a_table(env: Env) -> None:
    """On a TTY `status` prints a readable table naming its source and the quarantined file with its replay command."""
    daemon_config(env, api=True)
    junk = env.base / "esc\x1b[31m.json"
    junk.write_bytes(b"\x00\x00")
    env.process(junk)
    (env.path("inbox") / junk.name).write_bytes(b"\x00\x01")  # not yet processed: only counted
    rc, out = run_in_pty(["-m", "logwatchd", "status", "-c", str(env.config)], str(env.base))
    assert rc == 3, out
    assert "from the ledger" in out and "is not running" in out
    assert "files quarantined" in out and "backlog" in out
    assert "\x1b[31m" not in out and "esc\\x1b[31m.json" in out  # terminal escapes shown, not run


def test_dry_run_reports_reasons_and_examples_and_writes_nothing(env: Env) -> None:
    """`process --dry-run` counts every reason with its first examples and creates, writes or records nothing."""
    daemon_config(env)
    env.process(env.base / "config.toml", check=False)  # creates the root and the ledger
    lines = [json.dumps({"timestamp": "2026-01-01T00:00:00Z", "user_id": 1, "action": "a"})] * 2
    lines += ["not json {"] * 5 + ['{"user_id": 1, "action": "a"}', "[1, 2]",
                                  json.dumps({"timestamp": "yesterday", "user_id": 1, "action": "a"})]
    f = env.base / "check.jsonl"
    f.write_text("\n".join(lines) + "\n")
    garbage = env.base / "bin.json"
    garbage.write_bytes(b"\x00\xff\x00")

    def tree() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in env.root.rglob("*")}
    before = tree()
    proc = env.cli("process", "--dry-run", str(f), str(garbage), check=False)
    assert tree() == before
    ok, bad = (json.loads(line) for line in proc.stdout.splitlines())
    assert proc.returncode == 1  # one file would be quarantined
    assert ok["dry_run"] is True and ok["status"] == "ok"
    assert (ok["processed"], ok["valid"], ok["errors"]) == (10, 2, 8)
    assert ok["reasons"] == {"invalid_json": 5, "missing_field": 1, "not_an_object": 1,
                             "invalid_timestamp": 1}
    assert [e["line"] for e in ok["examples"]["invalid_json"]] == [3, 4, 5]  # the first three only
    assert ok["examples"]["missing_field"] == [{"line": 8, "raw": '{"user_id": 1, "action": "a"}',
                                                "field": "timestamp"}]
    assert bad["status"] == "quarantined" and bad["reason"] == "not_json"
    # The real run agrees with the dry run.
    real = env.process(f)[0]
    assert (real["processed"], real["valid"], real["errors"]) == (10, 2, 8)


def test_dry_run_needs_no_config(tmp_path: Any) -> None:
    """A producer without a logwatchd config can check a file: the defaults are used, and it says so."""
    f = tmp_path / "x.jsonl"
    f.write_text('{"timestamp": 1700000000, "user_id": 1, "action": "a"}\n')
    environ = {k: v for k, v in os.environ.items() if k != "LOGWATCHD_CONFIG"}
    proc = subprocess.run([sys.executable, "-m", "logwatchd", "process", "--dry-run", str(f)], check=False,
                          capture_output=True, text=True, cwd=tmp_path, env=environ)
    assert proc.returncode == 0 and "default settings" in proc.stderr
    assert json.loads(proc.stdout)["valid"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]


def test_progress_bar_on_a_terminal_only(env: Env) -> None:
    """`process` draws a bar (bytes, lines/s, ETA) on a terminal for a large file; in a pipe it prints only the summary."""
    daemon_config(env)
    line = json.dumps({"timestamp": "2026-01-01T00:00:00Z", "user_id": 1, "action": "view",
                       "pad": "x" * 150}) + "\n"
    big = env.base / "big.jsonl"
    big.write_text(line * (6 * (1 << 20) // len(line)))
    copy = env.base / "big2.jsonl"
    copy.write_text(line * (6 * (1 << 20) // len(line)) + line)
    rc, out = run_in_pty(["-m", "logwatchd", "process", "-c", str(env.config), str(big)], str(env.base))
    assert rc == 0, out
    assert "lines/s" in out and "MB" in out.replace("MiB", "MB") and "big.jsonl" in out
    assert '"status":"ok"' in out
    proc = env.cli("process", str(copy))
    assert "lines/s" not in proc.stderr and "\r" not in proc.stderr
    assert [json.loads(s)["status"] for s in proc.stdout.splitlines()] == ["ok"]


def test_status_page_and_stats_read_an_old_ledger_without_history(env: Env) -> None:
    """A ledger of an earlier version (no history table), read read-only, still gives a status (lists empty)."""
    import sqlite3

    daemon_config(env)
    a = env.base / "a.jsonl"
    a.write_text(GOOD)
    env.process(a)
    con = sqlite3.connect(env.path("state/ledger.sqlite3"))
    con.execute("DROP TABLE history")
    con.commit()
    con.close()
    rc, report = status_cli(env)
    assert rc == 3 and report["stats"]["files"]["processed"] == 1
    assert report["stats"]["recent_files"] == [] and report["stats"]["today"]["files"]["processed"] == 0
    time.sleep(0)  # nothing to wait for: the read is synchronous
