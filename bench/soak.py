"""Soak test: the real daemon under a steady mixed stream and HTTP load, checked for growth and exactly-once.

`python -m bench.soak --minutes N` starts `logwatchd run` on a fresh root (compaction every
30 s), renames a mix of files into its inbox at a few per second — JSON Lines, arrays, gzip,
files with invalid records, and hostile entries (not JSON, corrupt gzip, a symlink, a FIFO,
a hard link, deeply nested records, a line over `max_line_bytes`, duplicate content,
240/245-byte names, names with a newline or invalid UTF-8) — while a few threads loop over
/logins_today, /stats, /healthz and /metrics. After a warm-up and at the end it samples the
daemon's process tree (RSS, open fds, threads) and its ledger and WAL sizes. Then it stops
the feed, waits for the inbox to empty, stops the daemon with SIGTERM and checks from the
outside that every line dropped is exactly once a row or an error line (as the producer
meant it), every hostile entry is in quarantine, and /stats agrees.

Prints a table (stderr) and one JSON object (stdout); exits 1 when a bound is broken.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import json
import os
import random
import re
import shutil
import stat
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pyarrow.dataset as ds

from logwatchd.layout import IN_HAND_DIR

from .daemon_latency import Daemon, drop_at_rate, start_daemon
from .http_load import percentile
from .workload import garbage_line, invalid_line, valid_line

MB = 1024 * 1024
MAX_LINE_BYTES = 65536          # a small limit keeps the over-long line cheap to write

# The daemon's config beside [paths] and [api]. Compaction every 30 s with min_files = 2 so
# that a pass runs (and swaps files under the readers) about twice a minute; the metrics
# event every 5 s so that the scheduler's executor thread exists before the first sample.
COMPACTION_INTERVAL = 30
CONFIG = f"""[ingest]
max_line_bytes = {MAX_LINE_BYTES}

[compaction]
interval_seconds = {COMPACTION_INTERVAL}
min_files = 2

[metrics]
interval_seconds = 5
"""

# --- bounds -----------------------------------------------------------------------------------
# Growth is measured between two windows of one compaction interval each, under the same
# load (feed and HTTP running), sampled every second: RSS at the window's peak, fds and
# threads at its median, so one file in hand or one request in flight is not growth.
#
# RSS: pyarrow's allocator and CPython's arenas keep memory they have used, and the peaks
# of two compaction cycles differ by a few MB; 25% of the start (about 30 MB on the ~120 MB
# tree) plus 16 MB absorbs that. A leak of 1 KB per request (~100,000 requests in ten
# minutes) or 20 KB per file (2,400 files) breaks it in a ten-minute run.
RSS_GROWTH_RATIO = 0.25
RSS_SLACK_BYTES = 16 * MB
# fds: the daemon holds a fixed set (ledger connections, inotify, listening socket, one per
# keep-alive HTTP client, the worker pipes). One fd leaked per file, compaction pass or
# request would add hundreds; 10 leaves room for a transient output or a reconnecting client.
FD_GROWTH = 10
# threads: waitress, the worker and the inbox threads are fixed, and Arrow starts its pools
# (4 threads here) in the first compaction pass, which the warm-up waits for. The scheduler's
# executor may still start a thread the first time two jobs (compaction, metrics) overlap;
# one thread per pass, file or request would add dozens.
THREAD_GROWTH = 2
# The WAL is checkpointed back into the database every ~1,000 pages (4 MB) unless a reader
# holds an old snapshot open; 64 MB means checkpoints stopped (a long-lived read transaction).
WAL_MAX_BYTES = 64 * MB
# SPEC §8: SIGTERM → exit 0 within 10 s.
STOP_SECONDS = 10.0


# --- what the producer drops --------------------------------------------------------------------
@dataclass
class Planned:
    """One entry renamed into the inbox, and what must become of it."""

    name: str                       # as renamed into the inbox (surrogate-escaped bytes)
    kind: str
    outcome: str                    # ok | duplicate | quarantined | refused
    lines: str = ""                 # ok files: per line, v = row, e = error line, ? = either
    reason: str | None = None       # quarantined / refused: the expected reason (None: any)
    problems: list[str] = field(default_factory=list)

    @property
    def source_file(self) -> str:
        """The name as the dataset records it (invalid UTF-8 replaced by U+FFFD)."""
        return os.fsencode(self.name).decode("utf-8", "replace")


BASE_KINDS = ["jsonl", "jsonl", "array", "gzip", "invalid", "jsonl", "array", "gzip", "crlf_bom",
              "invalid"]
HOSTILE_KINDS = ["not_json", "symlink", "nested", "corrupt_gzip", "fifo", "duplicate", "huge_line",
                 "hard_link", "long_name", "newline_name", "binary", "long_name_quarantined",
                 "bad_utf8_name"]
ALL_KINDS = sorted(set(BASE_KINDS) | set(HOSTILE_KINDS))


class Feed:
    """Creates each entry under a hidden `.NAME.tmp` name in the inbox when asked for the next.

    A third of the stream is hostile: after each round of BASE_KINDS (10 files) come five
    hostile entries, rotating through HOSTILE_KINDS. Each file carries its sequence number
    in its content, so no two are alike unless a duplicate is meant.
    """

    def __init__(self, inbox: Path, outside: Path, seed: int, exclude: set[str]) -> None:
        self.inbox = inbox
        self.outside = outside          # same filesystem, not the inbox: link targets
        self.rng = random.Random(seed)
        self.planned: dict[str, Planned] = {}
        self.hostile = itertools.cycle([k for k in HOSTILE_KINDS if k not in exclude])
        self.base = [k for k in BASE_KINDS if k not in exclude]
        self.exclude = exclude
        self.recent_jsonl: list[tuple[int, bytes]] = []   # (seq, content) for duplicates
        self.seq = 0
        outside.mkdir(parents=True, exist_ok=True)

    def kinds(self) -> Iterator[str]:
        while True:
            yield from self.base
            for _ in range(5):
                kind = next(self.hostile, None)
                if kind is not None:
                    yield kind

    def __iter__(self) -> Iterator[Path]:
        for kind in self.kinds():
            self.seq += 1
            plan = self._make(kind, self.seq)
            self.planned[plan.name] = plan
            yield self.inbox / f".{plan.name}.tmp"

    # --- contents ---------------------------------------------------------------------------
    def _lines(self, seq: int, n: int, bad_share: float, garbage: bool) -> tuple[list[str], str]:
        # First, one record dated now (a login half of the time), so that /logins_today
        # moves; it carries the sequence number, so that no two files have the same content,
        # and makes the first byte `{` (a file starting with `[` is read as a JSON array).
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        action = "login" if seq % 2 else "view"
        out = [json.dumps({"timestamp": now, "user_id": f"soak-{seq}", "action": action})]
        kinds = ["v"]
        rng = self.rng
        for i in range(n):
            r = rng.random()
            if garbage and r < bad_share / 3:
                out.append(garbage_line(rng, i))
                kinds.append("e")
            elif r < bad_share:
                out.append(invalid_line(rng, i))
                kinds.append("e")
            else:
                out.append(valid_line(rng, i))
                kinds.append("v")
        return out, "".join(kinds)

    def _jsonl(self, seq: int, bad_share: float = 0.0, garbage: bool = False) -> tuple[bytes, str]:
        lines, kinds = self._lines(seq, self.rng.randrange(5, 40), bad_share, garbage)
        return ("\n".join(lines) + "\n").encode(), kinds

    def _write(self, name: str, data: bytes) -> None:
        with open(self.inbox / f".{name}.tmp", "wb") as fh:
            fh.write(data)

    def _name(self, seq: int, kind: str, suffix: str = ".jsonl", size: int = 0) -> str:
        name = f"soak-{seq:06d}-{kind}"
        if size:
            name += "x" * (size - len(name) - len(suffix))
        return name + suffix

    def _make(self, kind: str, seq: int) -> Planned:
        name = self._name(seq, kind)
        if kind in ("jsonl", "newline_name", "bad_utf8_name", "long_name"):
            if kind == "newline_name":
                name = self._name(seq, "newline\nname")
            elif kind == "bad_utf8_name":
                name = os.fsdecode(os.fsencode(self._name(seq, "bad-utf8-")).replace(b"-.", b"-\xff\xfe."))
            elif kind == "long_name":
                name = self._name(seq, kind, size=240 if seq % 2 else 245)
            data, kinds = self._jsonl(seq)
            self._write(name, data)
            if kind == "jsonl":
                self.recent_jsonl = (self.recent_jsonl + [(seq, data)])[-50:]
            return Planned(name, kind, "ok", kinds)
        if kind == "crlf_bom":
            lines, kinds = self._lines(seq, self.rng.randrange(5, 40), 0.0, False)
            self._write(name, ("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
            return Planned(name, kind, "ok", kinds)
        if kind == "invalid":
            data, kinds = self._jsonl(seq, bad_share=0.4, garbage=True)
            self._write(name, data)
            return Planned(name, kind, "ok", kinds)
        if kind == "array":
            name = self._name(seq, kind, ".json")
            lines, kinds = self._lines(seq, self.rng.randrange(5, 40), 0.1, False)
            self._write(name, ("[" + ",\n ".join(lines) + "]\n").encode())
            return Planned(name, kind, "ok", kinds)
        if kind == "gzip":
            name = self._name(seq, kind, ".jsonl.gz")
            data, kinds = self._jsonl(seq, bad_share=0.1, garbage=True)
            self._write(name, gzip.compress(data, mtime=0))
            return Planned(name, kind, "ok", kinds)
        if kind == "nested":
            # Valid fields and an attribute nested 5,000 deep (10 KB, under max_line_bytes):
            # JSON by RFC 8259, which lets a parser limit the depth, so a row or an error line.
            lines, kinds = self._lines(seq, 5, 0.0, False)
            deep = ('{"timestamp": 1764000000, "user_id": "deep", "action": "view", "deep": '
                    + "[" * 5000 + "]" * 5000 + "}")
            self._write(name, ("\n".join(lines[:3] + [deep] + lines[3:]) + "\n").encode())
            return Planned(name, kind, "ok", kinds[:3] + "?" + kinds[3:])
        if kind == "huge_line":
            lines, kinds = self._lines(seq, 5, 0.0, False)
            huge = json.dumps({"timestamp": 1764000000, "user_id": "big", "action": "view",
                               "blob": "x" * (MAX_LINE_BYTES + 30_000)})
            self._write(name, ("\n".join(lines[:2] + [huge] + lines[2:]) + "\n").encode())
            return Planned(name, kind, "ok", kinds[:2] + "e" + kinds[2:])
        if kind == "duplicate":
            # The content of a JSON Lines file dropped at least 20 files earlier (seconds ago).
            older = [c for s, c in self.recent_jsonl if s <= seq - 20]
            if not older:
                return self._make("jsonl", seq)
            self._write(name, older[-1])
            return Planned(name, kind, "duplicate")
        if kind in ("not_json", "long_name_quarantined"):
            if kind == "long_name_quarantined":
                name = self._name(seq, kind, size=240 if seq % 2 else 245)
            self._write(name, f"soak {seq}: this is not JSON at all\n{{oops\n".encode())
            return Planned(name, kind, "quarantined", reason="not_json")
        if kind == "binary":
            # No newline, no ASCII: one undecodable "line" that cannot be JSON.
            self._write(name, bytes(self.rng.randrange(0x80, 0x100) for _ in range(2048)))
            return Planned(name, kind, "quarantined")
        if kind == "corrupt_gzip":
            name = self._name(seq, kind, ".jsonl.gz")
            data, _ = self._jsonl(seq)
            gz = bytearray(gzip.compress(data, mtime=0))
            if seq % 2:
                gz = gz[: len(gz) // 2]              # truncated stream
            else:
                gz[-8] ^= 0xFF                       # whole stream, wrong CRC-32
            self._write(name, bytes(gz))
            return Planned(name, kind, "quarantined", reason="corrupt_gzip")
        if kind == "symlink":
            # A link to a file of valid records outside the inbox: following it would show
            # as rows nobody dropped.
            target = self.outside / f"target-{seq}.jsonl"
            target.write_bytes(self._jsonl(seq)[0])
            os.symlink(target, self.inbox / f".{name}.tmp")
            return Planned(name, kind, "refused", reason="symlink")
        if kind == "fifo":
            os.mkfifo(self.inbox / f".{name}.tmp")   # nobody ever writes: reading it would block
            return Planned(name, kind, "refused", reason="special_file")
        if kind == "hard_link":
            other = self.outside / f"linked-{seq}.jsonl"
            other.write_bytes(self._jsonl(seq)[0])
            os.link(other, self.inbox / f".{name}.tmp")
            return Planned(name, kind, "refused", reason="hard_link")
        raise ValueError(f"unknown kind {kind!r}")


# --- HTTP load ----------------------------------------------------------------------------------
HTTP_PATHS = ("/logins_today", "/stats", "/healthz", "/metrics")


class HttpLoad:
    """A few threads, one keep-alive connection each, looping over HTTP_PATHS until stopped."""

    def __init__(self, port: int, threads: int, pause: float) -> None:
        self.port = port
        self.pause = pause
        self.stop_event = threading.Event()
        self.latencies: dict[str, list[float]] = {p: [] for p in HTTP_PATHS}
        self.failures: Counter[str] = Counter()   # "path status" or "path ExceptionName"
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                        for i in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def _loop(self, i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        paths = itertools.cycle(HTTP_PATHS[i % len(HTTP_PATHS):] + HTTP_PATHS[:i % len(HTTP_PATHS)])
        while not self.stop_event.is_set():
            path = next(paths)
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                took = time.perf_counter() - started
                with self.lock:
                    if response.status == 200:
                        self.latencies[path].append(took)
                    else:
                        self.failures[f"{path} {response.status}"] += 1
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures[f"{path} {type(exc).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.stop_event.wait(self.pause)
        conn.close()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            every = sorted(x for v in self.latencies.values() for x in v)
            out: dict[str, Any] = {
                "requests": len(every) + sum(self.failures.values()),
                "errors": sum(self.failures.values()),
                "failures": dict(self.failures),
                "p50_ms": round(percentile(every, 0.5) * 1000, 2),
                "p99_ms": round(percentile(every, 0.99) * 1000, 2),
                "max_ms": round((every[-1] if every else 0.0) * 1000, 2),
                "by_path": {p: {"ok": len(v), "p99_ms": round(percentile(sorted(v), 0.99) * 1000, 2)}
                            for p, v in self.latencies.items()},
            }
        return out


def get_json(port: int, path: str) -> Any:
    """One GET; the JSON answer, or {"error": …} when there is none."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return {"error": repr(exc)}
    finally:
        conn.close()


# --- sampling -----------------------------------------------------------------------------------
def sample_tree(pid: int, root: Path) -> dict[str, int]:
    """RSS, open fds and threads summed over the daemon and its children; ledger and WAL size."""
    rss = fds = threads = procs = 0
    try:
        top = psutil.Process(pid)
        tree = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            rss += p.memory_info().rss
            threads += p.num_threads()
            fds += len(os.listdir(f"/proc/{p.pid}/fd"))
            procs += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess, FileNotFoundError, ProcessLookupError):
            pass  # a worker that just ended holds nothing any more
    state = root / "state"
    clean = root / "clean"
    return {
        "rss_bytes": rss, "fds": fds, "threads": threads, "procs": procs,
        "ledger_bytes": _size(state / "ledger.sqlite3"),
        "wal_bytes": _size(state / "ledger.sqlite3-wal"),
        "clean_files": sum(1 for f in clean.rglob("*.parquet") if not f.name.startswith("."))
        if clean.is_dir() else 0,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def window_sample(pid: int, root: Path, seconds: float, every: float = 1.0) -> dict[str, int]:
    """Samples for `seconds` (one compaction interval): RSS at its peak, fds and threads at
    their median, sizes at the end.

    RSS swings by tens of MB within a compaction cycle (the allocator hands pages back
    later), so one instant says little; the peak of a whole cycle is its level. The peak is
    taken over the samples with the usual number of processes: a compaction pass runs in a
    child process of its own for a few seconds, with memory in proportion to the partition
    it merges, and exits — it is not the daemon's level, and cannot leak across passes.
    """
    samples = [sample_tree(pid, root)]
    until = time.monotonic() + seconds
    while time.monotonic() + every <= until:
        time.sleep(every)
        samples.append(sample_tree(pid, root))
    usual = statistics.median_low(s["procs"] for s in samples)
    steady = [s for s in samples if s["procs"] == usual]
    out = {"rss_bytes": max(s["rss_bytes"] for s in steady), "samples": len(samples)}
    out.update({k: int(statistics.median(s[k] for s in samples)) for k in ("fds", "threads", "procs")})
    out.update({k: samples[-1][k] for k in ("ledger_bytes", "wal_bytes", "clean_files")})
    return out


class Sampler(threading.Thread):
    """Samples the tree every `every` seconds for the series and the peaks."""

    def __init__(self, pid: int, root: Path, every: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.root, self.every, self.t0 = pid, root, every, t0
        self.series: list[dict[str, Any]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            s = sample_tree(self.pid, self.root)
            self.series.append({"t": round(time.monotonic() - self.t0), "rss_mb": round(s["rss_bytes"] / MB, 1),
                                "fds": s["fds"], "threads": s["threads"],
                                "wal_mb": round(s["wal_bytes"] / MB, 2), "clean_files": s["clean_files"]})


# --- the check from the outside -----------------------------------------------------------------
def read_outputs(root: Path) -> tuple[Counter[tuple[str, int]], Counter[tuple[str, int]], int]:
    """(rows, error lines) by (source_file, source_line), and today's logins in the dataset."""
    rows: Counter[tuple[str, int]] = Counter()
    logins_today = 0
    clean = root / "clean"
    if clean.is_dir() and any(clean.rglob("*.parquet")):
        table = ds.dataset(clean, format="parquet", partitioning="hive").to_table(
            columns=["source_file", "source_line", "action", "date"])
        today = datetime.now(UTC).date().isoformat()
        for f, n, a, d in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
            rows[(f, n)] += 1
            logins_today += a == "login" and str(d) == today
    errors: Counter[tuple[str, int]] = Counter()
    for path in sorted((root / "errors").rglob("*.jsonl")):
        if path.name.startswith("."):
            continue
        for line in path.read_bytes().splitlines():
            e = json.loads(line)
            errors[(e["source_file"], e["source_line"])] += 1
    return rows, errors, logins_today


def listing(directory: Path) -> set[str]:
    """Every file name under `directory` and its subfolders (archive: date=…/NAME)."""
    out: set[str] = set()
    if directory.is_dir():
        for _dirpath, _dirnames, filenames in os.walk(directory):
            out.update(filenames)
    return out


def kept_as(names: set[str], name: str) -> bool:
    """True when `name` is among `names` as it is, or as logwatchd keeps a taken or too-long
    name: its stem (perhaps cut) tagged before its suffixes (`a.<12 hex>[-N].jsonl`)."""
    if name in names:
        return True
    dot = name.find(".", 1)
    stem, suffixes = (name, "") if dot < 0 else (name[:dot], name[dot:])
    tagged = re.compile(r"\.[0-9a-f]{12}(-[0-9]+)?$")
    for n in names:
        body = n[:len(n) - len(suffixes)] if suffixes else n
        if n.endswith(suffixes) and n.startswith(stem[:16]) and tagged.search(body):
            return True
    return False


def check(root: Path, planned: list[Planned], stats: dict[str, Any], logins: dict[str, Any]) -> dict[str, Any]:
    """Compares what was dropped with the outputs; fills each Planned's problems."""
    rows, errors, logins_in_dataset = read_outputs(root)
    archived = listing(root / "archive")
    quarantine = root / "quarantine"
    dead = sorted(n for n in listing(root / "dead-letter") if not n.endswith(".reason.json"))
    left = sorted(n for n in os.listdir(root / "inbox") if not n.startswith("."))
    counted = {"valid_rows": sum(rows.values()), "error_lines": sum(errors.values())}
    lost = doubled = misplaced = 0
    expect_rows = expect_either = expect_errors = 0
    for p in planned:
        if p.name in left:
            p.problems.append("still in the inbox")
        if p.outcome in ("ok", "duplicate") and not kept_as(archived, p.name):
            p.problems.append("not in the archive" + (" (dead-lettered)" if p.name in dead else ""))
        if p.outcome == "ok":
            for i, want in enumerate(p.lines, start=1):
                key = (p.source_file, i)
                c, e = rows.pop(key, 0), errors.pop(key, 0)
                expect_rows += want == "v"
                expect_errors += want == "e"
                expect_either += want == "?"
                if c + e == 0:
                    lost += 1
                    p.problems.append(f"line {i} lost")
                elif c + e > 1:
                    doubled += 1
                    p.problems.append(f"line {i} {c} rows + {e} error lines")
                elif (want == "v" and e) or (want == "e" and c):
                    misplaced += 1
                    p.problems.append(f"line {i} is {'an error line' if e else 'a row'}")
        if p.outcome in ("quarantined", "refused"):
            _check_quarantined(quarantine, p, dead)
    # Whatever is left came from nothing dropped as a file to process (a followed link, a
    # processed duplicate): each such line counts as doubled.
    by_name = {p.source_file: p for p in planned}
    unexpected = Counter(f for f, _ in rows) + Counter(f for f, _ in errors)
    for f, n in unexpected.items():
        doubled += n
        if f in by_name:
            by_name[f].problems.append(f"{n} unexpected rows or error lines")
    s_files, s_records = stats.get("files", {}), stats.get("records", {})
    want_stats = {
        "files.processed": sum(p.outcome == "ok" for p in planned),
        "files.quarantined": sum(p.outcome == "quarantined" for p in planned),
        "files.duplicate": sum(p.outcome == "duplicate" for p in planned),
        "files.dead_lettered": 0,
        "records.valid": counted["valid_rows"],
        "records.errors": counted["error_lines"],
        "records.processed": counted["valid_rows"] + counted["error_lines"],
    }
    got_stats = {k: (s_files if k.startswith("files.") else s_records).get(k.split(".")[1])
                 for k in want_stats}
    failing = Counter(p.kind for p in planned if p.problems)
    return {
        **counted,
        "expected_rows": expect_rows, "expected_error_lines": expect_errors,
        "either_lines": expect_either,
        "lost": lost, "doubled": doubled, "misplaced": misplaced,
        "unexpected_sources": sorted(unexpected)[:10],
        "dead_letter": dead[:20],
        "left_in_inbox": left[:20],
        "stats": got_stats,
        "stats_mismatch": {k: {"stats": got_stats[k], "outside": v} for k, v in want_stats.items()
                           if got_stats[k] != v},
        "logins_today": {"api": logins.get("logins_today"), "dataset": logins_in_dataset,
                         "date": logins.get("date")},
        "failing_inputs": {k: {"files": n, "of": sum(p.kind == k for p in planned),
                               "example": next(f"{q.name!r}: {q.problems[0]}" for q in planned
                                               if q.kind == k and q.problems)}
                           for k, n in sorted(failing.items())},
    }


def _check_quarantined(quarantine: Path, p: Planned, dead: list[str]) -> None:
    entry = quarantine / p.name
    if not os.path.lexists(entry):  # kept under a shortened name: its sidecar names it
        for sidecar in quarantine.glob("*.reason.json"):
            try:
                if json.loads(sidecar.read_bytes()).get("file") == p.source_file:
                    entry = sidecar.with_name(sidecar.name[:-len(".reason.json")])
                    break
            except (OSError, ValueError):
                continue
    try:
        st = os.lstat(entry)
    except FileNotFoundError:
        p.problems.append("not in quarantine" + (" (dead-lettered)" if p.name in dead else ""))
        return
    shape = {"symlink": stat.S_ISLNK, "special_file": stat.S_ISFIFO}.get(p.reason or "", stat.S_ISREG)
    if not shape(st.st_mode):
        p.problems.append(f"quarantined entry has mode {stat.filemode(st.st_mode)}")
    try:
        reason = json.loads((quarantine / f"{entry.name}.reason.json").read_bytes()).get("reason")
    except (OSError, ValueError) as exc:
        p.problems.append(f"no readable reason sidecar: {exc}")
        return
    if p.reason is not None and reason != p.reason:
        p.problems.append(f"quarantined as {reason!r}, expected {p.reason!r}")


# --- the run ------------------------------------------------------------------------------------
@dataclass
class Options:
    minutes: float = 10.0
    rate: float = 4.0               # files per second
    warmup: float = 20.0            # seconds before the start sample
    http_threads: int = 4
    http_pause: float = 0.02        # seconds between one thread's requests
    drain_timeout: float = 60.0
    exclude: set[str] = field(default_factory=set)
    seed: int = 1
    keep: bool = False


def run(opts: Options) -> dict[str, Any]:
    """Runs the soak; returns the figures, the checks and `ok`."""
    if opts.minutes * 60 < 30:
        raise ValueError(f"--minutes {opts.minutes}: measure for 30 s at least")
    root = Path(tempfile.mkdtemp(prefix="logwatchd-soak-"))
    daemon = start_daemon(root, timeout=60, config_extra=CONFIG, log_file=root / "daemon.log")
    if isinstance(daemon, str):
        return {"ok": False, "failures": [daemon], "root": str(root)}
    result: dict[str, Any] = {"minutes": opts.minutes, "rate_per_s": opts.rate, "root": str(root)}
    try:
        result.update(_drive(daemon, root, opts))
    finally:
        daemon.stop()
    result["ok"] = not result.get("failures")
    if result["ok"] and not opts.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _drive(d: Daemon, root: Path, opts: Options) -> dict[str, Any]:
    t0 = time.monotonic()
    feed = Feed(d.inbox, root / "producer", opts.seed, opts.exclude)
    stop_feed = threading.Event()
    dropped: dict[str, float] = {}
    producer = threading.Thread(target=lambda: dropped.update(
        drop_at_rate(feed, d.inbox, opts.rate, stop_feed.is_set)), daemon=True)
    load = HttpLoad(d.port, opts.http_threads, opts.http_pause)
    sampler = Sampler(d.proc.pid, root, 10.0, t0)
    producer.start()
    load.start()
    sampler.start()

    # The warm-up lasts until the first compaction pass is done too: that pass starts Arrow's
    # thread pools and sizes its memory pool once, which is not growth of a long run.
    warm_until = t0 + opts.warmup + 2 * COMPACTION_INTERVAL + 10
    while time.monotonic() < t0 + opts.warmup or (
            not d.counts["compaction_done"] and time.monotonic() < warm_until):
        time.sleep(0.2)
    warmed_s = time.monotonic() - t0
    window = min(COMPACTION_INTERVAL, opts.minutes * 30)
    start = window_sample(d.proc.pid, root, window)
    passes_at_start = d.counts["compaction_done"]
    time.sleep(max(0.0, t0 + warmed_s + opts.minutes * 60 - window - time.monotonic()))
    end = window_sample(d.proc.pid, root, window)
    fed_s = time.monotonic() - t0

    stop_feed.set()
    producer.join(30)
    for leftover in d.inbox.glob(".*.tmp"):  # created, never renamed: not part of the run
        leftover.unlink()
    planned = [feed.planned[n] for n in dropped]
    drained_in = _wait_inbox_empty(d, opts.drain_timeout)
    load.stop()
    sampler.stop_event.set()
    stats = get_json(d.port, "/stats")
    logins = get_json(d.port, "/logins_today")
    health = get_json(d.port, "/healthz")

    stopping = time.monotonic()
    d.proc.terminate()
    try:
        exit_code: int | None = d.proc.wait(timeout=30)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: stop() kills it afterwards
        exit_code = None
    stop_s = time.monotonic() - stopping

    invariant = check(root, planned, stats, logins)
    growth = {
        "rss_bytes": end["rss_bytes"] - start["rss_bytes"],
        "rss_ratio": round(end["rss_bytes"] / start["rss_bytes"] - 1, 4) if start["rss_bytes"] else None,
        **{k: end[k] - start[k] for k in ("fds", "threads", "procs", "ledger_bytes", "wal_bytes",
                                          "clean_files")},
    }
    files_taken = len(planned)
    bounds = {
        "rss_growth": (growth["rss_bytes"], int(start["rss_bytes"] * RSS_GROWTH_RATIO + RSS_SLACK_BYTES)),
        "fd_growth": (growth["fds"], FD_GROWTH),
        "thread_growth": (growth["threads"], THREAD_GROWTH),
        "wal_bytes": (max([end["wal_bytes"]] + [int(s["wal_mb"] * MB) for s in sampler.series]), WAL_MAX_BYTES),
        "stop_seconds": (round(stop_s, 2), STOP_SECONDS),
        "lost_lines": (invariant["lost"], 0),
        "doubled_lines": (invariant["doubled"], 0),
        "misplaced_lines": (invariant["misplaced"], 0),
        "files_with_problems": (sum(bool(p.problems) for p in planned), 0),
        "stats_mismatches": (len(invariant["stats_mismatch"]), 0),
        "http_errors": (load.summary()["errors"], 0),
        "daemon_error_events": (len(d.errors), 0),
    }
    failures = [f"{k}: {v} > {limit}" for k, (v, limit) in bounds.items() if v > limit]
    if exit_code != 0:
        failures.append(f"daemon exit code after SIGTERM: {exit_code} (want 0)")
    if drained_in is None:
        failures.append(f"inbox not empty {opts.drain_timeout:.0f} s after the feed stopped")
    # Compared only once the daemon is idle (it may still commit a file after the answer),
    # and on the same day as the dataset's "today".
    if drained_in is not None and invariant["logins_today"]["api"] != invariant["logins_today"]["dataset"] \
            and invariant["logins_today"]["date"] == datetime.now(UTC).date().isoformat():
        failures.append(f"/logins_today {invariant['logins_today']}")
    if opts.minutes * 60 >= 2 * COMPACTION_INTERVAL and d.counts["compaction_done"] == passes_at_start:
        failures.append("no compaction pass merged anything between the samples: "
                        "the soak did not exercise compaction")
    return {
        "warmup_seconds": round(warmed_s, 1),
        "fed_seconds": round(fed_s, 1),
        "files": {"dropped": files_taken, "by_kind": dict(sorted(Counter(p.kind for p in planned).items())),
                  "excluded": sorted(opts.exclude)},
        "start": _readable(start), "end": _readable(end), "growth": _readable(growth),
        "bounds": {k: {"value": v, "limit": lim, "ok": v <= lim} for k, (v, lim) in bounds.items()},
        "series": sampler.series,
        "http": load.summary(),
        "healthz_at_end": health.get("status"),
        "drained_seconds": None if drained_in is None else round(drained_in, 1),
        "daemon": {"exit_code": exit_code, "stop_seconds": round(stop_s, 2),
                   "compactions": d.counts["compaction_done"],
                   "events": dict(sorted(d.counts.items())),
                   "error_events": [{k: e.get(k) for k in ("event", "file", "error") if k in e}
                                    for e in d.errors[:5]]},
        "invariant": invariant,
        "failures": failures,
    }


def _wait_inbox_empty(d: Daemon, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        # Nothing waiting, nor in hand (the daemon's hidden IN_HAND_DIR, there while a file is).
        if not any(not n.startswith(".") or n == IN_HAND_DIR for n in os.listdir(d.inbox)):
            return time.monotonic() - started
        if d.proc.poll() is not None:
            return None
        time.sleep(0.1)
    return None


def _readable(sample: dict[str, Any]) -> dict[str, Any]:
    """Bytes as MB beside the raw figures."""
    out = dict(sample)
    for k in ("rss_bytes", "ledger_bytes", "wal_bytes"):
        if isinstance(out.get(k), int):
            out[k.replace("_bytes", "_mb")] = round(out[k] / MB, 2)
    return out


def table(result: dict[str, Any]) -> str:
    """Start, end, growth and limit of each figure, then the checks, as text."""
    lines = [f"{'figure':<16}{'start':>12}{'end':>12}{'growth':>12}"]
    s, e, g = result.get("start", {}), result.get("end", {}), result.get("growth", {})
    for k in ("rss_mb", "fds", "threads", "procs", "ledger_mb", "wal_mb", "clean_files"):
        if k in s:
            lines.append(f"{k:<16}{s[k]:>12}{e[k]:>12}{g.get(k, ''):>12}")
    lines.append("")
    for k, b in result.get("bounds", {}).items():
        lines.append(f"{k:<22}{b['value']!s:>14} ≤ {b['limit']!s:<12}{'ok' if b['ok'] else 'BROKEN'}")
    inv = result.get("invariant", {})
    if inv:
        lines.append(f"\nrows {inv['valid_rows']} (expected {inv['expected_rows']} + ≤{inv['either_lines']} either), "
                     f"error lines {inv['error_lines']} (expected {inv['expected_error_lines']})")
        for kind, f in inv.get("failing_inputs", {}).items():
            lines.append(f"FAILING {kind}: {f['files']} of {f['of']} files, e.g. {f['example']}")
    for f in result.get("failures", []):
        lines.append(f"FAILED {f}")
    lines.append("soak: " + ("ok" if result.get("ok") else "FAILED") + (
        "" if result.get("ok") else f" (root kept: {result.get('root')})"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="minutes between the start and end samples, after the warm-up (default 10)")
    ap.add_argument("--rate", type=float, default=4.0, help="files per second (default 4)")
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="seconds before the start sample, and until the first compaction (default 20)")
    ap.add_argument("--http-threads", type=int, default=4)
    ap.add_argument("--http-pause", type=float, default=0.02, help="seconds between one thread's requests")
    ap.add_argument("--drain-timeout", type=float, default=60.0,
                    help="seconds the inbox may take to empty once the feed stops (default 60)")
    ap.add_argument("--exclude", default="", help=f"comma-separated kinds to leave out, of: {', '.join(ALL_KINDS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary root even when the run passes")
    a = ap.parse_args(argv)
    exclude = {k for k in a.exclude.split(",") if k}
    if exclude - set(ALL_KINDS):
        ap.error(f"--exclude: unknown kinds {sorted(exclude - set(ALL_KINDS))}")
    result = run(Options(a.minutes, a.rate, a.warmup, a.http_threads, a.http_pause, a.drain_timeout,
                         exclude, a.seed, a.keep))
    print(table(result), file=sys.stderr)
    print(json.dumps(result, default=str))  # ASCII: names may hold undecodable bytes
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
