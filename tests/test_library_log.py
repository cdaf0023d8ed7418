"""Warnings that libraries log through the standard library reach the log as JSON events."""

from __future__ import annotations

import io
import json
import logging

from logwatchd import logs


def test_a_library_warning_is_one_json_event() -> None:
    """APScheduler's "job skipped" warning (standard `logging`) is a `library_log` JSON line, not plain text."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    logs.configure("info", "json", stream)
    logging.getLogger("apscheduler.executors.default").warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)', "compaction", 1)
    logging.getLogger("apscheduler.scheduler").info("an info line stays out")
    lines = raw.getvalue().decode().splitlines()
    assert len(lines) == 1, lines
    event = json.loads(lines[0])
    assert event["event"] == "library_log" and event["level"] == "warning"
    assert event["logger"] == "apscheduler.executors.default"
    assert event["message"].startswith('Execution of job "compaction" skipped')
