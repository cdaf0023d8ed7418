"""`logwatchd replay`: names are data, sidecars are told from inputs, the inbox is never overwritten."""

from __future__ import annotations

import fcntl
import json

import pytest
from conftest import Env, write

BINARY = b"\x00\x01 not log data"


def quarantine(env: Env, name: str, data: bytes = BINARY) -> None:
    """Processes a non-JSON file from the inbox, which quarantines it under its name."""
    [s] = env.process(write(env.inbox / name, data))
    assert s["status"] == "quarantined"
    assert (env.path("quarantine") / name).exists()


@pytest.mark.parametrize("name", ["../state/ledger.sqlite3", "..", ".", "", "a/b.jsonl",
                                  "/etc/passwd"])
def test_names_that_are_paths_are_refused_with_exit_2(env: Env, name: str) -> None:
    """A name with '/', or '.', '..' or empty, is refused (exit 2) and nothing moves."""
    quarantine(env, "q.jsonl")
    ledger = env.path("state") / "ledger.sqlite3"
    before = ledger.read_bytes()
    proc = env.cli("replay", "quarantine", name, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "logwatchd: replay:" in proc.stderr
    assert ledger.read_bytes() == before
    assert sorted(p.name for p in env.inbox.iterdir()) == []
    assert (env.path("quarantine") / "q.jsonl").exists()


def test_an_input_named_like_a_sidecar_is_replayed(env: Env) -> None:
    """A quarantined input named `x.json.reason.json` (no `x.json` beside it) comes back on replay-all."""
    quarantine(env, "x.json.reason.json")
    quarantine(env, "plain.jsonl", BINARY + b"2")
    proc = env.cli("replay", "quarantine")
    moved = {json.loads(line)["file"] for line in proc.stdout.splitlines()}
    assert moved == {"x.json.reason.json", "plain.jsonl"}
    assert (env.inbox / "x.json.reason.json").read_bytes() == BINARY
    assert list(env.path("quarantine").iterdir()) == [], "both sidecars went with their files"


def test_replay_never_overwrites_a_file_in_the_inbox(env: Env) -> None:
    """When the inbox already holds the name, the replayed file gets a tagged name; both survive."""
    quarantine(env, "a.jsonl")
    waiting = write(env.inbox / "a.jsonl", b'{"other": "content"}\n')
    [line] = env.cli("replay", "quarantine", "a.jsonl").stdout.splitlines()
    target = env.inbox / json.loads(line)["to"].rsplit("/", 1)[1]
    assert target != waiting and target.name.startswith("a.") and target.name.endswith(".jsonl")
    assert target.read_bytes() == BINARY
    assert waiting.read_bytes() == b'{"other": "content"}\n'


def test_two_replays_never_race(env: Env) -> None:
    """While another replay holds state/replay.lock, replay exits 1 with a message and moves nothing."""
    quarantine(env, "q.jsonl")
    with open(env.path("state") / "replay.lock", "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = env.cli("replay", "quarantine", check=False)
    assert proc.returncode == 1 and "another replay" in proc.stderr
    assert (env.path("quarantine") / "q.jsonl").exists()
    assert env.cli("replay", "quarantine").returncode == 0
    assert (env.inbox / "q.jsonl").read_bytes() == BINARY
