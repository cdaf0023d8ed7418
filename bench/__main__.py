"""`make bench`: logwatchd's throughput beside DuckDB's, peak memory, daemon latency, HTTP, compaction.

Generates its own deterministic workload under bench/work/ (cached by size and seed), runs
every measurement in fresh state directories, prints one table and writes
bench/results/latest.json. Sizes: flags, or BENCH_LINES / BENCH_BIG_LINES / BENCH_RUNS /
BENCH_LATENCY_FILES in the environment.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .measure import RunResult, run_measured
from .workload import write_jsonl

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
WORKLOAD_VERSION = 2  # bump when bench/workload.py changes what it writes


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=_env_int("BENCH_LINES", 1_000_000),
                    help="lines of the throughput file (default 1,000,000)")
    ap.add_argument("--big-lines", type=int, default=_env_int("BENCH_BIG_LINES", 5_000_000),
                    help="lines of the large memory file; 0 skips it (default 5,000,000)")
    ap.add_argument("--runs", type=int, default=_env_int("BENCH_RUNS", 5),
                    help="alternating runs of each side; medians are reported (default 5)")
    ap.add_argument("--latency-files", type=int, default=_env_int("BENCH_LATENCY_FILES", 300),
                    help="small files dropped into the daemon at --rate per second (default 300)")
    ap.add_argument("--rate", type=float, default=20.0, help="small files per second (default 20)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-duckdb", action="store_true")
    ap.add_argument("--skip-daemon", action="store_true", help="skip latency and HTTP")
    ap.add_argument("--skip-compaction", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    return ap.parse_args(argv)


# --- workload -----------------------------------------------------------------------------
def workload(lines: int, seed: int) -> Path:
    """The cached workload file for (lines, seed), generated once."""
    path = WORK / f"workload-v{WORKLOAD_VERSION}-{lines}-s{seed}.jsonl"
    if not path.exists():
        print(f"generating {path.name} ({lines:,} lines) …", flush=True)
        tmp = path.with_name(f".{path.name}.tmp")
        write_jsonl(tmp, lines, seed)
        os.rename(tmp, path)
    return path


def fresh_dir(name: str) -> Path:
    d = WORK / "runs" / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


# --- the two sides --------------------------------------------------------------------------
def run_logwatchd(path: Path, tag: str, sample_rss: bool = False) -> tuple[RunResult, dict[str, Any]]:
    """`logwatchd process` on `path` with a fresh root; (measurement, summary + reason counts)."""
    d = fresh_dir(f"logwatchd-{tag}")
    config = d / "config.toml"
    config.write_text(f'[paths]\nroot = "{d / "var"}"\n')
    r = run_measured([sys.executable, "-m", "logwatchd", "process", "-c", str(config), str(path)],
                     cwd=d, sample_rss=sample_rss)
    if r.returncode != 0:
        raise SystemExit(f"logwatchd process failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    summary = json.loads(r.stdout.splitlines()[-1])
    reasons: collections.Counter[str] = collections.Counter()
    for f in (d / "var" / "errors").rglob("*.jsonl"):
        with open(f, "rb") as fh:
            for line in fh:
                reasons[json.loads(line)["reason"]] += 1
    summary["reasons"] = dict(sorted(reasons.items()))
    summary["parquet_bytes"] = sum(f.stat().st_size for f in (d / "var" / "clean").rglob("*.parquet"))
    shutil.rmtree(d, ignore_errors=True)
    return r, summary


def run_duckdb(path: Path, tag: str) -> tuple[RunResult, dict[str, Any]]:
    """bench/duckdb_peer.py on `path` in a subprocess; (measurement, its counts)."""
    d = fresh_dir(f"duckdb-{tag}")
    r = run_measured([sys.executable, "-m", "bench.duckdb_peer", str(path), str(d / "out")],
                     cwd=HERE.parent)
    if r.returncode != 0:
        raise SystemExit(f"DuckDB peer failed ({r.returncode}):\n{r.stderr}")
    summary = json.loads(r.stdout.splitlines()[-1])
    summary["parquet_bytes"] = sum(f.stat().st_size for f in (d / "out").rglob("*.parquet"))
    shutil.rmtree(d, ignore_errors=True)
    return r, summary


def throughput(path: Path, lines: int, runs: int, skip_duckdb: bool) -> dict[str, Any]:
    """Alternating runs of both sides on the same file; medians, ratio, and the counts compared."""
    sides: dict[str, list[float]] = {"logwatchd": [], "duckdb": []}
    rss: dict[str, list[int]] = {"logwatchd": [], "duckdb": []}
    summaries: dict[str, dict[str, Any]] = {}
    for i in range(runs):
        order = ["logwatchd", "duckdb"] if i % 2 == 0 else ["duckdb", "logwatchd"]
        for side in order:
            if side == "duckdb" and skip_duckdb:
                continue
            r, s = run_logwatchd(path, "tp") if side == "logwatchd" else run_duckdb(path, "tp")
            sides[side].append(r.seconds)
            rss[side].append(r.ru_maxrss)
            summaries[side] = s
            print(f"  run {i + 1}/{runs} {side:9s} {r.seconds:6.2f} s  {lines / r.seconds:>10,.0f} lines/s",
                  flush=True)
    out: dict[str, Any] = {"lines": lines, "bytes": path.stat().st_size, "runs": runs}
    for side, secs in sides.items():
        if secs:
            med = statistics.median(secs)
            out[side] = {"seconds": [round(s, 3) for s in secs], "median_s": round(med, 3),
                         "lines_per_s": round(lines / med), "ru_maxrss_mb": _mb(max(rss[side])),
                         "counts": summaries[side]}
    if sides["duckdb"]:
        out["ratio"] = round(out["logwatchd"]["lines_per_s"] / out["duckdb"]["lines_per_s"], 3)
        a, b = summaries["logwatchd"], summaries["duckdb"]
        out["counts_agree"] = all(a[k] == b[k] for k in ("processed", "valid", "errors"))
        out["reasons_agree"] = a["reasons"] == b["reasons"]
    return out


def memory(files: dict[str, Path]) -> dict[str, Any]:
    """Peak RSS of `logwatchd process`, summed over its process tree, per file size."""
    out = {}
    for label, path in files.items():
        r, s = run_logwatchd(path, f"rss-{label}", sample_rss=True)
        out[label] = {"lines": s["processed"], "bytes": path.stat().st_size,
                      "peak_tree_rss_mb": _mb(r.peak_tree_rss), "processes_at_peak": r.peak_procs,
                      "ru_maxrss_main_mb": _mb(r.ru_maxrss), "samples": r.samples,
                      "seconds": round(r.seconds, 2)}
        print(f"  {label}: peak tree RSS {out[label]['peak_tree_rss_mb']} MB "
              f"({r.peak_procs} processes), main ru_maxrss {out[label]['ru_maxrss_main_mb']} MB", flush=True)
    return out


# --- daemon, HTTP, compaction ---------------------------------------------------------------
def daemon_parts(latency_files: int, rate: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Latency of small files through `logwatchd run`, then the HTTP load while it ingests."""
    from . import daemon_latency as dl

    if importlib.util.find_spec("logwatchd.daemon") is None:
        msg = "skipped: `logwatchd run` is not available yet (no logwatchd.daemon)"
        return {"skipped": msg}, {"skipped": msg}
    d = dl.start_daemon(fresh_dir("daemon"))
    if isinstance(d, str):
        return {"skipped": d}, {"skipped": d}
    try:
        latency = dl.measure_latency(d, files=latency_files, rate=rate)
        http: dict[str, Any]
        load = _optional("bench.http_load", "measure_logins_today")
        if load is None:
            http = {"skipped": "bench/http_load.py with measure_logins_today() does not exist yet"}
        else:
            res = dl.ingest_while(d, rate, 10, lambda: load(d.base_url, connections=32, seconds=10))
            http = json.loads(json.dumps(res, default=str)) if res is not None else {}
    finally:
        d.stop()
    return latency, http


def compaction() -> dict[str, Any]:
    measure = _optional("bench.compaction_bench", "measure")
    if measure is None:
        return {"skipped": "bench/compaction_bench.py with measure() does not exist yet"}
    res = measure(fresh_dir("compaction"))
    return json.loads(json.dumps(res, default=str)) if res is not None else {}


def _optional(module: str, name: str) -> Any:
    try:
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


# --- report -------------------------------------------------------------------------------
def _mb(n: int) -> float:
    return round(n / 1e6, 1)


def machine() -> dict[str, Any]:
    import duckdb
    import pyarrow

    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "pyarrow": pyarrow.__version__, "duckdb": duckdb.__version__,
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def print_table(res: dict[str, Any]) -> None:
    m = res["machine"]
    load = m["load_avg_at_start"][0]
    rows: list[tuple[str, str]] = [("machine", f"{m['cores']} cores, {m['cpu']}; load avg at start {load}")]
    tp = res["throughput"]
    lw = tp["logwatchd"]
    rows.append((f"logwatchd process, {tp['lines']:,} lines ({tp['bytes'] / 1e6:.0f} MB)",
                 f"{lw['lines_per_s']:,} lines/s (median {lw['median_s']} s of {tp['runs']})"))
    if "duckdb" in tp:
        dk = tp["duckdb"]
        rows.append(("DuckDB SQL peer, same file", f"{dk['lines_per_s']:,} lines/s (median {dk['median_s']} s)"))
        rows.append(("throughput ratio logwatchd / DuckDB", f"{tp['ratio']:.2f}  (target ≥ 1.0, aim 1.5)"))
        for side in ("logwatchd", "duckdb"):
            c = tp[side]["counts"]
            counts = f"processed {c['processed']:,} valid {c['valid']:,} errors {c['errors']:,} {c['reasons']}"
            rows.append((f"  counts {side}", counts))
        rows.append(("  counts agree", f"{tp['counts_agree']} (per reason: {tp['reasons_agree']})"))
        if not (tp["counts_agree"] and tp["reasons_agree"]):
            rows.append(("  why they differ", "see the deviations listed in bench/duckdb_peer.py"))
        rows.append(("ru_maxrss logwatchd main / DuckDB", f"{lw['ru_maxrss_mb']} MB / {dk['ru_maxrss_mb']} MB"))
    for mem in res["memory"].values():
        rows.append((f"peak RSS, process tree, {mem['lines']:,} lines",
                     (f"{mem['peak_tree_rss_mb']} MB ({mem['processes_at_peak']} processes; "
                      f"main ru_maxrss {mem['ru_maxrss_main_mb']} MB)  (target ≤ 400 MB)")))
    lat = res["latency"]
    if "skipped" in lat:
        rows.append(("daemon latency", lat["skipped"]))
    else:
        rows.append(((f"daemon drop-to-committed, {lat['files']} files × {lat['records_per_file']} "
                      f"records at {lat['rate_per_s']:g}/s"),
                     (f"median {lat['median_ms']} ms, p99 {lat['p99_ms']} ms, missing {lat['missing']}"
                      "  (target ≤ 50 / ≤ 250 ms)")))
    for key in ("http", "compaction"):
        v = res[key]
        rows.append((key, v["skipped"] if "skipped" in v else json.dumps(v)))
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("\n(the machine is shared: figures are medians and still noisy)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res: dict[str, Any] = {"machine": machine()}
    print(f"logwatchd benchmark on {res['machine']['cores']} cores", flush=True)
    path = workload(args.lines, args.seed)
    big = workload(args.big_lines, args.seed) if args.big_lines else None
    print("throughput:", flush=True)
    res["throughput"] = throughput(path, args.lines, args.runs, args.skip_duckdb)
    print("peak memory:", flush=True)
    files = {f"{args.lines // 1_000_000 or args.lines}{'M' if args.lines >= 1_000_000 else ''}": path}
    if big is not None:
        files[f"{args.big_lines // 1_000_000 or args.big_lines}{'M' if args.big_lines >= 1_000_000 else ''}"] = big
    res["memory"] = memory(files)
    if args.skip_daemon:
        res["latency"] = res["http"] = {"skipped": "--skip-daemon"}
    else:
        print("daemon latency and HTTP:", flush=True)
        res["latency"], res["http"] = daemon_parts(args.latency_files, args.rate)
    res["compaction"] = {"skipped": "--skip-compaction"} if args.skip_compaction else compaction()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print_table(res)
    print(f"\nwritten: {args.out}")
    shutil.rmtree(WORK / "runs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
