"""One file = one transaction: reader → records → writers → ledger. Decides every file's outcome.

Outcomes: `ok` (rows and error lines published, input archived), `quarantined` (not log
data: moved whole with a reason), `duplicate` (content seen before: archived, nothing
written). A refused entry (symlink, special file) is quarantined as it is, never read.
Transient I/O errors and bugs propagate: the caller retries or dead-letters.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .config import Config
from .durable import is_staging_name, move, sha256_stream, staged_name, sync_dirs, write_staged
from .errors import Cancelled, MalformedFile, RefusedFile, TransientIOError
from .ledger import Commit, FileIdentity, Ledger, Move, Output, identity, utc_iso
from .parallel import JobSpec, LocalRunner, PoolRunner
from .reader import HashingReader, iter_chunks, open_input
from .records import ChunkResult, utc_now
from .writers import StagedJsonl

Clock = Callable[[], datetime]


@dataclass
class FileOutcome:
    """The summary of one file, as `process` prints it and `file_processed` logs it."""

    file: str
    status: str                     # ok | quarantined | duplicate | failed
    processed: int = 0
    valid: int = 0
    errors: int = 0
    sha256: str | None = None
    bytes: int = 0
    reason: str | None = None
    detail: str | None = None
    duration_ms: float = 0.0
    counts: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "status": self.status,
                               "processed": self.processed, "valid": self.valid,
                               "errors": self.errors}
        if self.reason:
            out["reason"] = self.reason
        if self.detail:
            out["detail"] = self.detail
        return out


def display_name(name: str) -> str:
    """A file name as valid UTF-8 text (undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def free_name(directory: Path, name: str, sha: str | None) -> Path:
    """`directory/name`, or, when that is taken, the name tagged before its first suffix
    (`a.<tag>.jsonl.gz`), so that a replayed file still matches the inbox patterns."""
    target = directory / name
    if not os.path.lexists(target):
        return target
    tag = sha[:12] if sha else f"{time.time_ns():x}"
    dot = name.find(".", 1)
    stem, suffixes = (name, "") if dot < 0 else (name[:dot], name[dot:])
    # Stay within NAME_MAX (255 bytes) with room for the tag and a counter.
    room = 255 - len(os.fsencode(suffixes)) - len(tag) - 8
    if len(os.fsencode(stem)) > room:
        stem = os.fsdecode(os.fsencode(stem)[:max(room, 1)])
    target = directory / f"{stem}.{tag}{suffixes}"
    n = 1
    while os.path.lexists(target):  # the same content twice: keep both copies
        target = directory / f"{stem}.{tag}-{n}{suffixes}"
        n += 1
    return target


class Pipeline:
    """Processes files against one ledger; shared by `process` and the daemon's workers."""

    def __init__(self, config: Config, ledger: Ledger, clock: Clock = utc_now,
                 pool: PoolRunner | None = None, cancel: threading.Event | None = None,
                 progress: Callable[[], None] | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self.pool = pool
        self.cancel = cancel or threading.Event()  # set: abandon the file in hand (shutdown)
        self.progress = progress or (lambda: None)  # called per chunk: proof of life
        self.local = LocalRunner()
        self.zone = config.transform.zone

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def in_inbox(self, path: Path) -> bool:
        return path.parent.resolve() == self.config.paths.inbox.resolve()

    # --- the one entry point ------------------------------------------------------------
    def process(self, path: Path) -> FileOutcome:
        """Processes one file to its outcome. Raises TransientIOError, FileVanished or a bug."""
        _failpoint(path.name)
        started = time.monotonic()
        if self.ledger.pending("input:"):
            # An earlier outcome committed but not moved into place (a failed rename): finish
            # it first, so that its input is archived rather than taken for a duplicate.
            self.ledger.recover("input:")
        in_inbox = self.in_inbox(path)
        name = display_name(path.name)
        try:
            fh, st = open_input(path)
        except RefusedFile as exc:
            if in_inbox:
                self.move_aside(path, self.config.paths.quarantine, exc.reason, exc.detail)
            return FileOutcome(name, "quarantined", reason=exc.reason, detail=exc.detail)
        now = self.clock()
        with fh:
            sha = sha256_stream(fh, self.progress)
            fh.seek(0)
            outcome, commit = self._process_open(path, name, fh, st, sha, in_inbox, now)
        # The input is closed before it moves: its close event belongs to the inbox. Its
        # identity vouches for the hash just computed, so archiving needs no third read.
        self._apply(commit, now, {path: identity(st)})
        outcome.duration_ms = round((time.monotonic() - started) * 1000, 3)
        return outcome

    def _process_open(self, path: Path, name: str, fh: Any, st: os.stat_result, sha: str,
                      in_inbox: bool, now: datetime) -> tuple[FileOutcome, Commit]:
        cfg = self.config
        seen = self.ledger.occurrences(sha)
        if cfg.ingest.dedupe and seen:
            commit = Commit(sha, name, "duplicate", bytes=st.st_size)
            if in_inbox:
                commit.moves.append(self._retire_input(path, sha, now))
            return FileOutcome(name, "duplicate", sha256=sha, bytes=st.st_size), commit
        # Names are deterministic: a retry after a crash rewrites the same (staged) names.
        stem = sha if not seen else f"{sha}-r{seen}"
        while seen and self.ledger.stem_in_use(stem):  # repeats after a rebuilt ledger
            seen += 1
            stem = f"{sha}-r{seen}"
        try:
            result, outputs = self._transform(path, name, fh, st, sha, stem, now)
        except MalformedFile as exc:
            return self._quarantine(path, name, sha, st.st_size, exc, in_inbox, now)
        commit = Commit(sha, name, "ok", bytes=st.st_size, processed=result.processed,
                        valid=result.valid, errors=result.errors, outputs=outputs,
                        counts=result.counts)
        if in_inbox:
            commit.moves.append(self._retire_input(path, sha, now))
        outcome = FileOutcome(name, "ok", result.processed, result.valid, result.errors,
                              sha256=sha, bytes=st.st_size, counts=result.counts)
        return outcome, commit

    # --- transformation -----------------------------------------------------------------
    def _transform(self, path: Path, name: str, fh: Any, st: os.stat_result, sha: str,
                   stem: str, now: datetime) -> tuple[ChunkResult, list[Output]]:
        cfg = self.config
        spec = JobSpec(sha, stem, name, cfg.paths.clean, cfg.transform.timezone, utc_iso(now),
                       cfg.ingest.max_line_bytes)
        large = st.st_size > 2 * cfg.ingest.chunk_bytes
        runner = self.pool if (large and self.pool is not None) else self.local
        src = HashingReader(fh)
        chunks = iter_chunks(src, path.name, cfg.ingest.chunk_bytes, cfg.ingest.max_line_bytes,
                             max_decompressed=cfg.ingest.max_decompressed_bytes,
                             progress=self.progress)
        errors_path = cfg.paths.errors / f"date={self._day(now)}" / f"{stem}.jsonl"
        errors_file: StagedJsonl | None = None
        total = ChunkResult()
        parts: list = []
        results = runner.run(spec, chunks)
        try:
            for res in results:
                self.progress()
                if self.cancel.is_set():
                    raise Cancelled(f"{path.name}: abandoned for shutdown")
                if isinstance(res, list):
                    parts = res
                    continue
                if res.error_lines:
                    if errors_file is None:
                        errors_file = StagedJsonl(errors_path)
                    errors_file.write(res.error_lines)
                    res.error_lines = []
                total.merge(res)
            src.drain()
            if src.hexdigest() != sha or os.fstat(fh.fileno()).st_size != st.st_size:
                raise TransientIOError(f"{path.name} changed while it was read")
            if total.processed and not total.parsed:
                raise MalformedFile("not_json", f"none of its {total.processed} non-blank lines parses as JSON")
            outputs = [Output(final, staged_name(final), "clean", day, rows, size)
                       for day, final, rows, size in parts]
            if errors_file is not None:
                size = errors_file.close()
                outputs.append(Output(errors_file.final, errors_file.staged, "errors",
                                      self._day(now), errors_file.lines, size))
                errors_file = None
        except BaseException:
            results.close()  # aborts the runner's staged parts
            for _day, final, _rows, _size in parts:
                staged_name(final).unlink(missing_ok=True)
            if errors_file is not None:
                errors_file.abort()
            raise
        return total, outputs

    def _day(self, now: datetime) -> str:
        return now.astimezone(self.zone).date().isoformat()

    # --- outcomes -----------------------------------------------------------------------
    def _retire_input(self, path: Path, sha: str, now: datetime) -> Move:
        archive = self.config.paths.archive
        if archive is None:
            return Move(path, None, sha)
        return Move(path, free_name(archive / f"date={self._day(now)}", path.name, sha), sha)

    def _apply(self, commit: Commit, now: datetime,
               known: dict[Path, FileIdentity | None] | None = None) -> None:
        """Commits the outcome, then moves its files into place (see ledger.py)."""
        try:
            txn = self.ledger.commit(commit, now)
        except BaseException:
            # Not committed: its staged files would only wait for the next start-up.
            for o in commit.outputs:
                o.staged.unlink(missing_ok=True)
            for m in commit.moves:
                if m.src_sha256 is None and is_staging_name(m.src.name):  # ours, not an input
                    m.src.unlink(missing_ok=True)
            raise
        self.ledger.complete(txn, self.progress,
                             {p: i for p, i in (known or {}).items() if i is not None})

    def _quarantine(self, path: Path, name: str, sha: str, size: int, exc: MalformedFile,
                    in_inbox: bool, now: datetime) -> tuple[FileOutcome, Commit]:
        commit = Commit(sha, name, "quarantined", bytes=size, reason=exc.reason)
        if in_inbox:
            qdir = self.config.paths.quarantine
            target = free_name(qdir, path.name, sha)
            sidecar = target.with_name(target.name + ".reason.json")
            staged = write_staged(sidecar, _reason_json(exc.reason, exc.detail, now, sha))
            commit.moves += [Move(staged, sidecar), Move(path, target, sha)]
        outcome = FileOutcome(name, "quarantined", sha256=sha, bytes=size, reason=exc.reason,
                              detail=exc.detail)
        return outcome, commit

    def move_aside(self, path: Path, directory: Path, reason: str, detail: str) -> Path:
        """Moves an inbox entry into quarantine or dead-letter with a reason sidecar."""
        now = self.clock()
        target = free_name(directory, path.name, None)
        sidecar = target.with_name(target.name + ".reason.json")
        staged = write_staged(sidecar, _reason_json(reason, detail, now, None))
        synced: set[Path] = set()
        move(staged, sidecar, synced)
        move(path, target, synced)
        sync_dirs(synced)
        return target


# Fault injection for tests of the failure paths: every file whose name matches this glob
# fails as a bug would (RuntimeError). Unset in production.
FAILPOINT_ENV = "LOGWATCHD_FAILPOINT_PROCESS"


def _failpoint(name: str) -> None:
    pattern = os.environ.get(FAILPOINT_ENV)
    if pattern and fnmatch.fnmatchcase(name, pattern):
        raise RuntimeError(f"failpoint {FAILPOINT_ENV} matched {name!r}")


def _reason_json(reason: str, detail: str, now: datetime, sha: str | None) -> bytes:
    doc: dict[str, Any] = {"reason": reason, "detail": detail, "at": utc_iso(now)}
    if sha:
        doc["sha256"] = sha
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
