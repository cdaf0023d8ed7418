"""A one-minute soak (`python -m bench.soak --minutes 1`): the daemon's figures stay flat and
every line dropped is accounted for exactly once. `make soak` runs the ten-minute version."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def soak() -> dict[str, Any]:
    """Runs the soak once for the module; its JSON result, with its exit code and table."""
    proc = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "1"], cwd=REPO,
                          capture_output=True, text=True, errors="replace", timeout=840,
                          check=False)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the soak printed no result (exit {proc.returncode})\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1])
    result["exit_code"], result["table"] = proc.returncode, proc.stderr
    return result


def _broken(result: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: b for n, b in result.get("bounds", {}).items() if n in names and not b["ok"]}


def test_memory_fds_threads_and_wal_stay_flat(soak: dict[str, Any]) -> None:
    """Between the post-warm-up sample and the end, RSS, fds, threads and the WAL stay within their bounds."""
    broken = _broken(soak, "rss_growth", "fd_growth", "thread_growth", "wal_bytes")
    assert not broken, f"{broken}\nstart {soak['start']}\nend {soak['end']}\n{soak['table']}"


def test_every_line_is_exactly_once_a_row_or_an_error_line(soak: dict[str, Any]) -> None:
    """No line dropped is lost, doubled or on the wrong side, and every entry ends where it should."""
    inv = soak["invariant"]
    assert (inv["lost"], inv["doubled"], inv["misplaced"]) == (0, 0, 0), soak["table"]
    assert inv["failing_inputs"] == {}, f"failing inputs: {inv['failing_inputs']}\n{soak['table']}"
    assert inv["valid_rows"] >= inv["expected_rows"] > 0


def test_stats_agree_and_the_daemon_stops_cleanly(soak: dict[str, Any]) -> None:
    """The inbox drains, /stats agrees with the outputs, HTTP never failed, and SIGTERM exits 0 in time."""
    assert soak["drained_seconds"] is not None, soak["table"]
    assert soak["invariant"]["stats_mismatch"] == {}, soak["table"]
    assert soak["http"]["errors"] == 0, soak["http"]["failures"]
    assert soak["daemon"]["exit_code"] == 0 and soak["daemon"]["stop_seconds"] <= 10, soak["daemon"]
    assert soak["exit_code"] == 0 and soak["ok"], soak["table"]
