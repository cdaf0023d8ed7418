#!/usr/bin/env python3
"""The cloud pipeline on one machine: S3 put → ingest Lambda → S3 (Parquet, errors) → API.

Starts moto in server mode in this process (real HTTP on loopback, so boto3 and pyarrow's
S3 client both talk to it), creates the buckets and the ledger table, uploads the bundled
example, invokes `logwatchd.aws.lambda_handler` with a genuine S3 put event, reads the
clean Parquet back from S3, and asks `/logins_today` and `/counts` through
`logwatchd.aws.api_handler` as API Gateway would. Needs only `pip install 'logwatchd[aws]'`
and moto (`pip install 'moto[server]'`); no AWS account, credentials or variables.

    python examples/pipeline_moto.py
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

EXAMPLE = Path(__file__).resolve().parent / "first.json"
INPUT_BUCKET, OUTPUT_BUCKET, TABLE = "logwatchd-input", "logwatchd-output", "logwatchd-ledger"


def main() -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: no line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        run(f"http://{host}:{port}")
    finally:
        server.stop()


def run(endpoint: str) -> None:
    # Everything points at the local moto server: no real credentials are used or needed.
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto",
        "LOGWATCHD_CLEAN_URI": f"s3://{OUTPUT_BUCKET}/clean",
        "LOGWATCHD_ERRORS_URI": f"s3://{OUTPUT_BUCKET}/errors",
        "LOGWATCHD_QUARANTINE_URI": f"s3://{OUTPUT_BUCKET}/quarantine",
        "LOGWATCHD_LEDGER_TABLE": TABLE, "LOGWATCHD_TIMEZONE": "UTC",
    })
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    import boto3
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from logwatchd.aws import api_handler, lambda_handler
    from logwatchd.aws.ledger import create_table

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=INPUT_BUCKET)
    s3.create_bucket(Bucket=OUTPUT_BUCKET)
    create_table(TABLE)

    key = "uploads/first.json"
    body = EXAMPLE.read_bytes()
    s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body)
    event = {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": INPUT_BUCKET, "arn": f"arn:aws:s3:::{INPUT_BUCKET}"},
               "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": len(body)}}}]}
    result = lambda_handler(event, LambdaContext("logwatchd-ingest"))
    print(f"Lambda result: {result}")

    fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="moto", secret_key="moto",
                           region="us-east-1", scheme="http")
    objects = [info.path for info in fs.get_file_info(pafs.FileSelector(f"{OUTPUT_BUCKET}/clean", recursive=True))
               if info.is_file and info.path.endswith(".parquet")]
    table = pq.ParquetDataset(objects, filesystem=fs, partitioning="hive").read()
    local = Path(tempfile.mkdtemp(prefix="logwatchd-demo-")) / "clean.parquet"
    pq.write_table(table, local)
    print(f"Wrote local copy: {local} ({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    for row in table.select(["timestamp", "user_id", "action", "source_file", "date"]).to_pylist():
        print(f"  {row}")

    day = str(table.column("date")[0]) if table.num_rows else "2026-11-25"
    for path, query in (("/logins_today", ""), ("/counts", f"date={day}")):
        answer = api_handler(http_event(path, query), LambdaContext("logwatchd-api"))
        print(f"GET {path}{'?' + query if query else ''} -> {answer['statusCode']} {json.loads(answer['body'])}")


def http_event(path: str, query: str = "") -> dict:
    """An API Gateway HTTP API (payload format 2.0) request event."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"host": "example.execute-api.us-east-1.amazonaws.com", "accept": "application/json"},
        "queryStringParameters": dict(urllib.parse.parse_qsl(query)) or None,
        "requestContext": {"accountId": "123456789012", "apiId": "example", "domainName": "example.execute-api.us-east-1.amazonaws.com",
                           "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "pipeline_moto"},
                           "requestId": "demo", "routeKey": "$default", "stage": "$default",
                           "time": "30/Nov/2026:00:00:00 +0000", "timeEpoch": 0},
        "isBase64Encoded": False,
    }


class LambdaContext(SimpleNamespace):
    """What the handlers read of the Lambda context object."""

    def __init__(self, function_name: str) -> None:
        super().__init__(function_name=function_name, aws_request_id=os.urandom(8).hex(),
                         memory_limit_in_mb=1024,
                         invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}")

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


if __name__ == "__main__":
    main()
