"""Runs one command in a subprocess and measures it: wall time, peak PSS and RSS of its process tree, ru_maxrss.

Every ~20 ms the tree (the command, its worker processes, the forkserver, found with
psutil) is sampled from `/proc/PID/smaps_rollup`: `Pss` summed over the processes is the
tree's memory with shared pages counted once (a page shared by n processes counts 1/n in
each), `Rss` summed counts them once per process (an upper bound). The peak of each sum
is kept. `ru_maxrss` of the direct child comes from `wait4` for reference.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class RunResult:
    """What one measured command did."""

    seconds: float
    returncode: int
    stdout: str
    stderr: str
    peak_tree_rss: int = 0            # bytes, summed over the tree, sampled
    peak_procs: int = 0               # processes in the tree at the sampled PSS peak
    peak_tree_pss: int = 0            # bytes, summed over the tree, sampled
    ru_maxrss: int = 0                # bytes, the direct child only
    samples: int = 0
    extra: dict = field(default_factory=dict)


def smaps_rollup(pid: int) -> tuple[int, int]:
    """(Pss, Rss) of one process in bytes, from /proc/PID/smaps_rollup; (0, 0) once it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(b"Rss:"):
                    rss = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # a process that just ended has no memory left to count
    return pss, rss


class _TreeSampler(threading.Thread):
    """Samples the summed PSS and RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = total_pss = 0
            for p in procs:
                pss, rss = smaps_rollup(p.pid)
                total += rss
                total_pss += pss
            self.samples += 1
            self.peak = max(self.peak, total)
            if total_pss > self.peak_pss:
                self.peak_pss, self.peak_procs = total_pss, len(procs)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()


def run_measured(cmd: Sequence[str], cwd: Path | None = None, sample_rss: bool = False,
                 interval: float = 0.02, timeout: float = 3600) -> RunResult:
    """Runs `cmd` to completion; samples the tree's RSS when `sample_rss` (it costs a little CPU)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.monotonic_ns()}"
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        sampler = _TreeSampler(proc.pid, interval) if sample_rss else None
        if sampler:
            sampler.start()
        deadline = time.monotonic() + timeout
        while True:
            # wait4 gives the child's own ru_maxrss (Popen.wait would reap it without).
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler:
            sampler.stop()
            sampler.join()
        _reap_group(proc.pid)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    os.unlink(f"{out_path}.out")
    os.unlink(f"{out_path}.err")
    return RunResult(seconds, proc.returncode, stdout, stderr,
                     peak_tree_rss=sampler.peak if sampler else 0,
                     peak_tree_pss=sampler.peak_pss if sampler else 0,
                     peak_procs=sampler.peak_procs if sampler else 0,
                     ru_maxrss=usage.ru_maxrss * 1024, samples=sampler.samples if sampler else 0)


def _reap_group(pgid: int) -> None:
    """Waits briefly for leftovers of the command's session (workers exit with their parent)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid]
        if not alive:
            return
        time.sleep(0.05)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1
