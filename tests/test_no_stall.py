"""No single file stalls intake (SPEC §9): a failing file waits with its own backoff while the
others are processed, and is dead-lettered after max_attempts or ingest.max_retry_seconds,
counted across restarts — a process that dies holding it included."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from typing import Any

import pytest
from conftest import Env
from daemon_harness import DaemonProc, api_port, daemon_config, drop
from test_daemon import assert_exactly_once, records

from logwatchd.layout import IN_HAND_DIR

IS_ROOT = os.geteuid() == 0
# Root reads any file: without these two capabilities it is held to the file's mode like
# any other user (a mode-000 input is then EACCES for the daemon, as for a non-root one).
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the daemon without read-any-file rights")
def test_an_unreadable_file_waits_while_the_others_go_on_then_is_dead_lettered(env: Env) -> None:
    """A mode-000 input (EACCES) does not hold up later files; /healthz says so; after
    ingest.max_retry_seconds it is dead-lettered with its reason, and intake never paused."""
    daemon_config(env, api=True, ingest={"max_retry_seconds": 6.0},
                  api_settings={"max_oldest_file_seconds": 2.0, "min_free_bytes": 0})
    d = DaemonProc(env, prefix=NO_DAC)
    try:
        d.wait_ready()
        locked = drop(env, "locked.jsonl", records("l", 5))
        locked.chmod(0)
        for i in range(3):
            drop(env, f"after-{i}.jsonl", records(f"a{i}", 4))
        d.wait_event("file_processed", count=3, timeout=30)
        assert locked.exists(), "the unreadable file waits in the inbox"
        retries = [e for e in d.named("file_retry") if e["file"] == "locked.jsonl"]
        assert retries and retries[0]["disposition"] == "retry"
        port = api_port(env)

        def failing() -> dict[str, Any] | None:
            status, body = health(port)
            return body if status == 503 else None

        body = d.wait_for(failing, timeout=10, what="/healthz 503 for a failing file")
        assert any(r.startswith("intake:") for r in body["reasons"]), body
        [dead] = d.wait_event("file_dead_lettered", timeout=30)
        assert dead["file"] == "locked.jsonl" and dead["reason"] == "failing_too_long"
        assert not d.named("intake_paused"), "one file's trouble is not the host's"
        dl = env.path("dead-letter")
        assert (dl / "locked.jsonl").exists()
        reason = json.loads((dl / "locked.jsonl.reason.json").read_text())
        assert reason["reason"] == "failing_too_long" and "Permission denied" in reason["detail"]
        d.wait_for(lambda: health(port)[0] == 200, timeout=10, what="/healthz back to 200")
        assert_exactly_once(env, {f"after-{i}.jsonl": 4 for i in range(3)})
    finally:
        assert d.stop() == 0


def test_a_buggy_file_does_not_hold_up_the_files_behind_it(env: Env) -> None:
    """While a file that hits a bug waits out its backoff, every later file is processed."""
    daemon_config(env, ingest={"max_attempts": 4})
    d = DaemonProc(env, {"LOGWATCHD_FAILPOINT_PROCESS": "poison*"})
    try:
        d.wait_ready()
        drop(env, "poison.jsonl", records("x", 2))
        d.wait_event("file_retry")
        for i in range(5):
            drop(env, f"fine-{i}.jsonl", records(f"f{i}", 3))
        d.wait_event("file_processed", count=5, timeout=20)
        assert not d.named("file_dead_lettered"), "the fine files did not wait for the poison one"
        [dead] = d.wait_event("file_dead_lettered", timeout=60)
        assert dead["attempts"] == 4 and dead["reason"] == "internal_error"
        assert_exactly_once(env, {f"fine-{i}.jsonl": 3 for i in range(5)})
    finally:
        assert d.stop() == 0


def test_a_file_that_kills_the_process_is_dead_lettered_across_restarts(env: Env) -> None:
    """A file whose processing kills the daemon every time (as a segfault or the OOM killer
    would) is dead-lettered after max_attempts restarts, not retried forever."""
    daemon_config(env, ingest={"max_attempts": 2})
    drop(env, "killer.jsonl", records("k", 3))
    for attempt in range(2):  # each start takes the file and dies at its commit
        d = DaemonProc(env, {"LOGWATCHD_FAILPOINTS": "input.staged"})
        d.proc.wait(60)
        d.stop()
        assert d.proc.returncode == -9, f"start {attempt}: the failpoint killed the process"
        # Killed with the file in hand: the next start gives it back to the inbox.
        assert (env.inbox / IN_HAND_DIR / "killer.jsonl").exists()
    d = DaemonProc(env)  # the same file, with nothing to kill the process any more
    try:
        d.wait_ready()
        [dead] = d.wait_event("file_dead_lettered", timeout=30)
        assert dead["reason"] == "process_died" and dead["attempts"] == 2
        reason = json.loads((env.path("dead-letter") / "killer.jsonl.reason.json").read_text())
        assert "process stopped" in reason["detail"]
        drop(env, "next.jsonl", records("n", 2))
        d.wait_event("file_processed")
        d.wait_inbox_empty()
    finally:
        assert d.stop() == 0
    assert_exactly_once(env, {"next.jsonl": 2})
    assert env.cli("verify", check=False).returncode == 0
