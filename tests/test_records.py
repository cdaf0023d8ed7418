"""Unit tests for the edge cases of validation and transformation (SPEC §4–5)."""

from __future__ import annotations

import json
import zoneinfo
from datetime import datetime, timezone

import pytest

from logwatchd.records import (INVALID_ENCODING, INVALID_JSON, INVALID_TIMESTAMP, RecordBatcher,
                               RecordError, parse_json, timestamp_us)

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def us(*args: int, tz: timezone = timezone.utc) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp()) * 1_000_000


@pytest.mark.parametrize("text, expected", [
    ("2026-11-25T10:00:00Z", us(2026, 11, 25, 10)),
    ("2026-11-25 10:00:00Z", us(2026, 11, 25, 10)),
    ("2026-11-25T10:00:00+02:00", us(2026, 11, 25, 8)),
    ("2026-11-25T10:00:00-05:30", us(2026, 11, 25, 15, 30)),
    ("2026-11-25T10:00:00.123456Z", us(2026, 11, 25, 10) + 123456),
    ("2026-11-25T10:00:00.5Z", us(2026, 11, 25, 10) + 500000),
    ("2026-11-25T10:00:00.1234567Z", us(2026, 11, 25, 10) + 123456),
    ("2026-11-25T10:00:00", us(2026, 11, 25, 10)),
])
def test_iso_timestamps_in_utc(text: str, expected: int) -> None:
    """ISO-8601 with `T` or space, fractions, `Z` and offsets give the right UTC instant."""
    assert timestamp_us(text, None) == expected


def test_naive_times_use_the_configured_zone_summer_and_winter() -> None:
    """A time without offset is Berlin time: +02:00 in summer, +01:00 in winter."""
    assert timestamp_us("2026-07-01T12:00:00", BERLIN) == us(2026, 7, 1, 10)
    assert timestamp_us("2026-01-15T12:00:00", BERLIN) == us(2026, 1, 15, 11)
    assert timestamp_us("2026-07-01T12:00:00Z", BERLIN) == us(2026, 7, 1, 12)


def test_ambiguous_and_skipped_local_times_resolve_with_fold_0() -> None:
    """PEP 495 fold=0: the ambiguous 02:30 is the first (CEST); the skipped 02:30 keeps +01:00."""
    assert timestamp_us("2026-10-25T02:30:00", BERLIN) == us(2026, 10, 25, 0, 30)
    assert timestamp_us("2026-03-29T02:30:00", BERLIN) == us(2026, 3, 29, 1, 30)


@pytest.mark.parametrize("value, expected", [
    (1_764_000_000, 1_764_000_000_000_000),
    (1_764_000_000.25, 1_764_000_000_250_000),
    (1_764_000_000_123, 1_764_000_000_123_000),   # above 10^11: milliseconds
    (0, 0),
])
def test_epoch_seconds_and_milliseconds(value: float, expected: int) -> None:
    """Numbers are epoch seconds, or milliseconds above 10^11."""
    assert timestamp_us(value, None) == expected


@pytest.mark.parametrize("value", [
    True, False, "2026-02-30T10:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25T23:59:60Z",
    "2026-11-25", "20261125T100000Z", "2026-11-25T10:00Z", "2026-11-25T10:00:00+0200",
    "2026-11-25T10:00:00+24:00", "２０２６-11-25T10:00:00Z", "2026-11-25t10:00:00z", "",
    "yesterday", 10**20, -10**13, [], {}, "0000-01-01T00:00:00Z", "9999-12-31T23:00:00-05:00",
])
def test_invalid_timestamps(value: object) -> None:
    """Booleans, impossible dates, non-ISO shapes, non-ASCII digits and out-of-range values fail."""
    with pytest.raises(RecordError) as err:
        timestamp_us(value, None)
    assert err.value.reason == INVALID_TIMESTAMP
    assert err.value.field == "timestamp"


def test_big_integers_parse_exactly() -> None:
    """Integers beyond 64 bits keep every digit (orjson would turn them into floats)."""
    big = 2**70 + 1
    assert parse_json(f'{{"a": {big}, "b": -{big}}}'.encode()) == {"a": big, "b": -big}


@pytest.mark.parametrize("raw, reason", [
    (b'{"a": NaN}', INVALID_JSON),
    (b'{"a": Infinity}', INVALID_JSON),
    (b'{"a": 1e999}', INVALID_JSON),
    (b'{"a": 1,}', INVALID_JSON),
    (b'{"a": 1} // comment', INVALID_JSON),
    (b'{"a": "\xff"}', INVALID_ENCODING),
    (b'{"a": "\\ud800"}', INVALID_ENCODING),
    (b"[" * 40000 + b"]" * 40000, INVALID_JSON),
])
def test_parse_errors(raw: bytes, reason: str) -> None:
    """Not-JSON, bad UTF-8, lone surrogates and deep nesting are reasons, never exceptions."""
    with pytest.raises(RecordError) as err:
        parse_json(raw)
    assert err.value.reason == reason


def test_batch_transforms_columns_in_the_configured_zone() -> None:
    """timestamp, day_of_week and the partition date are local; ts is UTC; attributes keep the rest."""
    b = RecordBatcher("f.jsonl", "Europe/Berlin", "2026-11-25T00:00:00Z", 1 << 20)
    line = json.dumps({"timestamp": "2026-11-29T23:30:00Z", "user_id": 7, "action": "login",
                       "x": {"y": [1, 2.5, None]}})
    table, res = b.process_lines(line.encode() + b"\n", 1)
    assert res.valid == 1 and res.errors == 0
    row = table.to_pylist()[0]
    assert row["timestamp"] == "2026-11-30 00:30:00"
    assert row["day_of_week"] == "Monday"
    assert row["date"] == "2026-11-30"
    assert row["ts"] == datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc)
    assert row["user_id"] == "7"
    assert json.loads(row["attributes"]) == {"x": {"y": [1, 2.5, None]}}
    assert res.counts == {("2026-11-30", "login"): 1}


def test_fraction_is_dropped_from_the_formatted_timestamp_even_before_1970() -> None:
    """The formatted timestamp truncates to the second (floor, also for negative epochs)."""
    b = RecordBatcher("f", "UTC", "x", 1 << 20)
    table, _ = b.process_lines(b'{"timestamp": -0.5, "user_id": "u", "action": "a"}\n', 1)
    assert table.to_pylist()[0]["timestamp"] == "1969-12-31 23:59:59"
