"""One input's chunks → its outputs: Parquet parts and error lines, checked, dropped whole on failure.

Shared by the daemon's pipeline and the ingest Lambda: the chunks go through a runner (this
process, or worker processes), the error lines are appended in the file's line order as
the results come back, and the input must turn out to be what was hashed and log data at
all. Any exception drops every output of the input (staged files, S3 objects), so that
the caller decides the outcome with nothing half-written left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import MalformedFile, TransientIOError
from .layout import clean_path
from .parallel import Finished, JobSpec
from .reader import Chunk, HashingReader
from .records import ChunkResult
from .storage import Store
from .writers import JsonlOutput, WrittenPart


class Runner(Protocol):
    def run(self, spec: JobSpec, chunks: Iterable[Chunk]) -> Generator[ChunkResult | Finished, None, None]: ...


@dataclass
class Transformed:
    """What an input produced, durable (on a local store: staged, not yet published)."""

    result: ChunkResult
    parts: list[WrittenPart] = field(default_factory=list)
    errors: JsonlOutput | None = None   # closed; None when every line was valid


def _nothing() -> None:
    pass


def transform(runner: Runner, spec: JobSpec, src: HashingReader, chunks: Iterable[Chunk], *,
              errors: Store, errors_relative: str,
              step: Callable[[], None] = _nothing,
              watch: Callable[[ChunkResult], None] | None = None,
              changed: Callable[[], bool] | None = None) -> Transformed:
    """Runs `chunks` (cut from `src`) through `runner`; the input's error lines go to
    `errors_relative` in `errors`.

    `step` runs before each result (proof of life; it may raise to abandon the input),
    `watch` after each chunk with the totals so far. Raises TransientIOError when the
    input's bytes are not those hashed as `spec.sha256` (or `changed()` says so), and
    MalformedFile when not one of its non-blank lines parses as JSON.
    """
    out = Transformed(ChunkResult())
    total = out.result
    results = runner.run(spec, chunks)
    try:
        for res in results:
            step()
            if isinstance(res, Finished):
                out.parts = res
                total.add_counts(res.counts)
                continue
            if res.error_lines:
                if out.errors is None:
                    out.errors = JsonlOutput(errors, errors_relative)
                out.errors.write(res.error_lines)
                res.error_lines = []
            total.merge(res)
            if watch is not None:
                watch(total)
        src.drain()
        if src.hexdigest() != spec.sha256 or (changed is not None and changed()):
            raise TransientIOError(f"{spec.source_file} changed while it was read")
        if total.processed and not total.parsed:
            raise MalformedFile("not_json", f"none of its {total.processed} non-blank lines parses as JSON")
        if out.errors is not None:
            out.errors.close()
    except BaseException:
        results.close()  # the runner drops the parts it has not handed over
        for part in out.parts:
            spec.clean.remove(clean_path(part.date, part.name))
        if out.errors is not None:
            out.errors.abort()
        raise
    return out
