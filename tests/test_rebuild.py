"""`logwatchd rebuild-ledger`: a lost ledger is rebuilt from the outputs, counts and dedupe intact."""

from __future__ import annotations

import json
import os
import sqlite3

from conftest import Env, jsonl, write

REC = {"timestamp": "2026-11-25T10:00:00Z", "user_id": "u", "action": "login"}


def ledger_state(env: Env) -> tuple[dict, dict]:
    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    counts = {(d, a): n for d, a, n in con.execute("SELECT date, action, n FROM daily_counts")}
    counters = dict(con.execute("SELECT name, n FROM counters"))
    con.close()
    return counts, counters


def test_rebuild_restores_counts_catalog_and_dedupe(env: Env) -> None:
    """After the ledger is deleted, rebuild-ledger gives the same counts, and old content is a duplicate."""
    write(env.inbox / "a.jsonl", jsonl(REC, REC | {"action": "view"}, "bad"))
    write(env.inbox / "b.json", json.dumps([REC | {"timestamp": 1764100000}, 7]))
    write(env.inbox / "c.jsonl", b"\x00\x01 binary")
    env.process(env.inbox / "a.jsonl", env.inbox / "b.json", env.inbox / "c.jsonl")
    before_counts, before_counters = ledger_state(env)
    for f in env.path("state").glob("ledger.sqlite3*"):
        f.unlink()
    assert env.cli("check-config").returncode == 0
    refused = env.cli("process", str(write(env.base / "x.jsonl", jsonl(REC))), check=False)
    assert refused.returncode == 1, "a missing ledger beside outputs is refused"
    out = json.loads(env.cli("rebuild-ledger").stdout)
    assert out["inputs"] == 2 and out["quarantined"] == 1 and out["rows"] == 3 and out["error_lines"] == 2
    after_counts, after_counters = ledger_state(env)
    assert after_counts == before_counts
    for key in ("files_ok", "files_quarantined", "records_valid", "records_errors", "records_processed"):
        assert after_counters[key] == before_counters[key], key
    write(env.base / "again.jsonl", jsonl(REC, REC | {"action": "view"}, "bad"))
    [s] = env.process(env.base / "again.jsonl")
    assert s["status"] == "duplicate"


def test_rebuild_keeps_the_broken_ledger_aside(env: Env) -> None:
    """A corrupt ledger is moved aside (never deleted) and replaced by the rebuilt one."""
    env.process(write(env.base / "a.jsonl", jsonl(REC)))
    ledger = env.path("state") / "ledger.sqlite3"
    for f in env.path("state").glob("ledger.sqlite3-*"):
        f.unlink()
    ledger.write_bytes(b"garbage" * 100)
    out = json.loads(env.cli("rebuild-ledger").stdout)
    assert out["old_ledger"] and (env.path("state") / out["old_ledger"].split("/")[-1]).read_bytes() == b"garbage" * 100
    [s] = env.process(write(env.base / "b.jsonl", jsonl(REC | {"user_id": "other"})))
    assert s["status"] == "ok"
    counts, _ = ledger_state(env)
    assert counts == {("2026-11-25", "login"): 2}


def test_rebuild_after_compaction(env: Env) -> None:
    """Compacted files (many inputs each) rebuild to the same counts, and their inputs stay known."""
    env.write_config(compaction={"min_files": 2})
    for i in range(4):
        write(env.base / f"f{i}.jsonl", jsonl(*[REC | {"user_id": f"{i}-{j}"} for j in range(5)], "bad"))
    env.process(*[env.base / f"f{i}.jsonl" for i in range(4)])
    env.cli("compact")
    assert len(list(env.path("clean").rglob("*.parquet"))) == 1
    before_counts, before_counters = ledger_state(env)
    for f in env.path("state").glob("ledger.sqlite3*"):
        f.unlink()
    out = json.loads(env.cli("rebuild-ledger").stdout)
    assert out["rows"] == 20 and out["error_lines"] == 4 and out["inputs"] == 4
    after_counts, after_counters = ledger_state(env)
    assert after_counts == before_counts
    for key in ("files_ok", "records_valid", "records_errors", "records_processed"):
        assert after_counters[key] == before_counters[key], key
    [s] = env.process(env.base / "f2.jsonl")
    assert s["status"] == "duplicate"


def test_refused_links_are_not_processed_content_after_a_rebuild(env: Env) -> None:
    """Refused links in quarantine are not processed content to rebuild-ledger: the same content dropped later is ok."""
    env.inbox.mkdir(parents=True)
    outside = write(env.base / "outside.jsonl", jsonl(REC | {"user_id": "linked"}))
    os.link(outside, env.inbox / "hard.jsonl")
    other = write(env.base / "other.jsonl", jsonl(REC | {"user_id": "symlinked"}))
    os.symlink(other, env.inbox / "sym.jsonl")
    summaries = env.process(env.inbox / "hard.jsonl", env.inbox / "sym.jsonl", check=False)
    assert [s["status"] for s in summaries] == ["quarantined", "quarantined"]
    q = env.path("quarantine")
    assert json.loads((q / "hard.jsonl.reason.json").read_text())["reason"] == "hard_link"
    env.process(write(env.base / "first.jsonl", jsonl(REC)))
    for f in env.path("state").glob("ledger.sqlite3*"):
        f.unlink()
    out = json.loads(env.cli("rebuild-ledger").stdout)
    assert out["inputs"] == 1 and out["quarantined"] == 0
    _, counters = ledger_state(env)
    assert counters["files_quarantined"] == 0
    for name, source in (("again-hard.jsonl", outside), ("again-sym.jsonl", other)):
        [s] = env.process(write(env.base / name, source.read_bytes()))
        assert (s["status"], s["valid"]) == ("ok", 1), name
