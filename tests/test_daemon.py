"""The daemon end to end: the real `logwatchd run`, real inotify, files dropped into a real inbox."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from conftest import Env, write
from daemon_harness import DaemonProc, daemon_config, drop


def records(tag: str, n: int, bad_every: int = 0) -> str:
    out = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            out.append("not json")
        else:
            out.append(json.dumps({"timestamp": 1764000000 + i, "user_id": f"{tag}-{i}",
                                   "action": "login" if i % 2 else "view"}))
    return "\n".join(out) + "\n"


def assert_exactly_once(env: Env, expected: dict[str, int]) -> None:
    """Every line of every expected input is exactly once in clean ∪ errors."""
    seen = Counter((r["source_file"], r["source_line"]) for r in env.clean_rows())
    seen.update((e["source_file"], e["source_line"]) for e in env.error_rows())
    want = Counter({(f, i): 1 for f, n in expected.items() for i in range(1, n + 1)})
    extra, missing = seen - want, want - seen
    assert not extra and not missing, f"extra={list(extra)[:5]} missing={list(missing)[:5]}"


def assert_ledger_consistent(env: Env) -> None:
    """The ledger's per-day counts equal a scan of the dataset; no journal entry is left over."""
    import sqlite3
    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    counted = {(d, a): n for d, a, n in con.execute("SELECT date, action, n FROM daily_counts")}
    scanned = Counter((r["date"], r["action"]) for r in env.clean_rows())
    assert counted == dict(scanned)
    assert con.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    live = {r[0] for r in con.execute("SELECT path FROM outputs WHERE kind = 'clean'")}
    on_disk = {str(p.relative_to(env.root)) for p in env.path("clean").rglob("*.parquet")
               if not p.name.startswith(".")}
    assert live == on_disk, "the catalog of live files matches the files on disk"
    con.close()


@pytest.fixture
def daemon(env: Env):
    daemon_config(env)
    d = DaemonProc(env)
    yield d
    d.stop()


def test_backlog_then_renamed_gzip_and_array_files(env: Env) -> None:
    """Files present at start-up are processed first; renamed, gzip and array files follow."""
    daemon_config(env)
    write(env.inbox / "backlog.jsonl", records("b", 10))
    old = time.time() - 60
    os.utime(env.inbox / "backlog.jsonl", (old, old))
    d = DaemonProc(env)
    try:
        d.wait_ready()
        drop(env, "a.jsonl", records("a", 5, bad_every=5))
        drop(env, "g.jsonl.gz", gzip.compress(records("g", 7).encode()))
        drop(env, "arr.json", json.dumps([{"timestamp": 1764000000, "user_id": 1, "action": "login"}, 3]))
        d.wait_event("file_processed", 4)
        d.wait_inbox_empty()
        processed = [e["file"] for e in d.named("file_processed")]
        assert processed[0] == "backlog.jsonl"
        assert sorted(processed) == ["a.jsonl", "arr.json", "backlog.jsonl", "g.jsonl.gz"]
        assert_exactly_once(env, {"backlog.jsonl": 10, "a.jsonl": 5, "g.jsonl.gz": 7, "arr.json": 2})
        ev = d.named("file_processed")[0]
        assert {"file", "sha256", "bytes", "processed", "valid", "errors", "duration_ms"} <= set(ev)
        assert all({"event", "level", "timestamp"} <= set(e) for e in d.events())
    finally:
        assert d.stop() == 0


def test_slow_writer_pausing_mid_line_is_taken_after_close(env: Env, daemon: DaemonProc) -> None:
    """A writer that pauses mid-line longer than settle_seconds, file open, is not cut short."""
    daemon.wait_ready()
    path = env.inbox / "slow.jsonl"
    with open(path, "w") as fh:
        fh.write(records("s", 3))
        fh.write('{"timestamp": 1764000000, "user_')
        fh.flush()
        time.sleep(1.5)  # five times settle_seconds, file still open
        fh.write('id": "late", "action": "login"}\n')
    daemon.wait_event("file_processed")
    daemon.wait_inbox_empty()
    [ev] = daemon.named("file_processed")
    assert (ev["processed"], ev["valid"], ev["errors"]) == (4, 4, 0)
    assert_exactly_once(env, {"slow.jsonl": 4})


def test_temp_names_are_ignored(env: Env, daemon: DaemonProc) -> None:
    """Names starting with '.' or ending .tmp/.part/.partial, and unmatched patterns, stay put."""
    daemon.wait_ready()
    for name in (".hidden.jsonl", "x.jsonl.tmp", "y.jsonl.part", "z.jsonl.partial", "notes.txt"):
        write(env.inbox / name, records("t", 1))
    drop(env, "real.jsonl", records("r", 1))
    daemon.wait_event("file_processed")
    time.sleep(2.5)  # past one rescan
    assert sorted(p.name for p in env.inbox.iterdir()) == sorted(
        [".hidden.jsonl", "x.jsonl.tmp", "y.jsonl.part", "z.jsonl.partial", "notes.txt"])


def test_symlink_and_fifo_are_refused_while_others_flow(env: Env, daemon: DaemonProc) -> None:
    """A symlink to a file outside and a FIFO are refused and quarantined as they are; others flow."""
    daemon.wait_ready()
    outside = write(env.base / "secret.jsonl", records("secret", 2))
    os.symlink(outside, env.inbox / "link.jsonl")
    os.mkfifo(env.inbox / "pipe.jsonl")
    os.link(outside, env.inbox / "hard.jsonl")
    drop(env, "ok.jsonl", records("ok", 3))
    daemon.wait_event("file_refused", 3)
    daemon.wait_event("file_processed")
    daemon.wait_inbox_empty()
    refused = {e["file"]: e["reason"] for e in daemon.named("file_refused")}
    assert refused == {"link.jsonl": "symlink", "pipe.jsonl": "special_file", "hard.jsonl": "hard_link"}
    q = env.path("quarantine")
    assert (q / "link.jsonl").is_symlink() and (q / "pipe.jsonl").is_fifo()
    assert json.loads((q / "link.jsonl.reason.json").read_text())["reason"] == "symlink"
    assert outside.read_text() == records("secret", 2), "the target is never touched"
    assert_exactly_once(env, {"ok.jsonl": 3})


def test_burst_of_2000_files_each_exactly_once(env: Env) -> None:
    """2,000 files renamed in at once (more than the queue holds): all processed exactly once."""
    daemon_config(env, ingest={"rescan_seconds": 5.0})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        stage = env.base / "stage"
        stage.mkdir()
        expected = {}
        for i in range(2000):
            name = f"burst-{i:04d}.jsonl"
            (stage / name).write_text(records(name, 3, bad_every=3))
            expected[name] = 3
        for name in expected:
            os.rename(stage / name, env.inbox / name)
        d.wait_inbox_empty(timeout=600)
        assert_exactly_once(env, expected)
        assert len(d.named("file_processed")) == 2000
    finally:
        assert d.stop() == 0


def test_files_removed_before_they_are_read_are_skipped(env: Env, daemon: DaemonProc) -> None:
    """Files removed right after they are written are skipped, or taken whole if the daemon
    was quicker; either way each is accounted for once and the daemon carries on."""
    daemon.wait_ready()
    for i in range(50):
        p = env.inbox / f"gone-{i}.jsonl"
        p.write_text(records(f"g{i}", 3))
        p.unlink()
    drop(env, "stays.jsonl", records("s", 2))
    daemon.wait_for(lambda: "stays.jsonl" in {e["file"] for e in daemon.named("file_processed")},
                    30, "stays.jsonl processed")
    time.sleep(1.0)
    assert daemon.proc.poll() is None
    taken = {e["file"] for e in daemon.named("file_processed")} - {"stays.jsonl"}
    assert len(taken) < 50, "most files vanish before the daemon gets to them"
    assert_exactly_once(env, {"stays.jsonl": 2} | {name: 3 for name in taken})


def test_the_same_name_dropped_again_and_again_is_taken_each_time(env: Env, daemon: DaemonProc) -> None:
    """A name reused by a producer (new content each time) is processed every time, promptly."""
    daemon.wait_ready()
    for i in range(4):
        drop(env, "a.jsonl", records(f"reuse{i}", 3))
        daemon.wait_event("file_processed", i + 1, timeout=30)
    daemon.wait_inbox_empty()
    assert len(env.clean_rows()) == 12


def test_same_content_twice_is_a_duplicate(env: Env, daemon: DaemonProc) -> None:
    """The same content under another name is logged file_duplicate and archived, nothing written."""
    daemon.wait_ready()
    drop(env, "one.jsonl", records("d", 4))
    daemon.wait_event("file_processed")
    drop(env, "two.jsonl", records("d", 4))
    [dup] = daemon.wait_event("file_duplicate")
    assert dup["file"] == "two.jsonl"
    daemon.wait_inbox_empty()
    assert len(env.clean_rows()) == 4


def test_malformed_file_is_quarantined_and_logged(env: Env, daemon: DaemonProc) -> None:
    """A truncated gzip is quarantined whole with its reason; the daemon carries on."""
    daemon.wait_ready()
    drop(env, "bad.jsonl.gz", gzip.compress(records("x", 100).encode())[:-20])
    drop(env, "good.jsonl", records("y", 2))
    [q] = daemon.wait_event("file_quarantined")
    assert q["file"] == "bad.jsonl.gz" and q["reason"] == "corrupt_gzip"
    daemon.wait_event("file_processed")
    assert (env.path("quarantine") / "bad.jsonl.gz.reason.json").exists()


def test_sigterm_mid_stream_exits_0_within_10_s(env: Env) -> None:
    """SIGTERM while files keep arriving: exit code 0 in under 10 s, and nothing half-done."""
    daemon_config(env)
    d = DaemonProc(env)
    d.wait_ready()
    stop = threading.Event()
    sent: dict[str, int] = {}

    def producer() -> None:
        i = 0
        while not stop.is_set():
            name = f"s-{i:05d}.jsonl"
            drop(env, name, records(name, 200))
            sent[name] = 200
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(2.0)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    code = d.proc.wait(15)
    elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    d._close()
    assert code == 0 and elapsed < 10, f"exit {code} after {elapsed:.1f}s"
    assert d.named("daemon_stopping")
    # Whatever was not taken is still in the inbox; the rest is exactly once.
    left = {p.name for p in env.inbox.iterdir() if not p.name.startswith(".")}
    assert_exactly_once(env, {k: v for k, v in sent.items() if k not in left})
    assert not list(env.root.rglob(".*.tmp")), "no staged file left behind"


def test_sighup_reloads_logging_and_metrics(env: Env, daemon: DaemonProc) -> None:
    """SIGHUP re-reads the config: a new log level takes effect and config_reloaded is logged."""
    daemon.wait_ready()
    text = env.config.read_text() + '\n[logging]\nlevel = "warning"\n'
    env.config.write_text(text)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    drop(env, "after.jsonl", records("h", 2))
    daemon.wait_inbox_empty()
    time.sleep(0.5)
    assert not daemon.named("file_processed"), "info events are filtered at level warning"


def test_metrics_event_from_start_and_alert_on_error_ratio(env: Env) -> None:
    """`metrics` is logged every interval from start-up; a high error ratio logs alert, then cleared."""
    daemon_config(env, metrics={"interval_seconds": 0.5, "alert_error_ratio": 0.5,
                                "alert_window_seconds": 3.0})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        [m] = d.wait_event("metrics")
        assert m["files_ok"] == 0 and m["records_errors"] == 0 and "backlog" in m
        drop(env, "bad.jsonl", records("bad", 10, bad_every=1) + records("ok", 1))
        [alert] = d.wait_event("alert")
        assert alert["error_ratio"] > 0.5
        [cleared] = d.wait_event("alert_cleared", timeout=30)
        assert cleared["error_ratio"] <= 0.5
    finally:
        d.stop()


def test_bad_config_exits_2_before_anything(env: Env) -> None:
    """A bad config: exit code 2 with the key named, no state created."""
    env.config.write_text('[ingest]\nsettle_seconds = "soon"\n')
    proc = subprocess.run([sys.executable, "-m", "logwatchd", "run", "-c", str(env.config)],
                          capture_output=True, check=False, text=True, timeout=30)
    assert proc.returncode == 2 and "ingest.settle_seconds" in proc.stderr
    assert not env.root.exists()


def test_notify_socket_ready_watchdog_stopping(env: Env) -> None:
    """A fake NOTIFY_SOCKET receives READY=1, WATCHDOG=1 and STOPPING=1, in that order."""
    daemon_config(env)
    sock_path = str(env.base / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    got: list[str] = []
    d = DaemonProc(env, {"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"})

    def receive_until(field: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not any(field in g for g in got):
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    try:
        receive_until("WATCHDOG=1", 30)
        d.signal(signal.SIGTERM)
        receive_until("STOPPING=1", 15)
        assert d.proc.wait(15) == 0
    finally:
        d.stop()
        sock.close()
    ready = next(i for i, g in enumerate(got) if "READY=1" in g.split("\n"))
    watchdog = next(i for i, g in enumerate(got) if "WATCHDOG=1" in g.split("\n"))
    stopping = next(i for i, g in enumerate(got) if "STOPPING=1" in g.split("\n"))
    assert ready < watchdog < stopping
    assert any(line.startswith("STATUS=") for g in got for line in g.split("\n"))


def test_notify_socket_never_ready_with_bad_config(env: Env) -> None:
    """With a bad config the daemon exits 2 and never sends READY=1."""
    env.config.write_text('[api]\nlisten = "nowhere"\n')
    sock_path = str(env.base / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.5)
    proc = subprocess.run([sys.executable, "-m", "logwatchd", "run", "-c", str(env.config)],
                          capture_output=True, check=False, text=True, timeout=30,
                          env=dict(os.environ) | {"NOTIFY_SOCKET": sock_path})
    assert proc.returncode == 2
    with pytest.raises(socket.timeout):
        sock.recv(4096)
    sock.close()


def test_replay_moves_quarantined_files_back(env: Env, daemon: DaemonProc) -> None:
    """`logwatchd replay quarantine NAME` puts a file back into the inbox for another try."""
    daemon.wait_ready()
    drop(env, "text.jsonl", "hello\n")
    daemon.wait_event("file_quarantined")
    daemon.stop()
    proc = env.cli("replay", "quarantine", "text.jsonl")
    assert "text.jsonl" in proc.stdout
    assert (env.inbox / "text.jsonl").read_text() == "hello\n"
    assert not (env.path("quarantine") / "text.jsonl.reason.json").exists()
    [s] = env.process(env.inbox / "text.jsonl")
    assert s["status"] == "quarantined", "replayed content is processed again, not a duplicate"


@pytest.mark.slow
def test_sigterm_while_a_large_file_is_in_hand_abandons_it_safely(env: Env) -> None:
    """SIGTERM mid-way through a large file: exit 0 within 10 s, the file stays, then is done once."""
    # One process, naive local times (the slowest timestamp path): the file takes well over
    # the 2 s the shutdown lets it run on.
    daemon_config(env, ingest={"chunk_bytes": 65536, "workers": 1},
                  transform={"timezone": "Europe/Berlin"})
    d = DaemonProc(env)
    d.wait_ready()
    line = '{"timestamp": "2026-11-25 10:%02d:%02d", "user_id": "u%d", "action": "login", "n": %d}\n'
    drop(env, "big.jsonl", "".join(line % (i // 60 % 60, i % 60, i, i) for i in range(1_000_000)))
    time.sleep(1.0)  # well into it: 1M lines take several seconds
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    code = d.proc.wait(15)
    elapsed = time.monotonic() - t0
    d._close()
    assert code == 0 and elapsed < 10, f"exit {code} after {elapsed:.1f}s"
    assert not d.named("file_processed"), "the stop came too late to test abandoning"
    assert (env.inbox / "big.jsonl").exists(), "an abandoned file stays in the inbox"
    assert env.clean_rows() == [], "nothing of an abandoned file is visible"
    d2 = DaemonProc(env)
    try:
        d2.wait_ready()
        d2.wait_inbox_empty(timeout=120)
        assert_exactly_once(env, {"big.jsonl": 1_000_000})
        assert_ledger_consistent(env)
    finally:
        assert d2.stop() == 0
    assert not list(env.root.rglob(".*.tmp"))


def test_a_new_file_renamed_over_the_one_in_hand_is_taken_promptly(env: Env) -> None:
    """A producer renaming a new file over the name being processed: both are processed, promptly."""
    daemon_config(env, ingest={"rescan_seconds": 600.0, "workers": 1})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        drop(env, "a.jsonl", records("first", 300_000))
        time.sleep(0.3)  # the first is in hand now (it takes about a second)
        drop(env, "a.jsonl", records("second", 3))
        d.wait_event("file_processed", 2, timeout=20)  # far less than the 600 s rescan
        d.wait_inbox_empty()
    finally:
        assert d.stop() == 0
    rows = env.clean_rows()
    users = {r["user_id"].split("-")[0] for r in rows}
    assert users == {"first", "second"} and len(rows) == 300_003


@pytest.mark.parametrize("made_anew", [True, False], ids=["recreated", "gone"])
def test_an_inbox_deleted_while_running_is_watched_again(env: Env, made_anew: bool) -> None:
    """`rm -rf inbox` (then `mkdir inbox`, or not) under the running daemon: the path is
    watched again within a second or two (made anew if it stays gone), with a warning;
    files dropped after it are taken on their events, not at the next rescan."""
    daemon_config(env, ingest={"rescan_seconds": 300.0})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        drop(env, "before.jsonl", records("before", 2))
        d.wait_event("file_processed")
        d.wait_inbox_empty()
        shutil.rmtree(env.inbox)
        if made_anew:
            env.inbox.mkdir()
        d.wait_event("inbox_rewatched", timeout=10)
        drop(env, "after.jsonl", records("after", 3))
        d.wait_event("file_processed", count=2, timeout=10)
    finally:
        assert d.stop() == 0, d.tail()
    assert_exactly_once(env, {"before.jsonl": 2, "after.jsonl": 3})
