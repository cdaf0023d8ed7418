"""HTTP load on /logins_today: requests per second and latency percentiles over keep-alive connections.

`measure_logins_today(base_url)` uses `wrk` when it is installed (a C client: it measures the
server, not itself) and otherwise Python threads, one `http.client` keep-alive connection
each. On a 2-core machine the Python client needs about as much CPU per request as the
server, so its figures are a lower bound of what the server does; the result says which
client measured it.

    python -m bench.http_load http://127.0.0.1:8000 [--connections 32] [--seconds 10] [--python]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import shutil
import subprocess
import threading
import time
from typing import Any
from urllib.parse import urlsplit

PATH = "/logins_today"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an already sorted list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def measure_logins_today(base_url: str, connections: int = 32, seconds: float = 10,
                         client: str = "auto") -> dict[str, Any]:
    """Loads GET /logins_today for `seconds` over `connections` keep-alive connections.

    Returns `requests_per_s`, `p50_ms`, `p99_ms`, `max_ms`, `requests`, `errors`,
    `connections`, `seconds` and `client` ("wrk" or "python"). `client="auto"` takes wrk
    when it is on PATH; "python" or "wrk" force one.
    """
    if client == "wrk" or (client == "auto" and shutil.which("wrk")):
        return _with_wrk(base_url, connections, seconds)
    return _with_python(base_url, connections, seconds)


# --- Python: threads + http.client ----------------------------------------------------------
def _with_python(base_url: str, connections: int, seconds: float) -> dict[str, Any]:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path.rstrip("/") or "") + PATH
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    ready = threading.Barrier(connections + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        mine = latencies[i]
        try:
            conn.connect()
        except OSError:
            errors[i] += 1
        ready.wait(timeout=60)
        deadline = stop_at[0]
        clock = time.perf_counter
        while True:
            started = clock()
            if started >= deadline:
                break
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[i] += 1
                    continue
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            mine.append(clock() - started)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    ready.wait(timeout=60)  # a worker that died before it would break the barrier, not hang
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.perf_counter() - began
    everything = sorted(x for per in latencies for x in per)
    return {
        "client": "python",
        "connections": connections,
        "seconds": round(elapsed, 3),
        "requests": len(everything),
        "errors": sum(errors),
        "requests_per_s": round(len(everything) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(everything, 0.50) * 1000, 3),
        "p99_ms": round(percentile(everything, 0.99) * 1000, 3),
        "max_ms": round((everything[-1] if everything else 0.0) * 1000, 3),
    }


# --- wrk --------------------------------------------------------------------------------------
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Reads `wrk --latency` output: requests, errors, rate and latency percentiles."""
    out: dict[str, Any] = {}
    for q in ("50", "99"):
        match = re.search(rf"^\s+{q}(?:\.0+)?%\s+(\S+)", output, re.MULTILINE)
        if match:
            out[f"p{q}_ms"] = round(_ms(match.group(1)), 3)
    match = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", output, re.MULTILINE)
    if match:
        out["max_ms"] = round(_ms(match.group(1)), 3)
    match = re.search(r"([0-9]+) requests in ([0-9.]+)(us|ms|s|m)", output)
    if match:
        out["requests"] = int(match.group(1))
        out["seconds"] = round(_ms(match.group(2) + match.group(3)) / 1000, 3)
    match = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    if match:
        out["requests_per_s"] = float(match.group(1))
    errors = 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if match:
        errors += sum(int(g) for g in match.groups())
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match:
        errors += int(match.group(1))
    out["errors"] = errors
    if "requests_per_s" not in out or "p99_ms" not in out:
        raise ValueError(f"unexpected wrk output:\n{output}")
    return out


def _with_wrk(base_url: str, connections: int, seconds: float) -> dict[str, Any]:
    url = base_url.rstrip("/") + PATH
    # One thread per core: wrk's event loops need little CPU, the server needs the rest.
    cmd = ["wrk", "--latency", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
           "--timeout", "10s", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return {"client": "wrk", "connections": connections, **parse_wrk(proc.stdout)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--client", choices=("auto", "python", "wrk"), default="auto")
    args = parser.parse_args(argv)
    print(json.dumps(measure_logins_today(args.base_url, args.connections, args.seconds, args.client)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
