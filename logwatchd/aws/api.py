"""The count API as a Lambda function: API Gateway HTTP API (payload 2.0) → apig-wsgi → the
daemon's Flask app (webapp.py) over the DynamoDB ledger.

The same routes, answers and errors as the daemon's endpoint (SPEC §6), minus what describes
a daemon process (/stats, /metrics, the status page: 404 here). /healthz checks that the
ledger table answers a read; any DynamoDB or AWS client error answers 503 as an unreadable
SQLite ledger does. The settings are read and the app built at the first invocation, then
reused by every invocation the container serves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from apig_wsgi import make_lambda_handler
from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask

from .. import logs
from ..openapi import lambda_openapi_document
from ..records import utc_now
from ..webapp import Clock, create_count_app
from .ledger import DynamoLedger, ZoneMismatch
from .settings import Settings

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

# An HTTP answer should fail fast rather than wait on DynamoDB: at most 3 attempts of
# 1 s to connect and 3 s to read stay within the function's timeout (aws/template.yaml).
CLIENT_CONFIG: dict[str, Any] = {"connect_timeout": 1, "read_timeout": 3,
                                 "retries": {"mode": "standard", "max_attempts": 3}}

_handler: Handler | None = None


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """`logwatchd.aws.api_handler`: the first call reads the settings and builds the app."""
    global _handler
    if _handler is None:
        settings = Settings.from_env()  # raises SettingsError naming a missing or bad variable
        logs.configure("info", "json")
        _handler = build_handler(settings)
    return _handler(event, context)


# Printable ASCII stays as sent (existing %XX escapes included); anything else is %-encoded
# as UTF-8, as a browser would: WSGI carries the query string as latin-1 text, so a client
# sending raw UTF-8 (curl does) would otherwise fail in the adapter instead of getting a 400.
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def _ascii_query(event: dict[str, Any]) -> dict[str, Any]:
    raw = event.get("rawQueryString")
    if isinstance(raw, str) and not raw.isascii():
        event = {**event, "rawQueryString": quote(raw, safe=_QUERY_SAFE)}
    return event


def build_handler(settings: Settings, *, client: Any = None, clock: Clock = utc_now) -> Handler:
    """The Lambda handler of the app over the ledger table the settings name."""
    adapter = make_lambda_handler(create_lambda_app(settings, client=client, clock=clock))

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return adapter(_ascii_query(event), context)
    return handler


def create_lambda_app(settings: Settings, *, client: Any = None, clock: Clock = utc_now) -> Flask:
    """The count app over the ledger table (a Flask app; `client`: a boto3 DynamoDB client)."""
    ledger = ZoneChecked(DynamoLedger(settings.ledger_table, client or _new_client()),
                         settings.timezone)
    transform = settings.config().transform

    def health() -> dict[str, Any]:
        day = clock().astimezone(transform.zone).date().isoformat()
        try:
            # The very read /logins_today makes: the table exists, and the role may read it.
            ledger.counts(day)
        except Exception as exc:  # noqa: BLE001 - any failure to read is "not answering"
            reason = f"the ledger table does not answer: {exc}"
            return {"status": "failing", "reasons": [f"ledger: {reason}"],
                    "checks": {"ledger": {"ok": False, "detail": reason}}}
        return {"status": "ok", "reasons": [], "checks": {"ledger": {"ok": True}}}

    return create_count_app(ledger, transform, clock=clock, health=health,
                            document=lambda_openapi_document(),
                            unavailable=(ClientError, BotoCoreError, ZoneMismatch),
                            log_hint="the function's log")


class ZoneChecked:
    """The ledger's counts, once the table is known to be in the configured zone: counts of
    one zone are never answered as another's days (503 naming LOGWATCHD_TIMEZONE)."""

    def __init__(self, ledger: DynamoLedger, zone: str) -> None:
        self.ledger = ledger
        self.zone = zone
        self._checked = False

    def _check(self) -> None:
        if not self._checked:
            self.ledger.check_zone(self.zone, record=False)
            self._checked = True

    def count(self, day: str, action: str) -> int:
        self._check()
        return self.ledger.count(day, action)

    def counts(self, day: str) -> dict[str, int]:
        self._check()
        return self.ledger.counts(day)


def _new_client() -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    # AWS_ENDPOINT_URL and the region come from the environment, as for every client.
    return boto3.client("dynamodb", config=BotoConfig(**CLIENT_CONFIG))
