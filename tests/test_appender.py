"""A producer that appends to a file in place, in the inbox: every line exactly once.

Such a writer opens the inbox name, appends and closes, again and again. The daemon takes
the file when it is closed; the writer's next open must make a new file, never add lines
to the one being processed (they were counted twice when the grown file came again, and
lost when archived with it). Its opens also break the read lease the daemon takes to see
whether a writer is active, which the kernel signals with SIGIO: that ended the daemon.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import Env
from daemon_harness import DaemonProc, daemon_config, drop

from logwatchd.durable import split_grown
from logwatchd.layout import IN_HAND_DIR

APPENDER = textwrap.dedent("""
    import sys, time
    path, seconds = sys.argv[1], float(sys.argv[2])
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        with open(path, "ab") as f:
            f.write(b'{"timestamp":"2024-05-05T10:00:00Z","user_id":"u","action":"login","i":%d}\\n' % i)
        i += 1
        time.sleep(0.002)
    print(i)
""")


def _rows_by_i(env: Env) -> dict[int, int]:
    seen: dict[int, int] = {}
    for row in env.clean_rows():
        i = json.loads(row["attributes"])["i"]
        seen[i] = seen.get(i, 0) + 1
    return seen


def test_an_in_place_appender_gets_every_line_exactly_once(env: Env) -> None:
    daemon_config(env, ingest={"settle_seconds": 0.2, "rescan_seconds": 1.0})
    d = DaemonProc(env)
    try:
        d.wait_ready()
        writer = subprocess.run([sys.executable, "-c", APPENDER, str(env.inbox / "app.jsonl"), "6"],
                                capture_output=True, text=True, check=True, timeout=60)
        written = int(writer.stdout)
        assert d.proc.poll() is None, f"the daemon died ({d.proc.returncode}) under the appender\n{d.tail()}"
        d.wait_inbox_empty()
        d.wait_for(lambda: sum(e["processed"] for e in d.named("file_processed")) >= written,
                   30, "every line processed")
        processed = d.named("file_processed")
        assert len(processed) > 1  # taken while it was being written, more than once
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0, d.tail()
    seen = _rows_by_i(env)
    assert sorted(seen) == list(range(written)), "lines lost"
    assert {n for n in seen.values()} == {1}, "lines counted twice"
    assert sum(e["processed"] for e in processed) == written
    archived = list((env.root / "archive").rglob("*"))
    archived_lines = sum(len(p.read_bytes().splitlines()) for p in archived if p.is_file())
    assert archived_lines == written
    assert not (env.inbox / IN_HAND_DIR).exists()
    env.cli("verify")


def test_a_file_in_hand_at_kill_9_goes_back_to_the_inbox(env: Env) -> None:
    """kill -9 between taking a file and committing it: the next start puts it back, beside
    a new file the producer made under the same name meanwhile; each is counted once."""
    daemon_config(env)
    hand = env.inbox / IN_HAND_DIR
    d = DaemonProc(env, extra_env={"LOGWATCHD_FAILPOINTS": "input.staged"})
    try:
        d.wait_ready()
        drop(env, "a.jsonl", '{"timestamp":1700000000,"user_id":"u","action":"login","n":1}\n')
        d.wait_for(lambda: d.proc.poll() is not None, 30, "the kill")
    finally:
        d.kill()
    assert [p.name for p in hand.iterdir()] == ["a.jsonl"]
    drop(env, "a.jsonl", '{"timestamp":1700000000,"user_id":"u","action":"login","n":2}\n')
    d = DaemonProc(env)
    try:
        d.wait_ready()
        d.wait_event("file_processed", count=2)
        d.wait_inbox_empty()
    finally:
        assert d.stop() == 0, d.tail()
    assert sorted(json.loads(r["attributes"])["n"] for r in env.clean_rows()) == [1, 2]
    assert not hand.exists()
    env.cli("verify")


def test_a_file_that_fails_after_it_was_taken_waits_in_the_inbox(env: Env) -> None:
    """A failure before the commit gives the file back: its retry finds it under its name."""
    daemon_config(env)
    d = DaemonProc(env, extra_env={"LOGWATCHD_FAILPOINTS": "input.staged=raise"})
    try:
        d.wait_ready()
        path = drop(env, "a.jsonl", '{"timestamp":1700000000,"user_id":"u","action":"login"}\n')
        d.wait_event("file_retry")
        assert path.exists(), "a file that failed must wait in the inbox, not in hand"
        assert not (env.inbox / IN_HAND_DIR).exists()
        # Its way back into the inbox is an inotify event: its backoff (1 s, 2 s, ...) holds
        # all the same.
        time.sleep(2.5)
        retries = d.named("file_retry")
        assert 2 <= len(retries) <= 3, [(e["timestamp"], e.get("retry_in_s")) for e in retries]
    finally:
        assert d.stop() == 0, d.tail()


LINE = b'{"timestamp":"2024-05-05T10:00:00Z","user_id":"u","action":"login","i":%d}\n'


def _lines(first: int, n: int) -> bytes:
    return b"".join(LINE % i for i in range(first, first + n))


def _assert_each_line_once(env: Env, n: int, committed: bytes) -> None:
    seen = _rows_by_i(env)
    assert sorted(seen) == list(range(n)) and set(seen.values()) == {1}, seen
    [archived] = [p for p in (env.root / "archive").rglob("*") if p.is_file()
                  and p.read_bytes().startswith(committed[:80])]
    assert archived.read_bytes() == committed, "the archive holds what was committed"
    assert not (env.inbox / IN_HAND_DIR).exists()
    env.cli("verify")


def test_lines_a_writer_adds_after_the_commit_are_the_next_input(env: Env) -> None:
    """Without a lease (the file is another user's and the daemon lacks CAP_LEASE), a
    producer whose `open` of the inbox name raced with the take writes into the file in
    hand unseen. Lines it adds after the outcome is committed must be neither counted twice
    (the grown file came again whole) nor lost: its new bytes become a new inbox file, and
    the archived file is what was committed. The writer is simulated by opening the file
    in hand while the daemon waits after the commit (a failpoint)."""
    daemon_config(env)
    committed = _lines(0, 5)
    d = DaemonProc(env, extra_env={"LOGWATCHD_FAILPOINTS": "input.committed=sleep:3"})
    try:
        d.wait_ready()
        drop(env, "held.jsonl", committed)
        d.wait_for(lambda: _committed_inputs(env) == 1, 30, "the outcome committed")
        with open(env.inbox / IN_HAND_DIR / "held.jsonl", "ab") as f:
            f.write(_lines(5, 3))
        [grew] = d.wait_event("file_grew", timeout=30)
        assert grew["file"] == "held.jsonl" and grew["bytes"] == len(committed)
        assert grew["new_file"].startswith("held.") and grew["new_file"].endswith(".jsonl")
        d.wait_event("file_processed", count=2)
        d.wait_inbox_empty()
    finally:
        assert d.stop() == 0, d.tail()
    _assert_each_line_once(env, 8, committed)


def test_lines_added_to_a_committed_file_before_a_crash_are_the_next_input(env: Env) -> None:
    """kill -9 after the commit, lines then added to the file in hand: start-up recovery
    archives what was committed and makes the rest a new inbox file; each line once."""
    daemon_config(env)
    committed = _lines(0, 4)
    d = DaemonProc(env, extra_env={"LOGWATCHD_FAILPOINTS": "input.committed"})
    try:
        d.wait_ready()
        drop(env, "a.jsonl", committed)
        d.wait_for(lambda: d.proc.poll() is not None, 30, "the kill")
    finally:
        d.kill()
    with open(env.inbox / IN_HAND_DIR / "a.jsonl", "ab") as f:
        f.write(_lines(4, 6))
    d = DaemonProc(env)
    try:
        d.wait_ready()
        [e] = d.wait_event("file_processed")
        assert e["processed"] == 6 and e["file"] != "a.jsonl"
        d.wait_inbox_empty()
    finally:
        assert d.stop() == 0, d.tail()
    _assert_each_line_once(env, 10, committed)


def _committed_inputs(env: Env) -> int:
    with closing(sqlite3.connect(f"file:{env.path('state')}/ledger.sqlite3?mode=ro", uri=True)) as c:
        return int(c.execute("SELECT count(*) FROM inputs").fetchone()[0])


def test_split_grown_only_splits_a_file_that_only_grew(tmp_path: Path) -> None:
    """The committed bytes must still be the file's first bytes; the copy is made once per
    commit (a crash's earlier, shorter copy is replaced), and never over a stranger's file."""
    hand = tmp_path / "inbox" / IN_HAND_DIR
    hand.mkdir(parents=True)
    committed = _lines(0, 3)
    sha = hashlib.sha256(committed).hexdigest()
    f = hand / "a.jsonl"

    f.write_bytes(committed)
    assert split_grown(f, sha, len(committed)) is None  # not grown
    f.write_bytes(b"X" + committed[1:] + _lines(3, 1))
    assert split_grown(f, sha, len(committed)) is None  # rewritten, not appended to
    assert f.read_bytes().startswith(b"X")

    f.write_bytes(committed + _lines(3, 1))
    first = split_grown(f, sha, len(committed))
    assert first is not None and first.parent == tmp_path / "inbox"
    assert first.name == f"a.{sha[:12]}+{len(committed)}.jsonl"
    assert first.read_bytes() == _lines(3, 1) and f.read_bytes() == committed
    f.write_bytes(committed + _lines(3, 2))  # the same commit again (recovery after a crash)
    assert split_grown(f, sha, len(committed)) == first and first.read_bytes() == _lines(3, 2)
    first.write_bytes(b"someone else's\n")
    f.write_bytes(committed + _lines(3, 2))
    other = split_grown(f, sha, len(committed))
    assert other is not None and other != first and other.read_bytes() == _lines(3, 2)
    assert first.read_bytes() == b"someone else's\n"
    assert not [p for p in (tmp_path / "inbox").iterdir() if p.name.endswith(".tmp")]
    assert split_grown(tmp_path / "inbox" / "b.jsonl", sha, 1) is None  # not in hand


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_something_planted_under_the_in_hand_name_is_set_aside_never_followed(env: Env, tmp_path: Path,
                                                                              planted: str) -> None:
    """A symlink named like the in-hand directory must not take inputs elsewhere nor bring
    files from elsewhere in as inputs; a file there must not make every input fail. Either
    goes to quarantine as it is (refused, `reserved_name`), and the inputs are processed."""
    daemon_config(env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.jsonl"
    victim.write_bytes(_lines(100, 1))
    env.inbox.mkdir(parents=True, exist_ok=True)
    hand = env.inbox / IN_HAND_DIR
    if planted == "symlink":
        hand.symlink_to(elsewhere)
    else:
        hand.write_bytes(b"not a directory\n")
    d = DaemonProc(env)
    try:
        d.wait_ready()
        for i in range(3):
            drop(env, f"s{i}.jsonl", _lines(i, 1))
        d.wait_event("file_processed", count=3)
        d.wait_inbox_empty()
        [refused] = [e for e in d.named("file_refused") if e["reason"] == "reserved_name"]
        assert planted.replace("file", "regular file") in refused["detail"]
    finally:
        assert d.stop() == 0, d.tail()
    assert victim.read_bytes() == _lines(100, 1) and [p.name for p in elsewhere.iterdir()] == ["victim.jsonl"]
    assert sorted(_rows_by_i(env)) == [0, 1, 2]
    kept = env.path("quarantine") / IN_HAND_DIR
    assert kept.is_symlink() if planted == "symlink" else kept.read_bytes() == b"not a directory\n"
    reason = json.loads((env.path("quarantine") / f"{IN_HAND_DIR}.reason.json").read_text())
    assert reason["reason"] == "reserved_name"
    assert not d.named("file_dead_lettered") and not d.named("internal_error")


def test_an_in_hand_name_planted_again_and_again_never_fails_the_inputs(env: Env, tmp_path: Path) -> None:
    """Re-planted as fast as it is set aside, the symlink is no file's failure: the inputs
    wait (intake pauses) rather than count attempts and go to dead-letter; once the planting
    stops, every one is processed once."""
    daemon_config(env, ingest={"max_attempts": 2})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hand = env.inbox / IN_HAND_DIR
    d = DaemonProc(env)
    stop = threading.Event()

    def plant() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileExistsError, FileNotFoundError):
                hand.symlink_to(elsewhere)

    planter = threading.Thread(target=plant, daemon=True)
    try:
        d.wait_ready()
        planter.start()
        for i in range(30):
            drop(env, f"p{i}.jsonl", _lines(i, 1))
        time.sleep(3)
        stop.set()
        planter.join()
        with contextlib.suppress(FileNotFoundError):
            if hand.is_symlink():
                hand.unlink()
        d.wait_event("file_processed", count=30, timeout=90)
        d.wait_inbox_empty()
    finally:
        stop.set()
        assert d.stop() == 0, d.tail()
    assert sorted(_rows_by_i(env)) == list(range(30))
    assert not d.named("file_dead_lettered")
    assert not [e for e in d.named("file_retry") if e.get("disposition") == "bug"]
    assert not list(elsewhere.iterdir())
