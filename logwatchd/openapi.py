"""The OpenAPI 3 description of the HTTP endpoint, served at /openapi.json and drawn by /docs.

Kept as Python data beside the routes (api.py) so the two change together; the property
test drives every operation from this document and checks each answer against it.
"""

from __future__ import annotations

import copy
from typing import Any

from . import __version__

# Longest `action` /counts accepts; longer ones are a 400, not a query.
MAX_ACTION_CHARS = 1024

_DATE = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
         "example": "2026-03-14"}
_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_INSTANT = {"type": "string", "format": "date-time", "example": "2026-03-14T09:26:53.589Z"}


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False, **extra}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


_ERROR_400 = _json("Error", "A parameter is missing, repeated or malformed.")
_ERROR_503 = _json("Error", "The ledger cannot be read right now.")

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {"type": "string", "description": "What was wrong, naming the parameter."}}),
    "LoginsToday": _obj({
        "logins_today": {**_COUNT, "description": 'Records with action "login" whose event date is today.'},
        "date": {**_DATE, "description": "Today, in the configured time zone."},
        "timezone": {"type": "string", "example": "Europe/Berlin",
                     "description": "The configured IANA time zone (transform.timezone)."},
    }),
    "DayCounts": _obj({
        "date": _DATE,
        "counts": {"type": "object", "additionalProperties": _COUNT,
                   "description": "Valid records of that event date, by action (absent: none)."},
    }),
    "ActionCount": _obj({
        "date": _DATE,
        "action": {"type": "string", "minLength": 1},
        "count": {**_COUNT, "description": "Valid records of that event date with exactly that action."},
    }),
    "Stats": _obj({
        "files": _obj({
            "processed": {**_COUNT, "description": "Inputs processed ok: rows and error lines written."},
            "quarantined": {**_COUNT, "description": "Inputs that were not log data."},
            "dead_lettered": {**_COUNT, "description": "Inputs that failed ingest.max_attempts times "
                                                       "or for ingest.max_retry_seconds."},
            "duplicate": {**_COUNT, "description": "Inputs whose content had been processed before."},
            "refused": {**_COUNT, "description": "Symlinks, hard links and special files set aside unread."},
        }, description="Totals since the ledger was created."),
        "records": _obj({
            "processed": _COUNT,
            "valid": {**_COUNT, "description": "Rows of the clean dataset."},
            "errors": {**_COUNT, "description": "Lines of the error files."},
        }, description="Totals since the ledger was created; processed = valid + errors."),
        "backlog": {**_COUNT, "description": "Files waiting in the inbox."},
        "oldest_waiting_age_seconds": {**_SECONDS, "description": "How long the oldest waiting file has waited; 0 when none waits."},
        "intake_paused": {"type": "boolean", "description": "Intake paused: the host cannot take files (disk full, an unwritable output directory)."},
        "failing_files": {**_COUNT, "description": "Files that failed and wait, each with its own backoff."},
        "oldest_failing_age_seconds": {**_SECONDS, "description": "Time since the first failure of the longest-failing file; 0 when none fails."},
        "last_success_at": {**_INSTANT, "nullable": True,
                            "description": "When the last file was processed ok (or found duplicate); null if never."},
        "started_at": {**_INSTANT, "description": "When this daemon process started."},
        "uptime_seconds": _SECONDS,
        "retries": {**_COUNT, "description": "Attempts that will be retried, since start-up."},
        "compaction": _obj({
            "runs": _COUNT, "files_in": _COUNT, "files_out": _COUNT, "rows": _COUNT,
            "bytes_before": _COUNT, "bytes_after": _COUNT, "seconds": _SECONDS,
        }, description="Compaction since start-up."),
        "today": _obj({
            "date": {**_DATE, "description": "Today in the configured time zone."},
            "timezone": {"type": "string"},
            "since": {**_INSTANT, "description": "When today began, in UTC."},
            "files": _obj({k: _COUNT for k in ("processed", "quarantined", "dead_lettered",
                                                "duplicate", "refused")}),
            "records": _obj({k: _COUNT for k in ("processed", "valid", "errors")}),
            "error_ratio": {"type": "number", "minimum": 0, "maximum": 1,
                            "description": "errors / processed today; 0 when none."},
        }, description="Files and records by outcome since midnight in transform.timezone."),
        "recent_files": {"type": "array", "description": "The last files, newest first.",
                         "items": _obj({
                             "file": {"type": "string"}, "outcome": {"type": "string"},
                             "at": _INSTANT, "processed": _COUNT, "valid": _COUNT, "errors": _COUNT,
                             "duration_ms": {**_SECONDS, "nullable": True},
                             "reason": {"type": "string", "nullable": True}})},
        "failing": {"type": "array", "description": "Files failing now (the oldest first), with the last error.",
                    "items": _obj({"file": {"type": "string"}, "failures": _COUNT,
                                   "first_failed_at": _INSTANT,
                                   "last_error": {"type": "string", "nullable": True}})},
        "quarantine": {"$ref": "#/components/schemas/SetAside"},
        "dead_letter": {"$ref": "#/components/schemas/SetAside"},
        "catalog": _obj({
            "live_files": _COUNT, "partitions": _COUNT,
            "small_files": {**_COUNT, "description": "Smaller than compaction.target_file_bytes."},
            "partitions_due": {**_COUNT, "description": "Partitions with at least compaction.min_files small files."},
        }, description="The live data files of the ledger's catalog: the compaction state."),
        "throughput": _obj({
            "minutes": _COUNT, "until": _INSTANT,
            "files": {"type": "array", "items": _COUNT, "description": "Files per minute, oldest first."},
            "records": {"type": "array", "items": _COUNT, "description": "Records per minute, oldest first."},
        }, description="The last hour, minute by minute."),
    }),
    "SetAside": _obj({
        "count": {**_COUNT, "description": "Entries in the folder."},
        "files": {"type": "array", "description": "The newest entries, with their reason.",
                  "items": _obj({"file": {"type": "string"},
                                 "reason": {"type": "string", "nullable": True},
                                 "detail": {"type": "string", "nullable": True},
                                 "at": {"type": "string", "nullable": True},
                                 "replay": {"type": "string", "description": "The command that moves it back into the inbox."}})},
    }),
    "Health": _obj({
        "status": {"type": "string", "enum": ["ok", "failing"]},
        "reasons": {"type": "array", "items": {"type": "string"},
                    "description": "One line per failing check; empty when ok."},
        "checks": _obj({
            "watcher": {"$ref": "#/components/schemas/Check"},
            "ledger": {"$ref": "#/components/schemas/Check"},
            "disk": {"$ref": "#/components/schemas/Check"},
            "backlog": {"$ref": "#/components/schemas/Check"},
            "intake": {"$ref": "#/components/schemas/Check"},
        }),
    }),
    "Check": {
        "type": "object", "required": ["ok"],
        "properties": {
            "ok": {"type": "boolean"},
            "detail": {"type": "string"},
            "free_bytes": _COUNT, "min_free_bytes": _COUNT,
            "oldest_waiting_age_seconds": _SECONDS, "max_oldest_file_seconds": _SECONDS,
            "backlog": _COUNT,
            "paused": {"type": "boolean"}, "failing_files": _COUNT,
            "oldest_failing_age_seconds": _SECONDS,
        },
        "additionalProperties": False,
    },
}


def _get(summary: str, description: str, responses: dict[str, Any],
         parameters: list[dict[str, Any]] | None = None, tag: str = "data") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "description": description, "tags": [tag],
                          "operationId": summary.lower().replace(" ", "_").replace("'", ""),
                          "responses": responses}
    if parameters:
        op["parameters"] = parameters
    return {"get": op}


PATHS: dict[str, Any] = {
    "/": _get(
        "Status page",
        "The status page for people: health and its reasons, backlog, today's files and "
        "records, the last files, failing, quarantined and dead-lettered files with the "
        "command to replay them, compaction, throughput over the last hour. The figures of /stats.",
        {"200": {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        tag="operations"),
    "/logins_today": _get(
        "Logins today",
        'Valid records with `action == "login"` whose event date is today in the configured '
        "time zone. Read from the per-day counts the ledger commits with each file: exact, and "
        "never a half-committed file.",
        {"200": _json("LoginsToday", "Today's logins."), "503": _ERROR_503}),
    "/counts": _get(
        "Counts by day",
        "Valid records of one event date, by action; with `action`, the count of that action only.",
        {"200": {"description": "The counts.", "content": {"application/json": {"schema": {
            "oneOf": [{"$ref": "#/components/schemas/DayCounts"},
                      {"$ref": "#/components/schemas/ActionCount"}]}}}},
         "400": _ERROR_400, "503": _ERROR_503},
        [{"name": "date", "in": "query", "required": True, "schema": _DATE,
          "description": "Event date, YYYY-MM-DD, in the configured time zone."},
         {"name": "action", "in": "query", "required": False,
          "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ACTION_CHARS},
          "description": "Count only this action (matched exactly)."}]),
    "/stats": _get(
        "Stats",
        "Totals from the ledger (files and records by outcome, since it was created) and live "
        "figures of this process (backlog, oldest waiting file, last success, uptime).",
        {"200": _json("Stats", "The figures."), "503": _ERROR_503}, tag="operations"),
    "/healthz": _get(
        "Health",
        "200 while the inbox watcher runs, the ledger answers, `paths.root` has at least "
        "`api.min_free_bytes` free and no file has waited longer than "
        "`api.max_oldest_file_seconds`; 503 with the failing checks otherwise.",
        {"200": _json("Health", "Every check passes."),
         "503": _json("Health", "At least one check fails; `reasons` says which.")},
        tag="operations"),
    "/metrics": _get(
        "Metrics",
        "Prometheus text exposition: files and records by outcome, retries, backlog, oldest "
        "waiting file age, per-file processing time histogram, compaction counters. Every "
        "series exists from start-up. OpenMetrics when the Accept header asks for it.",
        {"200": {"description": "The metrics.", "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/openmetrics-text": {"schema": {"type": "string"}}}}},
        tag="operations"),
    "/openapi.json": _get(
        "OpenAPI", "This description.",
        {"200": {"description": "OpenAPI 3 document.",
                 "content": {"application/json": {"schema": {"type": "object"}}}}}, tag="docs"),
    "/docs": _get(
        "Docs", "An interactive page for this description; works without internet access.",
        {"200": {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        tag="docs"),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the daemon (a fresh copy: callers may change it)."""
    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {
            "title": "logwatchd",
            "version": __version__,
            "description": "Read-only answers about the logwatchd dataset and daemon. Every "
                           "answer is JSON except /metrics, /docs and the status page /; bad parameters answer 400, "
                           "unknown paths 404, other methods than GET 405, all as "
                           '`{"error": "…"}`.',
        },
        "tags": [{"name": "data", "description": "Counts of the dataset."},
                 {"name": "operations", "description": "Monitoring the daemon."},
                 {"name": "docs", "description": "This description."}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    })


# What the count API Lambda function (logwatchd.aws.api) serves: the counts, its health and
# this description. /stats, /metrics and the status page describe a daemon process.
LAMBDA_PATHS = ("/logins_today", "/counts", "/healthz", "/openapi.json", "/docs")

_LAMBDA_HEALTH = _obj({
    "status": {"type": "string", "enum": ["ok", "failing"]},
    "reasons": {"type": "array", "items": {"type": "string"},
                "description": "One line per failing check; empty when ok."},
    "checks": _obj({"ledger": {"$ref": "#/components/schemas/Check"}}),
})


def lambda_openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the count API behind API Gateway (a fresh copy)."""
    doc = openapi_document()
    doc["info"]["description"] = (
        "Read-only answers about the logwatchd dataset on S3, from its DynamoDB ledger. Every "
        "answer is JSON except /docs; bad parameters answer 400, unknown paths 404, other "
        'methods than GET 405, all as `{"error": "…"}`.')
    doc["paths"] = {path: doc["paths"][path] for path in LAMBDA_PATHS}
    doc["paths"]["/healthz"] = _get(
        "Health",
        "200 while the ledger table (`LOGWATCHD_LEDGER_TABLE`) answers a read; 503 with the "
        "reason otherwise (the table is missing, not readable with the function's role, or "
        "DynamoDB does not answer).",
        {"200": _json("Health", "The ledger table answers."),
         "503": _json("Health", "It does not; `reasons` says why.")},
        tag="operations")
    schemas = doc["components"]["schemas"]
    for unused in ("Stats", "SetAside"):
        del schemas[unused]
    schemas["Health"] = copy.deepcopy(_LAMBDA_HEALTH)
    doc["tags"] = [{"name": "data", "description": "Counts of the dataset."},
                   {"name": "operations", "description": "Monitoring the function."},
                   {"name": "docs", "description": "This description."}]
    return doc
