"""kill -9 at every named step of the ingest commit and of the compaction swap (failpoints.py),
then a restart: every line is exactly once, and `logwatchd verify` finds nothing wrong."""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter

import pytest
from conftest import Env, jsonl, write

from logwatchd import failpoints

INGEST_POINTS = ["input.staged", "input.committed", "input.moved-first", "input.moved-more",
                 "input.moved", "input.synced"]
COMPACT_POINTS = ["compact.staged", "compact.committed", "compact.moved-first",
                  "compact.moved-more", "compact.moved", "compact.synced"]


def test_the_docstring_lists_every_failpoint() -> None:
    """The failpoints module documents exactly the names these tests kill at."""
    doc = failpoints.__doc__ or ""
    for name in INGEST_POINTS + COMPACT_POINTS:
        stem = name.split(".", 1)[1]
        assert re.search(rf"\b{re.escape(stem)}\b", doc), name


def lines(tag: str, n: int) -> str:
    """n lines, every third one invalid: each file has rows and error lines (several moves)."""
    return jsonl(*({"timestamp": 1764000000 + 86400 * (i % 3), "user_id": f"{tag}{i}",
                    "action": "login"} if i % 3 else "not json" for i in range(n)))


def kill_env(point: str) -> dict[str, str]:
    return dict(os.environ) | {failpoints.ENV: point}


def assert_once(env: Env, expected: dict[str, int]) -> None:
    seen = Counter((r["source_file"], r["source_line"]) for r in env.clean_rows())
    seen.update((e["source_file"], e["source_line"]) for e in env.error_rows())
    want = Counter({(f, i): 1 for f, n in expected.items() for i in range(1, n + 1)})
    assert seen == want, f"extra={list(seen - want)[:4]} missing={list(want - seen)[:4]}"


def verify_clean(env: Env) -> None:
    out = env.cli("verify", check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("point", INGEST_POINTS)
def test_kill_at_each_step_of_the_ingest_commit(env: Env, point: str) -> None:
    """Killed at `point` while processing, then run again: exactly once, verify clean."""
    env.write_config(compaction={"min_files": 1000})
    files = {f"f{i}.jsonl": 30 + i for i in range(3)}
    paths = [write(env.inbox / name, lines(name, n)) for name, n in files.items()]
    killed = env.cli("process", *map(str, paths), check=False, env=kill_env(point))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    env.cli("compact")  # any writing command recovers what the kill left
    left = sorted(p for p in env.inbox.iterdir() if not p.name.startswith("."))
    assert left, "the kill landed on the first file: the others wait"
    for out in env.process(*left):
        assert out["status"] in ("ok", "duplicate"), out
    assert not any(p for p in env.inbox.iterdir() if not p.name.startswith("."))
    assert_once(env, files)
    verify_clean(env)


@pytest.mark.parametrize("point", COMPACT_POINTS)
def test_kill_at_each_step_of_the_compaction_swap(env: Env, point: str) -> None:
    """Killed at `point` while compacting, then compacted again: same rows, verify clean."""
    env.write_config(compaction={"min_files": 2})
    files = {f"c{i}.jsonl": 20 + i for i in range(4)}
    env.process(*[write(env.inbox / name, lines(name, n)) for name, n in files.items()])
    before = sorted(json.dumps(r, sort_keys=True, default=str) for r in env.clean_rows())
    killed = env.cli("compact", check=False, env=kill_env(point))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    env.cli("compact")
    after = sorted(json.dumps(r, sort_keys=True, default=str) for r in env.clean_rows())
    assert after == before
    assert_once(env, files)
    verify_clean(env)
    parts = [p for p in env.path("clean").rglob("*.parquet") if not p.name.startswith(".")]
    assert all(p.name.startswith("compacted-") for p in parts), "the second pass finished the job"


def test_start_up_removes_a_staged_sidecar_left_in_dead_letter(env: Env) -> None:
    """A dead-letter reason file staged by a process killed before its commit is removed by
    the next writing command, as staged files are everywhere else; verify is then clean."""
    env.write_config()
    env.process(write(env.inbox / "a.jsonl", lines("a", 3)))
    staged = write(env.path("dead-letter") / ".gone.jsonl.reason.json.tmp", b"{}")
    assert env.cli("verify", check=False).returncode == 1
    env.cli("compact")
    assert not staged.exists()
    verify_clean(env)
