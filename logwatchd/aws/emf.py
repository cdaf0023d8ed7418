"""Per-file metrics as CloudWatch Embedded Metric Format: one JSON line on stdout per file,
which CloudWatch Logs turns into metrics — no API call, nothing to batch or lose on a timeout.

    {"_aws": {"Timestamp": <ms>, "CloudWatchMetrics": [{"Namespace": "logwatchd",
              "Dimensions": [["Function"]], "Metrics": [{"Name": "Processed", "Unit": "Count"}, ...]}]},
     "Function": "<function name>", "Processed": 3, "Valid": 1, "Errors": 2, "Quarantined": 0,
     "DurationMs": 41.2, "file": "<key>", "sha256": "...", "status": "ok"}

The alarm on the error ratio divides `Errors` by `Processed` (namespace `logwatchd`,
dimension `Function`).
"""

from __future__ import annotations

import sys
import time
from typing import Any, BinaryIO

import orjson

NAMESPACE = "logwatchd"
DIMENSION = "Function"
METRICS: tuple[tuple[str, str], ...] = (
    ("Processed", "Count"),
    ("Valid", "Count"),
    ("Errors", "Count"),
    ("Quarantined", "Count"),
    ("DurationMs", "Milliseconds"),
)


def metric_line(function: str, values: dict[str, float], properties: dict[str, Any] | None = None,
                timestamp_ms: int | None = None) -> bytes:
    """One EMF document (a line, newline included); `values` has every name of METRICS."""
    missing = [name for name, _unit in METRICS if name not in values]
    if missing:
        raise ValueError(f"EMF line without {', '.join(missing)}")
    doc: dict[str, Any] = dict(properties or {})
    doc.update({
        "_aws": {
            "Timestamp": int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[DIMENSION]],
                "Metrics": [{"Name": name, "Unit": unit} for name, unit in METRICS],
            }],
        },
        DIMENSION: function,
    })
    doc.update({name: values[name] for name, _unit in METRICS})
    return orjson.dumps(doc) + b"\n"


def emit(function: str, values: dict[str, float], properties: dict[str, Any] | None = None,
         stream: BinaryIO | None = None) -> None:
    """Writes one EMF line to stdout (the function's log stream) in one write."""
    out = stream if stream is not None else sys.stdout.buffer
    out.write(metric_line(function, values, properties))
    out.flush()
