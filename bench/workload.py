"""Deterministic, seeded workloads: JSON Lines log files with a known share of bad lines.

~5% of lines are invalid records (missing or wrong fields, bad timestamps) and ~0.5% are
not JSON at all, mixed the way real producers get it wrong.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ACTIONS = ["login", "logout", "view", "click", "purchase", "search", "upload", "download"]


def valid_line(rng: random.Random, i: int) -> str:
    """A valid record (one of three timestamp forms, string or integer user_id)."""
    ts = 1_764_000_000 + i // 50  # ~50 events per second, over ~5 days at 20M lines
    kind = rng.random()
    if kind < 0.6:
        day, rem = divmod(ts, 86400)
        h, rem = divmod(rem, 3600)
        m, s = divmod(rem, 60)
        import datetime as _dt
        d = _dt.date.fromordinal(_dt.date(1970, 1, 1).toordinal() + day)
        stamp = f'"{d.isoformat()}T{h:02d}:{m:02d}:{s:02d}.{rng.randrange(1000):03d}Z"'
    elif kind < 0.8:
        stamp = str(ts)
    else:
        stamp = str(ts * 1000 + rng.randrange(1000))
    uid = f'"user-{rng.randrange(100000)}"' if rng.random() < 0.7 else str(rng.randrange(10**9))
    action = ACTIONS[rng.randrange(len(ACTIONS))]
    attrs = (f'"ip":"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",'
             f'"session":"{rng.getrandbits(64):016x}","latency_ms":{rng.randrange(2000)},'
             f'"ok":{"true" if rng.random() < 0.9 else "false"},'
             f'"path":"/api/v1/items/{rng.randrange(10**6)}","trace_id":"{rng.getrandbits(64):016x}",'
             f'"agent":"Mozilla/5.0 (X11; Linux x86_64)"')
    return f'{{"timestamp":{stamp},"user_id":{uid},"action":"{action}",{attrs}}}'


def invalid_line(rng: random.Random, i: int) -> str:
    """A JSON line that is not a valid record (missing or wrong field, bad timestamp, not an object)."""
    good = valid_line(rng, i)
    k = rng.randrange(6)
    if k == 0:
        return good.replace('"timestamp":', '"ts":', 1)
    if k == 1:
        return good.replace('"action":"', '"action":"', 1).replace('"user_id":', '"user_id":true,"u":', 1)
    if k == 2:
        return '{"timestamp":"2026-02-30T10:00:00Z","user_id":"u","action":"login"}'
    if k == 3:
        return '{"timestamp":"yesterday","user_id":"u","action":"login"}'
    if k == 4:
        return '{"timestamp":1764000000,"user_id":"u","action":""}'
    return "[1,2,3]"


def garbage_line(rng: random.Random, i: int) -> str:
    """A line that is not JSON at all."""
    return rng.choice(["{\"timestamp\": 1764000000, \"user_id\": ", "not json at all", "NaN",
                       "{'single': 'quotes'}"])


def write_jsonl(path: Path, lines: int, seed: int = 1) -> Path:
    """Writes `lines` lines to `path` (deterministic for a seed); returns the path."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        buf = []
        for i in range(lines):
            r = rng.random()
            buf.append(garbage_line(rng, i) if r < 0.005 else invalid_line(rng, i) if r < 0.055
                       else valid_line(rng, i))
            if len(buf) >= 10000:
                fh.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            fh.write("\n".join(buf) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path", type=Path)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    write_jsonl(a.path, a.lines, a.seed)


if __name__ == "__main__":
    main()
