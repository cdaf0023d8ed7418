"""A ledger that is not a usable SQLite file is refused at start-up with a message, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Env, jsonl, write

GOOD = {"timestamp": "2026-03-14T10:00:00Z", "user_id": "u1", "action": "login"}


def text_file(ledger: Path) -> None:
    ledger.write_text("hello\n")


def random_bytes(ledger: Path) -> None:
    ledger.write_bytes(os.urandom(8192))


def truncated_header(ledger: Path) -> None:
    ledger.write_bytes(ledger.read_bytes()[:50])


def truncated_half(ledger: Path) -> None:
    data = ledger.read_bytes()
    ledger.write_bytes(data[:len(data) // 2])


def directory(ledger: Path) -> None:
    ledger.unlink()
    ledger.mkdir()
    (ledger / "x").write_text("x")


CORRUPTIONS = [text_file, random_bytes, truncated_header, truncated_half, directory]


def corrupt_ledger(env: Env, corrupt) -> Path:
    """Processes one file (a real ledger with data), then corrupts the ledger in place."""
    env.write_config(api={"enabled": False})
    env.process(write(env.base / "a.jsonl", jsonl(GOOD)))
    ledger = env.path("state") / "ledger.sqlite3"
    for side in ledger.parent.glob("ledger.sqlite3-*"):
        side.unlink()
    corrupt(ledger)
    return ledger


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda c: c.__name__)
def test_process_refuses_a_corrupt_ledger_without_a_traceback(env: Env, corrupt) -> None:
    """`process` with a text, random, truncated or directory ledger: exit 1, a clear message, no traceback."""
    ledger = corrupt_ledger(env, corrupt)
    before = ledger.read_bytes() if ledger.is_file() else None
    proc = env.cli("process", str(write(env.base / "b.jsonl", jsonl(GOOD | {"user_id": "u2"}))), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and str(ledger) in proc.stderr and "refusing" in proc.stderr
    assert proc.stdout == ""
    assert (ledger.read_bytes() if ledger.is_file() else None) == before, "never recreated"


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda c: c.__name__)
def test_run_refuses_a_corrupt_ledger_with_startup_failed(env: Env, corrupt) -> None:
    """`run` with such a ledger: exit 1, the message on stderr, a startup_failed event, never daemon_started."""
    ledger = corrupt_ledger(env, corrupt)
    proc = env.cli("run", check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and str(ledger) in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    names = [e["event"] for e in events]
    assert "startup_failed" in names and "daemon_started" not in names
    assert str(ledger) in next(e for e in events if e["event"] == "startup_failed")["error"]
