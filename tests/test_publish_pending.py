"""A failure after a file's outcome is committed, while its files are moved into place
(a rename, a directory's fsync): the outcome stands, the host is in trouble.

Intake pauses (`/healthz` 503) instead of retrying the file as if nothing had been
recorded; once the moves are done the file's `file_processed` is logged, and `process`
says what happened instead of a bare failure. The fault is a failpoint that raises once
(`raise:1`), as a host's fault that clears would.
"""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
from conftest import Env
from daemon_harness import DaemonProc, daemon_config, drop

FAULT = {"LOGWATCHD_FAILPOINTS": "input.moved-first=raise:1"}


def _lines(n: int) -> str:
    return "".join(f'{{"timestamp":{1764000000 + i},"user_id":"u{i}","action":"login"}}\n'
                   for i in range(n))


def test_the_daemon_pauses_then_reports_the_committed_file(env: Env) -> None:
    daemon_config(env)
    d = DaemonProc(env, extra_env=FAULT)
    try:
        d.wait_ready()
        drop(env, "a.jsonl", _lines(40))
        [paused] = d.wait_event("intake_paused", timeout=30)
        assert paused["file"] == "a.jsonl" and "committed" in paused["error"], paused
        [done] = d.wait_event("file_processed", timeout=30)
        assert done["file"] == "a.jsonl" and done["valid"] == 40
        d.wait_event("intake_resumed", timeout=10)
        drop(env, "b.jsonl", _lines(7))  # intake goes on
        d.wait_event("file_processed", count=2, timeout=30)
        d.wait_inbox_empty()
        assert not d.named("file_dead_lettered") and not d.named("internal_error")
    finally:
        assert d.stop() == 0, d.tail()
    rows = pq.read_table(env.path("clean"), columns=["source_file"])["source_file"].to_pylist()
    assert sorted(set(rows)) == ["a.jsonl", "b.jsonl"] and len(rows) == 47
    assert env.cli("verify").returncode == 0


def test_process_says_the_outcome_is_committed_and_the_next_run_finishes_it(env: Env) -> None:
    env.write_config()
    src = env.base / "a.jsonl"
    src.write_text(_lines(30))
    first = env.cli("process", str(src), check=False, env={**os.environ, **FAULT})
    assert first.returncode == 1
    summary = json.loads(first.stdout.splitlines()[-1])
    assert summary["status"] == "failed" and "committed" in summary["detail"], summary
    assert env.cli("verify", check=False).returncode != 0  # its moves are still journaled
    [again] = env.process(src)
    assert again["status"] == "duplicate", again  # the moves were finished first
    assert pq.read_table(env.path("clean")).num_rows == 30
    assert env.cli("verify").returncode == 0
