"""Validation and transformation of records: raw lines in, Arrow columns and error lines out.

The per-line work is the unavoidable part (orjson parse, three field checks, timestamp
arithmetic); everything per column (formatting, day of week, partition date, grouping)
is vectorised with pyarrow compute over the whole chunk.
"""

from __future__ import annotations

import json
import math
import re
import sys
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from .errors import ConfigError
from .reader import JSON_WS

try:  # the common case in C (setup.py builds it; without a compiler, Python does it all)
    from . import _scan
except ImportError:  # pragma: no cover - depends on the build
    _scan = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import pyarrow as pa

# --- reason codes (SPEC §5) -------------------------------------------------------------
INVALID_JSON = "invalid_json"
INVALID_ENCODING = "invalid_encoding"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
INVALID_TIMESTAMP = "invalid_timestamp"
LINE_TOO_LONG = "line_too_long"
REASONS = (INVALID_JSON, INVALID_ENCODING, NOT_AN_OBJECT, MISSING_FIELD, INVALID_FIELD,
           INVALID_TIMESTAMP, LINE_TOO_LONG)

LONG_LINE_RAW_BYTES = 1024  # how much of an over-long line its error record keeps

# pyarrow is imported where columns are built, not here: the process that coordinates
# worker processes only hashes and cuts the input and never needs it (−55 MB RSS, −0.25 s).
_DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def __getattr__(name: str) -> Any:
    # CLEAN_SCHEMA stays importable as a constant, built on first use (compaction's name for
    # layout.clean_schema()).
    if name == "CLEAN_SCHEMA":
        from .layout import clean_schema

        return clean_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# ISO-8601 date-time as SPEC §4 allows it; [0-9] because \d also matches non-ASCII digits.
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})?"
)
# A run of 19+ digits may be an integer beyond 64 bits, which orjson turns into a float:
# such lines take the exact path. Digits map to "0", everything else to " ", then one find.
_DIGITS_TO_ZERO = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_RUN = b"0" * 19


def has_long_digit_run(data: bytes) -> bool:
    return data.translate(_DIGITS_TO_ZERO).find(_LONG_RUN) >= 0


_SLOW = object()  # marks a line for the exact (standard library) parser


def _first(pair: tuple[int, bytes]) -> int:
    return pair[0]


_BLANK = object()   # the slow parser's answer for a blank line
_FAILED = object()  # ... for a line that is not JSON (its error line is recorded)
_TOO_DEEP = object()  # ... for JSON nested deeper than the parser allows (an error line too)


def _field_fault(ts: Any, uid: Any, act: Any) -> tuple[str, str]:
    """(reason, field) of an object failing a field check, in the order SPEC §4 lists them."""
    if ts is None:
        return MISSING_FIELD, "timestamp"
    if uid is None:
        return MISSING_FIELD, "user_id"
    if (type(uid) is not str and type(uid) is not int) or uid == "":
        return INVALID_FIELD, "user_id"
    if act is None:
        return MISSING_FIELD, "action"
    return INVALID_FIELD, "action"


# ISO-8601 date-times that are certainly valid (fromisoformat would accept them with the
# same instant): the calendar is checked by the pattern itself, because pyarrow's strptime
# rolls Feb 30 over to Mar 1 and a failed cast fails the whole column.
_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
_LEAP = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
         rf"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP}-02-29)")
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_ISO_ZONED = rf"^{_DATE}[T ]{_TIME}(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
_ISO_NAIVE = rf"^{_DATE}[T ]{_TIME}$"
_COLUMNWISE_MIN = 256  # fewer timestamp strings than this are converted one by one

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_US_PER_DAY = 86_400_000_000
# Valid instants: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z, whose date-time in
# the configured zone is within the same years too (a date and a `timestamp` to write).
MIN_US = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
MAX_US = (date(9999, 12, 31).toordinal() + 1 - _EPOCH_ORDINAL) * _US_PER_DAY - 1
# Instants more than two days from either end are within the years in every zone (offsets
# are under a day): the fast paths accept those, and leave the edges to `timestamp_us`.
SAFE_MIN_US = MIN_US + 2 * _US_PER_DAY
SAFE_MAX_US = MAX_US - 2 * _US_PER_DAY
_MS_THRESHOLD = 10**11
_MIN_S = -(-SAFE_MIN_US // 1_000_000)   # integer epochs (seconds, or ms above 10^11) that are safe
_MAX_MS = SAFE_MAX_US // 1000


class RecordError(Exception):
    """One line is invalid: carries the reason code and the field at fault.

    `syntax`: the text is not JSON at all (RFC 8259's grammar); an array element like
    that means the array does not parse. Anything else (nested deeper than MAX_DEPTH,
    invalid UTF-8, a lone surrogate, a number out of range) is an error line, in an array
    as in JSON Lines. `too_deep`: nested deeper than MAX_DEPTH.
    """

    def __init__(self, reason: str, field: str | None = None, detail: str = "",
                 too_deep: bool = False, syntax: bool = False) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.field = field
        self.too_deep = too_deep
        self.syntax = syntax


class _NotJson(ValueError):
    """NaN or Infinity: a token outside RFC 8259's grammar."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


# Nesting: orjson reads values nested up to 1,024 levels in all (the record itself is one).
# The exact parser is held to the same limit, whatever the depth of the call stack it runs
# on: the interpreter's recursion limit is raised to leave it room.
MAX_DEPTH = 1024
if sys.getrecursionlimit() < MAX_DEPTH + 2000:
    sys.setrecursionlimit(MAX_DEPTH + 2000)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def too_deep(raw: bytes) -> bool:
    """Whether the brackets of a JSON text, strings aside, nest deeper than MAX_DEPTH."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False  # too few to nest that deep
    depth = 0
    for c in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if c in b"[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """Parses one JSON value strictly (RFC 8259) and exactly; raises RecordError with the reason.

    The record path uses orjson and comes here only when orjson fails or a line may hold
    an integer beyond 64 bits: big integers stay exact, lone surrogates are told apart from
    bad JSON, and nesting too deep for the parser is an error line.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(INVALID_ENCODING, detail=f"invalid UTF-8 at byte {exc.start}") from None
    if too_deep(raw):
        raise RecordError(INVALID_JSON, detail="nesting too deep", too_deep=True)
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:  # not expected below MAX_DEPTH: the limit was raised for it
        raise RecordError(INVALID_JSON, detail="nesting too deep", too_deep=True) from None
    except (json.JSONDecodeError, _NotJson) as exc:
        raise RecordError(INVALID_JSON, detail=str(exc), syntax=True) from None
    except ValueError as exc:  # a number out of range, an integer of more than 4,300 digits
        raise RecordError(INVALID_JSON, detail=str(exc)) from None
    try:
        _dumps(value).encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(INVALID_ENCODING, detail="lone surrogate escape in a string") from None
    return value


def _dumps(value: Any) -> str:
    """Compact JSON text; the fallback when orjson cannot serialise (big ints, depth > 254).

    The C encoder recurses: past ~1,000 levels (which orjson parses) it raises
    RecursionError, and an explicit stack takes over.
    """
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        return _dumps_deep(value)


class _Text(str):
    """Already rendered JSON text on the encoder's stack."""


def _dumps_deep(value: Any) -> str:
    """Compact JSON text of any depth, with an explicit stack: the same text as `_dumps`."""
    scalar = json.dumps  # a string or number alone never recurses
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is _Text:
            out.append(v)
        elif t is dict or t is list:
            if not v:
                out.append("{}" if t is dict else "[]")
                continue
            stack.append(_Text("}" if t is dict else "]"))
            items = list(v.items()) if t is dict else list(enumerate(v))
            opener = "{" if t is dict else "["
            for i in range(len(items) - 1, -1, -1):
                key, item = items[i]
                stack.append(item)
                sep = opener if i == 0 else ","
                stack.append(_Text(sep + scalar(key, ensure_ascii=False) + ":" if t is dict else sep))
        else:
            out.append(scalar(v, ensure_ascii=False))
    return "".join(out)


# A whole JSON string, or a run of anything else but whitespace: joined, they are the
# text without its insignificant whitespace.
_NOT_WS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[^ \t\r\n"]+|"', re.DOTALL)


def compact_text(raw: bytes) -> str:
    """An array element as compact JSON text (SPEC §5), whatever its depth or validity."""
    try:
        if has_long_digit_run(raw):
            raise ValueError("may hold an integer beyond 64 bits")
        value = orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError is one
        try:
            value = parse_json(raw)
        except RecordError:  # too deep to parse: drop the whitespace only
            return b"".join(_NOT_WS.findall(raw)).decode("utf-8", "replace")
    return dumps_json(value)


def dumps_json(value: Any) -> str:
    """Lossless compact JSON text of a parsed value."""
    return dumps_exact(value).decode("utf-8")


def dumps_exact(value: Any) -> bytes:
    """Compact JSON of a parsed value, as orjson writes it, integers beyond 64 bits too
    (written as their digits), so that floats are written the same way whatever else the
    value holds. Past orjson's depth (254), the standard library's text."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    try:
        return orjson.dumps(_big_ints_as_text(value))
    except (orjson.JSONEncodeError, RecursionError):
        return _dumps(value).encode("utf-8")


_INT64 = (-(1 << 63), (1 << 64) - 1)  # what orjson writes itself


def _big_ints_as_text(value: Any) -> Any:
    t = type(value)
    if t is int and not _INT64[0] <= value <= _INT64[1]:
        return orjson.Fragment(str(value))
    if t is dict:
        return {k: _big_ints_as_text(v) for k, v in value.items()}
    if t is list:
        return [_big_ints_as_text(v) for v in value]
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_fromiso = datetime.fromisoformat


def timestamp_us(value: Any, zone: zoneinfo.ZoneInfo | None) -> int:
    """Epoch microseconds (UTC) of a `timestamp` field; `zone` None means UTC.

    Raises RecordError(invalid_timestamp) for anything SPEC §4 does not accept.
    """
    t = type(value)
    if t is str:
        if _ISO.fullmatch(value) is None:
            raise RecordError(INVALID_TIMESTAMP, "timestamp", "not an ISO-8601 date-time")
        try:
            dt = _fromiso(value)  # the shape is checked: this validates the calendar
            if dt.tzinfo is None:
                # PEP 495, fold=0: an ambiguous time is the first, a skipped one keeps the old offset.
                dt = dt.replace(tzinfo=zone or UTC)
            us = (dt - _EPOCH) // _ONE_US
        except (ValueError, OverflowError):
            raise RecordError(INVALID_TIMESTAMP, "timestamp", "no such date or time") from None
    elif t is int:
        us = value * 1000 if value > _MS_THRESHOLD else value * 1_000_000
    elif t is float:
        scaled = value * 1000 if value > _MS_THRESHOLD else value * 1_000_000
        if not MIN_US <= scaled <= MAX_US:  # also ±inf, which round() refuses
            raise RecordError(INVALID_TIMESTAMP, "timestamp", "outside years 0001-9999")
        us = round(scaled)
    elif t is bool:
        raise RecordError(INVALID_TIMESTAMP, "timestamp", "a boolean is not a timestamp")
    else:
        raise RecordError(INVALID_TIMESTAMP, "timestamp", f"a {_json_type(value)} is not a timestamp")
    if not SAFE_MIN_US <= us <= SAFE_MAX_US and not _within_years(us, zone):
        raise RecordError(INVALID_TIMESTAMP, "timestamp", "outside years 0001-9999")
    return us


def _within_years(us: int, zone: zoneinfo.ZoneInfo | None) -> bool:
    """Whether the instant, and its date-time in `zone`, fall within years 0001-9999."""
    if not MIN_US <= us <= MAX_US:
        return False
    if zone is None:
        return True
    try:
        (_EPOCH + timedelta(microseconds=us)).astimezone(zone)
    except OverflowError:  # its local date would be in year 0 or 10000
        return False
    return True


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


@dataclass
class ChunkResult:
    """What one chunk produced, apart from the Parquet rows its writer already holds."""

    processed: int = 0
    valid: int = 0
    errors: int = 0
    parsed: int = 0  # lines that were JSON at all, or too long to read (decides "malformed file")
    error_lines: list[bytes] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (date, action) -> n

    def merge(self, other: ChunkResult) -> None:
        self.processed += other.processed
        self.valid += other.valid
        self.errors += other.errors
        self.parsed += other.parsed
        self.error_lines.extend(other.error_lines)
        self.add_counts(other.counts)

    def add_counts(self, counts: dict[tuple[str, str], int]) -> None:
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n


class RecordBatcher:
    """Turns numbered raw items (lines or array elements) into a clean table and error lines."""

    def __init__(self, source_file: str, timezone_name: str, ingested_at: str,
                 max_line_bytes: int, scan: bool = True) -> None:
        """`scan`: JSON Lines take the C path (`_scan`) when it is built; False: Python
        alone, the reference the C path is tested against."""
        self.scan = scan
        self.source_file = source_file
        self.zone = None if timezone_name == "UTC" else zoneinfo.ZoneInfo(timezone_name)
        self.timezone_name = timezone_name
        self.ingested_at = ingested_at
        self.max_line_bytes = max_line_bytes

    def error_line(self, line_no: int, reason: str, field: str | None, raw: str) -> bytes:
        rec: dict[str, Any] = {"source_file": self.source_file, "source_line": line_no,
                               "reason": reason}
        if field is not None:
            rec["field"] = field
        rec["raw"] = raw
        rec["ingested_at"] = self.ingested_at
        try:
            return orjson.dumps(rec) + b"\n"
        except orjson.JSONEncodeError:  # a raw with lone surrogates: keep them as escapes
            return json.dumps(rec, ensure_ascii=True).encode("ascii") + b"\n"

    def long_line(self, line_no: int, prefix: bytes, length: int) -> bytes:
        raw = prefix[:LONG_LINE_RAW_BYTES].decode("utf-8", "replace")
        return self.error_line(line_no, LINE_TOO_LONG, None, raw)

    def process_lines(self, data: bytes, first_line: int, strip_bom: bool = False) -> tuple[pa.Table | None, ChunkResult]:
        """A block of JSON Lines text (complete lines) starting at line `first_line`."""
        batch, res = self.parse_lines(data, first_line, strip_bom)
        return self.finish([batch] if batch is not None else [], res)

    def process_elements(self, elements: list[bytes], first_index: int) -> tuple[pa.Table | None, ChunkResult]:
        """Array elements (raw JSON text of each), numbered from `first_index`."""
        batch, res = self.parse_elements(elements, first_index)
        return self.finish([batch] if batch is not None else [], res)

    def parse_lines(self, data: bytes, first_line: int, strip_bom: bool = False) -> tuple[pa.RecordBatch | None, ChunkResult]:
        """The per-line step only: the valid records' own columns, and the error lines.

        Several parsed blocks are turned into one table by `finish`, so the per-column
        work (formatting, partition dates, counts) is paid once per chunk, not per block.
        """
        if strip_bom and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        if _scan is not None and self.scan:
            return self._scan_lines(data, first_line)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        return self._process(lines, first_line, False, has_long_digit_run(data), b"\r" in data)

    def _scan_lines(self, data: bytes, first_line: int) -> tuple[pa.RecordBatch | None, ChunkResult]:
        """`parse_lines` with the common case in C (`_scan.scan_lines`): the lines it proves
        valid and ordinary come back as Arrow buffers; every other line, and every line whose
        timestamp string turns out invalid, goes through `_process`, which decides it exactly.
        The rows of both are put back in line order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        assert _scan is not None
        r = _scan.scan_lines(data, first_line, self.max_line_bytes, _MIN_S, _MAX_MS, _MS_THRESHOLD,
                             SAFE_MIN_US, SAFE_MAX_US, self.zone is None)
        rows = r["rows"]
        left = memoryview(r["slow"]).cast("q").tolist()  # (line number, start, end) per line
        fast = None
        if rows:
            buf = pa.py_buffer
            ts = pa.Array.from_buffers(pa.int64(), rows, [buf(r["ts_valid"]) if r["ts_nulls"] else None,
                                                          buf(r["ts"])], null_count=r["ts_nulls"])
            fast = pa.record_batch([
                ts,
                pa.Array.from_buffers(pa.string(), rows, [None, buf(r["uid_offsets"]), buf(r["uid_data"])]),
                pa.Array.from_buffers(pa.string(), rows, [None, buf(r["act_offsets"]), buf(r["act_data"])]),
                pa.Array.from_buffers(pa.string(), rows,
                                      [buf(r["attr_valid"]) if r["attr_nulls"] else None,
                                       buf(r["attr_offsets"]), buf(r["attr_data"])],
                                      null_count=r["attr_nulls"]),
                pa.Array.from_buffers(pa.int64(), rows, [None, buf(r["lines"])]),
            ], names=["ts", "user_id", "action", "attributes", "source_line"])
            if r["ts_nulls"]:  # timestamp strings of other shapes: converted here
                values = pa.Array.from_buffers(pa.string(), r["ts_nulls"],
                                               [None, buf(r["str_offsets"]), buf(r["str_data"])])
                us, bad = self._string_timestamps(values)
                missing = pc.is_null(ts)
                fast = fast.set_column(0, "ts", pc.replace_with_mask(ts, missing, us))
                if bad:  # the Python path gives their error lines
                    spans = memoryview(r["str_spans"]).cast("q")
                    where = pc.indices_nonzero(missing).to_pylist()
                    keep = [True] * rows
                    nos = fast["source_line"]
                    for j, _reason, _field in bad:
                        row = where[j]
                        keep[row] = False
                        left.extend((nos[row].as_py(), spans[2 * j], spans[2 * j + 1]))
                    fast = fast.filter(pa.array(keep, pa.bool_()))
                    rows = fast.num_rows
                    triples = sorted(zip(left[0::3], left[1::3], left[2::3]))
                    left = [v for t in triples for v in t]
        if not left:
            res = ChunkResult(parsed=rows)
            res.valid = res.processed = 0 if fast is None else fast.num_rows
            return self._timestamps_typed(fast), res
        items = [data[left[k + 1]:left[k + 2]] for k in range(0, len(left), 3)]
        numbers = left[0::3]
        slow_batch, res = self._process(items, numbers[0], False,
                                        any(map(has_long_digit_run, items)),
                                        any(b"\r" in item for item in items), numbers)
        res.parsed += rows
        if fast is None or not fast.num_rows:
            return slow_batch, res
        res.valid += fast.num_rows
        res.processed += fast.num_rows
        fast = self._timestamps_typed(fast)
        if slow_batch is None:
            return fast, res
        both = pa.Table.from_batches([fast, slow_batch]).combine_chunks()
        ordered = both.take(pc.sort_indices(both["source_line"]))
        return ordered.to_batches()[0], res

    @staticmethod
    def _timestamps_typed(batch: pa.RecordBatch | None) -> pa.RecordBatch | None:
        import pyarrow as pa

        if batch is None or not batch.num_rows:
            return None
        return batch.set_column(0, "ts", batch["ts"].cast(pa.timestamp("us", tz="UTC")))

    def parse_elements(self, elements: list[bytes], first_index: int) -> tuple[pa.RecordBatch | None, ChunkResult]:
        """`parse_lines` for array elements (raw JSON text of each), numbered from `first_index`."""
        return self._process(elements, first_index, True, any(has_long_digit_run(e) for e in elements))

    def finish(self, batches: list[pa.RecordBatch], res: ChunkResult,
               counts: bool = True) -> tuple[pa.Table | None, ChunkResult]:
        """The clean table (with its partition column) of parsed blocks, and (with `counts`)
        its rows per (date, action); a caller summing many chunks uses `CountTables`."""
        import pyarrow as pa

        if not batches:
            return None, res
        table = self._table(pa.Table.from_batches(batches))
        if counts:
            res.counts = _counts(table)
        return table, res

    def _process(self, items: list[bytes], first: int, array: bool, suspect: bool,
                 crlf: bool = False, numbers: Sequence[int] | None = None,
                 ) -> tuple[pa.RecordBatch | None, ChunkResult]:
        """The per-line step in Python: items numbered from `first`, or by `numbers`."""
        import pyarrow as pa
        import pyarrow.compute as pc

        # The hot loop: bound methods in locals, one combined test for a valid record, and
        # everything rare (bad lines, CRs, over-long lines, error records) off this path.
        # Timestamp strings are only collected here (None in ts_col) and converted per
        # column afterwards (`_string_timestamps`).
        res = ChunkResult()
        errors = res.error_lines
        error_nos: list[int] = []  # the line number of each error line, to merge late ones
        nos = numbers if numbers is not None else range(first, first + len(items))
        if items and (crlf or max(map(len, items)) > self.max_line_bytes):
            items = self._prepare(items, nos, errors, error_nos)
        # Over-long lines are never read: not known not to be JSON, so they never make the
        # file malformed (`parsed`), however many there are.
        unread = len(errors)
        str_ts: list[str] = []
        ts_col: list[int | None] = []
        uid_col: list[str] = []
        act_col: list[str] = []
        attr_col: list[bytes | None] = []  # compact JSON, UTF-8: viewed as strings at the end
        line_col: list[int] = []
        ts_add, str_add, uid_add = ts_col.append, str_ts.append, uid_col.append
        act_add, attr_add, line_add = act_col.append, attr_col.append, line_col.append
        zone = self.zone
        loads = orjson.loads
        dumps = orjson.dumps
        decode_error = orjson.JSONDecodeError
        slow = self._slow_line
        to_us = timestamp_us
        blank = failed = 0
        for line_no, raw in zip(nos, items):
            if not raw:  # an empty line: not through orjson's exception (~1.5 us each)
                blank += 1
                continue
            try:
                if suspect and has_long_digit_run(raw):
                    raise decode_error("may hold an integer beyond 64 bits", "", 0)
                rec = loads(raw)
            except decode_error:
                rec = slow(raw, line_no, array, errors, error_nos)
                if rec is _BLANK:
                    blank += 1
                    continue
                if rec is _FAILED:
                    failed += 1
                    continue
                if rec is _TOO_DEEP:
                    continue
            if type(rec) is dict:
                pop = rec.pop
                ts = pop("timestamp", None)
                uid = pop("user_id", None)
                act = pop("action", None)
                tu = type(uid)
                if ts is not None and type(act) is str and act and (tu is str and uid or tu is int):
                    t = type(ts)
                    if t is int and _MIN_S <= ts <= _MAX_MS:  # integer epochs in range, inline
                        ts_add(ts * 1000 if ts > _MS_THRESHOLD else ts * 1_000_000)
                    elif t is str:
                        ts_add(None)
                        str_add(ts)
                    else:
                        try:
                            ts_add(to_us(ts, zone))
                        except RecordError as exc:
                            errors.append(self.error_line(line_no, exc.reason, exc.field,
                                                          self._raw_text(raw, array)))
                            error_nos.append(line_no)
                            continue
                    if rec:
                        try:
                            attr_add(dumps(rec))
                        except TypeError:  # orjson cannot write it (an integer beyond 64 bits)
                            attr_add(dumps_exact(rec))
                    else:
                        attr_add(None)
                    uid_add(uid if tu is str else str(uid))
                    act_add(act)
                    line_add(line_no)
                    continue
                reason, fld = _field_fault(ts, uid, act)
            else:
                reason, fld = NOT_AN_OBJECT, None
            errors.append(self.error_line(line_no, reason, fld, self._raw_text(raw, array)))
            error_nos.append(line_no)
        res.parsed = len(items) - blank - failed + unread
        if not ts_col:
            res.errors = res.processed = len(errors)
            return None, res
        ts_arr = pa.array(ts_col, pa.int64())
        batch = pa.record_batch([
            ts_arr,
            pa.array(uid_col, pa.string()),
            pa.array(act_col, pa.string()),
            pa.array(attr_col, pa.binary()).view(pa.string()),
            pa.array(line_col, pa.int64()),
        ], names=["ts", "user_id", "action", "attributes", "source_line"])
        if str_ts:
            us, bad = self._string_timestamps(str_ts)
            batch = batch.set_column(0, "ts", pc.replace_with_mask(ts_arr, pc.is_null(ts_arr), us))
            if bad:  # invalid timestamp strings: error lines, in line order, and rows dropped
                rows = pc.indices_nonzero(pc.is_null(ts_arr)).to_pylist()
                keep = [True] * len(ts_col)
                late = []
                index = {no: k for k, no in enumerate(nos)}
                for j, reason, fld in bad:
                    row = rows[j]
                    keep[row] = False
                    no = line_col[row]
                    raw = self._strip_cr(items[index[no]])
                    late.append((no, self.error_line(no, reason, fld, self._raw_text(raw, array))))
                batch = batch.filter(pa.array(keep, pa.bool_()))
                merged = sorted([*zip(error_nos, errors), *late], key=_first)
                res.error_lines = errors = [e for _, e in merged]
        res.errors = len(errors)
        res.valid = batch.num_rows
        res.processed = res.valid + res.errors  # every non-blank line is one or the other
        if not batch.num_rows:
            return None, res
        return batch.set_column(0, "ts", batch["ts"].cast(pa.timestamp("us", tz="UTC"))), res

    def _prepare(self, items: list[bytes], numbers: Iterable[int], errors: list[bytes],
                 error_nos: list[int]) -> list[bytes]:
        """Strips one trailing CR per line; over-long lines become errors here, blanks for the loop."""
        out = []
        for no, raw in zip(numbers, items):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > self.max_line_bytes:
                if raw.strip(JSON_WS):
                    errors.append(self.long_line(no, raw, len(raw)))
                    error_nos.append(no)
                raw = b""  # numbered, but not a record
            out.append(raw)
        return out

    def _slow_line(self, raw: bytes, line_no: int, array: bool, errors: list[bytes],
                   error_nos: list[int]) -> Any:
        """The exact parser, for a line orjson refused or that may hold a big integer."""
        if not raw.strip(JSON_WS):
            return _BLANK  # a blank line is not a record
        try:
            return parse_json(raw)
        except RecordError as exc:
            if array and exc.syntax:  # the array does not parse: the whole file is malformed
                raise
            errors.append(self.error_line(line_no, exc.reason, None, self._raw_text(raw, array)))
            error_nos.append(line_no)
            # Too deep is still JSON: it does not make the file "not JSON" (quarantine).
            return _TOO_DEEP if exc.too_deep else _FAILED

    @staticmethod
    def _strip_cr(raw: bytes) -> bytes:
        return raw[:-1] if raw.endswith(b"\r") else raw

    def _string_timestamps(self, values: list[str] | pa.Array) -> tuple[pa.Array, list[tuple[int, str, str | None]]]:
        """Epoch microseconds of timestamp strings, and the (index, error) of the invalid ones.

        pyarrow decides the strings that are certainly valid ISO-8601 date-times (a pattern
        that also checks the calendar: month lengths, leap years, hours < 24, offsets < 24 h)
        and converts them; every other string goes through timestamp_us one by one, so the
        verdicts, values and reasons are exactly its.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(values) < _COLUMNWISE_MIN:  # a few values: the fixed cost of ~15 kernels dominates
            return self._python_timestamps(values if isinstance(values, list) else values.to_pylist())
        arr = pa.array(values, pa.string()) if isinstance(values, list) else values
        us = pa.nulls(len(values), pa.int64())
        zoned = pc.match_substring_regex(arr, _ISO_ZONED)
        if pc.any(zoned).as_py():
            cast = pc.cast(pc.filter(arr, zoned), pa.timestamp("us", tz="UTC")).cast(pa.int64())
            us = pc.replace_with_mask(us, zoned, cast)
        if self.zone is None:  # no offset: read in UTC, so the same conversion holds
            naive = pc.match_substring_regex(arr, _ISO_NAIVE)
            if pc.any(naive).as_py():
                cast = pc.cast(pc.filter(arr, naive), pa.timestamp("us")).cast(pa.int64())
                us = pc.replace_with_mask(us, naive, cast)
        # Near the ends of the years the local date decides: timestamp_us, one by one.
        us = pc.if_else(pc.and_(pc.greater_equal(us, SAFE_MIN_US), pc.less_equal(us, SAFE_MAX_US)),
                        us, pa.scalar(None, pa.int64()))
        # (index, reason, field): not the exception itself, whose traceback would hold this
        # frame (and its arrays) in a reference cycle until a full garbage collection.
        bad: list[tuple[int, str, str | None]] = []
        if us.null_count:
            missing = pc.is_null(us)
            fixed = []
            zone = self.zone
            for j in pc.indices_nonzero(missing).to_pylist():
                try:
                    fixed.append(timestamp_us(arr[j].as_py(), zone))
                except RecordError as exc:
                    bad.append((j, exc.reason, exc.field))
                    fixed.append(0)  # the row is dropped
            us = pc.replace_with_mask(us, missing, pa.array(fixed, pa.int64()))
        return us, bad

    @staticmethod
    def _raw_text(raw: bytes, array: bool) -> str:
        if array:  # SPEC: an array element is given as compact JSON
            return compact_text(raw)
        return raw.decode("utf-8", "replace")

    def _python_timestamps(self, values: list[str]) -> tuple[pa.Array, list[tuple[int, str, str | None]]]:
        import pyarrow as pa

        out: list[int] = []
        bad: list[tuple[int, str, str | None]] = []
        zone = self.zone
        for j, v in enumerate(values):
            try:
                out.append(timestamp_us(v, zone))
            except RecordError as exc:
                bad.append((j, exc.reason, exc.field))
                out.append(0)  # the row is dropped
        return pa.array(out, pa.int64()), bad

    def _table(self, parsed: pa.Table) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = parsed.num_rows
        ts = parsed["ts"]
        if self.zone is None:
            local = ts.cast(pa.timestamp("us"))
        else:
            local = pc.local_timestamp(pc.cast(ts, pa.timestamp("us", tz=self.timezone_name)))
            local = _future_rules(ts, local, self.zone)
        formatted = pc.floor_temporal(local, unit="second").cast(pa.timestamp("s")).cast(pa.string())
        dow = pc.take(pa.array(_DAY_NAMES), pc.day_of_week(local))
        day = pc.floor_temporal(local, unit="day").cast(pa.date32()).cast(pa.string())
        return pa.table(
            {
                "timestamp": formatted,
                "ts": ts,
                "day_of_week": dow,
                "user_id": parsed["user_id"],
                "action": parsed["action"],
                "attributes": parsed["attributes"],
                "source_file": pa.repeat(pa.scalar(self.source_file, pa.string()), n),
                "source_line": parsed["source_line"],
                "date": day,
            }
        )


# Time-zone files list explicit transitions up to 2037 and a rule for the years after;
# pyarrow's conversion follows the list only (summer time after 2037 is ignored), Python's
# zoneinfo applies the rule too. Instants from here on are converted by zoneinfo.
_RULES_FROM_US = 2114380800 * 1_000_000  # 2037-01-01T00:00:00Z


def _future_rules(ts: pa.ChunkedArray | pa.Array, local: Any, zone: Any) -> Any:
    """`local` with the instants from 2037 on converted by zoneinfo (usually none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    if isinstance(local, pa.ChunkedArray):
        local = local.combine_chunks()
    us = ts.cast(pa.int64())
    late = pc.greater_equal(us, _RULES_FROM_US)
    if not pc.any(late).as_py():
        return local
    fixed = []
    for u in pc.filter(us, late).to_pylist():
        try:
            moment = _EPOCH + timedelta(microseconds=u)
            offset = moment.astimezone(zone).utcoffset() or timedelta(0)
            fixed.append(u + (offset // timedelta(microseconds=1)))
        except (OverflowError, ValueError):  # past 9999 in local time: refused earlier
            fixed.append(u)
    values = pa.array(fixed, pa.int64()).cast(pa.timestamp("us"))
    return pc.replace_with_mask(local, late, values)


def _counts(table: pa.Table) -> dict[tuple[str, str], int]:
    """Rows per (event date, action), for the ledger's daily counts."""
    if table.num_rows < 2048:  # a small file: cheaper than starting a group-by plan
        counts: dict[tuple[str, str], int] = {}
        for key in zip(table["date"].to_pylist(), table["action"].to_pylist()):
            counts[key] = counts.get(key, 0) + 1
        return counts
    grouped = table.group_by(["date", "action"]).aggregate([([], "count_all")])
    return {
        (d, a): n
        for d, a, n in zip(grouped["date"].to_pylist(), grouped["action"].to_pylist(),
                           grouped["count_all"].to_pylist())
    }


class CountTables:
    """Rows per (date, action) over many chunks: grouped per chunk in Arrow, summed once at
    the end, so that a chunk spanning thousands of dates costs no Python work per group."""

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []
        self._small: dict[tuple[str, str], int] = {}

    def add(self, table: pa.Table) -> None:
        if table.num_rows < 2048:
            for key, n in _counts(table).items():
                self._small[key] = self._small.get(key, 0) + n
        else:
            self._tables.append(table.group_by(["date", "action"]).aggregate([([], "count_all")]))
            if len(self._tables) >= 4:  # summed as they come: memory bounded by the groups
                self._tables = [self._summed()]

    def _summed(self) -> pa.Table:
        import pyarrow as pa

        grouped = pa.concat_tables(self._tables)
        if len(self._tables) == 1:
            return grouped
        return grouped.group_by(["date", "action"]).aggregate([("count_all", "sum")]).rename_columns(
            ["date", "action", "count_all"])

    def result(self) -> dict[tuple[str, str], int]:
        out = dict(self._small)
        if self._tables:
            grouped = self._summed()
            for d, a, n in zip(grouped["date"].to_pylist(), grouped["action"].to_pylist(),
                               grouped["count_all"].to_pylist()):
                out[(d, a)] = out.get((d, a), 0) + n
        return out


def group_by_date(table: pa.Table) -> tuple[pa.Table, list[tuple[str, int, int]]]:
    """The rows (without the partition column) in date order, and (date, start, rows) per date.

    One pass whatever the number of dates: the dates are dictionary-encoded, the rows put
    in date order by one stable sort (the rows of a date keep their line order) and one
    `take`; a table of one date is returned as it is.
    """
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(table["date"]).combine_chunks()
    days = encoded.dictionary.to_pylist()
    rows = table.drop_columns(["date"])
    if len(days) <= 1:
        return rows, [(days[0], 0, rows.num_rows)] if days else []
    codes = encoded.indices
    counts = [0] * len(days)
    for item in pc.value_counts(codes).to_pylist():
        counts[item["values"]] = item["counts"]
    ordered = rows.take(pc.sort_indices(codes))
    ranges = []
    start = 0
    for day, n in zip(days, counts):
        ranges.append((day, start, n))
        start += n
    return ordered, ranges


def split_by_date(table: pa.Table) -> Iterable[tuple[str, pa.Table]]:
    """(date, rows without the partition column) for each event date in the table: zero-copy
    slices of one sorted table (`group_by_date`), which each keep that whole table alive."""
    ordered, ranges = group_by_date(table)
    for day, start, n in ranges:
        yield day, ordered.slice(start, n)


def utc_now() -> datetime:
    return datetime.now(UTC)


def warm_up(timezone_name: str) -> None:
    """Loads pyarrow and its compute kernels (and the zone's rules) by transforming and
    writing one record in memory, so that the first real file is not ~0.2 s slower."""
    import io

    import pyarrow.parquet as pq

    try:
        batcher = RecordBatcher("warm-up", timezone_name, "1970-01-01T00:00:00Z", 1 << 10)
        table, _ = batcher.process_lines(b'{"timestamp":"2026-01-01 00:00:00","user_id":"u","action":"a"}\n', 1)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError) as exc:  # ArrowInvalid is a ValueError
        # The config accepted a zone the record path cannot use: a config problem (exit 2).
        raise ConfigError(f"transform.timezone: the time zone {timezone_name!r} cannot be "
                          f"used to transform records ({exc})") from None
    if table is not None:
        for _day, part in split_by_date(table):
            pq.write_table(part, io.BytesIO(), compression="zstd")
