"""`logwatchd process --dry-run`: validates files as the pipeline would, writing and recording nothing.

The check a producer runs before shipping a file: the same reader and record rules as
the daemon (reader.py, records.py), but no output, no staging file, no ledger, no lock.
Per file: the verdict the daemon would reach (`ok` or `quarantined`), the counts, the
invalid records by reason, and the first few examples of each (line number and a cut of
the raw text). Library code: returns a report, `cli.py` prints it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from .config import Config
from .errors import FileVanished, MalformedFile, RefusedFile
from .ledger import utc_iso
from .reader import Elements, HashingReader, LongLine, iter_chunks, open_input
from .records import RecordBatcher, RecordError

EXAMPLES = 3        # examples kept per reason
RAW_CHARS = 120     # of each example's raw text


def _cut(text: str) -> str:
    return text if len(text) <= RAW_CHARS else text[:RAW_CHARS] + "…"


def dry_run(config: Config, path: Path) -> dict[str, Any]:
    """What processing `path` would give, as one JSON-able dict; touches nothing."""
    name = path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    report: dict[str, Any] = {"file": name, "dry_run": True}
    try:
        fh, _st = open_input(path)
    except RefusedFile as exc:
        return report | {"status": "quarantined", "reason": exc.reason, "detail": exc.detail}
    except FileVanished:
        return report | {"status": "failed", "reason": "not_found", "detail": f"no such file: {name}"}
    except OSError as exc:
        return report | {"status": "failed", "reason": "io_error", "detail": str(exc)}
    batcher = RecordBatcher(name, config.transform.timezone, utc_iso(), config.ingest.max_line_bytes)
    processed = valid = parsed = 0
    reasons: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    try:
        with fh:
            src = HashingReader(fh)
            for chunk in iter_chunks(src, path.name, config.ingest.chunk_bytes,
                                     config.ingest.max_line_bytes, spans=False):
                if isinstance(chunk, LongLine):
                    if chunk.blank:  # a blank line, however long
                        continue
                    processed += 1
                    parsed += 1  # never read: not known not to be JSON (as in ChunkSink)
                    lines = [batcher.long_line(chunk.number, chunk.prefix, chunk.length)]
                else:
                    try:
                        if isinstance(chunk, Elements):
                            _table, res = batcher.process_elements(chunk.items, chunk.first)
                        else:
                            _table, res = batcher.process_lines(chunk.data, chunk.first, chunk.strip_bom)
                    except RecordError as exc:  # only for array elements, as in parallel.py
                        raise MalformedFile("invalid_array", f"an array element is not JSON: {exc}") from None
                    processed += res.processed
                    valid += res.valid
                    parsed += res.parsed
                    lines = res.error_lines
                for line in lines:
                    err = orjson.loads(line)
                    reason = err["reason"]
                    reasons[reason] += 1
                    kept = examples.setdefault(reason, [])
                    if len(kept) < EXAMPLES:
                        example = {"line": err["source_line"], "raw": _cut(err.get("raw", ""))}
                        if err.get("field"):
                            example["field"] = err["field"]
                        kept.append(example)
        if processed and not parsed:
            raise MalformedFile("not_json", f"none of its {processed} non-blank lines parses as JSON")
    except MalformedFile as exc:
        return report | {"status": "quarantined", "reason": exc.reason, "detail": exc.detail}
    errors = processed - valid
    return report | {"status": "ok", "processed": processed, "valid": valid, "errors": errors,
                     "reasons": dict(sorted(reasons.items())),
                     "examples": {r: examples[r] for r in sorted(examples)}}
