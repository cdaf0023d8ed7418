"""`make bench`: logwatchd's throughput beside DuckDB's on every workload, peak memory, daemon latency under load.

Generates its own deterministic workloads under bench/work/ (cached by shape, size and
seed), runs every measurement in fresh state directories, prints one table and writes
bench/results/latest.json. Workloads (--workloads, comma-separated):

  one-day   the original workload: ~50 events/s, a file touches one or two dates
  one-year  366 dates (2024), mixed ±HH:MM offsets, unicode fields
  ten-year  3,650 dates (from 2015-01-01), as one-year otherwise
  gzip      the one-year records, gzipped           (also: SPREAD.gz, e.g. one-day.gz)
  array     the one-year records, as one JSON array (also: SPREAD.array)

Parts: throughput (logwatchd `process` and the DuckDB peer alternating on the same file,
medians, ratio, counts per reason), memory (peak PSS and RSS of the process tree on
--lines and --big-lines of every workload), latency (small files into `logwatchd run` at
--rate/s with compaction every --compaction-interval s, without and then with HTTP load
on /logins_today from a separate process), compaction. Sizes: flags, or BENCH_LINES /
BENCH_BIG_LINES / BENCH_RUNS / BENCH_LATENCY_FILES / BENCH_WORKLOADS in the environment.
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
from .workload import FORMATS, SPREADS, write_workload

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
WORKLOAD_VERSION = 3  # bump when bench/workload.py changes what it writes

# name -> (spread, format); SPREAD.gz and SPREAD.array are accepted too.
WORKLOADS = {"one-day": ("one-day", "jsonl"), "one-year": ("one-year", "jsonl"),
             "ten-year": ("ten-year", "jsonl"), "gzip": ("one-year", "gz"),
             "array": ("one-year", "array")}
DEFAULT_WORKLOADS = "one-day,one-year,ten-year,gzip,array"
_EXT = {"jsonl": "jsonl", "gz": "jsonl.gz", "array": "array.json"}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def workload_shape(name: str) -> tuple[str, str]:
    """(spread, format) of a workload name; ValueError when it names none."""
    if name in WORKLOADS:
        return WORKLOADS[name]
    spread, _, fmt = name.partition(".")
    if spread in SPREADS and fmt in FORMATS:
        return spread, fmt
    raise ValueError(f"unknown workload {name!r}: one of {', '.join(WORKLOADS)}, "
                     f"or SPREAD.FORMAT with SPREAD in {SPREADS} and FORMAT in {FORMATS}")


def _workloads(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        try:
            workload_shape(n)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", type=_workloads,
                    default=_workloads(os.environ.get("BENCH_WORKLOADS", DEFAULT_WORKLOADS)),
                    help=f"comma-separated (default {DEFAULT_WORKLOADS})")
    ap.add_argument("--lines", type=int, default=_env_int("BENCH_LINES", 1_000_000),
                    help="lines of each throughput (and first memory) file (default 1,000,000)")
    ap.add_argument("--big-lines", type=int, default=_env_int("BENCH_BIG_LINES", 5_000_000),
                    help="lines of the large memory file of every workload; 0 skips them (default 5,000,000)")
    ap.add_argument("--runs", type=int, default=_env_int("BENCH_RUNS", 5),
                    help="alternating runs of each side per workload; medians are reported (default 5)")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds one run of either side may take before it counts as failed (default 900)")
    ap.add_argument("--latency-files", type=int, default=_env_int("BENCH_LATENCY_FILES", 300),
                    help="small files dropped into the daemon at --rate per second, per phase (default 300)")
    ap.add_argument("--rate", type=float, default=10.0, help="small files per second (default 10)")
    ap.add_argument("--records", default="50-300", help="records per small file, N or LO-HI (default 50-300)")
    ap.add_argument("--compaction-interval", type=float, default=10.0,
                    help="compaction.interval_seconds of the daemon under test (default 10)")
    ap.add_argument("--compaction-min-files", type=int, default=2,
                    help="compaction.min_files of the daemon under test (default 2)")
    ap.add_argument("--http-connections", type=int, default=8,
                    help="keep-alive connections loading /logins_today (default 8)")
    ap.add_argument("--http-client", choices=("auto", "wrk", "python"), default="auto",
                    help="wrk when installed (auto), else the Python client in its own process")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-duckdb", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-daemon", action="store_true", help="skip the latency part")
    ap.add_argument("--skip-http-load", action="store_true", help="latency without the HTTP-load phase")
    ap.add_argument("--skip-compaction", action="store_true", help="skip bench/compaction_bench.py")
    ap.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    ap.add_argument("--work", type=Path, default=WORK,
                    help="where workloads are cached and runs are made (default bench/work)")
    return ap.parse_args(argv)


# --- workload -----------------------------------------------------------------------------
def workload(name: str, lines: int, seed: int) -> Path:
    """The cached file of workload `name` for (lines, seed), generated once."""
    spread, fmt = workload_shape(name)
    path = WORK / f"workload-v{WORKLOAD_VERSION}-{spread}-{lines}-s{seed}.{_EXT[fmt]}"
    if not path.exists():
        jsonl = workload(spread, lines, seed) if fmt != "jsonl" else None
        print(f"generating {path.name} ({lines:,} lines) …", flush=True)
        tmp = path.with_name(f".{path.name}.tmp")
        write_workload(tmp, lines, seed, spread, fmt, jsonl=jsonl)
        os.rename(tmp, path)
    return path


def fresh_dir(name: str) -> Path:
    d = WORK / "runs" / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def _tail(text: str, n: int = 600) -> str:
    return text.strip()[-n:]


# --- the two sides --------------------------------------------------------------------------
def run_logwatchd(path: Path, tag: str, sample_rss: bool = False,
                  timeout: float = 3600) -> tuple[RunResult, dict[str, Any]]:
    """`logwatchd process` on `path` with a fresh root; (measurement, summary + reason counts).

    A run that fails (exit code, timeout) gives a summary with `failed` (what it said).
    """
    d = fresh_dir(f"logwatchd-{tag}")
    config = d / "config.toml"
    config.write_text(f'[paths]\nroot = "{d / "var"}"\n')
    r = run_measured([sys.executable, "-m", "logwatchd", "process", "-c", str(config), str(path)],
                     cwd=d, sample_rss=sample_rss, timeout=timeout)
    summary: dict[str, Any] = {}
    try:
        summary = json.loads(r.stdout.splitlines()[-1])
    except (ValueError, IndexError):
        pass
    if r.returncode != 0 or summary.get("status") != "ok":
        summary["failed"] = f"exit {r.returncode} after {r.seconds:.1f} s: " + _tail(
            json.dumps({k: summary.get(k) for k in ("status", "reason", "detail")}) + " " + r.stderr)
    reasons: collections.Counter[str] = collections.Counter()
    for f in (d / "var" / "errors").rglob("*.jsonl"):
        with open(f, "rb") as fh:
            for line in fh:
                reasons[json.loads(line)["reason"]] += 1
    summary["reasons"] = dict(sorted(reasons.items()))
    parquet = list((d / "var" / "clean").rglob("*.parquet"))
    summary["parquet_files"] = len(parquet)
    summary["parquet_dates"] = len({p.parent.name for p in parquet})
    summary["parquet_bytes"] = sum(f.stat().st_size for f in parquet)
    shutil.rmtree(d, ignore_errors=True)
    return r, summary


def run_duckdb(path: Path, tag: str, timeout: float = 3600) -> tuple[RunResult, dict[str, Any]]:
    """bench/duckdb_peer.py on `path` in a subprocess; (measurement, its counts)."""
    d = fresh_dir(f"duckdb-{tag}")
    r = run_measured([sys.executable, "-m", "bench.duckdb_peer", str(path), str(d / "out")],
                     cwd=HERE.parent, timeout=timeout)
    summary: dict[str, Any] = {}
    try:
        summary = json.loads(r.stdout.splitlines()[-1])
    except (ValueError, IndexError):
        pass
    if r.returncode != 0:
        summary["failed"] = f"exit {r.returncode} after {r.seconds:.1f} s: {_tail(r.stderr)}"
    parquet = list((d / "out").rglob("*.parquet"))
    summary["parquet_files"] = len(parquet)
    summary["parquet_dates"] = len({p.parent.name for p in parquet})
    summary["parquet_bytes"] = sum(f.stat().st_size for f in parquet)
    shutil.rmtree(d, ignore_errors=True)
    return r, summary


def throughput(name: str, path: Path, lines: int, runs: int, skip_duckdb: bool,
               timeout: float) -> dict[str, Any]:
    """Alternating runs of both sides on the same file; medians, ratio, and the counts compared."""
    sides: dict[str, list[float]] = {"logwatchd": [], "duckdb": []}
    rss: dict[str, list[int]] = {"logwatchd": [], "duckdb": []}
    summaries: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for i in range(runs):
        order = ["logwatchd", "duckdb"] if i % 2 == 0 else ["duckdb", "logwatchd"]
        for side in order:
            if (side == "duckdb" and skip_duckdb) or side in failed:
                continue
            # The previous run's writes that were never fsynced (DuckDB's Parquet files) and
            # its deleted output reach the disk now, not during the next side's run.
            os.sync()
            r, s = (run_logwatchd(path, "tp", timeout=timeout) if side == "logwatchd"
                    else run_duckdb(path, "tp", timeout=timeout))
            if "failed" in s:  # a side that fails once is not run again on this workload
                failed[side] = s["failed"]
                summaries[side] = s
                print(f"  {name} run {i + 1}/{runs} {side:9s} FAILED: {s['failed'][:200]}", flush=True)
                continue
            sides[side].append(r.seconds)
            rss[side].append(r.ru_maxrss)
            summaries[side] = s
            print(f"  {name} run {i + 1}/{runs} {side:9s} {r.seconds:7.2f} s  {lines / r.seconds:>10,.0f} lines/s",
                  flush=True)
    out: dict[str, Any] = {"workload": name, "file": path.name, "lines": lines,
                           "bytes": path.stat().st_size, "runs": runs}
    for side in ("logwatchd", "duckdb"):
        if side in failed:
            out[side] = {"failed": failed[side], "counts": summaries.get(side, {})}
        elif sides[side]:
            med = statistics.median(sides[side])
            out[side] = {"seconds": [round(s, 3) for s in sides[side]], "median_s": round(med, 3),
                         "lines_per_s": round(lines / med), "ru_maxrss_mb": _mb(max(rss[side])),
                         "counts": summaries[side]}
    if "median_s" in out.get("logwatchd", {}) and "median_s" in out.get("duckdb", {}):
        out["ratio"] = round(out["duckdb"]["median_s"] / out["logwatchd"]["median_s"], 3)
    if "logwatchd" in summaries and "duckdb" in summaries:
        a, b = summaries["logwatchd"], summaries["duckdb"]
        out["counts_agree"] = all(a.get(k) == b.get(k) for k in ("processed", "valid", "errors"))
        out["reasons_agree"] = a["reasons"] == b.get("reasons")
    return out


def memory(name: str, files: dict[str, Path], timeout: float) -> dict[str, Any]:
    """Peak PSS (and RSS) of `logwatchd process`, summed over its process tree, per file size."""
    out = {}
    for label, path in files.items():
        r, s = run_logwatchd(path, f"mem-{name}-{label}", sample_rss=True, timeout=timeout)
        m: dict[str, Any] = {"workload": name, "file": path.name, "lines": label,
                             "bytes": path.stat().st_size,
                             "peak_tree_pss_mb": _mb(r.peak_tree_pss), "peak_tree_rss_mb": _mb(r.peak_tree_rss),
                             "processes_at_peak": r.peak_procs, "ru_maxrss_main_mb": _mb(r.ru_maxrss),
                             "samples": r.samples, "seconds": round(r.seconds, 2),
                             "parquet_files": s["parquet_files"], "parquet_dates": s["parquet_dates"]}
        if "failed" in s:
            m["failed"] = s["failed"]
        out[label] = m
        print(f"  {name} {label}: peak tree PSS {m['peak_tree_pss_mb']} MB, RSS {m['peak_tree_rss_mb']} MB "
              f"({r.peak_procs} processes), main ru_maxrss {m['ru_maxrss_main_mb']} MB"
              + (f"  FAILED: {s['failed'][:200]}" if "failed" in s else ""), flush=True)
    return out


def _label(lines: int) -> str:
    return f"{lines // 1_000_000}M" if lines >= 1_000_000 and lines % 1_000_000 == 0 else f"{lines:,}"


# --- daemon, HTTP, compaction ---------------------------------------------------------------
def _records(text: str) -> int | tuple[int, int]:
    lo, _, hi = text.partition("-")
    return (int(lo), int(hi)) if hi else int(lo)


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Small files through `logwatchd run` with compaction running: without HTTP load, then with it."""
    from . import daemon_latency as dl

    if importlib.util.find_spec("logwatchd.daemon") is None:
        return {"skipped": "`logwatchd run` is not available (no logwatchd.daemon)"}
    extra = (f"[compaction]\ninterval_seconds = {args.compaction_interval:g}\n"
             f"min_files = {args.compaction_min_files}\n")
    records = _records(args.records)
    stream_s = args.latency_files / args.rate
    t0 = int(time.time()) - 60  # event time "now": /logins_today counts these files
    out: dict[str, Any] = {"compaction_interval_s": args.compaction_interval,
                           "compaction_min_files": args.compaction_min_files}
    phases = ["without_http_load"] + ([] if args.skip_http_load else ["with_http_load"])
    for i, phase in enumerate(phases):
        print(f"  {phase}: {args.latency_files} files at {args.rate:g}/s …", flush=True)
        d = dl.start_daemon(fresh_dir(f"daemon-{i}"), config_extra=extra)
        if isinstance(d, str):
            out[phase] = {"skipped": d}
            continue
        try:
            load = None
            if phase == "with_http_load":
                # the load covers the whole stream: 1 s before the first file, 3 s after the last
                load, client = dl.start_http_load(d.base_url, seconds=stream_s + 4,
                                                  connections=args.http_connections,
                                                  client=args.http_client)
                time.sleep(1.0)
            res = dl.measure_latency(d, files=args.latency_files, rate=args.rate, records=records,
                                     timeout=max(60.0, stream_s), prefix=f"lat{i}",
                                     seed=10_000 + 1000 * i, t0=t0)
            if load is not None:
                http = dl.finish_http_load(load, timeout=stream_s + 120)
                http.setdefault("client", client)
                res["http"] = http
                res["http_rate_ok"] = float(http.get("requests_per_s") or 0) >= 500
            res["daemon_errors"] = d.errors[:3]
            out[phase] = res
        finally:
            d.stop()
        r = out[phase]
        print(f"    median {r['median_ms']} ms, p99 {r['p99_ms']} ms, missing {r['missing']}, "
              f"compaction passes done {r['compaction_done_events']}"
              + (f"; HTTP {r['http'].get('requests_per_s')} req/s ({r['http'].get('client')})"
                 if "http" in r else ""), flush=True)
    return out


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
            "wrk": shutil.which("wrk") is not None,
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _side(v: dict[str, Any]) -> str:
    if "failed" in v:
        return "FAILED"
    c = v["counts"]
    return f"{v['median_s']} s ({v['lines_per_s']:,} lines/s, {c['parquet_files']} Parquet files)"


def table_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    m = res["machine"]
    rows: list[tuple[str, str]] = [("machine", (f"{m['cores']} cores, {m['cpu']}; load avg at start "
                                               f"{m['load_avg_at_start'][0]}"))]
    for name, tp in res["throughput"].items():
        head = f"{name}: {tp['lines']:,} lines ({tp['bytes'] / 1e6:.0f} MB), median of {tp['runs']}"
        rows.append((head, ""))
        if "logwatchd" in tp:
            rows.append(("  logwatchd process", _side(tp["logwatchd"])))
        if "duckdb" in tp:
            rows.append(("  DuckDB peer (PARTITION_BY date)", _side(tp["duckdb"])))
        if "ratio" in tp:
            rows.append(("  ratio (DuckDB s / logwatchd s)", f"{tp['ratio']:.2f}  (target ≥ 1.5)"))
        if "counts_agree" in tp:
            rows.append(("  counts agree (per reason)", f"{tp['counts_agree']} ({tp['reasons_agree']})"))
            for side in ("logwatchd", "duckdb"):
                c = tp[side]["counts"]
                if not (tp["counts_agree"] and tp["reasons_agree"]) or side == "logwatchd":
                    rows.append((f"    {side}", (f"valid {c.get('valid', 0):,} errors {c.get('errors', 0):,} "
                                                f"{c.get('reasons')}")))
        for side in ("logwatchd", "duckdb"):
            if "failed" in tp.get(side, {}):
                rows.append((f"  {side} failed", tp[side]["failed"][:300].replace("\n", " ")))
    for name, sizes in res["memory"].items():
        for label, mem in sizes.items():
            v = (f"PSS {mem['peak_tree_pss_mb']} MB, RSS {mem['peak_tree_rss_mb']} MB "
                 f"({mem['processes_at_peak']} processes; main ru_maxrss {mem['ru_maxrss_main_mb']} MB; "
                 f"{mem['seconds']} s)  (target PSS ≤ 400 MB)")
            if "failed" in mem:
                v += "  FAILED: " + mem["failed"][:200].replace("\n", " ")
            rows.append((f"peak memory, process tree, {name} {label}", v))
    lat = res["latency"]
    if "skipped" in lat:
        rows.append(("daemon latency", lat["skipped"]))
    else:
        for phase in ("without_http_load", "with_http_load"):
            r = lat.get(phase)
            if r is None:
                continue
            if "skipped" in r:
                rows.append((f"latency {phase}", r["skipped"]))
                continue
            rows.append((f"latency, {phase.replace('_', ' ')}",
                         (f"median {r['median_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms; "
                          f"{r['files']} files × {r['records_per_file']} records at {r['rate_per_s']:g}/s, "
                          f"compaction every {lat['compaction_interval_s']:g} s ({r['compaction_done_events']} "
                          f"partitions compacted), missing {r['missing']}  (target ≤ 50 / ≤ 250 ms)")))
            if "http" in r:
                h = r["http"]
                rows.append(("  HTTP /logins_today meanwhile",
                             h["failed"] if "failed" in h else
                             (f"{h.get('requests_per_s')} req/s achieved ({h.get('client')}, "
                              f"{h.get('connections')} connections), p50 {h.get('p50_ms')} ms, "
                              f"p99 {h.get('p99_ms')} ms, errors {h.get('errors')}  (≥ 500 req/s wanted)")))
    v = res["compaction"]
    rows.append(("compaction bench", v["skipped"] if "skipped" in v else json.dumps(v)))
    return rows


def print_table(res: dict[str, Any]) -> None:
    rows = table_rows(res)
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("\n(the machine is shared: figures are medians and still noisy)")


def main(argv: list[str] | None = None) -> int:
    global WORK
    args = parse_args(argv)
    WORK = args.work
    res: dict[str, Any] = {"machine": machine(), "workloads": args.workloads,
                           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    print(f"logwatchd benchmark on {res['machine']['cores']} cores: {', '.join(args.workloads)}", flush=True)
    files = {name: workload(name, args.lines, args.seed) for name in args.workloads}
    big = ({name: workload(name, args.big_lines, args.seed) for name in args.workloads}
           if args.big_lines and not args.skip_memory else {})
    print("throughput:", flush=True)
    res["throughput"] = {name: throughput(name, files[name], args.lines, args.runs, args.skip_duckdb,
                                          args.timeout) for name in args.workloads}
    res["memory"] = {}
    if not args.skip_memory:
        print("peak memory:", flush=True)
        for name in args.workloads:
            sizes = {_label(args.lines): files[name]}
            if name in big:
                sizes[_label(args.big_lines)] = big[name]
            res["memory"][name] = memory(name, sizes, args.timeout)
    if args.skip_daemon:
        res["latency"] = {"skipped": "--skip-daemon"}
    else:
        print("daemon latency, compaction running:", flush=True)
        try:  # a failure here must not lose the figures measured before it
            res["latency"] = latency(args)
        except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
            res["latency"] = {"skipped": f"failed: {exc!r}"}
    try:
        res["compaction"] = {"skipped": "--skip-compaction"} if args.skip_compaction else compaction()
    except Exception as exc:  # noqa: BLE001 - as above
        res["compaction"] = {"skipped": f"failed: {exc!r}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print_table(res)
    print(f"\nwritten: {args.out}")
    shutil.rmtree(WORK / "runs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
