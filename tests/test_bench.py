"""The benchmark itself (`python -m bench`) on tiny sizes: every part present, both sides agree.

One run of each workload (one-day, one-year, ten-year, gzip, array) at 2,000 lines, the
memory part on them, and a short latency stream with compaction and HTTP load: the JSON
must hold every part, and logwatchd's and the DuckDB peer's counts must agree reason by
reason on every workload.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ["one-day", "one-year", "ten-year", "gzip", "array"]

pytest.importorskip("duckdb")


@pytest.mark.slow
def test_bench_tiny(tmp_path: Path) -> None:
    """`python -m bench` on tiny sizes writes every part, and both sides agree reason by reason."""
    out = tmp_path / "latest.json"
    cmd = [sys.executable, "-m", "bench", "--workloads", ",".join(WORKLOADS), "--lines", "2000",
           "--big-lines", "0", "--runs", "1", "--latency-files", "10", "--rate", "10",
           "--compaction-interval", "1", "--skip-compaction", "--timeout", "120",
           "--work", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["machine"]["cores"] >= 1
    assert list(res["throughput"]) == WORKLOADS
    for name, tp in res["throughput"].items():
        for side in ("logwatchd", "duckdb"):
            assert "failed" not in tp[side], (name, side, tp[side])
            assert tp[side]["median_s"] > 0
            assert tp[side]["counts"]["processed"] == 2000
        assert tp["ratio"] > 0
        assert tp["counts_agree"] and tp["reasons_agree"], (name, tp["logwatchd"]["counts"],
                                                              tp["duckdb"]["counts"])
        assert tp["logwatchd"]["counts"]["reasons"], name  # ~5% invalid, by reason
    # the non-JSON lines: invalid_json in lines, not_an_object as array elements
    assert "invalid_json" in res["throughput"]["one-year"]["logwatchd"]["counts"]["reasons"]
    assert "invalid_json" not in res["throughput"]["array"]["logwatchd"]["counts"]["reasons"]
    assert res["throughput"]["ten-year"]["duckdb"]["counts"]["parquet_dates"] > 366
    assert list(res["memory"]) == WORKLOADS
    for sizes in res["memory"].values():
        (mem,) = sizes.values()
        assert "failed" not in mem
        assert 0 < mem["peak_tree_pss_mb"] <= mem["peak_tree_rss_mb"]
    lat = res["latency"]
    for phase in ("without_http_load", "with_http_load"):
        r = lat[phase]
        assert r["files"] == 10 and r["missing"] == 0, r
        assert r["median_ms"] is not None and r["p99_ms"] >= r["median_ms"]
    http = lat["with_http_load"]["http"]
    assert "failed" not in http, http
    assert http["requests_per_s"] > 0 and http["client"] in ("wrk", "python")
    assert "compaction" in res
    assert "logwatchd process" in proc.stdout and "with http load" in proc.stdout
