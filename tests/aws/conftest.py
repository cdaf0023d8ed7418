"""moto in server mode (real HTTP on loopback), so boto3 and pyarrow's S3 client both talk to
it exactly as they would to AWS: `AWS_ENDPOINT_URL` is the only switch."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("moto", reason="the AWS tests need moto: pip install -e '.[test]'")
pytest.importorskip("boto3", reason="the AWS tests need boto3: pip install -e '.[aws]'")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the session; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class AwsEnv:
    """Buckets and a ledger table of their own for one test, and the variables naming them."""

    endpoint: str
    input_bucket: str
    output_bucket: str
    table: str

    @property
    def clean_uri(self) -> str:
        return f"s3://{self.output_bucket}/clean"

    @property
    def errors_uri(self) -> str:
        return f"s3://{self.output_bucket}/errors"

    @property
    def quarantine_uri(self) -> str:
        return f"s3://{self.output_bucket}/quarantine"

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3")

    def dynamodb(self) -> Any:
        import boto3

        return boto3.client("dynamodb")

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        """Uploads an object; the S3 put event notification for it, as S3 sends it."""
        from urllib.parse import quote_plus

        self.s3().put_object(Bucket=self.input_bucket, Key=key, Body=body)
        return {"Records": [s3_record(self.input_bucket, quote_plus(key, safe="/"), len(body))]}


def s3_record(bucket: str, encoded_key: str, size: int = 0) -> dict[str, Any]:
    """One record of an S3 event notification (its key URL-encoded, as S3 sends it)."""
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "logwatchd",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": encoded_key, "size": size, "sequencer": uuid.uuid4().hex[:16]}},
    }


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> AwsEnv:
    """Fresh buckets and ledger table on the moto server, and the handler's variables set."""
    import boto3

    for name in list(os.environ):
        if name.startswith(("AWS_", "LOGWATCHD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    tag = uuid.uuid4().hex[:10]
    env = AwsEnv(moto_server, f"input-{tag}", f"output-{tag}", f"ledger-{tag}")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=env.input_bucket)
    s3.create_bucket(Bucket=env.output_bucket)
    from logwatchd.aws.ledger import create_table

    create_table(env.table)
    monkeypatch.setenv("LOGWATCHD_CLEAN_URI", env.clean_uri)
    monkeypatch.setenv("LOGWATCHD_ERRORS_URI", env.errors_uri)
    monkeypatch.setenv("LOGWATCHD_QUARANTINE_URI", env.quarantine_uri)
    monkeypatch.setenv("LOGWATCHD_LEDGER_TABLE", env.table)
    return env
