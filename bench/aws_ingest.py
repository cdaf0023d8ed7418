"""The ingest Lambda against moto on one large object: the handler's time and peak memory.

    python -m bench.aws_ingest [--mb 100] [--spread one-day] [--gzip]
        starts moto's server in this process (real HTTP: boto3 and pyarrow's S3 client both
        talk to it), creates the buckets and the ledger table, uploads a generated object of
        about that size, invokes the handler once in a child process with a genuine S3 put
        event, and prints one JSON line: object_bytes, seconds (the handler call), peak_rss_bytes
        (the child's, from getrusage(RUSAGE_CHILDREN)), the handler's result.

The child, also used by the tests (a Lambda container of its own):

    python -m bench.aws_ingest run EVENT_JSON [REMAINING_MS]
        invokes logwatchd.aws.lambda_handler once, the variables (LOGWATCHD_*, AWS_*) taken
        from the environment; its last line is {"result" or "error", "seconds"} (a failpoint
        may kill it before)
    python -m bench.aws_ingest measure EVENT_JSON [REMAINING_MS]
        runs `run` as its only child; prints that line with "peak_rss_bytes" and "returncode"
        (run it from a small process: a child's ru_maxrss counts the pages it shared with
        its parent before exec)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus


class Context:
    """The attributes of a Lambda context object the handler reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "logwatchd-ingest"
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def run(event: dict[str, Any], remaining_ms: int) -> None:
    from logwatchd.aws import lambda_handler

    out: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        out["result"] = lambda_handler(event, Context(remaining_ms))
    except Exception as exc:  # noqa: BLE001 - reported to the caller
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = round(time.perf_counter() - started, 3)
    if "pyarrow" in sys.modules:  # the peak of Arrow's allocations, within the peak RSS
        out["arrow_peak_bytes"] = sys.modules["pyarrow"].default_memory_pool().max_memory()
    sys.stdout.flush()
    print(json.dumps(out), flush=True)


def measure(args: list[str]) -> dict[str, Any]:
    """Runs `run ARGS` as this process's only child: its last line, peak RSS and exit code."""
    proc = subprocess.run([sys.executable, "-m", "bench.aws_ingest", "run", *args],
                          capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    lines = proc.stdout.strip().splitlines()
    out: dict[str, Any] = json.loads(lines[-1]) if lines and lines[-1].startswith("{\"") else {}
    out["returncode"] = proc.returncode
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode:
        out["stderr"] = proc.stderr[-4000:]
    return out


def put_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    """An S3 put event notification for one object, its key URL-encoded as S3 sends it."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "logwatchd",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size,
                          "sequencer": uuid.uuid4().hex[:16].upper()}}}]}


def generate(path: Path, mb: int, spread: str) -> Path:
    """About `mb` MB of the bench's workload (a 4 MB block written over and over: fast)."""
    from bench.workload import write_jsonl

    block = write_jsonl(path.with_suffix(".block"), 16_000, seed=7, spread=spread).read_bytes()
    path.with_suffix(".block").unlink()
    with open(path, "wb") as fh:
        while fh.tell() < mb * 1_000_000:
            fh.write(block)
    return path


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] in ("run", "measure"):
        remaining = sys.argv[3] if len(sys.argv) > 3 else "900000"
        if sys.argv[1] == "run":
            run(json.loads(sys.argv[2]), int(remaining))
        else:
            print(json.dumps(measure([sys.argv[2], remaining])), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--spread", default="one-day", choices=["one-day", "one-year", "ten-year"])
    ap.add_argument("--gzip", action="store_true", help="upload the object gzipped (.jsonl.gz)")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name in [n for n in os.environ if n.startswith(("AWS_", "LOGWATCHD_"))]:
        del os.environ[name]
    tag = uuid.uuid4().hex[:8]
    os.environ.update({
        "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "LOGWATCHD_CLEAN_URI": f"s3://out-{tag}/clean", "LOGWATCHD_ERRORS_URI": f"s3://out-{tag}/errors",
        "LOGWATCHD_QUARANTINE_URI": f"s3://out-{tag}/quarantine", "LOGWATCHD_LEDGER_TABLE": f"ledger-{tag}"})
    try:
        import boto3

        from logwatchd.aws.ledger import create_table

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=f"in-{tag}")
        s3.create_bucket(Bucket=f"out-{tag}")
        create_table(f"ledger-{tag}")
        with tempfile.TemporaryDirectory() as tmp:
            path = generate(Path(tmp) / "big.jsonl", args.mb, args.spread)
            key = "bench/big.jsonl"
            if args.gzip:
                from bench.workload import jsonl_to_gzip

                path = jsonl_to_gzip(path, path.with_name("big.jsonl.gz"))
                key += ".gz"
            size = path.stat().st_size
            s3.upload_file(str(path), f"in-{tag}", key)
        # Measured from a small parent of its own: a child forked from this process (which
        # holds moto's objects) would count this process's pages in its ru_maxrss.
        proc = subprocess.run([sys.executable, "-m", "bench.aws_ingest", "measure",
                               json.dumps(put_event(f"in-{tag}", key, size)), "900000"],
                              capture_output=True, text=True, check=False,
                              cwd=Path(__file__).resolve().parent.parent)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        listed = s3.get_paginator("list_objects_v2").paginate(Bucket=f"out-{tag}", Prefix="clean/")
        out.update(object_bytes=size, spread=args.spread, gzip=args.gzip,
                   clean_objects=sum(page.get("KeyCount", 0) for page in listed))
        print(json.dumps(out), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
