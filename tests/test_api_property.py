"""Property-based test of the HTTP endpoint: schemathesis drives every operation of /openapi.json.

It generates valid and invalid parameters from the published description, sends them to the
real app (a real ledger holding committed files) and checks each answer: never a 500, the
status code, content type, headers and body as documented, valid input accepted, invalid
input rejected with a 4xx, and methods other than GET answered 405.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from logwatchd.api import create_app
from logwatchd.config import parse_config
from logwatchd.metrics import Metrics
from logwatchd.openapi import openapi_document
from logwatchd.pipeline import Pipeline
from logwatchd.runtime import open_runtime

# A fixed "now" so that /logins_today has a known day holding data.
NOW = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


# The published description, exactly as /openapi.json serves it (test_api.py checks that).
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app over a real ledger with a committed file of several actions and days."""
    base: Path = tmp_path_factory.mktemp("api-property")
    config = parse_config({"transform": {"timezone": "Europe/Berlin"}}, base_dir=base)
    runtime = open_runtime(config)
    records = [{"timestamp": f"2026-03-{day:02d}T10:00:00Z", "user_id": i, "action": action}
               for i, (day, action) in enumerate(
                   [(14, "login"), (14, "login"), (14, "logout"), (13, "login"),
                    (14, "ünïcödé ✓"), (15, "a" * 300), (14, "with space & ?=")])]
    src = base / "seed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    Pipeline(config, runtime.ledger, clock=lambda: NOW).process(src)
    metrics = Metrics()
    metrics.file_done("ok", 8, 7, 1, 0.01)
    app = create_app(runtime.ledger, config, metrics, clock=lambda: NOW)
    yield app
    runtime.close()


@schema.parametrize()
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_operation_conforms_to_openapi(case: Any, api_app: Any) -> None:
    """No generated request gets a 500 or an answer that breaks the published schema."""
    case.call_and_validate(app=api_app)
