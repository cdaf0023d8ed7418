"""examples/pipeline_moto.py runs from any directory with no AWS variables set, and says what
the original demo said."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

DEMO = Path(__file__).resolve().parents[2] / "examples" / "pipeline_moto.py"


def test_the_demo_runs_from_anywhere_without_aws_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGWATCHD_"))}
    env["HOME"] = str(tmp_path)  # no ~/.aws either
    proc = subprocess.run([sys.executable, str(DEMO)], check=False, cwd=tmp_path, env=env,
                          capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "Lambda result: {'processed': 3, 'valid': 1, 'errors': 2}" in lines
    [copy] = [line for line in lines if line.startswith("Wrote local copy: ")]
    local = Path(copy.removeprefix("Wrote local copy: ").split(" (")[0])
    rows = pq.read_table(local).to_pylist()
    assert [(r["user_id"], r["action"], r["source_file"], r["timestamp"]) for r in rows] == [
        ("42", "login", "uploads/first.json", "2026-11-25 09:15:00")]
    assert any(line.startswith("GET /logins_today -> 200 {'logins_today': ") for line in lines)
    assert "GET /counts?date=2026-11-25 -> 200 {'date': '2026-11-25', 'counts': {'login': 1}}" in lines
    assert "werkzeug" not in proc.stderr and '"GET /' not in proc.stderr
    assert list(tmp_path.iterdir()) == [], "the demo wrote into the directory it was run from"
