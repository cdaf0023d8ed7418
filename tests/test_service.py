"""The systemd unit: hardened to an exposure of 2.0 or less, with the directives SPEC §8 asks for."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import REPO

UNIT = REPO / "systemd" / "logwatchd.service"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_has_the_service_contract() -> None:
    """Type=notify, watchdog, reload, restart policy, config errors not restarted, stop timeout."""
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["2"]
    assert "HUP" in d["ExecReload"][0]
    assert int(d["WatchdogSec"][0]) > 0
    assert int(d["TimeoutStopSec"][0]) > 10, "above the 10 s drain"
    assert d["StateDirectory"] == ["logwatchd"]
    assert d["User"] == ["logwatchd"]
    assert "logwatchd run" in d["ExecStart"][0]


def test_systemd_analyze_security_exposure_at_most_2() -> None:
    """`systemd-analyze security --offline=yes` rates the unit 2.0 or better."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)],
                          capture_output=True, check=False, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout
