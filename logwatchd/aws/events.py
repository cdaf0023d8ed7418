"""Lambda event shapes → the objects they name: S3 event notifications, direct or in SQS
messages, and S3's test event.

    {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                  "s3": {"bucket": {"name": ...}, "object": {"key": <URL-encoded>, ...}}}]}
    {"Records": [{"eventSource": "aws:sqs", "messageId": ..., "body": <the above, as JSON>}]}
    {"Service": "Amazon S3", "Event": "s3:TestEvent", ...}     (alone or as a message body)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson

from ..errors import LogwatchdError


class BadEvent(LogwatchdError):
    """The event (or an SQS message's body) is not an S3 event notification."""


@dataclass(frozen=True)
class ObjectRef:
    """One object of an event notification; `key` decoded as S3 URL-encodes it."""

    bucket: str
    key: str
    version_id: str | None = None


def is_test_event(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("Event") == "s3:TestEvent"


def object_refs(notification: Any) -> list[ObjectRef]:
    """The created objects of an S3 event notification (none for a test event)."""
    if is_test_event(notification):
        return []
    records = notification.get("Records") if isinstance(notification, dict) else None
    if not isinstance(records, list):
        raise BadEvent("not an S3 event notification: no Records")
    refs = []
    for rec in records:
        try:
            if rec.get("eventSource") != "aws:s3":
                raise BadEvent(f"not an S3 event record: eventSource {rec.get('eventSource')!r}")
            if not str(rec.get("eventName", "ObjectCreated:")).startswith("ObjectCreated:"):
                continue  # a removal or restore: nothing to ingest
            obj = rec["s3"]["object"]
            refs.append(ObjectRef(rec["s3"]["bucket"]["name"], unquote_plus(obj["key"]),
                                  obj.get("versionId") or None))
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadEvent(f"an S3 event record without {exc}") from None
    return refs


def sqs_body(record: dict[str, Any]) -> Any:
    try:
        return orjson.loads(record["body"])
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise BadEvent(f"SQS message {record.get('messageId')!r}: body is not JSON ({exc})") from None
