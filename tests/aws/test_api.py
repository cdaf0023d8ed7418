"""The count API Lambda function against moto's server: genuine API Gateway HTTP API payload
2.0 events through `logwatchd.aws.api_handler`, counts written by `DynamoLedger.complete`,
and the answers compared with the daemon's own app for the same requests."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

import logwatchd.aws
import logwatchd.aws.api as aws_api
from logwatchd.api import create_app
from logwatchd.aws.ledger import DynamoLedger
from logwatchd.aws.settings import Settings, SettingsError
from logwatchd.config import parse_config
from logwatchd.metrics import Metrics
from logwatchd.openapi import LAMBDA_PATHS, lambda_openapi_document
from logwatchd.runtime import open_runtime

from .conftest import AwsEnv

NOON = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
# A synchronous Lambda invocation answers at most 6 MB (the response JSON as a whole).
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024


def http_event(path: str, query: str = "", method: str = "GET", body: str | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, as the `$default` route sends it."""
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"accept": "*/*", "host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
                    "user-agent": "curl/8.5.0", "x-amzn-trace-id": "Root=1-67890abc-0123456789abcdef01234567",
                    "x-forwarded-for": "203.0.113.7", "x-forwarded-port": "443",
                    "x-forwarded-proto": "https"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com", "domainPrefix": "a1b2c3d4e5",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
            "requestId": uuid.uuid4().hex[:16], "routeKey": "$default", "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"), "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        # API Gateway joins repeated parameters with commas here; rawQueryString keeps them apart.
        params: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            params[name] = f"{params[name]},{value}" if name in params else value
        event["queryStringParameters"] = params
    if body is not None:
        event["headers"]["content-type"] = "application/json"
        event["body"] = body
    return event


def body_of(response: dict[str, Any]) -> bytes:
    raw = response["body"]
    return base64.b64decode(raw) if response["isBase64Encoded"] else raw.encode()


def call(handler: Any, path: str, query: str = "", method: str = "GET",
         body: str | None = None) -> tuple[int, dict[str, str], Any]:
    """Invokes the handler; (status, headers, JSON body or None)."""
    response = handler(http_event(path, query, method, body), None)
    json.dumps(response)  # what the Lambda runtime does with it: plain JSON only
    data = body_of(response)
    is_json = response["headers"].get("content-type") == "application/json"
    return response["statusCode"], response["headers"], json.loads(data) if is_json else None


@pytest.fixture
def fresh(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`logwatchd.aws.api_handler` as in a new container: nothing built yet; logging restored after."""
    import structlog

    saved = structlog.get_config()
    monkeypatch.setattr(aws_api, "_handler", None)
    yield
    structlog.configure(**saved)


@pytest.fixture
def handler(aws: AwsEnv) -> Any:
    """The app over the fixture's table, the clock at NOON (for /logins_today use `fresh`)."""
    return aws_api.build_handler(Settings.from_env(), clock=lambda: NOON)


def complete(aws: AwsEnv, counts: dict[tuple[str, str], int]) -> None:
    """Completes one input in the ledger table with these (date, action) counts."""
    ledger = DynamoLedger(aws.table)
    sha = uuid.uuid4().hex * 2
    claim = ledger.claim(sha, key="in.jsonl", bucket=aws.input_bucket, owner="test", lease_seconds=60)
    assert claim.state == "claimed"
    total = sum(counts.values())
    ledger.complete(sha, owner="test", outcome="ok", counts=counts,
                    summary={"processed": total, "valid": total, "errors": 0})


@pytest.fixture
def daemon_client(tmp_path: Path) -> Iterator[FlaskClient]:
    """The daemon's own app over an empty SQLite ledger, to compare answers with."""
    config = parse_config({}, base_dir=tmp_path)
    runtime = open_runtime(config)
    yield create_app(runtime.ledger, config, Metrics(), clock=lambda: NOON).test_client()
    runtime.close()


# --- the counts ------------------------------------------------------------------------------
def test_logins_today_counts_today_in_the_configured_zone(aws: AwsEnv, fresh: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """/logins_today answers the logins of today in LOGWATCHD_TIMEZONE, not of today in UTC."""
    # At any moment one of these zones (UTC+14, UTC-12) has another date than UTC.
    utc_today = datetime.now(UTC).date()
    zone_name = next(z for z in ("Pacific/Kiritimati", "Etc/GMT+12")
                     if datetime.now(ZoneInfo(z)).date() != utc_today)
    monkeypatch.setenv("LOGWATCHD_TIMEZONE", zone_name)
    for _attempt in range(2):  # a request that crosses the zone's midnight is asked again
        today = datetime.now(ZoneInfo(zone_name)).date()
        complete(aws, {(today.isoformat(), "login"): 3, (today.isoformat(), "Login"): 4,
                       (today.isoformat(), "logout"): 5, (utc_today.isoformat(), "login"): 7,
                       ((today - timedelta(days=1)).isoformat(), "login"): 11})
        complete(aws, {(today.isoformat(), "login"): 2})
        status, headers, body = call(logwatchd.aws.api_handler, "/logins_today")
        if body["date"] == today.isoformat():
            break
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert body == {"logins_today": 5, "date": today.isoformat(), "timezone": zone_name}


def test_counts_by_date_and_by_action(aws: AwsEnv, handler: Any) -> None:
    """/counts?date= gives every action of that date; &action= one action's count, 0 when absent."""
    complete(aws, {("2026-03-10", "login"): 2, ("2026-03-10", "view"): 1,
                   ("2026-03-10", "a b&c=d ✓"): 1, ("2026-03-11", "login"): 9})
    complete(aws, {("2026-03-10", "login"): 1, ("2026-03-10", "é" * 1024): 2})
    assert call(handler, "/counts", "date=2026-03-10")[2] == {
        "date": "2026-03-10", "counts": {"a b&c=d ✓": 1, "login": 3, "view": 1, "é" * 1024: 2}}
    # The longest action the API takes, 2 KB of UTF-8 (longer than a DynamoDB sort key holds).
    assert call(handler, "/counts", "date=2026-03-10&action=" + "%C3%A9" * 1024)[2] == {
        "date": "2026-03-10", "action": "é" * 1024, "count": 2}
    assert call(handler, "/counts", "date=2026-03-10&action=login")[2] == {
        "date": "2026-03-10", "action": "login", "count": 3}
    assert call(handler, "/counts", "date=2026-03-10&action=a+b%26c%3Dd+%E2%9C%93")[2] == {
        "date": "2026-03-10", "action": "a b&c=d ✓", "count": 1}
    assert call(handler, "/counts", "date=2026-03-10&action=nope")[2] == {
        "date": "2026-03-10", "action": "nope", "count": 0}
    status, _headers, body = call(handler, "/counts", "date=1999-01-01")
    assert (status, body) == (200, {"date": "1999-01-01", "counts": {}})


# --- the same errors as the daemon -------------------------------------------------------------
@pytest.mark.parametrize("query", [
    "date=2026-02-30", "", "date=", "date=2026-13-01", "date=20260203", "date=%EF%BC%92026-02-03",
    "date=2026-02-03&date=2026-02-04", "date=2026-02-03&action=", "date=2026-02-03&action=a&action=b",
    "date=2026-02-03&action=" + "x" * 1025,
])
def test_bad_parameters_answer_what_the_daemon_answers(handler: Any, daemon_client: FlaskClient,
                                                       query: str) -> None:
    """A bad /counts query is a 400 with exactly the daemon's JSON body (2026-02-30 included)."""
    status, headers, body = call(handler, "/counts", query)
    daemon = daemon_client.get("/counts?" + query)
    assert status == 400 and headers["content-type"] == "application/json"
    assert (status, body) == (daemon.status_code, daemon.get_json())
    if query == "date=2026-02-30":
        assert body == {"error": "date: 2026-02-30 is not a day of the calendar"}


@pytest.mark.parametrize("path", ["/nope", "/logins_today/", "/docs/other.js", "/counts/2026-01-01",
                                  "/stats", "/metrics", "/", "/static/status.js"])
def test_unknown_and_daemon_only_paths_are_404_json(handler: Any, daemon_client: FlaskClient,
                                                    path: str) -> None:
    """Unknown paths are a JSON 404 as on the daemon; so are the routes only a daemon has."""
    status, headers, body = call(handler, path)
    assert status == 404 and headers["content-type"] == "application/json"
    assert body == {"error": f"no such path: {path}"}
    if path not in ("/stats", "/metrics", "/", "/static/status.js"):
        assert daemon_client.get(path).get_json() == body


@pytest.mark.parametrize("path", ["/logins_today", "/counts", "/healthz", "/openapi.json", "/docs",
                                  "/docs/swagger-ui-bundle.js"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_json_like_the_daemon(handler: Any, daemon_client: FlaskClient,
                                                    path: str, method: str) -> None:
    """Anything but GET/HEAD is a 405 with the daemon's JSON body and Allow header."""
    status, headers, body = call(handler, path, method=method, body='{"x": 1}')
    daemon = daemon_client.open(path, method=method, data=b'{"x": 1}')
    assert status == 405 and headers["content-type"] == "application/json"
    assert body == daemon.get_json() and headers["allow"] == daemon.headers["Allow"]


def test_head_answers_without_a_body(handler: Any) -> None:
    """HEAD (monitoring probes) is answered like GET, with an empty body."""
    response = handler(http_event("/healthz", method="HEAD"), None)
    assert response["statusCode"] == 200 and body_of(response) == b""


def test_a_bug_is_a_json_500_pointing_to_the_functions_log(aws: AwsEnv) -> None:
    """An unexpected exception answers a JSON 500, not API Gateway's bare 502."""
    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")
    handler = aws_api.build_handler(Settings.from_env(), clock=broken_clock)
    status, _headers, body = call(handler, "/logins_today")
    assert (status, body) == (500, {"error": "internal error; see the function's log"})


# --- OpenAPI and /docs -----------------------------------------------------------------------
def test_openapi_describes_exactly_the_routes_served_here(aws: AwsEnv, handler: Any) -> None:
    """/openapi.json is a valid OpenAPI 3 document of the routes this function serves, and no other."""
    status, _headers, doc = call(handler, "/openapi.json")
    assert status == 200 and doc == json.loads(json.dumps(lambda_openapi_document()))
    validate(doc)
    app = aws_api.create_lambda_app(Settings.from_env())
    served = {r.rule for r in app.url_map.iter_rules()}
    assert set(doc["paths"]) == set(LAMBDA_PATHS) == {r for r in served if not r.startswith("/docs/")}
    assert not {"/stats", "/metrics", "/"} & set(doc["paths"])
    assert set(doc["components"]["schemas"]["Health"]["properties"]["checks"]["properties"]) == {"ledger"}
    for path in doc["paths"]:  # every route described answers GET here
        assert call(handler, path, "date=2026-01-01" if path == "/counts" else "")[0] == 200


def test_docs_serve_swagger_ui_offline_within_the_lambda_response_limit(handler: Any) -> None:
    """/docs and its assets come from the function itself (no CDN), each answer under 6 MB."""
    page = handler(http_event("/docs"), None)
    html = body_of(page).decode()
    assert page["statusCode"] == 200 and page["headers"]["content-type"].startswith("text/html")
    assert 'src="docs/swagger-ui-bundle.js"' in html and 'href="docs/swagger-ui.css"' in html
    assert "http://" not in html and "https://" not in html
    assert "script-src 'self'" in page["headers"]["content-security-policy"]
    for asset, marker in [("/docs/swagger-ui-bundle.js", b"SwaggerUIBundle"),
                          ("/docs/swagger-ui.css", b".swagger-ui"), ("/docs/init.js", b"openapi.json")]:
        response = handler(http_event(asset), None)
        assert response["statusCode"] == 200 and marker in body_of(response), asset
        assert len(json.dumps(response).encode()) < LAMBDA_RESPONSE_LIMIT, asset
    bundle = body_of(handler(http_event("/docs/swagger-ui-bundle.js"), None))
    assert len(bundle) > 500_000


# --- health and an unavailable ledger ---------------------------------------------------------
def test_healthz_ok_while_the_table_answers_503_once_it_is_gone(aws: AwsEnv, handler: Any) -> None:
    """/healthz checks the ledger table on each call; a missing table is a 503 with the reason,
    and the data routes answer a JSON 503 as the daemon does for an unreadable ledger."""
    status, _headers, body = call(handler, "/healthz")
    assert (status, body) == (200, {"status": "ok", "reasons": [], "checks": {"ledger": {"ok": True}}})
    aws.dynamodb().delete_table(TableName=aws.table)
    status, _headers, body = call(handler, "/healthz")
    assert status == 503 and body["status"] == "failing" and body["checks"]["ledger"]["ok"] is False
    assert body["reasons"][0].startswith("ledger: the ledger table does not answer:")
    assert "ResourceNotFoundException" in body["reasons"][0]
    for path, query in [("/logins_today", ""), ("/counts", "date=2026-03-14"),
                        ("/counts", "date=2026-03-14&action=login")]:
        status, headers, body = call(handler, path, query)
        assert status == 503 and headers["content-type"] == "application/json", path
        assert body["error"].startswith("the ledger cannot be read:"), path


def test_unreachable_dynamodb_is_503_not_500(aws: AwsEnv) -> None:
    """A connection error (no answer from DynamoDB at all) is also an outage: 503 JSON."""
    import boto3
    from botocore.config import Config as BotoConfig

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}",
                          config=BotoConfig(connect_timeout=1, retries={"max_attempts": 1}))
    handler = aws_api.build_handler(Settings.from_env(), client=client, clock=lambda: NOON)
    status, _headers, body = call(handler, "/counts", "date=2026-03-14")
    assert status == 503 and body["error"].startswith("the ledger cannot be read:")
    assert call(handler, "/healthz")[0] == 503


# --- settings and the container's lifetime ----------------------------------------------------
def test_missing_variable_is_an_error_naming_it_at_the_first_invocation(
        aws: AwsEnv, fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LOGWATCHD_LEDGER_TABLE the first invocation fails naming it; nothing is kept,
    so the next invocation with the variable set works."""
    monkeypatch.delenv("LOGWATCHD_LEDGER_TABLE")
    with pytest.raises(SettingsError, match="LOGWATCHD_LEDGER_TABLE"):
        logwatchd.aws.api_handler(http_event("/healthz"), None)
    assert aws_api._handler is None
    monkeypatch.setenv("LOGWATCHD_LEDGER_TABLE", aws.table)
    assert call(logwatchd.aws.api_handler, "/healthz")[0] == 200


def test_the_app_is_built_once_per_container(aws: AwsEnv, fresh: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings are read at the first invocation only: later ones reuse the app built then."""
    complete(aws, {("2026-03-10", "login"): 4})
    assert call(logwatchd.aws.api_handler, "/counts", "date=2026-03-10&action=login")[2]["count"] == 4
    built = aws_api._handler
    monkeypatch.setenv("LOGWATCHD_LEDGER_TABLE", "no-such-table")
    assert call(logwatchd.aws.api_handler, "/counts", "date=2026-03-10&action=login")[2]["count"] == 4
    assert aws_api._handler is built


def test_import_needs_no_variables_and_none_of_the_daemons_server(tmp_path: Path) -> None:
    """Importing the function's module sets nothing up, and leaves pyarrow, waitress and
    prometheus_client unimported (they would only lengthen a cold start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGWATCHD_"))}
    code = ("import sys, logwatchd.aws.api as m; assert m._handler is None; "
            "print(sorted(x for x in ('pyarrow', 'waitress', 'prometheus_client') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- every operation against its description --------------------------------------------------
schema = schemathesis.openapi.from_dict(lambda_openapi_document())


@pytest.fixture
def property_app(aws: AwsEnv) -> Any:
    """The function's Flask app over a table holding counts of several actions and days."""
    complete(aws, {("2026-03-14", "login"): 2, ("2026-03-14", "ünïcödé ✓"): 1,
                   ("2026-03-15", "with space & ?="): 1})
    return aws_api.create_lambda_app(Settings.from_env(), clock=lambda: NOON)


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_conforms_to_the_lambda_description(case: Any, property_app: Any) -> None:
    """No generated request gets a 500 or an answer outside the published description."""
    case.call_and_validate(app=property_app)


@pytest.mark.parametrize("query", ["date=２０２６-１１-２５", "date=2026-11-25&action=café"])
def test_raw_utf8_in_the_query_string_is_a_parameter_not_a_crash(handler: Any, query: str) -> None:
    """curl sends UTF-8 unencoded: the answer is the one its %-encoded form gets (WSGI carries
    the query string as latin-1, where these characters cannot go)."""
    from urllib.parse import quote

    raw = handler(http_event("/counts", query), None)
    encoded = handler(http_event("/counts", quote(query, safe="=&")), None)
    assert raw["statusCode"] == encoded["statusCode"] and raw["statusCode"] in (200, 400)
    assert json.loads(raw["body"]) == json.loads(encoded["body"])
    if "action" in query:
        assert json.loads(raw["body"]) == {"date": "2026-11-25", "action": "café", "count": 0}
