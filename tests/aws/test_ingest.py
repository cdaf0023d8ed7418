"""The ingest Lambda against moto's server, through `logwatchd.aws.lambda_handler` with genuine
event shapes: outputs read back from S3 with pyarrow, counts from the ledger table."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from logwatchd.aws import lambda_handler
from logwatchd.aws.ingest import Ingest, IngestFailed
from logwatchd.aws.ledger import CatalogFile, DynamoLedger
from logwatchd.aws.s3 import new_filesystem
from logwatchd.aws.settings import Settings, SettingsError

from .conftest import AwsEnv, s3_record

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "first.json"


class Context:
    """The attributes of a Lambda context object the handler reads."""

    function_name = "logwatchd-ingest-test"

    def __init__(self, remaining_ms: int = 60_000) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# --- reading the outputs back ------------------------------------------------------------
def keys(aws: AwsEnv, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in aws.s3().get_paginator("list_objects_v2").paginate(Bucket=aws.output_bucket,
                                                                   Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def clean_table(aws: AwsEnv) -> pa.Table:
    """The clean dataset as any reader sees it (pyarrow over S3, Hive partitioning)."""
    if not keys(aws, "clean/"):
        return pa.table({})
    table = ds.dataset(f"{aws.output_bucket}/clean", filesystem=new_filesystem(), format="parquet",
                       partitioning="hive").to_table()
    return table.sort_by([("source_file", "ascending"), ("source_line", "ascending")])


def error_lines(aws: AwsEnv) -> list[dict[str, Any]]:
    s3 = aws.s3()
    rows: list[dict[str, Any]] = []
    for key in keys(aws, "errors/"):
        text = s3.get_object(Bucket=aws.output_bucket, Key=key)["Body"].read().decode()
        rows += [json.loads(line) for line in text.split("\n") if line]
    return sorted(rows, key=lambda r: (r["source_file"], r["source_line"]))


def jsonl(*records: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def records(n: int, day: int = 1, action: str = "view", tag: str = "") -> bytes:
    return jsonl(*({"timestamp": f"2026-03-{day:02d}T10:{i % 60:02d}:00Z", "user_id": f"u{tag}{i}",
                    "action": action} for i in range(n)))


def child(mode: str, event: dict[str, Any], remaining_ms: int = 900_000,
          env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The handler in a process of its own (`python -m bench.aws_ingest run|measure`)."""
    return subprocess.run([sys.executable, "-m", "bench.aws_ingest", mode, json.dumps(event),
                           str(remaining_ms)], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=timeout, env={**os.environ, **(env or {})})


def last_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the tests ---------------------------------------------------------------------------
def test_example_three_records(aws: AwsEnv) -> None:
    """The bundled example gives {'processed': 3, 'valid': 1, 'errors': 2}: one row in
    clean/date=…/<sha256>-0.parquet (schema version in its metadata), two error lines, the
    counts and the catalog in the ledger."""
    body = EXAMPLE.read_bytes()
    assert lambda_handler(aws.put("first.json", body), None) == {"processed": 3, "valid": 1, "errors": 2}
    sha = hashlib.sha256(body).hexdigest()
    [clean_key] = keys(aws, "clean/")
    assert clean_key == f"clean/date=2026-11-25/{sha}-0.parquet"
    [errors_key] = keys(aws, "errors/")
    assert errors_key.endswith(f"/{sha}.jsonl") and errors_key.startswith("errors/date=")
    [row] = clean_table(aws).to_pylist()
    assert row == {"timestamp": "2026-11-25 09:15:00", "ts": row["ts"], "day_of_week": "Wednesday",
                   "user_id": "42", "action": "login", "attributes": '{"ip":"10.0.0.7"}',
                   "source_file": "first.json", "source_line": 1, "date": "2026-11-25"}
    with new_filesystem().open_input_file(f"{aws.output_bucket}/{clean_key}") as fh:
        meta = pq.read_schema(fh).metadata
    assert meta[b"logwatchd.schema_version"] == b"1" and meta[b"logwatchd.input_sha256"] == sha.encode()
    assert [(e["source_line"], e["reason"], e.get("field")) for e in error_lines(aws)] == [
        (2, "missing_field", "timestamp"), (3, "invalid_timestamp", "timestamp")]
    ledger = DynamoLedger(aws.table)
    assert ledger.counts("2026-11-25") == {"login": 1}
    size = aws.s3().head_object(Bucket=aws.output_bucket, Key=clean_key)["ContentLength"]
    assert ledger.live_files("2026-11-25") == [
        CatalogFile("2026-11-25", clean_key.removeprefix("clean/"), 1, size, sha)]
    item = ledger.input(sha)
    assert item is not None and item["status"]["S"] == "completed" and item["outcome"]["S"] == "ok"


def test_gzip_by_suffix_and_by_magic(aws: AwsEnv) -> None:
    """A gzip object is read whether its key ends in .gz or not (the magic bytes)."""
    a = gzip.compress(records(5, day=1, tag="a"))
    b = gzip.compress(records(7, day=2, tag="b"))
    assert lambda_handler(aws.put("logs/a.jsonl.gz", a), None) == {"processed": 5, "valid": 5, "errors": 0}
    assert lambda_handler(aws.put("logs/b.jsonl", b), None) == {"processed": 7, "valid": 7, "errors": 0}
    table = clean_table(aws)
    assert table.num_rows == 12
    assert sorted(set(table["source_file"].to_pylist())) == ["logs/a.jsonl.gz", "logs/b.jsonl"]
    assert DynamoLedger(aws.table).counts("2026-03-02") == {"view": 7}


def test_malformed_objects_are_quarantined(aws: AwsEnv) -> None:
    """Not log data → a copy in quarantine/<key> with <key>.reason.json (the daemon's fields),
    nothing in clean or errors — also when rows or error lines were already being written
    (a gzip cut short after many lines; lines none of which is JSON); a different content
    under a key already quarantined does not overwrite it."""
    s3 = aws.s3()
    whole = gzip.compress(records(300_000, day=5), compresslevel=1)
    cut = whole[: len(whole) - 64]
    assert lambda_handler(aws.put("in/cut.jsonl.gz", cut), None) == {"processed": 0, "valid": 0, "errors": 0}
    garbage = b"not json\n" * 50_000
    assert lambda_handler(aws.put("in/text.json", garbage), None) == {"processed": 0, "valid": 0, "errors": 0}
    assert keys(aws, "clean/") == [] and keys(aws, "errors/") == []
    assert keys(aws, "quarantine/") == ["quarantine/in/cut.jsonl.gz", "quarantine/in/cut.jsonl.gz.reason.json",
                                        "quarantine/in/text.json", "quarantine/in/text.json.reason.json"]
    got = s3.get_object(Bucket=aws.output_bucket, Key="quarantine/in/cut.jsonl.gz")["Body"].read()
    assert got == cut
    reason = json.loads(s3.get_object(Bucket=aws.output_bucket,
                                      Key="quarantine/in/cut.jsonl.gz.reason.json")["Body"].read())
    assert set(reason) == {"reason", "detail", "at", "file", "sha256"}
    assert reason["reason"] == "corrupt_gzip" and reason["file"] == "in/cut.jsonl.gz"
    assert reason["sha256"] == hashlib.sha256(cut).hexdigest()
    text = json.loads(s3.get_object(Bucket=aws.output_bucket,
                                    Key="quarantine/in/text.json.reason.json")["Body"].read())
    assert text["reason"] == "not_json"
    item = DynamoLedger(aws.table).input(hashlib.sha256(garbage).hexdigest())
    assert item is not None and item["outcome"]["S"] == "quarantined"
    # Another broken content under the same key: kept beside the first, tagged with its hash.
    other = b"\x00\x01binary\n" * 10
    lambda_handler(aws.put("in/text.json", other), None)
    tag = hashlib.sha256(other).hexdigest()[:12]
    assert f"quarantine/in/text.{tag}.json" in keys(aws, "quarantine/")
    assert s3.get_object(Bucket=aws.output_bucket, Key="quarantine/in/text.json")["Body"].read() == garbage


def test_key_with_spaces_and_unicode(aws: AwsEnv) -> None:
    """A key with spaces, '+' and non-ASCII arrives URL-encoded; rows, error lines and the
    ledger name the object by its decoded key."""
    key = "logs/März 2026/a b+c.json"
    event = aws.put(key, EXAMPLE.read_bytes())
    assert event["Records"][0]["s3"]["object"]["key"] == "logs/M%C3%A4rz+2026/a+b%2Bc.json"
    assert lambda_handler(event, None) == {"processed": 3, "valid": 1, "errors": 2}
    assert clean_table(aws)["source_file"].to_pylist() == [key]
    assert {e["source_file"] for e in error_lines(aws)} == {key}


def test_same_event_twice_counts_once(aws: AwsEnv) -> None:
    """The same event delivered again is a duplicate: nothing written, nothing counted."""
    event = aws.put("twice.jsonl", records(40, day=3, action="login"))
    assert lambda_handler(event, None) == {"processed": 40, "valid": 40, "errors": 0}
    before = {k: aws.s3().head_object(Bucket=aws.output_bucket, Key=k)["ETag"] for k in keys(aws)}
    assert lambda_handler(event, Context()) == {"processed": 0, "valid": 0, "errors": 0}
    assert {k: aws.s3().head_object(Bucket=aws.output_bucket, Key=k)["ETag"] for k in keys(aws)} == before
    assert clean_table(aws).num_rows == 40
    assert DynamoLedger(aws.table).counts("2026-03-03") == {"login": 40}


def test_concurrent_deliveries(aws: AwsEnv) -> None:
    """The same event in two invocations at once: one processes it, the other finds it taken
    (busy: it fails, to be retried) or done; a retry is a duplicate. Rows and counts once."""
    lines = 60_000
    event = aws.put("both.jsonl", records(lines, day=4, action="click"))
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def invoke(i: int) -> None:
        barrier.wait()
        try:
            results[i] = lambda_handler(event, Context())
        except IngestFailed as exc:
            results[i] = exc

    threads = [threading.Thread(target=invoke, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [r for r in results if isinstance(r, dict) and r["processed"]]
    assert done == [{"processed": lines, "valid": lines, "errors": 0}], results
    other = next(r for r in results if not (isinstance(r, dict) and r["processed"]))
    assert other == {"processed": 0, "valid": 0, "errors": 0} or "Busy" in str(other), other
    assert lambda_handler(event, Context()) == {"processed": 0, "valid": 0, "errors": 0}
    table = clean_table(aws)
    assert table.num_rows == lines and len(set(table["source_line"].to_pylist())) == lines
    assert DynamoLedger(aws.table).counts("2026-03-04") == {"click": lines}


@pytest.mark.slow
def test_killed_after_writing_then_retried(aws: AwsEnv) -> None:
    """An invocation killed (SIGKILL) after its outputs are in S3 but before the ledger
    completes: its lease keeps a redelivery off until the lease runs out; then the retry
    rewrites the same keys with the same bytes, and counts once."""
    event = aws.put("killed.jsonl", records(500, day=6, action="login") + b"oops\n")
    proc = child("run", event, remaining_ms=1000, env={"LOGWATCHD_FAILPOINTS": "aws.outputs_written"})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    written = {k: aws.s3().head_object(Bucket=aws.output_bucket, Key=k)["ETag"] for k in keys(aws)}
    assert any(k.startswith("clean/") for k in written) and any(k.startswith("errors/") for k in written)
    ledger = DynamoLedger(aws.table)
    assert ledger.counts("2026-03-06") == {}
    with pytest.raises(IngestFailed, match="Busy"):
        lambda_handler(event, Context())
    [item] = input_items(aws)
    time.sleep(max(0.0, float(item["lease_until"]["N"]) - time.time()) + 0.2)
    assert lambda_handler(event, Context()) == {"processed": 501, "valid": 500, "errors": 1}
    assert {k: aws.s3().head_object(Bucket=aws.output_bucket, Key=k)["ETag"] for k in keys(aws)} == written
    assert clean_table(aws).num_rows == 500 and len(error_lines(aws)) == 1
    assert ledger.counts("2026-03-06") == {"login": 500}
    assert lambda_handler(event, Context()) == {"processed": 0, "valid": 0, "errors": 0}


def test_completion_cut_short_is_resumed(aws: AwsEnv) -> None:
    """A file over 70 dates needs three ledger transactions (a catalog entry, a partition and a
    count per date; 99 actions each); an invocation dying after two of them (as at a
    timeout) is retried, resumes the completion where it stopped, and every count lands once."""
    body = b"".join(jsonl({"timestamp": f"2025-{1 + d // 28:02d}-{1 + d % 28:02d}T12:00:00Z",
                           "user_id": "u", "action": "view"}) for d in range(70))
    event = aws.put("wide.jsonl", body)
    ingest = Ingest.for_settings(Settings.from_env())
    client = ingest.ledger.client
    real = client.transact_write_items
    calls = [0]

    class Timeout(Exception):
        pass

    def dying(**kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            raise Timeout("the invocation ran out of time")
        return real(**kwargs)

    client.transact_write_items = dying
    try:
        with pytest.raises(IngestFailed, match="Timeout"):
            lambda_handler(event, Context())
    finally:
        client.transact_write_items = real
    item = DynamoLedger(aws.table).input(hashlib.sha256(body).hexdigest())
    assert item is not None and item["status"]["S"] == "in_progress" and item["batches_done"]["N"] == "2"
    assert lambda_handler(event, Context()) == {"processed": 70, "valid": 70, "errors": 0}
    ledger = DynamoLedger(aws.table)
    days = sorted({r["date"] for r in clean_table(aws).to_pylist()})
    assert len(days) == 70
    assert all(ledger.counts(d) == {"view": 1} for d in days)
    assert ledger.partitions() == dict.fromkeys(days, 1)


def test_sqs_batch_of_five_one_fails(aws: AwsEnv) -> None:
    """S3 → SQS → Lambda as deployed: five objects' notifications (and S3's test event) in one
    batch; the object deleted before the invocation is the only failed messageId."""
    sqs = __import__("boto3").client("sqs")
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.s3().put_bucket_notification_configuration(
        Bucket=aws.input_bucket, NotificationConfiguration={"QueueConfigurations": [
            {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    for i in range(5):
        aws.put(f"batch/{i}.jsonl", records(10 + i, day=7, tag=str(i)))
    aws.s3().delete_object(Bucket=aws.input_bucket, Key="batch/3.jsonl")
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                  WaitTimeSeconds=0).get("Messages", [])
        messages += got
        if len(messages) >= 6:
            break
    assert len(messages) == 6
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"} for m in messages]}
    deleted = [m["MessageId"] for m in messages
               if [unquote_plus(r["s3"]["object"]["key"]) for r in json.loads(m["Body"]).get("Records", [])]
               == ["batch/3.jsonl"]]
    assert len(deleted) == 1
    assert lambda_handler(event, Context()) == {"batchItemFailures": [{"itemIdentifier": deleted[0]}]}
    table = clean_table(aws)
    assert sorted(set(table["source_file"].to_pylist())) == [f"batch/{i}.jsonl" for i in (0, 1, 2, 4)]
    assert table.num_rows == 10 + 11 + 12 + 14
    # The queue's retry of the same batch: the four are duplicates, the gone one fails again.
    assert lambda_handler(event, Context()) == {"batchItemFailures": [{"itemIdentifier": deleted[0]}]}
    assert DynamoLedger(aws.table).counts("2026-03-07") == {"view": 47}


def test_outputs_and_temporary_names_are_not_taken(aws: AwsEnv) -> None:
    """An object under one of the output locations (a notification on the output bucket) or
    with a name the daemon's inbox would not take is ignored: nothing written, no failure."""
    s3 = aws.s3()
    s3.put_object(Bucket=aws.output_bucket, Key="errors/date=2026-01-01/x.jsonl", Body=records(3))
    own = {"Records": [s3_record(aws.output_bucket, "errors/date%3D2026-01-01/x.jsonl")]}
    assert lambda_handler(own, None) == {"processed": 0, "valid": 0, "errors": 0}
    for name in ("upload.jsonl.part", ".hidden.json", "notes.txt"):
        assert lambda_handler(aws.put(f"in/{name}", records(3)), None) == {"processed": 0, "valid": 0, "errors": 0}
    assert keys(aws) == ["errors/date=2026-01-01/x.jsonl"]
    assert input_items(aws) == []


def test_s3_test_event_is_ignored(aws: AwsEnv) -> None:
    """S3's test event, direct or in an SQS message, is no failure and writes nothing."""
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-01-01T00:00:00.000Z",
                  "Bucket": aws.input_bucket, "RequestId": "X", "HostId": "Y"}
    assert lambda_handler(test_event, None) == {"processed": 0, "valid": 0, "errors": 0}
    sqs = {"Records": [{"messageId": "m1", "receiptHandle": "r", "body": json.dumps(test_event),
                        "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
                        "awsRegion": "us-east-1"},
                       {"messageId": "m2", "receiptHandle": "r", "body": "{not json",
                        "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
                        "awsRegion": "us-east-1"}]}
    assert lambda_handler(sqs, Context()) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert keys(aws) == []


def test_object_replaced_between_reads_is_noticed(aws: AwsEnv) -> None:
    """The object is pinned between the hash and the processing read (its ETag): replaced in
    between, the invocation fails with nothing written and its lease released; the retry
    processes the new content."""
    event = aws.put("moving.jsonl", records(5, day=8))
    ingest = Ingest.for_settings(Settings.from_env())
    real = ingest.ledger.claim

    def claim_then_replace(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        aws.s3().put_object(Bucket=aws.input_bucket, Key="moving.jsonl", Body=records(9, day=9))
        return out

    ingest.ledger.claim = claim_then_replace  # type: ignore[method-assign]
    try:
        with pytest.raises(IngestFailed, match="replaced since it was first read"):
            lambda_handler(event, Context())
    finally:
        ingest.ledger.claim = real  # type: ignore[method-assign]
    assert keys(aws) == []
    [item] = input_items(aws)
    assert item["status"]["S"] == "in_progress" and float(item["lease_until"]["N"]) == 0
    assert lambda_handler(event, Context()) == {"processed": 9, "valid": 9, "errors": 0}
    assert DynamoLedger(aws.table).counts("2026-03-09") == {"view": 9}


def test_rows_equal_what_the_daemon_writes(aws: AwsEnv, env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file through S3 and through `logwatchd process`: every column of every row,
    and every error line, equal (source_file aside: the key there, the file name here);
    in a time zone with DST, so the local rules are the same code too."""
    rows = [
        {"timestamp": "2026-03-29T01:30:00Z", "user_id": 1, "action": "login", "extra": {"k": [1, 2.5]}},
        {"timestamp": "2026-10-25 02:30:00", "user_id": "u2", "action": "view"},   # ambiguous locally
        {"timestamp": "2026-03-29 02:30:00", "user_id": "u2", "action": "view"},   # skipped locally
        {"timestamp": 1764000000, "user_id": "u3", "action": "login"},
        {"timestamp": 1764000000123, "user_id": "u4", "action": "click", "city": "Zürich 東京"},
        {"timestamp": "2026-12-31T23:30:00-02:00", "user_id": "u5", "action": "logout"},
        {"user_id": "u6", "action": "login"},
        {"timestamp": "2026-02-30T00:00:00Z", "user_id": "u", "action": "x"},
        {"timestamp": "2026-01-01T00:00:00Z", "user_id": True, "action": "x"},
        {"timestamp": "2026-01-01T00:00:00Z", "user_id": "u", "action": ""},
        '{"timestamp":"2026-01-01T00:00:00Z","user_id":"u","action":"a","n":123456789012345678901234567890}',
        "[1, 2]", "not json", "NaN", "",
    ]
    body = b"\xef\xbb\xbf" + jsonl(*rows) * 300 + b'{"timestamp":1,"user_id":"u","action":"crlf"}\r\n' \
        + b"\xff\xfe not utf-8\n" + b'{"x": "' + b"y" * (1 << 20) + b'"}\n'
    key = "incoming/2026/mixed.jsonl"
    env.write_config(transform={"timezone": "Europe/Berlin"})
    local = env.base / "mixed.jsonl"
    local.write_bytes(body)
    [summary] = env.process(local)
    monkeypatch.setenv("LOGWATCHD_TIMEZONE", "Europe/Berlin")
    got = lambda_handler(aws.put(key, body), None)
    assert got == {k: summary[k] for k in ("processed", "valid", "errors")} and got["valid"] > 0

    daemon = ds.dataset(env.path("clean"), format="parquet", partitioning="hive").to_table()
    daemon = daemon.sort_by([("source_line", "ascending")])
    lam = clean_table(aws)
    assert lam.schema.remove_metadata() == daemon.schema.remove_metadata()
    assert lam["source_file"].to_pylist() == [key] * lam.num_rows
    assert daemon["source_file"].to_pylist() == ["mixed.jsonl"] * daemon.num_rows
    for name in daemon.column_names:
        if name != "source_file":
            assert lam[name].to_pylist() == daemon[name].to_pylist(), name

    def strip(e: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in e.items() if k not in ("ingested_at", "source_file")}

    assert [strip(e) for e in error_lines(aws)] == [strip(e) for e in env.error_rows()]
    assert len(env.error_rows()) == got["errors"]


def test_missing_or_bad_variable_is_named_and_nothing_written(aws: AwsEnv,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or malformed variable fails the first invocation with its name, before
    anything is read or written."""
    event = aws.put("a.json", EXAMPLE.read_bytes())
    cases = [("LOGWATCHD_LEDGER_TABLE", None), ("LOGWATCHD_CLEAN_URI", "https://bucket/clean"),
             ("LOGWATCHD_ERRORS_URI", "s3://Bad_Bucket/errors"), ("LOGWATCHD_TIMEZONE", "Mars/Olympus"),
             ("LOGWATCHD_QUARANTINE_URI", f"{aws.errors_uri}/q")]
    for name, value in cases:
        with monkeypatch.context() as m:
            if value is None:
                m.delenv(name)
            else:
                m.setenv(name, value)
            with pytest.raises(SettingsError, match=name):
                lambda_handler(event, Context())
    assert keys(aws) == []
    assert aws.dynamodb().scan(TableName=aws.table)["Count"] == 0


def test_import_needs_no_variables_nor_boto3() -> None:
    """`import logwatchd.aws` and its ingest module need no variable and load neither boto3
    nor pyarrow (cold start); the import time is printed."""
    code = ("import json, sys, time\n"
            "t = time.perf_counter()\n"
            "import logwatchd.aws, logwatchd.aws.ingest\n"
            "ms = (time.perf_counter() - t) * 1000\n"
            "print(json.dumps({'ms': ms, 'boto3': 'boto3' in sys.modules,\n"
            "                  'pyarrow': 'pyarrow' in sys.modules}))\n")
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGWATCHD_"))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=clean_env, timeout=60)
    out = json.loads(proc.stdout)
    assert out["boto3"] is False and out["pyarrow"] is False
    print(f"cold import of logwatchd.aws.ingest: {out['ms']:.0f} ms")


# --- metrics -----------------------------------------------------------------------------
# The CloudWatch Embedded Metric Format specification, as a JSON Schema: the root object's
# `_aws` member with a millisecond Timestamp and its metric directives.
UNITS = ["Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
         "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
         "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
         "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
         "Gigabits/Second", "Terabits/Second", "Count/Second", "None"]
EMF_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["_aws"],
    "properties": {"_aws": {
        "type": "object",
        "required": ["Timestamp", "CloudWatchMetrics"],
        "properties": {
            "Timestamp": {"type": "integer", "minimum": 0},
            "CloudWatchMetrics": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["Namespace", "Dimensions", "Metrics"],
                "additionalProperties": False,
                "properties": {
                    "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024,
                                  "pattern": "^[^:].*$"},
                    "Dimensions": {"type": "array", "items": {
                        "type": "array", "maxItems": 30, "uniqueItems": True,
                        "items": {"type": "string", "minLength": 1, "maxLength": 250}}},
                    "Metrics": {"type": "array", "maxItems": 100, "items": {
                        "type": "object", "required": ["Name"], "additionalProperties": False,
                        "properties": {"Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                       "Unit": {"enum": UNITS},
                                       "StorageResolution": {"enum": [1, 60]}}}},
                }}},
        }}},
}


def emf_lines(text: str) -> list[dict[str, Any]]:
    return [doc for doc in (json.loads(line) for line in text.splitlines() if line.startswith("{"))
            if "_aws" in doc]


def test_emf_lines_follow_the_specification(aws: AwsEnv, capsys: pytest.CaptureFixture[str]) -> None:
    """One EMF line per file on stdout (processed, quarantined, duplicate), valid against the
    specification: every metric and dimension a top-level member of the right type."""
    import jsonschema

    ok = aws.put("a.json", EXAMPLE.read_bytes())
    capsys.readouterr()
    lambda_handler(ok, Context())
    lambda_handler(aws.put("bad.json", b"\x00\x01\x02 binary\n"), Context())
    lambda_handler(ok, Context())
    docs = emf_lines(capsys.readouterr().out)
    assert len(docs) == 3
    validator = jsonschema.Draft202012Validator(EMF_SCHEMA)
    validator.check_schema(EMF_SCHEMA)
    for doc in docs:
        validator.validate(doc)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "logwatchd"
            for dims in directive["Dimensions"]:
                assert all(isinstance(doc.get(d), str) for d in dims), dims
            for metric in directive["Metrics"]:
                value = doc.get(metric["Name"])
                assert isinstance(value, (int, float)) and not isinstance(value, bool), metric
        assert abs(doc["_aws"]["Timestamp"] - time.time() * 1000) < 60_000
        assert doc["Function"] == Context.function_name
    names = [m["Name"] for m in docs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names == ["Processed", "Valid", "Errors", "Quarantined", "DurationMs"]
    values = [{k: d[k] for k in ("status", "Processed", "Valid", "Errors", "Quarantined")} for d in docs]
    assert values == [
        {"status": "ok", "Processed": 3, "Valid": 1, "Errors": 2, "Quarantined": 0},
        {"status": "quarantined", "Processed": 0, "Valid": 0, "Errors": 0, "Quarantined": 1},
        {"status": "duplicate", "Processed": 0, "Valid": 0, "Errors": 0, "Quarantined": 0}]


# --- memory ------------------------------------------------------------------------------
def big_object(path: Path, size: int) -> Path:
    """About `size` bytes of JSON Lines over 30 dates, 1 in 20 lines invalid."""
    lines = []
    for i in range(4000):
        if i % 20 == 7:
            lines.append(json.dumps({"timestamp": "2026-02-30T00:00:00Z", "user_id": f"u{i}",
                                     "action": "view"}))
        else:
            lines.append(json.dumps({
                "timestamp": f"2026-04-{1 + i % 30:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
                "user_id": f"user-{i * 7919 % 100_000}", "action": ["login", "view", "click"][i % 3],
                "ip": f"10.0.{i % 256}.{i * 31 % 256}", "path": f"/api/v1/items/{i * 104729}",
                "latency_ms": i % 997}))
    block = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as fh:
        while fh.tell() < size:
            fh.write(block)
    return path


@pytest.mark.slow
def test_200mb_object_with_bounded_memory(aws: AwsEnv, tmp_path: Path) -> None:
    """A 200 MB object is streamed: the handler's peak RSS (a process of its own) exceeds its
    peak on a 1 MB object of the same records by less than half the object's size, and
    stays under 384 MiB (a 512 MB function)."""
    peaks = {}
    for size in (1_000_000, 200_000_000):
        path = big_object(tmp_path / f"big-{size}.jsonl", size)
        key = f"big/{size}.jsonl"
        aws.s3().upload_file(str(path), aws.input_bucket, key)
        event = {"Records": [s3_record(aws.input_bucket, quote_plus(key, safe="/"), path.stat().st_size)]}
        out = last_json(child("measure", event, timeout=600))
        assert out["returncode"] == 0, out
        assert out["result"]["processed"] == out["result"]["valid"] + out["result"]["errors"], out
        assert out["result"]["errors"] == out["result"]["processed"] // 20, out
        peaks[size] = out["peak_rss_bytes"]
        print(f"{path.stat().st_size / 1e6:.0f} MB object: handler {out['seconds']} s, "
              f"peak RSS {out['peak_rss_bytes'] / 2**20:.0f} MiB")
        path.unlink()
    assert peaks[200_000_000] - peaks[1_000_000] < 100_000_000, peaks
    assert peaks[200_000_000] < 384 * 2**20, peaks


def test_another_time_zone_on_the_same_table_is_refused(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §9: the zone is recorded with the data; starting in another one is refused with
    a message saying how to migrate — by the ingest and the API functions — and nothing is
    written."""
    from logwatchd.aws.api import build_handler
    from logwatchd.aws.ledger import ZoneMismatch
    from logwatchd.aws.settings import Settings

    from .test_api import http_event as api_event

    first = b'{"timestamp": "2026-11-25T12:00:00Z", "user_id": "u", "action": "login"}\n'
    assert lambda_handler(aws.put("a.jsonl", first), None)["valid"] == 1
    monkeypatch.setenv("LOGWATCHD_TIMEZONE", "Pacific/Kiritimati")
    before = aws.s3().list_objects_v2(Bucket=aws.output_bucket).get("KeyCount")
    with pytest.raises(ZoneMismatch, match="LOGWATCHD_TIMEZONE.*'UTC'.*new table"):
        lambda_handler(aws.put("b.jsonl", first.replace(b'"u"', b'"v"')), None)
    answer = build_handler(Settings.from_env())(api_event("/counts", "date=2026-11-25"), None)
    assert answer["statusCode"] == 503 and "LOGWATCHD_TIMEZONE" in json.loads(answer["body"])["error"]
    assert aws.s3().list_objects_v2(Bucket=aws.output_bucket).get("KeyCount") == before
    monkeypatch.setenv("LOGWATCHD_TIMEZONE", "UTC")
    assert lambda_handler(aws.put("b.jsonl", first.replace(b'"u"', b'"v"')), None)["valid"] == 1


def test_a_malformed_object_with_a_1024_byte_key_is_quarantined_under_keys_s3_takes(aws: AwsEnv) -> None:
    """S3 keys hold 1,024 bytes: `quarantine/<key>.reason.json` of a 1,024-byte key would not
    (moto takes it; S3 answers KeyTooLongError, and the object would fail until the
    dead-letter queue). The copy gets a shorter name; its sidecar keeps the key whole."""
    key = "d/" + "ü" * 400 + "k" * (1024 - 2 - 800 - 9) + ".jsonl.gz"
    assert len(key.encode()) == 1024
    lambda_handler(aws.put(key, b"\x00\x01 not log data at all"), None)
    listed = aws.s3().list_objects_v2(Bucket=aws.output_bucket, Prefix="quarantine/")["Contents"]
    names = sorted(o["Key"] for o in listed)
    assert len(names) == 2 and all(len(n.encode()) <= 1024 for n in names), [len(n.encode()) for n in names]
    copy, sidecar = names
    assert sidecar == copy + ".reason.json" and copy.endswith(".jsonl.gz")
    doc = json.loads(aws.s3().get_object(Bucket=aws.output_bucket, Key=sidecar)["Body"].read())
    assert doc["file"] == key and doc["reason"]


def input_items(aws: AwsEnv) -> list[dict[str, Any]]:
    """The ledger's items but the table's recorded time zone (written at the first ingest)."""
    items = aws.dynamodb().scan(TableName=aws.table, ConsistentRead=True)["Items"]
    return [i for i in items if i["pk"]["S"] != "meta"]


def test_a_gzip_bomb_is_quarantined_past_the_configured_bound(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """LOGWATCHD_MAX_DECOMPRESSED_BYTES is the daemon's `ingest.max_decompressed_bytes`: a
    small object expanding past it is quarantined (decompressed_too_large) instead of
    running the function out of time; a malformed value is refused, naming the variable."""
    from logwatchd.aws.settings import SettingsError

    monkeypatch.setenv("LOGWATCHD_MAX_DECOMPRESSED_BYTES", "bad")
    with pytest.raises(SettingsError, match="LOGWATCHD_MAX_DECOMPRESSED_BYTES"):
        lambda_handler(aws.put("bomb.jsonl.gz", gzip.compress(b"\n" * 100)), None)
    monkeypatch.setenv("LOGWATCHD_MAX_DECOMPRESSED_BYTES", str(1 << 20))
    bomb = gzip.compress(b"\n" * (4 << 20), 9)
    assert len(bomb) < 10_000
    assert lambda_handler(aws.put("bomb.jsonl.gz", bomb), None) == {"processed": 0, "valid": 0, "errors": 0}
    names = [o["Key"] for o in aws.s3().list_objects_v2(Bucket=aws.output_bucket)["Contents"]]
    assert names == ["quarantine/bomb.jsonl.gz", "quarantine/bomb.jsonl.gz.reason.json"]
    doc = json.loads(aws.s3().get_object(Bucket=aws.output_bucket,
                                         Key="quarantine/bomb.jsonl.gz.reason.json")["Body"].read())
    assert doc["reason"] == "decompressed_too_large"
