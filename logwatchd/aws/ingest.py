"""The ingest Lambda: S3 event notifications (direct, or in SQS messages) → the daemon's own
transform → clean Parquet and error lines in S3, each object's content exactly once.

    handle(event, context)
      S3 notification   {"Records": [{"eventSource": "aws:s3", "s3": {...}}]}
                        → {"processed": N, "valid": N, "errors": N}, summed over the objects;
                          raises IngestFailed after the others when any object failed, so
                          that Lambda retries the invocation (done objects are duplicates then)
      SQS batch         {"Records": [{"eventSource": "aws:sqs", "messageId": ..., "body": <S3
                          notification JSON>}]}
                        → {"batchItemFailures": [{"itemIdentifier": messageId}, ...]}, only the
                          failed messages: the queue retries them and dead-letters them in the end
      S3 test event     {"Event": "s3:TestEvent", ...} (alone or as a message body): ignored

Per object (`Ingest.run`), unless ignored (a name the daemon's inbox would not take, or a
key under one of our own output locations):

1. hash: a streaming GET, SHA-256 of the bytes as stored (the outputs' names);
2. claim the content in the ledger (`DynamoLedger.claim`, a lease of the invocation's
   remaining time plus a margin): `done` → a duplicate, nothing written; `busy` (another
   invocation holds it) → a failure of this object, retried later;
3. process: a second streaming GET pinned to the first (If-Match on its ETag, or its
   version id), through the daemon's reader, record rules and writers (`transform`, one
   process: no worker pool in a Lambda); Parquet parts at
   `{clean}/date=YYYY-MM-DD/<sha256>-0[-n].parquet`, error lines at
   `{errors}/date=<processing date>/<sha256>.jsonl`, each appearing whole when its upload
   completes. Not log data (SPEC §5 malformed) → the object is copied to
   `{quarantine}/<key>` with `<key>.reason.json`, and its outputs dropped;
4. complete (`DynamoLedger.complete`): the catalog of the new files and the per-(date,
   action) counts, each addition exactly once, resumed where a timed-out invocation stopped.

Every output's name and bytes depend only on the content and the first claim's time (the
processing date, `ingested_at`), so a rerun after a timeout at any point overwrites the same
keys with the same bytes, and the ledger adds the counts once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from .. import logs
from ..durable import sha256_stream
from ..errors import FileVanished, LogwatchdError, MalformedFile
from ..failpoints import failpoint
from ..layout import clean_path, display_name, errors_path, reason_json, sidecar_name
from ..ledger import utc_iso
from ..parallel import JobSpec, LocalRunner
from ..reader import HashingReader, iter_chunks
from ..transform import transform
from . import emf
from .events import BadEvent, ObjectRef, is_test_event, object_refs, sqs_body
from .ledger import CatalogFile, DynamoLedger, LeaseLost
from .s3 import (
    ObjectVersion,
    S3Prefix,
    new_client,
    new_filesystem,
    open_object,
)
from .settings import Settings

# The lease outlives the invocation by this much: Lambda stops a function at its timeout,
# so a lease that ran out belongs to an invocation that is gone (clocks agree within this).
LEASE_MARGIN_SECONDS = 5.0
CHUNK_BYTES = 4 << 20
# The clients of a container are built for these (a test or the demo may change them).
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")
# Without a Lambda context (a direct call, the demo): Lambda's longest timeout.
DEFAULT_LEASE_SECONDS = 900.0


class IngestFailed(LogwatchdError):
    """Some objects of a direct invocation failed (after the others were processed): raised
    so that Lambda retries the invocation."""


class Busy(LogwatchdError):
    """Another invocation holds this content's lease: it is not processed twice."""


@dataclass
class Outcome:
    """One object's outcome, as logged and counted."""

    key: str
    status: str               # ok | quarantined | duplicate | ignored
    processed: int = 0
    valid: int = 0
    errors: int = 0
    sha256: str | None = None
    bytes: int = 0
    reason: str | None = None
    detail: str | None = None
    duration_ms: float = 0.0


# --- the handler -------------------------------------------------------------------------
class _Stdout:
    """The process's stdout as it is at each write (the log stream; a test harness may
    have replaced sys.stdout since logging was configured)."""

    @property
    def buffer(self) -> _Stdout:
        return self

    def write(self, data: bytes) -> int:
        return sys.stdout.buffer.write(data)

    def flush(self) -> None:
        sys.stdout.buffer.flush()


_logging = threading.Lock()
_logging_done = False


def _configure_logging() -> None:
    """structlog, once per container: JSON lines on stdout, as the daemon's."""
    global _logging_done
    with _logging:
        if not _logging_done:
            logs.configure(stream=cast(TextIO, _Stdout()))
            _logging_done = True


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (`logwatchd.aws.lambda_handler`)."""
    _configure_logging()
    settings = Settings.from_env()  # a missing or bad variable: SettingsError, nothing done
    ingest = Ingest.for_settings(settings)
    request = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
    log = logs.get_logger().bind(request_id=request)
    if is_test_event(event):
        log.info(logs.TEST_EVENT_IGNORED)
        return {"processed": 0, "valid": 0, "errors": 0}
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise BadEvent("not an S3 or SQS event: no Records")
    if records and records[0].get("eventSource") == "aws:sqs":
        return _sqs(ingest, records, context, request, log)
    return _direct(ingest, records, context, request, log)


def _direct(ingest: Ingest, records: list[dict[str, Any]], context: Any, request: str,
            log: Any) -> dict[str, Any]:
    totals = {"processed": 0, "valid": 0, "errors": 0}
    failed: list[str] = []
    refs = object_refs({"Records": records})
    for i, ref in enumerate(refs):
        try:
            out = ingest.run(ref, f"{request}/{i}", context, log)
        except Exception as exc:  # noqa: BLE001 - every object is tried; the failures end in one raise
            failed.append(f"s3://{ref.bucket}/{ref.key}: {_why(exc)}")
            continue
        for name in totals:
            totals[name] += getattr(out, name)
    log.info(logs.INVOCATION_DONE, objects=len(refs), failed=len(failed), **totals)
    if failed:
        raise IngestFailed(f"{len(failed)} of {len(refs)} objects failed: " + "; ".join(failed))
    return totals


def _sqs(ingest: Ingest, records: list[dict[str, Any]], context: Any, request: str,
         log: Any) -> dict[str, Any]:
    totals = {"processed": 0, "valid": 0, "errors": 0}
    failures: list[dict[str, str]] = []
    n = 0
    for record in records:
        message = record.get("messageId", "")
        try:
            body = sqs_body(record)
            refs = object_refs(body)
        except BadEvent as exc:
            log.error(logs.BAD_EVENT, message_id=message, error=str(exc))
            failures.append({"itemIdentifier": message})
            continue
        ok = True
        for ref in refs:
            try:
                out = ingest.run(ref, f"{request}/{n}", context, log.bind(message_id=message))
            except Exception:  # noqa: BLE001 - logged by run; the message is reported failed
                ok = False
                continue
            finally:
                n += 1
            for name in totals:
                totals[name] += getattr(out, name)
        if not ok:
            failures.append({"itemIdentifier": message})
    log.info(logs.INVOCATION_DONE, messages=len(records), failed=len(failures), **totals)
    return {"batchItemFailures": failures}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- one object --------------------------------------------------------------------------
class Ingest:
    """The clients and settings of one Lambda container, reused by its invocations."""

    _lock = threading.Lock()
    _cached: tuple[tuple[Any, ...], Ingest] | None = None

    def __init__(self, settings: Settings) -> None:
        import pyarrow as pa

        # As in the daemon's workers: the system allocator hands freed Arrow buffers back
        # (mimalloc would keep tens of MB cached, and a Lambda pays for its peak memory).
        pa.set_memory_pool(pa.system_memory_pool())

        self.settings = settings
        config = settings.config()
        # Smaller chunks than the daemon's: one process does all the work, and the parsed
        # lines of a chunk cost several times its size (a Lambda pays for its peak memory).
        self.config = dataclasses.replace(config, ingest=dataclasses.replace(
            config.ingest, chunk_bytes=CHUNK_BYTES))
        self.s3 = new_client()
        fs = new_filesystem()
        self.clean = S3Prefix(fs, self.s3, settings.clean)
        self.errors = S3Prefix(fs, self.s3, settings.errors)
        self.ledger = DynamoLedger(settings.ledger_table)
        self.ledger.check_zone(settings.timezone)  # ZoneMismatch: nothing is read or written
        self.zone = self.config.transform.zone

    @classmethod
    def for_settings(cls, settings: Settings) -> Ingest:
        """The container's instance for these settings and endpoint (built on first use)."""
        key = (settings, *(os.environ.get(name) for name in ENDPOINT_VARIABLES))
        with cls._lock:
            if cls._cached is None or cls._cached[0] != key:
                cls._cached = (key, cls(settings))
            return cls._cached[1]

    def ignored(self, ref: ObjectRef) -> str | None:
        """Why an object is not taken, or None. As in the daemon's inbox: a name that does
        not match `ingest.patterns`, or a temporary one. And never one of our own outputs
        (a notification on the output bucket would otherwise feed error files back forever)."""
        for where in (self.settings.clean, self.settings.errors, self.settings.quarantine):
            if ref.bucket == where.bucket and (not where.prefix or ref.key.startswith(where.prefix + "/")):
                return f"under the output location {where.uri()}"
        if not self.config.ingest.matches(ref.key.rpartition("/")[2]):
            return "its name does not match ingest.patterns, or is a temporary name"
        return None

    def run(self, ref: ObjectRef, owner: str, context: Any = None, log: Any = None) -> Outcome:
        """Ingests one object; logs and meters its outcome. Raises on failure (logged)."""
        log = (log or logs.get_logger()).bind(bucket=ref.bucket, file=display_name(ref.key))
        why = self.ignored(ref)
        if why is not None:
            log.warning(logs.OBJECT_IGNORED, reason=why)
            return Outcome(ref.key, "ignored")
        started = time.monotonic()
        try:
            out = self._run(ref, owner, context)
        except Exception as exc:
            event = logs.FILE_VANISHED if isinstance(exc, FileVanished) else logs.FILE_RETRY
            log.warning(event, owner=owner, error=_why(exc))
            raise
        out.duration_ms = round((time.monotonic() - started) * 1000, 3)
        self._report(out, log, context)
        return out

    def _run(self, ref: ObjectRef, owner: str, context: Any) -> Outcome:
        body, version = open_object(self.s3, ref.bucket, ref.key, ref.version_id)
        with closing(body):
            sha = sha256_stream(body)
        claim = self.ledger.claim(sha, key=ref.key, bucket=ref.bucket, owner=owner,
                                  lease_seconds=_lease_seconds(context))
        if claim.state == "done":
            return Outcome(ref.key, "duplicate", sha256=sha, bytes=version.size)
        if claim.state == "busy":
            raise Busy(f"another invocation holds it until {claim.lease_until}")
        failpoint("aws.claimed")
        try:
            now = datetime.fromtimestamp(claim.first_seen or time.time(), UTC)
            try:
                out, files, counts = self._transform(ref, version, sha, now)
            except MalformedFile as exc:
                out = self._quarantine(ref, version, sha, exc, now)
                files, counts = [], {}
            failpoint("aws.outputs_written")
            self.ledger.complete(sha, owner=owner, outcome=out.status, files=files, counts=counts,
                                 summary={"processed": out.processed, "valid": out.valid,
                                          "errors": out.errors},
                                 start_batch=claim.batches_done)
        except LeaseLost:
            raise  # another invocation took over: it writes the same keys and completes
        except BaseException:
            self.ledger.release(sha, owner)  # the next delivery may take it at once
            raise
        return out

    def _transform(self, ref: ObjectRef, version: ObjectVersion, sha: str, now: datetime
                   ) -> tuple[Outcome, list[CatalogFile], dict[tuple[str, str], int]]:
        ingest = self.config.ingest
        spec = JobSpec(sha, sha, ref.key, self.clean, self.settings.timezone, utc_iso(now),
                       ingest.max_line_bytes)
        body, _ = open_object(self.s3, ref.bucket, ref.key, pin=version)
        with closing(body):
            src = HashingReader(body)
            chunks = iter_chunks(src, ref.key, ingest.chunk_bytes, ingest.max_line_bytes,
                                 max_decompressed=ingest.max_decompressed_bytes)
            day = now.astimezone(self.zone).date().isoformat()
            done = transform(LocalRunner(), spec, src, chunks, errors=self.errors,
                             errors_relative=errors_path(day, sha))
        res = done.result
        files = [CatalogFile(p.date, clean_path(p.date, p.name), p.rows, p.bytes, sha)
                 for p in done.parts]
        out = Outcome(ref.key, "ok", res.processed, res.valid, res.errors, sha256=sha,
                      bytes=version.size)
        return out, files, res.counts

    def _quarantine(self, ref: ObjectRef, version: ObjectVersion, sha: str, exc: MalformedFile,
                    now: datetime) -> Outcome:
        """Copies the object (pinned to the version read) to `{quarantine}/<key>` with its
        reason beside it. A different content already there is never overwritten: this one
        goes to a name tagged with its SHA-256 instead."""
        where = self.settings.quarantine
        target = where.key(fit_key(where.key(""), ref.key, sha))
        if self._quarantined_sha(where.bucket, target) not in (None, sha):
            target = where.key(fit_key(where.key(""), tagged(ref.key, sha), sha))
        source: dict[str, str] = {"Bucket": ref.bucket, "Key": ref.key}
        if version.version_id:
            source["VersionId"] = version.version_id
        # The managed copy: a single CopyObject, or a multipart copy beyond 5 GB.
        self.s3.copy(source, where.bucket, target, ExtraArgs={
            "CopySourceIfMatch": version.etag, "MetadataDirective": "REPLACE",
            "Metadata": {"sha256": sha}})
        self.s3.put_object(Bucket=where.bucket, Key=sidecar_name(target),
                           Body=reason_json(exc.reason, exc.detail, utc_iso(now), sha, ref.key),
                           ContentType="application/json")
        return Outcome(ref.key, "quarantined", sha256=sha, bytes=version.size, reason=exc.reason,
                       detail=exc.detail)

    def _quarantined_sha(self, bucket: str, key: str) -> str | None:
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return str(head.get("Metadata", {}).get("sha256", ""))

    def _report(self, out: Outcome, log: Any, context: Any) -> None:
        fields: dict[str, Any] = {"sha256": out.sha256, "bytes": out.bytes,
                                  "duration_ms": out.duration_ms}
        if out.status == "duplicate":
            log.info(logs.FILE_DUPLICATE, **fields)
        elif out.status == "quarantined":
            log.warning(logs.FILE_QUARANTINED, reason=out.reason, detail=out.detail, **fields)
        else:
            log.info(logs.FILE_PROCESSED, processed=out.processed, valid=out.valid,
                     errors=out.errors, **fields)
        function = getattr(context, "function_name", None) or "logwatchd-ingest"
        emf.emit(function, {"Processed": out.processed, "Valid": out.valid, "Errors": out.errors,
                            "Quarantined": int(out.status == "quarantined"),
                            "DurationMs": out.duration_ms},
                 {"file": display_name(out.key), "sha256": out.sha256, "status": out.status})


S3_MAX_KEY_BYTES = 1024


def fit_key(prefix: str, key: str, sha: str) -> str:
    """`key`, or a shorter name for it, such that `prefix + name` and its reason sidecar fit
    S3's 1,024-byte keys (an input key may be 1,024 bytes itself; the sidecar keeps it whole,
    as `file`): its start cut at a character boundary, the content's SHA-256 (first 16
    digits), and the suffixes of its name ("….<sha16>.json.gz")."""
    budget = S3_MAX_KEY_BYTES - len(prefix.encode()) - len(sidecar_name("").encode())
    if len(key.encode()) <= budget:
        return key
    base = key.rpartition("/")[2]
    dot = base.find(".", 1)
    suffixes = base[dot:] if 0 < dot and len(base) - dot <= 32 else ""
    tail = f"~{sha[:16]}{suffixes}".encode()
    head = key.encode()[:max(0, budget - len(tail))].decode("utf-8", "ignore")
    return head + tail.decode()


def tagged(key: str, sha: str) -> str:
    """`key` with the content's SHA-256 (first 12 digits) before the suffixes of its last
    segment: "logs/a.json.gz" → "logs/a.<sha12>.json.gz"."""
    head, sep, base = key.rpartition("/")
    dot = base.find(".", 1)
    stem, suffixes = (base, "") if dot < 0 else (base[:dot], base[dot:])
    return f"{head}{sep}{stem}.{sha[:12]}{suffixes}"


def _lease_seconds(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return DEFAULT_LEASE_SECONDS + LEASE_MARGIN_SECONDS
    return max(0.0, remaining() / 1000) + LEASE_MARGIN_SECONDS
