"""structlog set-up (once, at start-up) and the names of every event logwatchd emits (SPEC §7)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

# The event names, in one place.
DAEMON_STARTED = "daemon_started"
DAEMON_STOPPING = "daemon_stopping"
FILE_PROCESSED = "file_processed"
FILE_QUARANTINED = "file_quarantined"
FILE_DUPLICATE = "file_duplicate"
FILE_RETRY = "file_retry"
FILE_DEAD_LETTERED = "file_dead_lettered"
FILE_REFUSED = "file_refused"
FILE_VANISHED = "file_vanished"
FILE_GREW = "file_grew"               # written to after it was taken: its new bytes are a new input
INBOX_REWATCHED = "inbox_rewatched"   # the inbox was deleted or moved away: watched again
INTAKE_PAUSED = "intake_paused"
INTAKE_RESUMED = "intake_resumed"
COMPACTION_DONE = "compaction_done"
COMPACTION_FAILED = "compaction_failed"
COMPACTION_PASS = "compaction_pass"   # the compaction Lambda's summary of one invocation
METRICS = "metrics"
ALERT = "alert"
ALERT_CLEARED = "alert_cleared"
RECOVERY_DONE = "recovery_done"
INTERNAL_ERROR = "internal_error"
LIBRARY_LOG = "library_log"           # a warning of a library that logs through `logging`
# The ingest Lambda's own (logwatchd.aws.ingest); its files log the events above.
INVOCATION_DONE = "invocation_done"
TEST_EVENT_IGNORED = "test_event_ignored"
BAD_EVENT = "bad_event"
OBJECT_IGNORED = "object_ignored"


def _json_bytes(obj: Any, default: Any = None) -> bytes:
    return orjson.dumps(obj, default=default or str)


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configures structlog for the process: JSON lines (or console) at `level` to `stream`."""
    stream = stream or sys.stdout
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory: Any = structlog.PrintLoggerFactory(stream)
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=_json_bytes))
        factory = structlog.BytesLoggerFactory(stream.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (APScheduler: "job skipped") would
    # otherwise reach stderr as plain text: their records become events of this log.
    root = logging.getLogger()
    if not any(isinstance(h, _Bridge) for h in root.handlers):
        root.addHandler(_Bridge(logging.WARNING))


class _Bridge(logging.Handler):
    """A standard-library log record as a `library_log` event (SPEC §7: one JSON object a line)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            method = get_logger().error if record.levelno >= logging.ERROR else get_logger().warning
            method(LIBRARY_LOG, logger=record.name, message=record.getMessage())
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def get_logger() -> Any:
    return structlog.get_logger("logwatchd")
