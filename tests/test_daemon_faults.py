"""The daemon under faults (SPEC §9): disk full, permission denied, a bug, kill -9 in a loop."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from datetime import UTC
from pathlib import Path

import pytest
from conftest import Env, write
from daemon_harness import DaemonProc, daemon_config, drop
from test_daemon import assert_exactly_once, assert_ledger_consistent, records

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def tmpfs_env(tmp_path: Path):
    """An Env whose whole root is a 3 MiB tmpfs: a real ENOSPC when it fills."""
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    env = Env(tmp_path)
    env.root.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(env.root)],
                          capture_output=True, check=False, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {proc.stderr.strip()}")
    env.write_config()
    try:
        yield env
    finally:
        subprocess.run(["umount", "-l", str(env.root)], check=False)


def fill(path: Path) -> Path:
    """Writes a ballast file until the filesystem is full (unbuffered: no flush left to fail)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        block = b"\0" * 65536
        while True:
            try:
                if os.write(fd, block) == 0:
                    break
            except OSError:
                break
        try:
            os.fsync(fd)
        except OSError:
            pass
    finally:
        os.close(fd)
    return path


@pytest.mark.slow
def test_disk_full_pauses_intake_and_loses_nothing(tmpfs_env: Env) -> None:
    """ENOSPC pauses intake (intake_paused, file_retry); once space returns every line is there once."""
    env = tmpfs_env
    daemon_config(env)
    d = DaemonProc(env)
    try:
        d.wait_ready()
        drop(env, "before.jsonl", records("before", 50))
        d.wait_event("file_processed")
        stage = env.root / "stage"
        stage.mkdir()
        expected = {"before.jsonl": 50}
        for i in range(5):
            name = f"full-{i}.jsonl"
            (stage / name).write_text(records(name, 400))
            expected[name] = 400
        ballast = fill(env.root / "ballast")
        for name in list(expected)[1:]:
            os.rename(stage / name, env.inbox / name)
        d.wait_event("intake_paused", timeout=60)
        d.wait_event("file_retry")
        assert any(p.name.startswith("full-") for p in env.inbox.iterdir()), "nothing may leave the inbox"
        ballast.unlink()
        d.wait_event("intake_resumed", timeout=90)
        d.wait_inbox_empty(timeout=90)
        assert_exactly_once(env, expected)
        assert_ledger_consistent(env)
        assert not list(env.root.rglob(".*.tmp"))
    finally:
        assert d.stop() == 0


@pytest.mark.slow
def test_permission_denied_pauses_then_resumes(env: Env) -> None:
    """An unwritable output directory (immutable) pauses intake; lifting it resumes, nothing lost."""
    if shutil.which("chattr") is None or not IS_ROOT:
        pytest.skip("needs root and chattr to make a directory unwritable for root")
    daemon_config(env)
    d = DaemonProc(env)
    errors_dir = env.path("errors")
    try:
        d.wait_ready()
        errors_dir.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["chattr", "+i", str(errors_dir)], capture_output=True, check=False).returncode != 0:
            pytest.skip("this filesystem does not support the immutable attribute")
        drop(env, "p.jsonl", records("p", 10, bad_every=2))
        d.wait_event("intake_paused")
        assert (env.inbox / "p.jsonl").exists()
        subprocess.run(["chattr", "-i", str(errors_dir)], check=True)
        d.wait_event("intake_resumed", timeout=90)
        d.wait_inbox_empty()
        assert_exactly_once(env, {"p.jsonl": 10})
    finally:
        subprocess.run(["chattr", "-i", str(errors_dir)], check=False)
        d.stop()


def test_a_bug_dead_letters_the_file_after_max_attempts(env: Env) -> None:
    """A file that hits a bug is retried, then dead-lettered with a reason; the daemon lives on."""
    daemon_config(env, ingest={"max_attempts": 3})
    d = DaemonProc(env, {"LOGWATCHD_FAILPOINT_PROCESS": "poison*"})
    try:
        d.wait_ready()
        drop(env, "poison.jsonl", records("x", 2))
        drop(env, "fine.jsonl", records("y", 2))
        [dl] = d.wait_event("file_dead_lettered", timeout=60)
        assert dl["file"] == "poison.jsonl" and dl["attempts"] == 3
        assert len(d.named("file_retry")) >= 3
        dead = env.path("dead-letter")
        assert (dead / "poison.jsonl").read_text() == records("x", 2)
        import json
        assert json.loads((dead / "poison.jsonl.reason.json").read_text())["reason"] == "internal_error"
        d.wait_event("file_processed")
        d.wait_inbox_empty()
        assert_exactly_once(env, {"fine.jsonl": 2})
    finally:
        assert d.stop() == 0


@pytest.mark.slow
def test_sigkill_during_a_steady_stream_eight_times(env: Env) -> None:
    """kill -9 at random moments while files stream in, restart, eight times: every line once."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Small chunks send the bigger files through the worker processes too.
    daemon_config(env, ingest={"chunk_bytes": 32768}, compaction={"interval_seconds": 1.0, "min_files": 2})
    expected: dict[str, int] = {}
    counter = iter(range(10**6))

    def produce(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            i = next(counter)
            name = f"k-{i:05d}.jsonl"
            n = rng.choice([5, 50, 2000])
            drop(env, name, records(name, n, bad_every=7))
            expected[name] = n
            time.sleep(0.02)

    for round_ in range(8):
        d = DaemonProc(env)
        d.wait_ready()
        producer = threading.Thread(target=produce, args=(rng.uniform(0.5, 2.0),))
        producer.start()
        time.sleep(rng.uniform(0.3, 2.5))
        d.kill()
        producer.join()
    d = DaemonProc(env)
    try:
        d.wait_ready()
        d.wait_inbox_empty(timeout=300)
    finally:
        assert d.stop() == 0
    # Read at rest: with compaction every second, files come and go while the daemon runs.
    assert_exactly_once(env, expected)
    assert_ledger_consistent(env)
    check = env.cli("verify", check=False)
    assert check.returncode == 0, f"seed={seed}: verify found {check.stdout}"
    assert not list(env.root.rglob(".*.tmp")), f"seed={seed}: staged files left behind"
    assert any(p.name.startswith("compacted-") for p in env.path("clean").rglob("*.parquet")), \
        "compaction ran during the test"


def test_a_failure_after_commit_is_finished_not_counted_again(env: Env) -> None:
    """If moving a committed file into place fails, the retry finishes that commit: no duplicate."""
    import json
    import sqlite3
    from datetime import datetime
    daemon_config(env)
    day = datetime.now(UTC).date().isoformat()
    obstacle = env.path("archive") / f"date={day}"
    d = DaemonProc(env)
    try:
        d.wait_ready()
        obstacle.write_text("a file where the archive's day folder should be")
        drop(env, "a.jsonl", records("a", 5))
        d.wait_event("file_retry")
        obstacle.unlink()
        d.wait_inbox_empty(timeout=60)
        time.sleep(0.5)
    finally:
        assert d.stop() == 0
    assert_exactly_once(env, {"a.jsonl": 5})
    assert_ledger_consistent(env)
    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    counters = dict(con.execute("SELECT name, n FROM counters"))
    assert counters["files_ok"] == 1 and counters["files_duplicate"] == 0, json.dumps(counters)
    assert (env.path("archive") / f"date={day}" / "a.jsonl").exists()


@pytest.mark.slow
def test_disk_full_in_a_worker_process_pauses_intake_and_counts_no_attempt(tmpfs_env: Env) -> None:
    """ENOSPC met by a pool worker (a file of several chunks) is the host's trouble, as in the
    main process: intake pauses, no attempt is counted, and the file is done once space returns."""
    env = tmpfs_env
    daemon_config(env, ingest={"max_attempts": 1, "chunk_bytes": 65536, "workers": 2})
    stage = env.root / "stage"
    stage.mkdir()
    lines = [json.dumps({"timestamp": 1764000000 + i, "user_id": f"u{i}", "action": "login",
                         "pad": os.urandom(48).hex()}) for i in range(9000)]
    (stage / "big.jsonl").write_text("\n".join(lines) + "\n")  # ~1.1 MB, incompressible
    d = DaemonProc(env)
    try:
        d.wait_ready()
        ballast = fill(env.root / "ballast")
        os.truncate(ballast, max(0, ballast.stat().st_size - 256 * 1024))
        os.rename(stage / "big.jsonl", env.inbox / "big.jsonl")
        [paused] = d.wait_event("intake_paused", timeout=60)
        assert paused["file"] == "big.jsonl"
        retries = d.wait_event("file_retry", count=2, timeout=60)
        assert {r["disposition"] for r in retries} == {"pause"}, retries
        assert not d.named("file_dead_lettered") and (env.inbox / "big.jsonl").exists()
        ballast.unlink()
        d.wait_event("intake_resumed", timeout=90)
        d.wait_inbox_empty(timeout=90)
        assert not d.named("file_dead_lettered")
        assert_exactly_once(env, {"big.jsonl": 9000})
        assert not list(env.root.rglob(".*.tmp"))
    finally:
        assert d.stop() == 0


def test_a_full_disk_at_start_up_is_not_called_a_corrupt_ledger(tmpfs_env: Env) -> None:
    """A healthy ledger on a full disk cannot be opened: start-up fails (exit 1, systemd
    restarts it) saying the disk is the trouble, not that the ledger must be rebuilt;
    with space again the same ledger starts and the waiting file is processed."""
    env = tmpfs_env
    daemon_config(env)
    assert env.process(write(env.base / "first.jsonl", records("first", 3)))[0]["status"] == "ok"
    drop(env, "waiting.jsonl", records("waiting", 4))
    ballast = fill(env.root / "ballast")
    proc = env.cli("run", check=False, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "cannot be opened now" in out and "corrupt" not in out and "rebuild" not in out, out
    ballast.unlink()
    d = DaemonProc(env)
    try:
        d.wait_ready()
        d.wait_event("file_processed")
        d.wait_inbox_empty()
    finally:
        assert d.stop() == 0, d.tail()
    assert_exactly_once(env, {"first.jsonl": 3, "waiting.jsonl": 4})
