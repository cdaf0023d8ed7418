"""Years 0001 and 9999 are valid to their last microsecond; instants outside them are error lines."""

from __future__ import annotations

import json
import zoneinfo

import pytest
from conftest import Env, write

from logwatchd.records import INVALID_TIMESTAMP, RecordBatcher, RecordError, timestamp_us

# (timestamp, expected `timestamp` column in UTC, or None for invalid_timestamp)
UTC_CASES = [
    ("0001-01-01T00:00:00Z", "0001-01-01 00:00:00"),
    ("9999-12-31T23:59:59Z", "9999-12-31 23:59:59"),
    ("9999-12-31T23:59:59.999999Z", "9999-12-31 23:59:59"),
    ("0001-01-01T01:00:00+01:00", "0001-01-01 00:00:00"),
    ("9999-12-31T20:00:00-03:59", "9999-12-31 23:59:00"),
    ("0001-01-01 00:00:00", "0001-01-01 00:00:00"),
    ("9999-12-31 23:59:59", "9999-12-31 23:59:59"),
    (-62135596800, "0001-01-01 00:00:00"),           # epoch seconds of 0001-01-01
    (253402300799999, "9999-12-31 23:59:59"),         # epoch milliseconds of the last second
    ("0001-01-01T00:00:00+00:01", None),              # 0000-12-31T23:59Z
    ("9999-12-31T23:59:59-00:01", None),              # 10000-01-01T00:00:59Z
    (-62135596801, None),
    (1e308, None), (-1e308, None), (10**400, None), (-1e300, None), (1e20, None), (-10**19, None),
]


def _file(cases: list, copies: int) -> str:
    lines = [json.dumps({"timestamp": ts, "user_id": "u", "action": "a"})
             for _ in range(copies) for ts, _want in cases]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("copies", [1, 30])  # 30 copies: > 256 strings, the columnwise path
def test_edge_years_are_rows_and_outside_instants_error_lines(env: Env, copies: int) -> None:
    """0001-01-01 and 9999-12-31 (Z, offsets, naive, epoch numbers) are rows in their partitions; instants outside 0001-9999 and far-out epoch numbers are invalid_timestamp lines."""
    path = write(env.base / "edges.jsonl", _file(UTC_CASES, copies))
    [summary] = env.process(path)
    n = len(UTC_CASES)
    bad = [k for k, (_ts, want) in enumerate(UTC_CASES, 1) if want is None]
    assert summary["status"] == "ok", summary
    assert summary["errors"] == len(bad) * copies
    errors = env.error_rows()
    assert {(e["reason"], e["field"]) for e in errors} == {(INVALID_TIMESTAMP, "timestamp")}
    assert sorted((e["source_line"] - 1) % n + 1 for e in errors) == sorted(bad * copies)
    rows = env.clean_rows()
    assert [r["timestamp"] for r in rows[:n - len(bad)]] == [w for _t, w in UTC_CASES if w]
    dates = {p.name for p in env.path("clean").iterdir()}
    assert dates == {"date=0001-01-01", "date=9999-12-31"}


def test_edge_years_in_an_array_file(env: Env) -> None:
    """The same verdicts hold for the elements of a JSON array."""
    recs = [{"timestamp": ts, "user_id": "u", "action": "a"} for ts, _w in UTC_CASES]
    path = write(env.base / "edges.json", json.dumps(recs))
    [summary] = env.process(path)
    assert summary["status"] == "ok", summary
    assert summary["valid"] == sum(1 for _t, w in UTC_CASES if w)


def test_naive_edge_times_in_the_configured_zone(env: Env) -> None:
    """In Europe/Berlin, naive times inside 0001-9999 (as instants and as local dates) are rows; one that would be year 0 in UTC, or an instant that is year 10000 in Berlin, is not."""
    env.write_config(transform={"timezone": "Europe/Berlin"})
    cases = [("0001-01-01T12:00:00", "0001-01-01 12:00:00"), ("9999-12-31T23:59:59", "9999-12-31 23:59:59"),
             ("0001-01-01T00:00:00Z", "0001-01-01 00:53:28"),  # LMT +00:53:28
             ("0001-01-01T00:00:00", None), ("9999-12-31T23:30:00Z", None)]
    path = write(env.base / "berlin.jsonl", _file(cases, 1))
    [summary] = env.process(path)
    assert (summary["status"], summary["valid"], summary["errors"]) == ("ok", 3, 2), summary
    assert [r["timestamp"] for r in env.clean_rows()] == [w for _t, w in cases if w]
    assert [e["source_line"] for e in env.error_rows()] == [4, 5]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e308, -1e308, 2**70, -2**70])
def test_far_out_epoch_numbers_raise_record_errors(value: float) -> None:
    """timestamp_us answers invalid_timestamp (never OverflowError) for epoch numbers far out of range."""
    with pytest.raises(RecordError) as err:
        timestamp_us(value, zoneinfo.ZoneInfo("America/New_York"))
    assert err.value.reason == INVALID_TIMESTAMP


def test_columnwise_and_per_value_verdicts_agree_at_the_edges() -> None:
    """Hundreds of edge timestamps converted columnwise give the verdicts of converting them one by one."""
    for zone in ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati"):
        batcher = RecordBatcher("f", zone, "x", 1 << 20)
        values = [ts for ts, _w in UTC_CASES if isinstance(ts, str)] * 40
        us, bad = batcher._string_timestamps(values)
        one, bad_one = batcher._python_timestamps(values)
        assert bad == bad_one
        good = set(range(len(values))) - {j for j, _r, _f in bad}
        assert [us[j].as_py() for j in sorted(good)] == [one[j].as_py() for j in sorted(good)]
