"""Deterministic, seeded workloads: log files with a known share of bad lines, in several shapes.

~5% of lines are invalid records (missing or wrong fields, bad timestamps, not an object)
and ~0.5% are not JSON at all, mixed the way real producers get it wrong.

The same generator makes every workload; they differ in how event time is spread:

- `one-day`: ~50 events a second from 2025-11-24T16:00Z, so a file touches one or two dates
  (the bench's original workload, byte for byte: its figures stay comparable);
- `one-year`: instants drawn uniformly from 2024 (366 dates in UTC), ISO strings written in
  mixed `Z` / `±HH:MM` offsets (and a space instead of `T` now and then), unicode in
  `user_id` and in the attributes (raw UTF-8 and `\\uXXXX` escapes);
- `ten-year`: as `one-year`, over the 3,650 days from 2015-01-01.

and in format (FORMATS): JSON Lines, gzip of the JSON Lines file (`.gz`), or one JSON
array of the same records (`.array`: element i is line i; a non-JSON line cannot be an
array element — the whole file would be `invalid_array` — so it is written as a JSON
string, which both sides count as `not_an_object` instead of `invalid_json`).

    python -m bench.workload PATH [--lines N] [--seed S] [--spread one-year] [--format gz]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import random
from pathlib import Path

ACTIONS = ["login", "logout", "view", "click", "purchase", "search", "upload", "download"]
SPREADS = ("one-day", "one-year", "ten-year")
FORMATS = ("jsonl", "gz", "array")
# (first instant, seconds spanned) of the wide spreads, in UTC.
_SPANS = {
    "one-year": (int(_dt.datetime(2024, 1, 1, tzinfo=_dt.UTC).timestamp()), 366 * 86400),
    "ten-year": (int(_dt.datetime(2015, 1, 1, tzinfo=_dt.UTC).timestamp()), 3650 * 86400),
}
ONE_DAY_T0 = 1_764_000_000  # 2025-11-24T16:00:00Z, where the one-day spread starts
DATES = {"one-day": 2, "one-year": 366, "ten-year": 3650}  # dates a large file touches
_OFFSETS = [0, 0, 60, -300, 330, -480, 540, 840, -720, 345, -210, 120, -60, 600]  # minutes
_CITIES = ["München", "São Paulo", "Kraków", "東京", "Zürich", "Αθήνα", "Москва", "القاهرة",
           "Reykjavík", "서울"]
_NOTES = ["ok ✓", "größer als 🚀", "naïve café", "日本語のメッセージ", r"\u00e9t\u00e9 \u2713",
          "emoji 😀 and tab\\t", "Ελληνικά"]
GARBAGE = ["{\"timestamp\": 1764000000, \"user_id\": ", "not json at all", "NaN",
           "{'single': 'quotes'}"]


def _attrs(rng: random.Random) -> str:
    return (f'"ip":"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",'
            f'"session":"{rng.getrandbits(64):016x}","latency_ms":{rng.randrange(2000)},'
            f'"ok":{"true" if rng.random() < 0.9 else "false"},'
            f'"path":"/api/v1/items/{rng.randrange(10**6)}","trace_id":"{rng.getrandbits(64):016x}",'
            f'"agent":"Mozilla/5.0 (X11; Linux x86_64)"')


def _one_day_line(rng: random.Random, i: int, t0: int) -> str:
    ts = t0 + i // 50  # ~50 events per second, over ~5 days at 20M lines
    kind = rng.random()
    if kind < 0.6:
        day, rem = divmod(ts, 86400)
        h, rem = divmod(rem, 3600)
        m, s = divmod(rem, 60)
        d = _dt.date.fromordinal(_dt.date(1970, 1, 1).toordinal() + day)
        stamp = f'"{d.isoformat()}T{h:02d}:{m:02d}:{s:02d}.{rng.randrange(1000):03d}Z"'
    elif kind < 0.8:
        stamp = str(ts)
    else:
        stamp = str(ts * 1000 + rng.randrange(1000))
    uid = f'"user-{rng.randrange(100000)}"' if rng.random() < 0.7 else str(rng.randrange(10**9))
    action = ACTIONS[rng.randrange(len(ACTIONS))]
    return f'{{"timestamp":{stamp},"user_id":{uid},"action":"{action}",{_attrs(rng)}}}'


def _wide_line(rng: random.Random, spread: str) -> str:
    start, span = _SPANS[spread]
    ts = start + rng.randrange(span)
    kind = rng.random()
    if kind < 0.6:
        off = _OFFSETS[rng.randrange(len(_OFFSETS))]
        local = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=ts + off * 60)
        zone = "Z" if off == 0 and rng.random() < 0.5 else \
            f"{'+' if off >= 0 else '-'}{abs(off) // 60:02d}:{abs(off) % 60:02d}"
        sep = " " if rng.random() < 0.1 else "T"
        stamp = f'"{local.strftime("%Y-%m-%d")}{sep}{local.strftime("%H:%M:%S")}.{rng.randrange(10**6):06d}{zone}"'
    elif kind < 0.8:
        stamp = str(ts)
    else:
        stamp = str(ts * 1000 + rng.randrange(1000))
    r = rng.random()
    uid = (f'"user-{rng.randrange(100000)}"' if r < 0.5 else
           f'"用户-{rng.randrange(100000)}"' if r < 0.6 else
           f'"josé.ñúñez-{rng.randrange(1000)}"' if r < 0.7 else str(rng.randrange(10**9)))
    action = ACTIONS[rng.randrange(len(ACTIONS))]
    return (f'{{"timestamp":{stamp},"user_id":{uid},"action":"{action}",{_attrs(rng)},'
            f'"city":"{_CITIES[rng.randrange(len(_CITIES))]}","note":"{_NOTES[rng.randrange(len(_NOTES))]}"}}')


def valid_line(rng: random.Random, i: int, spread: str = "one-day", t0: int = 1_764_000_000) -> str:
    """A valid record (one of three timestamp forms, string or integer user_id).

    `t0` is where the one-day spread starts (epoch seconds).
    """
    if spread == "one-day":
        return _one_day_line(rng, i, t0)
    return _wide_line(rng, spread)


def invalid_line(rng: random.Random, i: int, spread: str = "one-day", t0: int = 1_764_000_000) -> str:
    """A JSON line that is not a valid record (missing or wrong field, bad timestamp, not an object)."""
    good = valid_line(rng, i, spread, t0)
    k = rng.randrange(6)
    if k == 0:
        return good.replace('"timestamp":', '"ts":', 1)
    if k == 1:
        return good.replace('"user_id":', '"user_id":true,"u":', 1)
    if k == 2:
        return '{"timestamp":"2026-02-30T10:00:00Z","user_id":"u","action":"login"}'
    if k == 3:
        return '{"timestamp":"yesterday","user_id":"u","action":"login"}'
    if k == 4:
        return '{"timestamp":1764000000,"user_id":"u","action":""}'
    return "[1,2,3]"


def garbage_line(rng: random.Random, i: int) -> str:
    """A line that is not JSON at all."""
    return rng.choice(GARBAGE)


def write_jsonl(path: Path, lines: int, seed: int = 1, spread: str = "one-day",
                t0: int = 1_764_000_000) -> Path:
    """Writes `lines` lines to `path` (deterministic for a seed and spread); returns the path."""
    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r}; one of {SPREADS}")
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        buf = []
        for i in range(lines):
            r = rng.random()
            buf.append(garbage_line(rng, i) if r < 0.005 else invalid_line(rng, i, spread, t0) if r < 0.055
                       else valid_line(rng, i, spread, t0))
            if len(buf) >= 10000:
                fh.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            fh.write("\n".join(buf) + "\n")
    return path


def jsonl_to_gzip(src: Path, dst: Path, level: int = 6) -> Path:
    """gzip of `src` (mtime 0 in the header, so the bytes depend on the content only)."""
    with open(src, "rb") as fin, open(dst, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as fout:
        while block := fin.read(1 << 22):
            fout.write(block)
    return dst


def jsonl_to_array(src: Path, dst: Path) -> Path:
    """One JSON array whose element i is line i of `src` (non-JSON lines as JSON strings)."""
    garbage = set(GARBAGE)
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8", newline="\n") as fout:
        fout.write("[\n")
        first = True
        buf: list[str] = []
        for line in fin:
            line = line.rstrip("\n")
            item = json.dumps(line, ensure_ascii=False) if line in garbage else line
            buf.append(item if first else "," + item)
            first = False
            if len(buf) >= 10000:
                fout.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            fout.write("\n".join(buf) + "\n")
        fout.write("]\n")
    return dst


def write_workload(path: Path, lines: int, seed: int, spread: str, fmt: str,
                   jsonl: Path | None = None) -> Path:
    """Writes one workload file; `jsonl` is the JSON Lines file of the same records, if made."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    if fmt == "jsonl":
        return write_jsonl(path, lines, seed, spread)
    tmp_src = None
    if jsonl is None:
        tmp_src = jsonl = path.with_name(f".{path.name}.src.jsonl")
        write_jsonl(jsonl, lines, seed, spread)
    try:
        return jsonl_to_gzip(jsonl, path) if fmt == "gz" else jsonl_to_array(jsonl, path)
    finally:
        if tmp_src is not None:
            os.unlink(tmp_src)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--spread", choices=SPREADS, default="one-day")
    ap.add_argument("--format", choices=FORMATS, default="jsonl")
    a = ap.parse_args()
    write_workload(a.path, a.lines, a.seed, a.spread, a.format)


if __name__ == "__main__":
    main()
