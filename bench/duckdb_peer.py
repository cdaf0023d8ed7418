"""DuckDB doing logwatchd's job in SQL: one log file → Hive-partitioned Parquet + error lines.

The peer the benchmark compares logwatchd with. It keeps SPEC §4–5 as far as SQL allows:
the raw lines are read with `read_csv` and a delimiter that never occurs (one VARCHAR
column, quoting off), numbered with `row_number() OVER ()`, classified once into a
temporary table with DuckDB's JSON functions (the reason codes and their order are
logwatchd's), then written with two `COPY` statements: the valid rows as zstd Parquet
with `PARTITION_BY (date)` (one directory per event date, as logwatchd writes), the
invalid ones as JSON Lines in line order.

Inputs are recognised as logwatchd recognises them: gzip by its magic bytes (then
`read_csv(..., compression='gzip')`, DuckDB inflating the stream itself), a JSON array
by its first non-blank byte `[` (then `read_json_objects(..., format='array')`, which
hands each element over as its own JSON text, numbered from 1 like logwatchd's element
index; everything after that is the same SQL as for lines). A gzipped array is read
with both.

Deviations from logwatchd, all outside what the benchmark's workload contains unless noted:

- DuckDB's JSON reader accepts `NaN`, `Infinity` and trailing commas. A regular expression
  rejects bare `NaN`/`Infinity` tokens after `[`, `:` or `,` (it can misfire on the same
  text inside a string); trailing commas stay accepted.
- The workload's lone `NaN` line is therefore `invalid_json` in both; nothing else differs
  in its counts (the benchmark prints both sides' per-reason counts).
- Invalid UTF-8 makes DuckDB's CSV reader fail or replace bytes, so `invalid_encoding` is
  never produced; a lone surrogate escape (`"\\ud800"`) makes `json_valid` false, so it is
  counted as `invalid_json` instead of `invalid_encoding`.
- Integers beyond 64 bits are typed DOUBLE by DuckDB: such a `user_id` is an
  `invalid_field` (logwatchd keeps it as a string), and `attributes` holds the rounded value.
- `attributes` is `json_merge_patch(line, {"timestamp": null, "user_id": null, "action": null})`:
  compact JSON, but a key whose value is `null` is dropped (logwatchd keeps it).
- Timestamps without an offset are read in UTC only (the workload's zone); DuckDB's cast
  accepts `24:00:00`, which the pattern rejects first, as logwatchd does.
- A lone `\\r` is a line break for `read_csv`; logwatchd splits on `\\n` only.
- Blank lines are skipped and keep their number, as in logwatchd.
- Arrays: an element is handed over as DuckDB's JSON text of it, so an element longer than
  `max_line_bytes` is measured on that text, and an array that does not parse fails the
  run instead of being quarantined as `invalid_array` (the workload's arrays parse).
  Element numbering relies on `read_json_objects` keeping the file's order with
  `preserve_insertion_order` (checked by the counts, not by the line numbers).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import duckdb

MAX_LINE_BYTES = 1_048_576
# SPEC §4's ISO-8601 shape, with the ranges fromisoformat enforces (hour < 24, offset < 24h).
ISO = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
       r"(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?")
NAN = r"[\[:,]\s*-?(NaN|Infinity)\s*[,\]}]|^\s*-?(NaN|Infinity)\s*$"
# 0001-01-02 .. 9999-12-30 UTC, the instants whose date exists in every zone (as logwatchd).
MIN_US = -62135510400000000
MAX_US = 253402214399999999

# The raw lines (or array elements), numbered from 1; {compression} is 'none' or 'gzip'.
READ_LINES = """
    SELECT row_number() OVER () AS source_line, line
    FROM read_csv($path, columns={{'line': 'VARCHAR'}}, header=false, delim='\\x1f', quote='',
                  escape='', auto_detect=false, strict_mode=false, new_line='\\r\\n',
                  max_line_size=8388608, compression='{compression}')
"""
READ_ARRAY = """
    SELECT row_number() OVER () AS source_line, json::VARCHAR AS line
    FROM read_json_objects($path, format='array', compression='{compression}',
                           maximum_object_size=16777216)
"""

CLASSIFY = f"""
CREATE TEMP TABLE classified AS
WITH raw AS ({{raw}}), lines AS (
    SELECT source_line, line, strlen(line) > {MAX_LINE_BYTES} AS too_long,
           json_valid(line) AND NOT regexp_matches(line, '{NAN}') AS ok_json
    FROM raw WHERE line IS NOT NULL AND trim(line) <> ''
), parsed AS (
    SELECT *, CASE WHEN ok_json AND NOT too_long THEN json_type(line) END AS jt,
           CASE WHEN ok_json AND NOT too_long
                THEN json_extract(line, ['$.timestamp', '$.user_id', '$.action']) END AS f
    FROM lines
), fields AS (
    SELECT source_line, line, too_long, ok_json, jt,
           f[1] AS tsj, json_type(f[1]) AS tst,
           json_type(f[2]) AS uidt, json_extract_string(f[2], '$') AS uid,
           json_type(f[3]) AS actt, json_extract_string(f[3], '$') AS act
    FROM parsed
), stamped AS (
    SELECT *,
        CASE
            WHEN tst = 'VARCHAR' THEN
                CASE WHEN regexp_full_match(json_extract_string(tsj, '$'), '{ISO}')
                     THEN epoch_us(TRY_CAST(json_extract_string(tsj, '$') AS TIMESTAMPTZ)) END
            WHEN tst IN ('BIGINT', 'UBIGINT') THEN
                CASE WHEN TRY_CAST(tsj AS HUGEINT) > 100000000000
                     THEN TRY_CAST(TRY_CAST(tsj AS HUGEINT) * 1000 AS BIGINT)
                     ELSE TRY_CAST(TRY_CAST(tsj AS HUGEINT) * 1000000 AS BIGINT) END
            WHEN tst = 'DOUBLE' THEN
                TRY_CAST(round_even(TRY_CAST(tsj AS DOUBLE)
                         * CASE WHEN TRY_CAST(tsj AS DOUBLE) > 1e11 THEN 1e3 ELSE 1e6 END, 0) AS BIGINT)
        END AS ts_us
    FROM fields
)
SELECT source_line, line, uid, act, ts_us,
    CASE
        WHEN too_long THEN 'line_too_long'
        WHEN NOT ok_json THEN 'invalid_json'
        WHEN jt <> 'OBJECT' THEN 'not_an_object'
        WHEN tst IS NULL OR tst = 'NULL' THEN 'missing_field'
        WHEN uidt IS NULL OR uidt = 'NULL' THEN 'missing_field'
        WHEN NOT ((uidt = 'VARCHAR' AND uid <> '') OR uidt IN ('BIGINT', 'UBIGINT'))
            THEN 'invalid_field'
        WHEN actt IS NULL OR actt = 'NULL' THEN 'missing_field'
        WHEN actt <> 'VARCHAR' OR act = '' THEN 'invalid_field'
        WHEN ts_us IS NULL OR ts_us NOT BETWEEN {MIN_US} AND {MAX_US} THEN 'invalid_timestamp'
    END AS reason,
    CASE
        WHEN too_long OR NOT ok_json OR jt <> 'OBJECT' THEN NULL
        WHEN tst IS NULL OR tst = 'NULL' THEN 'timestamp'
        WHEN uidt IS NULL OR uidt = 'NULL' THEN 'user_id'
        WHEN NOT ((uidt = 'VARCHAR' AND uid <> '') OR uidt IN ('BIGINT', 'UBIGINT')) THEN 'user_id'
        WHEN actt IS NULL OR actt = 'NULL' OR actt <> 'VARCHAR' OR act = '' THEN 'action'
        WHEN ts_us IS NULL OR ts_us NOT BETWEEN {MIN_US} AND {MAX_US} THEN 'timestamp'
    END AS field
FROM stamped
"""

CLEAN = """
COPY (
    SELECT strftime(ts, '%Y-%m-%d %H:%M:%S') AS "timestamp", ts, dayname(ts) AS day_of_week,
           uid AS user_id, act AS action,
           nullif(json_merge_patch(line, '{"timestamp":null,"user_id":null,"action":null}')::VARCHAR,
                  '{}') AS attributes,
           $name AS source_file, source_line, strftime(ts, '%Y-%m-%d') AS date
    FROM (SELECT *, make_timestamp(ts_us)::TIMESTAMPTZ AS ts FROM classified WHERE reason IS NULL)
) TO $clean (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd)
"""

ERRORS = """
COPY (
    SELECT $name AS source_file, source_line, reason, field,
           CASE WHEN reason = 'line_too_long' THEN left(line, 1024) ELSE line END AS raw,
           $now AS ingested_at
    FROM classified WHERE reason IS NOT NULL ORDER BY source_line
) TO $errors (FORMAT json)
"""


def sniff(path: Path) -> tuple[str, bool]:
    """('gzip' or 'none', is a JSON array): gzip by its magic, an array by its first non-blank byte."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as fh:
        head = fh.read(65536).lstrip(b"\xef\xbb\xbf").lstrip()
    return ("gzip" if gz else "none"), head.startswith(b"[")


def run(path: Path, out: Path, threads: int | None = None) -> dict[str, object]:
    """Processes `path` into `out/clean/date=D/*.parquet` and `out/errors.jsonl`; returns counts."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")  # row_number() must follow the file
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    compression, array = sniff(path)
    raw = (READ_ARRAY if array else READ_LINES).format(compression=compression)
    con.execute(CLASSIFY.replace("{raw}", raw), {"path": str(path)})
    con.execute(CLEAN, {"name": path.name, "clean": str(out / "clean")})
    con.execute(ERRORS, {"name": path.name, "now": now, "errors": str(out / "errors.jsonl")})
    rows = con.execute(
        "SELECT coalesce(reason, 'valid'), count(*) FROM classified GROUP BY ALL").fetchall()
    by_reason = {r: n for r, n in rows if r != "valid"}
    valid = next((n for r, n in rows if r == "valid"), 0)
    errors = sum(by_reason.values())
    return {"file": path.name, "processed": valid + errors, "valid": valid, "errors": errors,
            "reasons": dict(sorted(by_reason.items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path)
    ap.add_argument("out", type=Path, help="output directory (clean/ and errors.jsonl)")
    ap.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    a = ap.parse_args()
    sys.stdout.write(json.dumps(run(a.path, a.out, a.threads)) + "\n")


if __name__ == "__main__":
    main()
