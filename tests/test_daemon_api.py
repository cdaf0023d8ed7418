"""The HTTP endpoint inside the running daemon, over a real socket, while files are committed."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from conftest import Env, write
from daemon_harness import DaemonProc, api_port, api_url, daemon_config, drop, free_port
from test_daemon import assert_exactly_once, records


def get(url: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_counts_move_exactly_when_a_file_is_committed(env: Env) -> None:
    """/logins_today and /counts change by exactly the committed logins, never in between."""
    daemon_config(env, api=True)
    d = DaemonProc(env)
    base = api_url(env)
    today = datetime.now(UTC)
    stamp = today.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        d.wait_ready()
        d.wait_for(lambda: get(base + "/healthz")[0] == 200, 30, "healthz 200")
        status, body = get(base + "/logins_today")
        assert status == 200 and json.loads(body)["logins_today"] == 0
        for i in range(1, 4):
            lines = [json.dumps({"timestamp": stamp, "user_id": f"u{i}-{j}", "action": "login"})
                     for j in range(i * 10)]
            lines.append(json.dumps({"timestamp": stamp, "user_id": "v", "action": "view"}))
            drop(env, f"f{i}.jsonl", "\n".join(lines) + "\n")
            d.wait_event("file_processed", i)
            assert json.loads(get(base + "/logins_today")[1])["logins_today"] == sum(k * 10 for k in range(1, i + 1))
        day = today.strftime("%Y-%m-%d")
        counts = json.loads(get(f"{base}/counts?date={day}")[1])
        assert counts["counts"] == {"login": 60, "view": 3}
        one = json.loads(get(f"{base}/counts?date={day}&action=view")[1])
        assert one["count"] == 3
        stats = json.loads(get(base + "/stats")[1])
        assert stats["files"]["processed"] == 3
        assert stats["records"] == {"processed": 63, "valid": 63, "errors": 0}
        assert get(f"{base}/counts?date=2026-02-30")[0] == 400
        assert get(base + "/logins_today", method="POST")[0] == 405
        assert get(base + "/nope")[0] == 404
        status, metrics = get(base + "/metrics")
        assert status == 200 and "logwatchd_" in metrics
    finally:
        assert d.stop() == 0


def test_slow_clients_cannot_make_healthz_unanswerable(env: Env) -> None:
    """300 connections trickling a request head byte by byte leave /healthz answering 200 within seconds."""
    daemon_config(env, api=True)
    d = DaemonProc(env)
    base = api_url(env)
    host, port = base[len("http://"):].rsplit(":", 1)
    addr = (host, int(port))
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
    stop = threading.Event()
    opened = [0]

    def connect() -> tuple[socket.socket, int]:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(addr)
        opened[0] += 1
        return sock, 0

    def trickle() -> None:
        # One byte per connection per second; a connection the server closes is opened again,
        # so 300 slow clients are there for as long as the test runs.
        conns = [connect() for _ in range(300)]
        while not stop.wait(1.0):
            for i, (sock, sent) in enumerate(conns):
                try:
                    conns[i] = (sock, sent + sock.send(head[sent:sent + 1]))
                except OSError:
                    sock.close()
                    conns[i] = connect()
        for sock, _ in conns:
            sock.close()

    try:
        d.wait_ready()
        d.wait_for(lambda: get(base + "/healthz")[0] == 200, 30, "healthz 200")
        slow = threading.Thread(target=trickle)
        slow.start()
        try:
            time.sleep(3)  # every slow connection is open and has sent a few bytes
            for _ in range(4):  # past the request deadline, while evicted clients come back
                t0 = time.monotonic()
                conn = urllib.request.urlopen(base + "/healthz", timeout=4)
                assert conn.status == 200 and json.loads(conn.read())["status"] == "ok"
                assert time.monotonic() - t0 < 4
                time.sleep(2)
        finally:
            stop.set()
            slow.join(30)
        assert opened[0] >= 300
    finally:
        assert d.stop() == 0


def test_scheduled_compaction_runs_beside_ingestion_and_reports_to_stats(env: Env) -> None:
    """The daemon's scheduled pass (in a process of its own) merges a partition's small files,
    its figures reach /stats and /metrics, ingestion goes on, and everything verifies."""
    daemon_config(env, api=True, api_settings={"min_free_bytes": 0},
                  compaction={"interval_seconds": 1.0, "min_files": 2})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        for i in range(4):
            drop(env, f"c{i}.jsonl", records(f"c{i}", 20))
        d.wait_event("file_processed", count=4)
        [done] = d.wait_event("compaction_done", timeout=60)
        assert done["files_in"] >= 2 and done["files_out"] == 1
        port = api_port(env)

        def stats() -> dict | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
                body = json.loads(r.read())
            return body if body["compaction"]["runs"] >= 1 else None

        body = d.wait_for(stats, timeout=10, what="compaction figures in /stats")
        assert body["compaction"]["files_in"] >= 2

        def compactions_total() -> float | None:
            # The Prometheus families are published at least every 0.25 s, the /stats figures
            # on every change: /metrics may lag /stats by that much, never more.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            [total] = [float(line.split()[1]) for line in text.splitlines()
                       if line.startswith("logwatchd_compactions_total ")]
            return total if total >= 1 else None

        d.wait_for(compactions_total, timeout=2, what="logwatchd_compactions_total in /metrics")
        drop(env, "after.jsonl", records("after", 5))
        d.wait_event("file_processed", count=5)
        d.wait_inbox_empty()
    finally:
        assert d.stop() == 0
    assert_exactly_once(env, {**{f"c{i}.jsonl": 20 for i in range(4)}, "after.jsonl": 5})
    assert env.cli("verify", check=False).returncode == 0


def test_the_http_process_ends_with_a_killed_daemon_so_a_restart_can_listen(env: Env) -> None:
    """kill -9 of the daemon's main process alone: its HTTP process lets the port go, and a
    new daemon serves on the same port."""
    daemon_config(env, api=True, api_settings={"min_free_bytes": 0})
    port = api_port(env)
    d = DaemonProc(env)
    d.wait_ready()
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(10)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        return False

    deadline = time.monotonic() + 15
    while not refused() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refused(), "an orphaned HTTP process still holds the port"
    d.kill()  # whatever is left of its session
    again = DaemonProc(env)
    try:
        again.wait_ready()
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        assert again.stop() == 0


def test_a_port_in_use_fails_start_up_before_any_file_is_taken(env: Env) -> None:
    """With api.listen taken by another program, `run` exits 1 (startup_failed) and leaves the
    backlog in the inbox: a restart loop does no work it cannot finish."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon_config(env, api=True, api_settings={"listen": f"127.0.0.1:{port}"})
        drop(env, "waiting.jsonl", records("w", 3))
        d = DaemonProc(env)
        assert d.proc.wait(60) == 1
        d.stop()
    [failed] = d.named("startup_failed")
    assert str(port) in failed["error"]
    assert "Traceback" not in d.err_path.read_text(), d.err_path.read_text()  # a clean exit 1
    assert (env.inbox / "waiting.jsonl").exists() and not d.named("file_processed")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["kill-group", "ctrl-c"])
def test_a_stop_signal_to_the_whole_group_mid_compaction_is_a_clean_stop(env: Env, sig: int) -> None:
    """Ctrl-C in a terminal, or a `kill` of the process group, signals every process: the
    forkserver and its children (workers, compaction, HTTP) must leave the stopping to the
    daemon. The forkserver died of it, its children with it, and a clean stop logged the
    compaction pass in progress as failed ("exited with 255")."""
    daemon_config(env, api=True, api_settings={"min_free_bytes": 0},
                  compaction={"interval_seconds": 600.0, "min_files": 2})
    days = 40
    for k in range(3):  # three small files in each of 40 partitions: a pass of 40 merges
        lines = [json.dumps({"timestamp": 1700000000 + 86400 * day, "user_id": f"u{k}",
                             "action": "login"}) for day in range(days)]
        write(env.base / f"s{k}.jsonl", "\n".join(lines) + "\n")
    env.process(*(env.base / f"s{k}.jsonl" for k in range(3)))
    env.write_config(  # the first pass now, then none
        api={"enabled": True, "listen": f"127.0.0.1:{free_port()}", "min_free_bytes": 0},
        ingest={"settle_seconds": 0.3, "rescan_seconds": 2.0},
        compaction={"interval_seconds": 1.0, "min_files": 2})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        d.wait_event("compaction_done", timeout=60)  # the pass is under way
        os.killpg(d.proc.pid, sig)
        assert d.proc.wait(20) == 0
    finally:
        d.kill()
    assert not [e for e in d.events() if e.get("level") == "error"], d.tail()
    assert env.cli("verify", check=False).returncode == 0


def test_stats_backlog_reaches_zero_as_soon_as_a_burst_is_drained(env: Env) -> None:
    """After the last file of a backlog is committed, /stats says the inbox is empty at
    once, not at the next periodic recount (up to 2 s later)."""
    daemon_config(env, api=True, metrics={"interval_seconds": 60.0})
    for i in range(300):  # counted at start-up
        drop(env, f"burst-{i:03d}.jsonl", records(f"b{i}", 3))
    d = DaemonProc(env)
    base = api_url(env)
    try:
        d.wait_event("file_processed", count=300, timeout=120)
        drained_at = time.monotonic()
        while json.loads(get(base + "/stats")[1])["backlog"] != 0:
            assert time.monotonic() - drained_at < 0.5, "/stats still counts files already processed"
            time.sleep(0.05)
    finally:
        assert d.stop() == 0, d.tail()
