"""The time zone is recorded with the data: starting with another `transform.timezone` is refused."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess

import pytest
from conftest import Env, jsonl, write

GOOD = {"timestamp": "2026-03-14T23:30:00Z", "user_id": "u1", "action": "login"}


def recorded_zone(env: Env) -> str | None:
    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
    finally:
        con.close()
    return None if row is None else row[0]


def use_zone(env: Env, zone: str) -> None:
    env.write_config(transform={"timezone": zone}, api={"enabled": False})


def assert_refused(proc: subprocess.CompletedProcess[str], recorded: str, configured: str) -> None:
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "transform.timezone" in err and repr(recorded) in err and repr(configured) in err
    assert "paths.root" in err and "Traceback" not in err


def test_a_new_ledger_records_the_configured_zone(env: Env) -> None:
    """The first command that creates the ledger records transform.timezone in its meta table."""
    use_zone(env, "Europe/Berlin")
    env.process(write(env.base / "a.jsonl", jsonl(GOOD)))
    assert recorded_zone(env) == "Europe/Berlin"


@pytest.mark.parametrize("command", [("process", "b.jsonl"), ("compact",)])
def test_another_zone_is_refused_by_process_and_compact(env: Env, command: tuple[str, ...]) -> None:
    """process and compact with another zone than the data's: exit 2, both zones and the way out named, nothing written."""
    use_zone(env, "UTC")
    env.process(write(env.base / "a.jsonl", jsonl(GOOD)))
    write(env.base / "b.jsonl", jsonl(GOOD | {"user_id": "u2"}))
    use_zone(env, "America/New_York")
    proc = env.cli(*command, check=False)
    assert_refused(proc, "UTC", "America/New_York")
    assert proc.stdout == "" and recorded_zone(env) == "UTC"
    assert [r["user_id"] for r in env.clean_rows()] == ["u1"]


def test_run_with_another_zone_exits_2_and_never_reports_ready(env: Env) -> None:
    """`run` with another zone than the data's: exit 2, startup_failed, no READY=1, no daemon_started."""
    use_zone(env, "UTC")
    env.process(write(env.base / "a.jsonl", jsonl(GOOD)))
    use_zone(env, "Asia/Tokyo")
    sock_path = str(env.base / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    try:
        proc = env.cli("run", check=False, timeout=60, env=os.environ | {"NOTIFY_SOCKET": sock_path})
        got = []
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                break
    finally:
        sock.close()
    assert_refused(proc, "UTC", "Asia/Tokyo")
    names = [json.loads(line)["event"] for line in proc.stdout.splitlines()]
    assert "startup_failed" in names and "daemon_started" not in names
    assert not any("READY=1" in g.split("\n") for g in got)


def test_a_ledger_without_a_recorded_zone_records_it_at_first_open(env: Env) -> None:
    """A ledger from before zones were recorded takes the configured zone once, then holds to it."""
    use_zone(env, "UTC")
    env.process(write(env.base / "a.jsonl", jsonl(GOOD)))
    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    con.execute("DELETE FROM meta WHERE key = 'timezone'")
    con.commit()
    con.close()
    use_zone(env, "Europe/Berlin")
    env.cli("compact")
    assert recorded_zone(env) == "Europe/Berlin"
    use_zone(env, "UTC")
    assert_refused(env.cli("compact", check=False), "Europe/Berlin", "UTC")


def test_rebuild_ledger_records_the_zone_of_its_config(env: Env) -> None:
    """rebuild-ledger writes the zone of the config it runs with; commands with that zone then work."""
    use_zone(env, "UTC")
    env.process(write(env.base / "a.jsonl", jsonl(GOOD)))
    ledger = env.path("state") / "ledger.sqlite3"
    ledger.write_text("hello\n")
    env.cli("rebuild-ledger")
    assert recorded_zone(env) == "UTC"
    [s] = env.process(write(env.base / "b.jsonl", jsonl(GOOD | {"user_id": "u2"})))
    assert s["status"] == "ok"
    use_zone(env, "Europe/Berlin")
    assert_refused(env.cli("compact", check=False), "UTC", "Europe/Berlin")
