"""Compaction across kill -9: a real process ingesting and compacting is SIGKILLed, then recovered."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, Env, write

from logwatchd.config import load_config
from logwatchd.runtime import open_runtime

# The process under test: opens the runtime (recovering from the last kill), then takes
# one file from the inbox at a time, processes it, and runs a compaction pass, until the
# inbox is empty. Each step is appended to a phase file so the test knows where a kill
# landed. `die_at` makes it SIGKILL itself at one exact point of the commit protocol.
CHILD = r'''
import os, signal, sys, time
from logwatchd import logs
from logwatchd.compaction import run_pass
from logwatchd.config import load_config
from logwatchd.pipeline import Pipeline
from logwatchd.runtime import open_runtime

config_path, die_at, phase_path = sys.argv[1], sys.argv[2], sys.argv[3]
phases = open(phase_path, "a", buffering=1)
config = load_config(config_path)
logs.configure("warning", stream=sys.stderr)
rt = open_runtime(config)
pipeline = Pipeline(config, rt.ledger)
unlinks = {"armed": False, "n": 0}
real_unlink = os.unlink


def mark(phase: str) -> None:
    phases.write(f"{phase} {time.monotonic():.4f}\n")


def die() -> None:
    mark("killed-self")
    os.kill(os.getpid(), signal.SIGKILL)


def counting_unlink(path, *args, **kwargs):
    # After a commit, the journal's source deletions are the only unlinks that happen.
    if unlinks["armed"]:
        unlinks["n"] += 1
        if (die_at == "before-first-unlink" and unlinks["n"] == 1) or \
           (die_at == "after-one-unlink" and unlinks["n"] == 2):
            die()
    return real_unlink(path, *args, **kwargs)


os.unlink = counting_unlink


def step(name: str, day: str) -> None:
    mark(name)
    if name == die_at:
        die()
    unlinks["armed"] = name == "committed"


mark("ready")
while True:
    inbox = sorted(p for p in config.paths.inbox.iterdir() if not p.name.startswith("."))
    if inbox:
        mark("ingest")
        assert pipeline.process(inbox[0]).status == "ok"
    mark("pass")
    results = run_pass(config, rt.ledger, on_step=step)
    mark("idle")
    if any(not r.ok for r in results):
        sys.exit("compaction failed: " + "; ".join(str(r.error) for r in results if not r.ok))
    if not inbox:
        break
rt.close()
'''

DAYS = ("2026-05-10", "2026-05-11")


def make_inputs(env: Env, rng: random.Random, files: int) -> dict[str, int]:
    """Writes inputs of mixed valid and invalid lines into the inbox; returns name -> line count."""
    expected = {}
    for i in range(files):
        n = rng.randrange(60, 300)
        lines = []
        for j in range(n):
            if rng.random() < 0.07:
                lines.append(rng.choice(["not json", '{"timestamp": "2026-02-30T00:00:00Z", "user_id": "u", "action": "a"}']))
                continue
            lines.append(json.dumps({
                "timestamp": f"{rng.choice(DAYS)}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
                "user_id": f"u{rng.randrange(1000)}", "action": rng.choice(["login", "view", "buy"]),
                "file": i, "pad": "x" * rng.randrange(80)}))
        name = f"f{i:03d}.jsonl"
        write(env.inbox / name, "\n".join(lines) + "\n")
        expected[name] = n
    return expected


def start(env: Env, die_at: str = "-") -> tuple[subprocess.Popen[bytes], Path]:
    script = env.base / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    phases = env.base / "phases.log"
    phases.write_text("")
    proc = subprocess.Popen([sys.executable, str(script), str(env.config), die_at, str(phases)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, phases


def read_phases(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def wait_for(proc: subprocess.Popen[bytes], phases: Path, phase: str, after: int = 0,
             timeout: float = 60) -> int:
    """Waits until `phase` appears in the phase file past index `after`; returns its index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = read_phases(phases)
        for i in range(after, len(got)):
            if got[i] == phase:
                return i
        if proc.poll() is not None:
            return -1
        time.sleep(0.005)
    raise AssertionError(f"no {phase!r} within {timeout}s: {read_phases(phases)[-5:]}")


def assert_exactly_once_at_rest(env: Env, expected: dict[str, int], context: str) -> None:
    """Recovers like start-up does, then checks every invariant of a state at rest."""
    rt = open_runtime(load_config(env.config))
    rt.close()
    archived = [p.name for p in env.path("archive").rglob("*") if p.is_file()]
    waiting = [p.name for p in env.inbox.iterdir()]
    assert sorted(archived + waiting) == sorted(expected), context
    seen = Counter((r["source_file"], r["source_line"]) for r in env.clean_rows())
    seen.update((e["source_file"], e["source_line"]) for e in env.error_rows())
    want = Counter({(name, line): 1 for name in archived for line in range(1, expected[name] + 1)})
    assert seen == want, (f"{context}: lines lost or doubled: {sum((seen - want).values())} extra, "
                          f"{sum((want - seen).values())} missing")
    con = sqlite3.connect(env.path("state") / "ledger.sqlite3")
    try:
        counted = {(d, a): n for d, a, n in con.execute("SELECT date, action, n FROM daily_counts")}
        scanned = Counter((str(r["date"]), r["action"]) for r in env.clean_rows())
        assert counted == dict(scanned), f"{context}: ledger counts differ from the dataset"
        assert con.execute("SELECT count(*) FROM journal").fetchone()[0] == 0, context
        assert con.execute("SELECT count(*) FROM inputs").fetchone()[0] == len(archived), context
        live = {r[0] for r in con.execute("SELECT path FROM outputs")}
    finally:
        con.close()
    on_disk = {str(p.relative_to(env.root)) for d in ("clean", "errors") for p in env.path(d).rglob("*")
               if p.is_file() and not p.name.startswith(".")}
    assert live == on_disk, f"{context}: catalog and disk differ: {sorted(live ^ on_disk)[:4]}"
    assert list(env.root.rglob(".*.tmp")) == [], f"{context}: staging files left behind"
    check = env.cli("verify", check=False)
    assert check.returncode == 0, f"{context}: verify found {check.stdout}"


def configure(env: Env) -> None:
    # A small target and min_files = 2: every pass rewrites something, in several files.
    env.write_config(compaction={"target_file_bytes": 24_000, "min_files": 2})


@pytest.mark.slow
@pytest.mark.parametrize("die_at", ["staged", "committed", "before-first-unlink", "after-one-unlink"])
def test_kill_at_each_step_of_the_commit_protocol(env: Env, die_at: str) -> None:
    """SIGKILL at each boundary of the protocol leaves a state that start-up recovers to exactly-once."""
    configure(env)
    expected = make_inputs(env, random.Random(11), 8)
    proc, phases = start(env, die_at)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, read_phases(phases)
    assert read_phases(phases)[-1] == "killed-self"
    day_dirs = [d for d in env.path("clean").iterdir() if d.is_dir()]
    staging = [p for d in day_dirs for p in d.glob(".compacted-*.parquet.tmp")]
    merged = [p for d in day_dirs for p in d.glob("compacted-*.parquet")]
    journal = sqlite3.connect(env.path("state") / "ledger.sqlite3").execute(
        "SELECT count(*) FROM journal").fetchone()[0]
    # What the kill left behind, step by step, before start-up repairs it.
    if die_at == "staged":
        assert staging and journal == 0 and not merged
    elif die_at == "committed":
        assert staging and journal > 0 and not merged
    else:
        assert not staging and journal > 0 and merged
    assert_exactly_once_at_rest(env, expected, f"killed at {die_at}")

    proc, phases = start(env)                        # and carries on from there
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert not list(env.inbox.iterdir())
    assert_exactly_once_at_rest(env, expected, "after the run that drained the inbox")


@pytest.mark.slow
def test_sigkill_at_random_moments_while_ingesting_and_compacting(env: Env) -> None:
    """Killed at random moments mid-pass and mid-ingest, restarted each time: every line exactly once."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    configure(env)
    expected = make_inputs(env, rng, 90)
    landed: Counter[str] = Counter()
    for attempt in range(14):
        if not any(env.inbox.iterdir()):
            break
        proc, phases = start(env)
        at = wait_for(proc, phases, "ready")
        if attempt % 2 == 0:
            # Aimed into a pass: a random moment shortly after one of the next passes starts
            # (a pass over these partitions takes some tens of milliseconds).
            for _ in range(rng.randrange(1, 4)):
                at = wait_for(proc, phases, "pass", after=at + 1)
            time.sleep(rng.uniform(0, 0.03))
        else:
            time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, -signal.SIGKILL), f"seed={seed}: {err.decode()}"
        if proc.returncode == -signal.SIGKILL:
            landed[read_phases(phases)[-1]] += 1
        assert_exactly_once_at_rest(env, expected, f"seed={seed}, after kill {attempt + 1}")

    print(f"seed={seed}: kills by the phase they landed in: {dict(landed)}")
    # "pass": merging; "staged": committing; "committed": publishing; "published": the next partition.
    mid_pass = sum(landed[p] for p in ("pass", "staged", "committed", "published"))
    assert mid_pass >= 4, f"seed={seed}: too few kills landed inside a pass: {dict(landed)}"

    proc, phases = start(env)
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"seed={seed}: {err.decode()}"
    assert not list(env.inbox.iterdir()), f"seed={seed}: inbox not drained"
    assert_exactly_once_at_rest(env, expected, f"seed={seed}, at the end")
    merged = list(env.path("clean").rglob("compacted-*.parquet"))
    assert merged, f"seed={seed}: nothing was ever compacted"
