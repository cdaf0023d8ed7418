"""Exactly once across kill -9: `logwatchd process` is killed at random moments, then re-run."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import Env, write

from logwatchd.layout import IN_HAND_DIR


def make_inputs(env: Env, rng: random.Random, files: int) -> dict[str, int]:
    """Writes files of mixed valid/invalid lines into the inbox; returns name -> line count."""
    expected = {}
    for i in range(files):
        n = rng.choice([50, 400, 3000])
        lines = []
        for j in range(n):
            r = rng.random()
            if r < 0.05:
                lines.append("not json")
            elif r < 0.1:
                lines.append(json.dumps({"timestamp": "2026-02-30T00:00:00Z", "user_id": "u", "action": "a"}))
            else:
                lines.append(json.dumps({"timestamp": 1764000000 + rng.randrange(86400 * 3),
                                         "user_id": f"u{j}", "action": rng.choice(["login", "view"]),
                                         "file": i, "pad": "x" * rng.randrange(100)}))
        name = f"f{i:03d}.jsonl"
        write(env.inbox / name, "\n".join(lines) + "\n")
        expected[name] = n
    return expected


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_every_line_exactly_once(env: Env) -> None:
    """Every input line ends up exactly once in the dataset or the error files, whatever the kills."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Small chunks so that large files go through the worker processes in many pieces.
    env.write_config(ingest={"chunk_bytes": 32768, "workers": 2})
    expected = make_inputs(env, rng, 40)
    kills = 0
    for attempt in range(60):
        # As `inbox/*`, and the names of files a kill left in hand (the next run gives them back).
        hand = env.inbox / IN_HAND_DIR
        remaining = sorted([p for p in env.inbox.iterdir() if not p.name.startswith(".")]
                           + ([env.inbox / n for n in os.listdir(hand)] if hand.exists() else []))
        if not remaining:
            break
        cmd = [sys.executable, "-m", "logwatchd", "process", "-c", str(env.config), *map(str, remaining)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        if attempt < 12:
            # Within the first ~0.7 s: a whole run of these inputs takes little more than that.
            time.sleep(rng.uniform(0.05, 0.7))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                # the workers notice their parent is gone; kill the whole group to be quick
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, -signal.SIGKILL), f"seed={seed}: {err.decode()}"
    assert not list(env.inbox.iterdir()), f"seed={seed}: inbox not drained (nor a file left in hand)"
    assert kills >= 3, f"seed={seed}: the test did not kill often enough to prove anything"

    seen = Counter((r["source_file"], r["source_line"]) for r in env.clean_rows())
    seen.update((e["source_file"], e["source_line"]) for e in env.error_rows())
    want = Counter({(name, line): 1 for name, n in expected.items() for line in range(1, n + 1)})
    assert seen == want, f"seed={seed}: lines lost or doubled: {sum((seen - want).values())} extra, {sum((want - seen).values())} missing"

    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    counted = {(d, a): n for d, a, n in con.execute("SELECT date, action, n FROM daily_counts")}
    scanned = Counter((r["date"], r["action"]) for r in env.clean_rows())
    assert counted == dict(scanned), f"seed={seed}: ledger counts differ from the dataset"
    assert con.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM inputs").fetchone()[0] == len(expected)
    leftovers = [p for p in env.root.rglob(".*.tmp")]
    assert leftovers == [], f"seed={seed}: staging files left behind"
    check = env.cli("verify", check=False)
    assert check.returncode == 0, f"seed={seed}: verify found {check.stdout}"
