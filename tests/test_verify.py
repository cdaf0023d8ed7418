"""`logwatchd verify`: the ledger, the dataset and the archive checked against each other, offline."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Env, jsonl, write

REC = {"timestamp": "2026-11-25T10:00:00Z", "user_id": "u", "action": "login"}


@pytest.fixture
def done(env: Env) -> Env:
    """Three inputs processed from the inbox: rows on two dates, error lines, an archive."""
    write(env.inbox / "a.jsonl", jsonl(REC, REC | {"action": "view"}, "bad"))
    write(env.inbox / "b.jsonl", jsonl(REC | {"timestamp": "2026-11-26T10:00:00Z"}, {"x": 1}))
    write(env.inbox / "c.jsonl", b"\x00 binary")
    env.process(env.inbox / "a.jsonl", env.inbox / "b.jsonl", env.inbox / "c.jsonl")
    return env


def ledger(env: Env) -> sqlite3.Connection:
    return sqlite3.connect(env.path("state") / "ledger.sqlite3", isolation_level=None)


def verify(env: Env) -> tuple[int, list[str]]:
    proc = env.cli("verify", check=False)
    return proc.returncode, proc.stdout.splitlines()


def a_parquet(env: Env) -> Path:
    return min(env.path("clean").rglob("*.parquet"))


def test_a_clean_run_verifies_clean(done: Env) -> None:
    """After ordinary processing, verify finds nothing (exit 0), in text and JSON, and leaves the ledger as it was."""
    ledger_file = done.path("state") / "ledger.sqlite3"
    before = ledger_file.read_bytes()
    assert verify(done) == (0, [])
    proc = done.cli("verify", "--json")
    assert json.loads(proc.stdout) == {"ok": True, "problems": []}
    assert ledger_file.read_bytes() == before


def test_relative_ledger_paths_verify_clean(done: Env) -> None:
    """Output and journal paths stored relative to paths.root are resolved against it."""
    root = str(done.root.resolve())
    with ledger(done) as con:
        con.execute("UPDATE outputs SET path = substr(path, ?) WHERE path LIKE ?", (len(root) + 2, root + "/%"))
        assert con.execute("SELECT count(*) FROM outputs WHERE path LIKE '/%'").fetchone()[0] == 0
    assert verify(done) == (0, [])


def _delete_parquet(env: Env) -> None:
    a_parquet(env).unlink()


def _add_orphan(env: Env) -> None:
    src = a_parquet(env)
    shutil.copy(src, src.with_name("stray.parquet"))


def _edit_count(env: Env) -> None:
    with ledger(env) as con:
        con.execute("UPDATE daily_counts SET n = n + 1 WHERE action = 'login'")


def _leave_staging(env: Env) -> None:
    src = a_parquet(env)
    shutil.copy(src, src.with_name(f".{src.name}.tmp"))


def _edit_counter(env: Env) -> None:
    with ledger(env) as con:
        con.execute("UPDATE counters SET n = n + 5 WHERE name = 'records_errors'")


def _pending_journal(env: Env) -> None:
    with ledger(env) as con:
        con.execute("INSERT INTO journal (txn, src, dst) VALUES ('input:x', 'inbox/x.jsonl', NULL)")


def _unknown_archive(env: Env) -> None:
    [day] = list(env.path("archive").iterdir())
    write(day / "never-seen.jsonl", jsonl(REC | {"user_id": "ghost"}))


def _truncate_error_file(env: Env) -> None:
    f = min(env.path("errors").rglob("*.jsonl"))
    f.write_bytes(f.read_bytes().split(b"\n", 1)[1])


@pytest.mark.parametrize(("damage", "kinds"), [
    (_delete_parquet, {"missing_output", "count_mismatch"}),
    (_add_orphan, {"orphan_file", "count_mismatch"}),
    (_edit_count, {"count_mismatch"}),
    (_leave_staging, {"staging_file"}),
    (_edit_counter, {"counter_mismatch"}),
    (_pending_journal, {"pending_journal"}),
    (_unknown_archive, {"unknown_archived_input"}),
    (_truncate_error_file, {"size_mismatch", "rows_mismatch"}),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_each_kind_of_damage_is_reported_with_exit_1(done: Env, damage: Callable[[Env], None],
                                                      kinds: set[str]) -> None:
    """Each kind of disagreement is reported, one problem per line, exit 1; --json says the same."""
    damage(done)
    status, lines = verify(done)
    assert status == 1
    assert {line.split(":", 1)[0] for line in lines} == kinds, lines
    body = json.loads(done.cli("verify", "--json", check=False).stdout)
    assert body["ok"] is False and {p["kind"] for p in body["problems"]} == kinds


def test_without_a_ledger_verify_says_so_and_exits_1(env: Env) -> None:
    """With no ledger at all there is nothing to verify against: exit 1 with a message, none created."""
    proc = env.cli("verify", check=False)
    assert proc.returncode == 1 and "no ledger" in proc.stderr
    assert not (env.path("state") / "ledger.sqlite3").exists()


@pytest.mark.parametrize("page", [2, 3, -1])
def test_a_damaged_ledger_page_is_reported_as_ledger_corrupt(done: Env, page: int) -> None:
    """One overwritten 4 KiB page of the ledger (second, third or last) is `ledger_corrupt`, exit 1."""
    path = done.path("state") / "ledger.sqlite3"
    done.cli("compact")  # folds the WAL into the file, so the damage is in what is read
    size = path.stat().st_size
    pages = size // 4096
    assert pages >= 3
    offset = (pages - 1 if page == -1 else page - 1) * 4096
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(range(256)) * 16)
    code, lines = verify(done)
    assert code == 1 and lines and all(line.startswith("ledger_corrupt:") for line in lines), lines
