"""Drop-to-committed latency of small files through the running daemon (`logwatchd run`).

Small files (a fixed number of records, or a number drawn per file from a range such as
50–300; distinct content; event time "now", so `/logins_today` counts them) are written beforehand under hidden
temporary names inside the inbox (which the daemon ignores) and renamed to their real
names at a steady rate: the producer protocol of SPEC §4, so no settle time applies. A file counts as committed at the first
of: its `file_processed` log line on the daemon's stdout, or its appearance in the archive
(the archive rename is part of the commit). While the daemon runs, the HTTP load of
`bench.http_load` can be measured against it, with files still arriving, or run in a
process of its own for the whole stream (`start_http_load` / `finish_http_load`: wrk when
installed, else the Python client in a separate interpreter), so the latency is measured
with the endpoint under load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .workload import ONE_DAY_T0, write_jsonl


@dataclass
class Daemon:
    """A `logwatchd run` subprocess with its config, reading its JSON log lines as they come."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    events: dict[str, float] = field(default_factory=dict)   # file -> monotonic commit time
    started: threading.Event = field(default_factory=threading.Event)
    log_tail: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)    # event name -> lines logged
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first error-level events
    log_file: Path | None = None                              # where to keep every line, if set

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        keep = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 - while it runs
        for raw in self.proc.stdout:
            if keep:
                keep.write(raw)
                keep.flush()
            now = time.monotonic()
            line = raw.decode("utf-8", "replace").strip()
            self.log_tail = (self.log_tail + [line])[-20:]
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not isinstance(ev, dict):
                continue
            self.counts[str(ev.get("event"))] += 1
            if ev.get("level") == "error" and len(self.errors) < 20:
                self.errors.append(ev)
            if ev.get("event") == "daemon_started":
                self.started.set()
            elif ev.get("event") in ("file_processed", "file_duplicate", "file_quarantined"):
                self.events.setdefault(str(ev.get("file")), now)
        if keep:
            keep.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(root: Path, timeout: float = 30.0, config_extra: str = "",
                 log_file: Path | None = None) -> Daemon | str:
    """Starts `logwatchd run` on a fresh root; returns it, or why it could not run.

    `config_extra` is TOML appended to the config (tables other than [paths] and [api]);
    `log_file`, when given, keeps every line the daemon writes.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "inbox").mkdir(exist_ok=True)
    port = _free_port()
    config = root / "config.toml"
    config.write_text(f'[paths]\nroot = "{root}"\n\n[api]\nlisten = "127.0.0.1:{port}"\n\n'
                      + config_extra)
    cmd = [sys.executable, "-m", "logwatchd", "run", "-c", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root,
                            start_new_session=True)
    d = Daemon(root, port, proc, log_file=log_file)
    threading.Thread(target=d._read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.started.wait(0.05):
            return d
        if proc.poll() is not None:
            time.sleep(0.2)  # let the reader catch the last lines
            return f"`logwatchd run` exited with {proc.returncode}: " + " | ".join(d.log_tail[-3:])
    d.stop()
    return f"`logwatchd run` logged no daemon_started within {timeout:.0f} s"


def make_files(staging: Path, count: int, records: int | tuple[int, int], prefix: str, seed: int,
               t0: int | None = None) -> list[Path]:
    """Distinct small files (no two alike, so dedupe never hides one), written before timing.

    `records` is the number of lines of each file, or (lo, hi): a number drawn per file
    (seeded). `t0` is the event time of the files' first records (default: the bench's
    one-day workload, 2025-11-24).
    """
    staging.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = records if isinstance(records, int) else rng.randint(*records)
        out.append(write_jsonl(staging / f".{prefix}-{i:05d}.jsonl.tmp", n, seed=seed + i,
                               t0=ONE_DAY_T0 if t0 is None else t0))
    return out


def drop_at_rate(files: Iterable[Path], inbox: Path, rate: float,
                 stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Renames each file into the inbox at `rate` per second; returns name -> monotonic drop time.

    `files` are hidden `.NAME.tmp` entries of the inbox; an iterator may create each one
    when it is asked for the next (a steady stream rather than a batch written beforehand).
    """
    dropped: dict[str, float] = {}
    t0 = time.monotonic()
    for i, f in enumerate(files):
        if stop():
            break
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = f.name[1:-len(".tmp")]
        dropped[name] = time.monotonic()
        os.rename(f, inbox / name)
    return dropped


def _archived(root: Path) -> dict[str, float]:
    seen = {}
    archive = root / "archive"
    if archive.is_dir():
        for day in archive.iterdir():
            for f in day.iterdir():
                seen[f.name] = time.monotonic()
    return seen


def measure_latency(d: Daemon, files: int = 300, rate: float = 20.0,
                    records: int | tuple[int, int] = 100, timeout: float = 60.0,
                    prefix: str = "lat", seed: int = 10_000, t0: int | None = None) -> dict[str, Any]:
    """Drops `files` files of `records` lines (or lo–hi) at `rate`/s; median and p99 of drop-to-committed."""
    batch = make_files(d.inbox, files, records, prefix, seed=seed, t0=t0)
    compactions_before = d.counts["compaction_done"]
    archived: dict[str, float] = {}
    done = threading.Event()

    def poll_archive() -> None:  # the archive rename is the commit's last visible step
        while not done.is_set():
            for name, t in _archived(d.root).items():
                archived.setdefault(name, t)
            time.sleep(0.005)

    poller = threading.Thread(target=poll_archive, daemon=True)
    poller.start()
    dropped = drop_at_rate(batch, d.inbox, rate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(n in d.events or n in archived for n in dropped):
            break
        time.sleep(0.02)
    done.set()
    poller.join()
    lat = []
    missing = 0
    for name, t in dropped.items():
        ends = [x for x in (d.events.get(name), archived.get(name)) if x is not None]
        if ends:
            lat.append((min(ends) - t) * 1000)
        else:
            missing += 1
    lat.sort()
    return {
        "files": len(dropped),
        "records_per_file": records if isinstance(records, int) else f"{records[0]}-{records[1]}",
        "rate_per_s": rate,
        "committed": len(lat), "missing": missing,
        "median_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2) if lat else None,
        "max_ms": round(lat[-1], 2) if lat else None,
        "p90_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.90))], 2) if lat else None,
        "from_log_lines": sum(1 for n in dropped if n in d.events),
        "compaction_done_events": d.counts["compaction_done"] - compactions_before,
        "compaction_failed_events": d.counts["compaction_failed"],
    }


def start_http_load(base_url: str, seconds: float, connections: int = 8,
                    client: str = "auto") -> tuple[subprocess.Popen[bytes], str]:
    """GET /logins_today as fast as it answers, from a process of its own; (process, client).

    wrk when installed (a C client), else `python -m bench.http_load --client python` in a
    separate interpreter: either way the load takes none of this process's interpreter lock.
    """
    chosen = "wrk" if client == "wrk" or (client == "auto" and shutil.which("wrk")) else "python"
    cmd = [sys.executable, "-m", "bench.http_load", base_url, "--connections", str(connections),
           "--seconds", str(seconds), "--client", chosen]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
    return proc, chosen


def finish_http_load(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Waits for the load of start_http_load and returns what it measured (or why it failed)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"failed": "the HTTP load did not finish in time"}
    if proc.returncode != 0:
        return {"failed": f"exit {proc.returncode}: {err.decode('utf-8', 'replace')[-500:]}"}
    try:
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"failed": f"unreadable output: {out[-500:]!r}"}


def ingest_while(d: Daemon, rate: float, seconds: float, work: Callable[[], Any]) -> Any:
    """Runs `work()` while files keep arriving at `rate`/s (the daemon ingests meanwhile)."""
    batch = make_files(d.inbox, int(rate * (seconds + 5)), 100, "load", seed=50_000)
    stop = threading.Event()
    t = threading.Thread(target=drop_at_rate, args=(batch, d.inbox, rate, stop.is_set), daemon=True)
    t.start()
    try:
        return work()
    finally:
        stop.set()
        t.join()
