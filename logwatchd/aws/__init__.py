"""The same processing core as an AWS Lambda (SPEC §11): S3 → Lambda → S3 → CloudWatch → API Gateway.

Install with `pip install 'logwatchd[aws]'`. Importing this package needs no environment
variables and imports no AWS library: each handler loads what it needs on its first call,
which keeps a cold start short and a missing variable a clear error at the first invocation.

    lambda_handler   S3 event notifications, direct or wrapped in SQS messages (ingest.py)
    api_handler      API Gateway HTTP API (payload 2.0) → the daemon's Flask app (api.py)
    compact_handler  scheduled compaction over S3 (compact.py)

Only what is AWS-specific lives here: the reader, record rules, Parquet and error writers,
dataset layout and compaction are the daemon's own modules.
"""

from __future__ import annotations

from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from .ingest import handle

    return handle(event, context)


def api_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from .api import handle

    return handle(event, context)


def compact_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from .compact import handle

    return handle(event, context)
