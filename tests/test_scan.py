"""The C record path (`logwatchd._scan`) against the Python one: the same rows, byte for byte.

`RecordBatcher(scan=False)` is the reference: the per-line path in Python (orjson, the
standard library's parser for what orjson cannot read exactly). The C path proves the
common lines and hands every other line to it; whatever it does, the table (every column,
`attributes` byte for byte), the error lines and the counts must be the reference's.
Random lines come from a JSON generator that writes every string with random escapes and
whitespace, and from byte-level mutations of them; the hand-written cases are the edges
of what the C path proves (escapes, surrogates, numbers, duplicate keys, depth, UTF-8).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatchd import records
from logwatchd.records import RecordBatcher

pytestmark = pytest.mark.skipif(records._scan is None,
                                reason="logwatchd._scan is not built (no C compiler at install)")

BASE = '"timestamp":{ts},"user_id":{uid},"action":{act}'


def both(data: bytes, zone: str = "UTC", max_line: int = 1 << 20, first: int = 1) -> Any:
    """(table, error lines, counts) from the C path, asserted equal to the reference's."""
    out = []
    for scan in (True, False):
        b = RecordBatcher("f.jsonl", zone, "2026-01-01T00:00:00Z", max_line, scan=scan)
        batch, res = b.parse_lines(data, first)
        table, res = b.finish([batch] if batch is not None else [], res)
        out.append((table, res.error_lines, (res.processed, res.valid, res.errors, res.parsed),
                    res.counts))
    (t1, e1, c1, n1), (t2, e2, c2, n2) = out
    if t1 is None or t2 is None:
        assert t1 is t2 is None
    else:
        assert t1.schema == t2.schema
        for name in t2.column_names:
            assert t1[name].to_pylist() == t2[name].to_pylist(), name
    assert e1 == e2
    assert c1 == c2
    assert n1 == n2
    return t1, e1, c1


def line(ts: str = "1700000000", uid: str = '"u"', act: str = '"login"', rest: str = "") -> bytes:
    return ("{" + BASE.format(ts=ts, uid=uid, act=act) + rest + "}").encode()


EDGES = [
    # escapes: kept (\" \\ \b \f \n \r \t), rewritten (\/ \u), lone and reversed surrogates
    line(rest=r',"s":"a\"b\\c\b\f\n\r\t"'),
    line(rest=r',"s":"\/ \u00e9 \u00E9 \u20ac \ud83d\ude00 \u0000 \u001f \u007f \u0022 \u005c"'),
    line(rest=r',"s":"\u000a\u0009\u0008\u000c\u000d\u001b"'),
    line(rest=r',"s":"\ud800"'), line(rest=r',"s":"\udc00"'), line(rest=r',"s":"\udc00x"'),
    line(rest=r',"s":"\udc00\ud800"'), line(rest=r',"s":"\ud800x"'),
    line(rest=r',"s":"\ud800\u0041"'), line(rest=r',"s":"\u12"'), line(rest=r',"s":"\x"'),
    line(rest=r',"s":"\u12G4"'), line(rest=',"s":"\\'),
    line(uid=r'"\u0075ser"', act=r'"\u006cogin"'), line(uid=r'"a\"b"', act=r'"\/x"'),
    line(ts=r'"2024-01-01T00:00:00\u005a"'), line(ts=r'"2024-01-01T00:00:00\/"'),
    line(uid=r'"\ud800"'), line(act='"\\u0000"'),
    # keys: escaped, duplicated (top level and nested), a field key escaped
    line(rest=r',"\u0061":1,"a":2'), line(rest=r',"a\nb":1,"a\nb":2'), line(rest=r',"a\nb":1'),
    b'{"\\u0074imestamp":1700000000,"user_id":"u","action":"a"}',
    b'{"timestamp":1700000000,"user_id":"u","action":"a","timestamp":"2024-01-01 00:00:00"}',
    b'{"timestamp":1700000000,"user_id":"u","action":"a","action":"b"}',
    line(rest=',"n":{"a":1,"a":2}'), line(rest=',"n":{"a":1,"b":{"a":2}}'),
    line(rest=',"n":[{"a":1},{"a":2}]'),
    # numbers
    *(line(rest=f',"x":{n}') for n in [
        "0", "-0", "1", "-1", "123456789012345678", "1234567890123456789", "-123456789012345678",
        "12345678901234567890123", "1.0", "-1.0", "0.0", "-0.0", "1.5", "1.50", "100.25",
        "0.1", "0.0001", "0.00012", "0.00001", "0.000015", "0.000001", "0.0000015", "-0.000001", "123456789012345.6", "1234567890123456.7",
        "999999999999999.0", "9999999999999999.0", "1e5", "1E5", "1.5e3", "1e400", "01", "1.",
        ".5", "-", "+1", "0x1", "1.0e0", "3.141592653589793", "2.718281828459", "NaN",
        "Infinity", "-Infinity", "0.30000000000000004"]),
    line(uid="42"), line(uid="-42"), line(uid="-0"), line(uid="123456789012345678"),
    line(uid="1234567890123456789"), line(uid="1.5"), line(uid="true"), line(uid='""'),
    line(uid="null"), line(uid="[1]"), line(act='""'), line(act="1"), line(act="null"),
    # timestamps: integer epochs at the edges of the inline range, and the other kinds
    *(line(ts=str(t)) for t in [
        records._MIN_S - 1, records._MIN_S, records._MAX_MS, records._MAX_MS + 1, 10**11,
        10**11 + 1, 0, -1, 253402300799, 253402300800, -62135596800, -62135596801]),
    line(ts="1.5"), line(ts="1700000000.0"), line(ts="true"), line(ts="null"), line(ts="{}"),
    line(ts='"2024-02-30T00:00:00Z"'), line(ts='"yesterday"'), line(ts='"2024-01-01 00:00:00"'),
    line(ts='"2024-01-01T00:00:00.123456789+05:30"'), line(ts='"9999-12-31T23:59:59Z"'),
    line(ts='"0001-01-01T00:00:00Z"'), line(ts='"2024-01-01T24:00:00Z"'), line(ts='""'),
    # structure, whitespace, literals
    b'{}', b'[]', b'"x"', b'1', b'null', b'{"timestamp":1700000000,"user_id":"u"}',
    b' \t{ "timestamp" : 1700000000 , "user_id" : "u" , "action" : "a" , "k" : [ 1 , { } , [ ] ] } \t',
    b'{"timestamp":1700000000,"user_id":"u","action":"a"}x', b'{"timestamp":1700000000,"user_id":"u","action":"a"}}',
    b'{"timestamp":1700000000,"user_id":"u","action":"a",}', b'{"timestamp":1700000000,"user_id":"u","action":"a"',
    b'{"timestamp":1700000000,"user_id":"u","action":"a","k":tru}',
    b'{"timestamp":1700000000,"user_id":"u","action":"a","k":nulll}',
    b'{"timestamp":1700000000,"user_id":"u","action":"a","k":[1,]}',
    b'{"timestamp":1700000000,"user_id":"u","action":"a","k":{"a"}}',
    b'{"timestamp":1700000000,"user_id":"u","action":"a","k":{1:2}}',
    line(rest=',"t":true,"f":false,"z":null,"e":{},"l":[],"o":{"a":[null,true,{"b":"c"}]}'),
    line(rest=',"d":' + "[" * 62 + "1" + "]" * 62), line(rest=',"d":' + "[" * 63 + "]" * 63),
    line(rest=',"d":' + "[" * 64 + "]" * 64), line(rest=',"d":' + '{"a":' * 70 + "1" + "}" * 70),
    line(rest="".join(f',"k{i}":{i}' for i in range(60))),
    line(rest="".join(f',"k{i}":{i}' for i in range(70))),
    line(rest=',"n":{' + ",".join(f'"k{i}":{i}' for i in range(64)) + "}"),
    line(rest=',"n":{' + ",".join(f'"k{i}":{i}' for i in range(65)) + "}"),
    # UTF-8: valid of every length, and invalid in every way
    line(rest=',"s":"é € 😀 \U0010ffff \uffff"'),
    *(line(rest=',"s":"').rstrip(b"}") + bad + b'"}' for bad in [
        b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x80\x80\xaf",
        b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
        b"\xc3\x28", b"\x01", b"\x1f", b"\x7f"]),
    b'{"timestamp":1700000000,"user_id":"u","action":"a"}\xc3\xa9',
    b'\xef\xbb\xbf{"timestamp":1700000000,"user_id":"u","action":"a"}',
]


@pytest.mark.parametrize("raw", EDGES, ids=range(len(EDGES)))
def test_each_edge_alone(raw: bytes) -> None:
    both(raw + b"\n")


def test_the_edges_together_with_blank_lines_crlf_and_a_missing_last_newline() -> None:
    block = b"\n".join(EDGES) + b"\n\n  \t\n"
    table, errors, _counts = both(block)
    assert table is not None and table.num_rows > 40 and errors
    both(block.replace(b"\n", b"\r\n"))
    both(block.rstrip(b"\n"), first=1000)


def test_over_long_lines_go_to_the_python_path() -> None:
    ok = line(rest=',"pad":"' + "x" * 200 + '"')
    both(ok + b"\n" + ok + b"\r\n" + b" " * 300 + b"\n", max_line=len(ok))
    both(ok + b"\r\n", max_line=len(ok))  # exactly the limit once the CR is stripped
    both(ok + b"\n", max_line=len(ok) - 1)


def test_a_zone_other_than_utc() -> None:
    block = b"\n".join([line(ts='"2024-03-31 02:30:00"'), line(ts='"2024-10-27 02:30:00"'),
                        line(ts='"2040-07-01 12:00:00"'), line(ts="1700000000")])
    both(block + b"\n", zone="Europe/Berlin")


def test_many_timestamp_strings_take_the_columnwise_conversion() -> None:
    rows = [line(ts=f'"2024-01-{d:02d}T10:00:00+01:00"') for d in range(1, 29)] * 12
    rows += [line(ts='"2024-02-30T00:00:00Z"'), line(ts='"nope"'), line(ts='"0001-01-01T00:00:00+01:00"')]
    table, errors, _counts = both(b"\n".join(rows) + b"\n")
    assert len(errors) == 3 and table is not None and table.num_rows == 336


# --- random lines: a JSON writer with random escapes and whitespace ---------------------
def _write(value: Any, rnd: random.Random) -> str:
    ws = rnd.choice(["", "", "", " ", "\t", " \r "])
    if isinstance(value, dict):
        items = [f"{ws}{_string(k, rnd)}{ws}:{ws}{_write(v, rnd)}" for k, v in value.items()]
        return "{" + ",".join(items) + ws + "}"
    if isinstance(value, list):
        return "[" + ",".join(ws + _write(v, rnd) for v in value) + ws + "]"
    if isinstance(value, str):
        return _string(value, rnd)
    return json.dumps(value)


def _string(s: str, rnd: random.Random) -> str:
    out = []
    for ch in s:
        r = rnd.random()
        if ch in '"\\' or ord(ch) < 0x20 or r < 0.15:
            if ord(ch) > 0xFFFF:
                hi, lo = divmod(ord(ch) - 0x10000, 0x400)
                out.append(f"\\u{0xD800 + hi:04x}\\u{0xDC00 + lo:04X}")
            elif r < 0.05 and ch in "\"\\/\b\f\n\r\t":
                out.append("\\" + {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}.get(ch, ch))
            else:
                out.append(f"\\u{ord(ch):04x}" if r < 0.5 else f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8) | st.sampled_from(
    ["timestamp", "user_id", "action", "a", "", "/", "\u2028", "😀"])
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1.5, 0.25, 100.0, -0.0]) | TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
TIMESTAMPS = (st.integers(-(10**13), 10**13) | st.floats(-1e12, 1e12)
              | st.sampled_from(["2024-01-01T00:00:00Z", "2024-06-30 12:00:00.5+05:30", "bad", ""])
              | VALUES)
RECORDS = st.fixed_dictionaries({}, optional={
    "timestamp": TIMESTAMPS, "user_id": st.integers(-(10**20), 10**20) | TEXT | VALUES,
    "action": TEXT | VALUES}).flatmap(
    lambda fields: st.dictionaries(TEXT, VALUES, max_size=5).map(lambda rest: {**rest, **fields}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORDS | VALUES, min_size=1, max_size=12), st.randoms(use_true_random=False),
       st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=2)), max_size=3))
def test_random_lines_take_the_same_verdicts_and_text(values: list[Any], rnd: random.Random,
                                                       mutations: list[tuple[int, bytes]]) -> None:
    lines = []
    for v in values:
        items = list(v.items()) if isinstance(v, dict) else None
        if items is not None:
            rnd.shuffle(items)
            v = dict(items)
        lines.append(_write(v, rnd).encode("utf-8", "surrogatepass"))
    block = bytearray(b"\n".join(lines) + b"\n")
    for at, junk in mutations:  # a deleted or replaced byte or two, anywhere
        at %= len(block)
        block[at:at + len(junk) or at + 1] = junk
    both(bytes(block))


def test_nesting_as_deep_as_a_line_allows_is_left_to_the_python_path() -> None:
    """400,000 levels in one line: the C path stops at its depth bound (no deep recursion)."""
    deep = line(rest=',"d":' + "[" * 400_000 + "]" * 400_000)
    table, errors, _counts = both(deep + b"\n" + line() + b"\n", max_line=1 << 21)
    assert table is not None and table.num_rows == 1 and len(errors) == 1


def _timestamp_text(parts: tuple[int, int, int, int, int, int, str, str, str]) -> str:
    y, mo, d, h, mi, s, sep, frac, zone = parts
    return f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"


ISO_PARTS = st.tuples(
    st.sampled_from([0, 1, 2, 4, 100, 1582, 1600, 1900, 1969, 1970, 2000, 2024, 2100, 2400, 9998, 9999])
    | st.integers(0, 9999),
    st.integers(1, 12) | st.integers(0, 13), st.integers(1, 31) | st.integers(0, 32),
    st.integers(0, 23) | st.just(24), st.integers(0, 59) | st.just(60), st.integers(0, 59) | st.just(60),
    st.sampled_from(["T", " ", "t", "_"]),
    st.sampled_from(["", ".", ".5", ".123", ".123456", ".1234567", ".12345678", ",5"]),
    st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+05:30", "-12:00", "+23:59", "+24:00",
                     "-03:60", "+0530", "+05", "UTC"]))


FILLER = [line(ts=f'"2024-05-{d:02d}T10:00:00Z"') for d in range(1, 29)] * 10  # 280 valid


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ISO_PARTS, min_size=1, max_size=20), st.sampled_from(["UTC", "America/St_Johns"]))
def test_iso_timestamps_convert_as_the_python_path_does(parts: list[Any], zone: str) -> None:
    """Alone (timestamp_us one by one) and among 280 others (pyarrow's column-wise path)."""
    rows = [line(ts=json.dumps(_timestamp_text(p))) for p in parts]
    both(b"\n".join(rows) + b"\n", zone=zone)
    both(b"\n".join(FILLER + rows) + b"\n", zone=zone)


ISO_EDGES = [
    "1900-02-29T00:00:00Z", "2100-02-29 00:00:00", "2000-02-29T00:00:00Z", "2024-02-29T23:59:59Z",
    "2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "2024-06-30T00:00:00Z", "2024-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z", "0000-06-01T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-03T00:00:00Z",
    "9999-12-29T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z",
    "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00.", "2024-01-01T00:00:00.1234567Z",
    "2024-01-01T00:00:00.000001+00:00", "2024-01-01T00:00:00+23:59", "2024-01-01T00:00:00-23:59",
    "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00+05:60", "2024-01-01T00:00:00-05:30",
    "2024-01-01T24:00:00Z", "2024-01-01T23:60:00Z", "2024-01-01T23:59:60Z", "2024-01-01t00:00:00Z",
    "2024-01-01T00:00:00z", "2024-1-01T00:00:00Z", "+2024-01-01T00:00:00Z", "2024-01-01T00:00Z",
    "2024-01-01T00:00:00+0530", "2024-01-01T00:00:00 Z", "2024-01-01", "2024-01-01T00:00:00ZZ",
    "２０２４-01-01T00:00:00Z", "2024-01-01T00:00:00.５Z",
]


@pytest.mark.parametrize("zone", ["UTC", "America/St_Johns"])
def test_iso_edges(zone: str) -> None:
    rows = [line(ts=json.dumps(t, ensure_ascii=False)) for t in ISO_EDGES]
    both(b"\n".join(rows) + b"\n", zone=zone)
    both(b"\n".join(FILLER + rows) + b"\n", zone=zone)


RICH = line(ts='"2024-02-29T23:59:59.123456+05:30"', uid=r'"\u0075\ud83d\ude00"', act=r'"a\"b"',
            rest=r',"s":"x\/y\u00e9\n\t\\","n":[1,-2,0.5,1.0,true,false,null,{"k":{}},[]],'
                 r'"d":"' + "é" * 40 + r'","z":-0.00015,"big":123456789012345678,"e":""')


def test_every_prefix_of_a_line_ends_cleanly() -> None:
    """Each construct cut at every byte, at the very end of the buffer (no newline after it)."""
    block = RICH + b" " * 400  # also beyond 512 bytes: the C path reads past no allocation
    for n in range(1, len(block) + 1):
        both(block[:n])


def _flat_reference(buf: bytes, pos: int, max_count: int, max_bytes: int,
                    max_element: int) -> tuple[list[bytes], int, int, bool]:
    """`_scan.flat_objects` as the reader's regex does it, one match at a time."""
    from logwatchd.reader import _FLAT_OBJECT, JSON_WS

    out: list[bytes] = []
    total, closed = 0, False
    while len(out) < max_count and total < max_bytes:
        m = _FLAT_OBJECT.match(buf, pos)
        if m is None:
            break
        elem = buf[pos:m.end() - 1].strip(JSON_WS)
        if len(elem) > max_element:
            break
        out.append(elem)
        total += len(elem)
        pos = m.end()
        if buf[pos - 1] == 0x5D:
            closed = True
            break
    return out, pos, total, closed


def _random_array(rnd: random.Random) -> bytes:
    pieces = [b"\\", b'"', b"{", b"}", b"[", b"]", b",", b" ", b"\n", b"\r", b"\t", b":",
              b"a", b"1", b'\\"', b"\\\\", b'"x"', b'"k":"v"', "é".encode(), b"\x00", b"\xff"]
    elems = []
    for _ in range(rnd.randint(0, 6)):
        if rnd.random() < 0.6:
            body = b",".join(b'"k%d":"%s"' % (i, rnd.choice([b"v", b'\\"', b"\\\\", b"{[,]}", b""]))
                             for i in range(rnd.randint(0, 4)))
            elems.append(b"{" + body + b"}")
        else:
            elems.append(b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12))))
    return rnd.choice([b"", b" ", b"\n"]) + rnd.choice([b",", b" , ", b",\n"]).join(elems) + \
        rnd.choice([b"]", b" ]", b"", b"],{}"])


def test_flat_objects_cuts_as_the_regex_does_at_every_prefix() -> None:
    """The C cut of an array's flat objects is the regex's, on random arrays (broken ones
    too) cut at every byte, with every kind of limit: under the sanitizers as well."""
    from logwatchd import _scan

    rnd = random.Random(11)
    for _ in range(1500):
        data = _random_array(rnd)
        limits = (rnd.randint(1, 5), rnd.choice([1, 10, 1 << 30]), rnd.choice([2, 12, 1 << 20]))
        for cut in range(len(data) + 1):
            buf = bytearray(data[:cut])
            for pos in (0, rnd.randint(0, cut)):
                assert _scan.flat_objects(buf, pos, *limits) == _flat_reference(bytes(buf), pos, *limits), \
                    (data[:cut], pos, limits)


def test_count_newlines_counts_as_bytes_count_does() -> None:
    """Eight bytes at a time in C, summed every 255 words: every length, alignment and
    slice bound, bytes next to b"\\n" in value (0x0a ^ 0x80, 0x0b, 0x09), and runs of
    nothing but newlines long enough to fill the byte-wide counters."""
    from logwatchd import _scan

    rnd = random.Random(12)
    alphabet = b"\n\n\x0b\x09\x8a\x00\xffa{"
    for _ in range(3000):
        data = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 300)))
        for start, end in ((0, len(data)), (rnd.randint(-320, 320), rnd.randint(-320, 320))):
            assert _scan.count_newlines(data, start, end) == data.count(b"\n", start, end), \
                (data, start, end)
    for n in (2039, 2040, 2041, 4080, 8 * 255 * 3 + 5):
        for data in (b"\n" * n, b"\n" * n + b"x", b"x" + b"\n" * n, (b"\n\x8a" * n)[:n]):
            for start in range(9):
                assert _scan.count_newlines(data, start, len(data)) == data.count(b"\n", start), (n, start)
