"""The daemon's child processes (workers, HTTP, compaction) never outlive it, and a stop in
the middle of a large file is neither slow nor counted as an attempt at the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Env
from daemon_harness import DaemonProc, daemon_config
from test_daemon import assert_exactly_once

DAY = 86400
WIDE_RECORDS = 120_000
# Each Parquet part closed waits 0.05 s: with ~3,000 dates the workers stay mid-way for a
# minute, so a test's signal surely arrives while they write parts.
SLOW_PARTS = {"LOGWATCHD_FAILPOINTS": "parquet.part_closed=sleep"}


def wide_file(path: Path, n: int) -> Path:
    """n records over ~3,000 dates: ~3,000 Parquet parts to write."""
    with open(path, "w") as fh:
        fh.writelines(json.dumps({"timestamp": 1420070400 + (i * 7919 % 3000) * DAY + i % 86400,
                                 "user_id": f"u{i}", "action": "login" if i % 3 else "view",
                                 "pad": "é" * 40}) + "\n" for i in range(n))
    return path


def session_members(sid: int) -> list[int]:
    """Pids of the live processes whose session is `sid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(entry))
    return out


def start_with_a_large_file(env: Env, **ingest: object) -> tuple[DaemonProc, Path]:
    daemon_config(env, api=True, api_settings={"min_free_bytes": 0},
                  ingest={"chunk_bytes": 65536, "workers": 2, **ingest})
    staged = wide_file(env.base / "wide.jsonl", WIDE_RECORDS)
    d = DaemonProc(env, extra_env=SLOW_PARTS)
    d.wait_ready()
    os.rename(staged, env.inbox / "wide.jsonl")
    # Mid-way: the workers have written staged parts.
    d.wait_for(lambda: any(env.path("clean").rglob(".*.tmp")), timeout=60, what="staged parts")
    return d, env.inbox / "wide.jsonl"


@pytest.mark.slow
def test_kill_9_of_the_daemon_takes_every_child_process_with_it(env: Env) -> None:
    """SIGKILL of the daemon's main process alone, mid-way through a large file: its workers,
    forkserver and HTTP process are gone within seconds, and a restart is exactly-once and
    verifies clean (no orphan writes staged files behind its back)."""
    d, _ = start_with_a_large_file(env)
    sid = d.proc.pid
    assert len(session_members(sid)) >= 4  # main, forkserver, two workers, HTTP, …
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(10)
    deadline = time.monotonic() + 10
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_members(sid)
    d.kill()
    assert left == [], f"orphans outlived the daemon: {left}"
    again = DaemonProc(env)
    try:
        again.wait_ready()
        again.wait_event("file_processed", timeout=240)
        again.wait_inbox_empty()
    finally:
        assert again.stop() == 0
    assert_exactly_once(env, {"wide.jsonl": WIDE_RECORDS})
    check = env.cli("verify", check=False)
    assert check.returncode == 0, check.stdout


@pytest.mark.slow
def test_sigterm_mid_file_is_quick_and_not_an_attempt(env: Env) -> None:
    """SIGTERM while the workers are mid-way exits 0 within 10 s; with max_attempts = 1 the
    file is then processed at the next start, not dead-lettered: a stop is not a failure."""
    d, path = start_with_a_large_file(env, max_attempts=1)
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert time.monotonic() - started < 10
    d.stop()
    assert path.exists(), "the abandoned file stays in the inbox"
    left = [p.name for root in ("clean", "errors") for p in env.path(root).rglob(".*.tmp")]
    assert not left, f"the abandoned file's staged outputs are dropped at the stop: {left[:5]}"
    again = DaemonProc(env)
    try:
        again.wait_ready()
        again.wait_event("file_processed", timeout=240)
        again.wait_inbox_empty()
        assert not again.named("file_dead_lettered") and not again.named("file_retry")
    finally:
        assert again.stop() == 0
    assert_exactly_once(env, {"wide.jsonl": WIDE_RECORDS})
    assert env.cli("verify", check=False).returncode == 0


@pytest.mark.slow
def test_sigterm_to_process_drops_the_staged_outputs(env: Env) -> None:
    """`logwatchd process` sent SIGTERM mid-file exits 143, leaves no staged or spill file,
    and the same command then processes the file exactly once."""
    daemon_config(env, api=False, ingest={"chunk_bytes": 65536, "workers": 2})
    src = wide_file(env.base / "wide.jsonl", WIDE_RECORDS)
    cmd = [sys.executable, "-m", "logwatchd", "process", "-c", str(env.config), str(src)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=env.base,
                            env=dict(os.environ) | SLOW_PARTS)
    deadline = time.monotonic() + 60
    while not any(env.path("clean").rglob(".*.parquet.tmp")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, (out, err[-2000:])
    left = [p.name for root in ("clean", "errors") for p in env.path(root).rglob(".*.tmp")]
    assert not left, left[:5]
    assert not list(env.path("clean").rglob("*.parquet")), "nothing published"
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=env.base, check=False, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_exactly_once(env, {"wide.jsonl": WIDE_RECORDS})
    assert env.cli("verify", check=False).returncode == 0
