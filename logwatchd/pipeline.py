"""One file = one transaction: reader → records → writers → ledger. Decides every file's outcome.

Outcomes: `ok` (rows and error lines published, input archived), `quarantined` (not log
data: moved whole with a reason), `duplicate` (content seen before: archived, nothing
written), `refused` (symlink, special file, hard link: quarantined as it is, never read).
Transient I/O errors and bugs propagate: `errors.classify` says what they mean, the caller
retries or dead-letters (`Pipeline.dead_letter`). Every outcome is one ledger commit whose
journal moves the input — only the very file that was read, never one renamed over its
name meanwhile — to a name that overwrites nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import logs
from .config import Config
from .durable import (
    free_name,
    give_back,
    put_down,
    sha256_file,
    sha256_stream,
    sidecar_of,
    take,
    write_staged,
)
from .errors import (
    Cancelled,
    FileVanished,
    ForeignInHand,
    MalformedFile,
    PublishPending,
    RefusedFile,
)
from .failpoints import failpoint
from .layout import (
    IN_HAND_DIR,
    clean_path,
    display_name,
    errors_path,
    is_staging_name,
    reason_json,
    repeat_stem,
    staged_name,
)
from .ledger import Commit, FileIdentity, Grown, Ledger, Move, Output, identity, inode_of, utc_iso
from .parallel import JobSpec, LocalRunner, PoolRunner
from .reader import HashingReader, iter_chunks, open_input
from .records import ChunkResult, utc_now
from .storage import LocalDir
from .transform import transform

Clock = Callable[[], datetime]


@dataclass
class FileOutcome:
    """The summary of one file, as `process` prints it and `file_processed` logs it."""

    file: str
    status: str                     # ok | quarantined | duplicate | refused | failed
    processed: int = 0
    valid: int = 0
    errors: int = 0
    sha256: str | None = None
    bytes: int = 0
    reason: str | None = None
    detail: str | None = None
    duration_ms: float = 0.0
    counts: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    grown_into: str | None = None   # it grew after it was read: its new bytes, a new inbox file

    def summary(self) -> dict[str, Any]:
        # SPEC §2 knows four statuses: a refused entry was quarantined as it is.
        status = "quarantined" if self.status == "refused" else self.status
        out: dict[str, Any] = {"file": self.file, "status": status,
                               "processed": self.processed, "valid": self.valid,
                               "errors": self.errors}
        if self.reason:
            out["reason"] = self.reason
        if self.detail:
            out["detail"] = self.detail
        return out


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
        # Called per transformed chunk with (bytes of the input read, records so far): the
        # progress bar of `process` on a terminal (cli.py).
        self.watch: Callable[[int, int], None] | None = None
        self.local = LocalRunner()
        if pool is not None:
            pool.cancel = self.cancel
        self.zone = config.transform.zone
        self._committed = False  # the input in hand has its outcome committed

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def in_inbox(self, path: Path) -> bool:
        """Whether `path` is an inbox file (waiting, or in hand: see `durable.take`)."""
        parent = path.parent.resolve()
        inbox = self.config.paths.inbox.resolve()
        return parent == inbox or parent == inbox / IN_HAND_DIR

    def attempt_key(self, path: Path) -> bytes | None:
        """The ledger's key for an inbox file's attempts (its name), None outside the inbox."""
        return os.fsencode(path.name) if self.in_inbox(path) else None

    def finish_pending(self) -> None:
        """Carries out the moves of outcomes committed but not moved into place (a rename
        that failed): their inputs are still in hand."""
        if self.ledger.pending("input:"):
            self.ledger.recover("input:")
            put_down(self.config.paths.inbox)

    # --- the one entry point ------------------------------------------------------------
    def process(self, path: Path) -> FileOutcome:
        """Processes one file to its outcome. Raises TransientIOError, FileVanished or a bug."""
        _failpoint(path.name)
        started = time.monotonic()
        # An earlier outcome committed but not moved into place (a failed rename): finish
        # it first, so that its input is archived rather than taken for a duplicate.
        self.finish_pending()
        in_inbox = self.in_inbox(path)
        name = display_name(path.name)
        taken = None
        if in_inbox and path.parent.name != IN_HAND_DIR:
            try:
                for tries_left in range(FOREIGN_SET_ASIDE_TRIES, -1, -1):
                    try:
                        taken = path = take(path)
                        break
                    except ForeignInHand as exc:
                        if not tries_left:
                            raise  # planted again each time: intake pauses (errors.classify)
                        self._set_foreign_aside(path.parent, str(exc))
            except FileNotFoundError:
                raise FileVanished(name) from None
        self._committed = False
        try:
            return self._process_taken(path, name, in_inbox, started)
        except BaseException:
            if taken is not None and not self._committed:  # not processed: back to the inbox
                give_back(taken)
            raise
        finally:
            if taken is not None:
                put_down(taken.parent.parent)

    def _process_taken(self, path: Path, name: str, in_inbox: bool, started: float) -> FileOutcome:
        try:
            fh, st = open_input(path)
        except RefusedFile as exc:
            if in_inbox:
                self.set_aside(path, self.config.paths.quarantine, "refused", exc.reason, exc.detail)
            return FileOutcome(name, "refused", reason=exc.reason, detail=exc.detail)
        now = self.clock()
        if self.pool is not None and self._large(st):
            self.pool.prestart()  # the workers start while the input is hashed
        with fh:
            sha = sha256_stream(fh, self.progress)
            fh.seek(0)
            outcome, commit = self._process_open(path, name, fh, st, sha, in_inbox, now)
        # The input is closed before it moves: its close event belongs to the inbox. Its
        # identity vouches for the hash just computed, so archiving needs no third read.
        commit.duration_ms = round((time.monotonic() - started) * 1000, 3)
        try:
            grown = self._apply(commit, now, {path: identity(st)})
        except Exception as exc:
            if self._committed:
                raise PublishPending(exc, outcome) from exc
            raise
        for g in grown:
            outcome.grown_into = display_name(g.tail.name)
        outcome.duration_ms = round((time.monotonic() - started) * 1000, 3)
        return outcome

    def _process_open(self, path: Path, name: str, fh: Any, st: os.stat_result, sha: str,
                      in_inbox: bool, now: datetime) -> tuple[FileOutcome, Commit]:
        cfg = self.config
        seen = self.ledger.occurrences(sha)
        if cfg.ingest.dedupe and seen:
            commit = Commit(sha, name, "duplicate", bytes=st.st_size)
            if in_inbox:
                commit.moves.append(self._retire_input(path, st, sha, now))
            return FileOutcome(name, "duplicate", sha256=sha, bytes=st.st_size), commit
        # Names are deterministic: a retry after a crash rewrites the same (staged) names.
        stem = repeat_stem(sha, seen)
        while seen and self.ledger.stem_in_use(stem):  # repeats after a rebuilt ledger
            seen += 1
            stem = repeat_stem(sha, seen)
        try:
            result, outputs = self._transform(path, name, fh, st, sha, stem, now)
        except MalformedFile as exc:
            return self._quarantine(path, name, st, sha, exc, in_inbox, now)
        commit = Commit(sha, name, "ok", bytes=st.st_size, processed=result.processed,
                        valid=result.valid, errors=result.errors, outputs=outputs,
                        counts=result.counts)
        if in_inbox:
            commit.moves.append(self._retire_input(path, st, sha, now))
        outcome = FileOutcome(name, "ok", result.processed, result.valid, result.errors,
                              sha256=sha, bytes=st.st_size, counts=result.counts)
        return outcome, commit

    # --- transformation -----------------------------------------------------------------
    def _transform(self, path: Path, name: str, fh: Any, st: os.stat_result, sha: str,
                   stem: str, now: datetime) -> tuple[ChunkResult, list[Output]]:
        cfg = self.config
        spec = JobSpec(sha, stem, name, LocalDir(cfg.paths.clean), cfg.transform.timezone,
                       utc_iso(now), cfg.ingest.max_line_bytes)
        runner = self.pool if (self.pool is not None and self._large(st)) else self.local
        src = HashingReader(fh)
        chunks = iter_chunks(src, path.name, cfg.ingest.chunk_bytes, cfg.ingest.max_line_bytes,
                             max_decompressed=cfg.ingest.max_decompressed_bytes,
                             progress=self.progress)

        def step() -> None:
            self.progress()
            if self.cancel.is_set():
                raise Cancelled(f"{path.name}: abandoned for shutdown")

        def watch(total: ChunkResult) -> None:
            if self.watch is not None:
                self.watch(fh.tell(), total.processed)

        day = self._day(now)
        errors_relative = errors_path(day, stem)
        done = transform(runner, spec, src, chunks, errors=LocalDir(cfg.paths.errors),
                         errors_relative=errors_relative, step=step, watch=watch,
                         changed=lambda: os.fstat(fh.fileno()).st_size != st.st_size)
        outputs = []
        for p in done.parts:
            final = cfg.paths.clean / clean_path(p.date, p.name)
            outputs.append(Output(final, staged_name(final), "clean", p.date, p.rows, p.bytes))
        if done.errors is not None:
            final = cfg.paths.errors / errors_relative
            outputs.append(Output(final, staged_name(final), "errors", day, done.errors.lines,
                                  done.errors.size))
        return done.result, outputs

    def _large(self, st: os.stat_result) -> bool:
        """Whether the input goes to the worker processes (else it is processed here)."""
        return st.st_size > 2 * self.config.ingest.chunk_bytes

    def _day(self, now: datetime) -> str:
        return now.astimezone(self.zone).date().isoformat()

    # --- outcomes -----------------------------------------------------------------------
    def _retire_input(self, path: Path, st: os.stat_result, sha: str, now: datetime) -> Move:
        archive = self.config.paths.archive
        ident = inode_of(st)
        if archive is None:
            return Move(path, None, sha, ident)
        return Move(path, free_name(archive / f"date={self._day(now)}", path.name, sha), sha,
                    ident, keep=True)

    def _apply(self, commit: Commit, now: datetime,
               known: dict[Path, FileIdentity | None] | None = None) -> list[Grown]:
        """Commits the outcome, then moves its files into place (see ledger.py); returns
        the inputs that grew after they were read."""
        if commit.attempt is None and commit.moves:
            commit.attempt = self.attempt_key(commit.moves[-1].src)
        failpoint("input.staged")
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
        self._committed = True  # its journal moves the input on, from where it is now
        failpoint("input.committed")
        return self.ledger.complete(txn, self.progress,
                                    {p: i for p, i in (known or {}).items() if i is not None})

    def _quarantine(self, path: Path, name: str, st: os.stat_result, sha: str,
                    exc: MalformedFile, in_inbox: bool, now: datetime) -> tuple[FileOutcome, Commit]:
        commit = Commit(sha, name, "quarantined", bytes=st.st_size, reason=exc.reason)
        if in_inbox:
            commit.moves += self._aside_moves(path, inode_of(st), sha, self.config.paths.quarantine,
                                              exc.reason, exc.detail, now)
        outcome = FileOutcome(name, "quarantined", sha256=sha, bytes=st.st_size, reason=exc.reason,
                              detail=exc.detail)
        return outcome, commit

    def _aside_moves(self, path: Path, ident: str | None, sha: str | None, directory: Path,
                     reason: str, detail: str, now: datetime) -> list[Move]:
        """The moves that set an inbox entry aside with its reason: a staged sidecar, then
        the entry itself, both to names that overwrite nothing."""
        target = free_name(directory, path.name, sha)
        doc = reason_json(reason, detail, utc_iso(now), sha, path.name)
        staged = write_staged(sidecar_of(target), doc)
        return [Move(staged, sidecar_of(target), keep=True),
                Move(path, target, None, ident, keep=True)]

    def set_aside(self, path: Path, directory: Path, outcome: str, reason: str, detail: str) -> None:
        """Moves an inbox entry as it is (never read) into quarantine or dead-letter with a
        reason sidecar, and counts it (`refused`, `dead_lettered`) in the same commit."""
        now = self.clock()
        ident = inode_of(path)
        if ident is None:
            raise FileVanished(f"{display_name(path.name)} is gone")
        commit = Commit("", display_name(path.name), outcome, reason=reason,
                        attempt=self.attempt_key(path))
        # A dead-lettered file's content is named when it can be read (a refused entry never is).
        sha = sha256_file(path, self.progress) if outcome == "dead_lettered" else None
        commit.moves = self._aside_moves(path, ident, sha, directory, reason, detail, now)
        self._apply(commit, now)

    def _set_foreign_aside(self, inbox: Path, detail: str) -> None:
        """Whatever holds the in-hand name that is not logwatchd's directory (a symlink
        planted there, a file) goes to quarantine as it is, refused; ours is made anew."""
        with contextlib.suppress(FileVanished):
            self.set_aside(inbox / IN_HAND_DIR, self.config.paths.quarantine, "refused",
                           "reserved_name", detail)
            logs.get_logger().warning(logs.FILE_REFUSED, file=IN_HAND_DIR, reason="reserved_name",
                                      detail=detail)

    def dead_letter(self, path: Path, reason: str, detail: str) -> None:
        """Sets a file that kept failing aside in dead-letter (see `errors.classify`)."""
        self.set_aside(path, self.config.paths.dead_letter, "dead_lettered", reason, detail)


# Something planted under the in-hand name is set aside this many times for one file;
# planted again still, the file waits and intake pauses (it is not the file's failure).
FOREIGN_SET_ASIDE_TRIES = 3

# Fault injection for tests of the failure paths: every file whose name matches this glob
# fails as a bug would (RuntimeError). Unset in production.
FAILPOINT_ENV = "LOGWATCHD_FAILPOINT_PROCESS"


def _failpoint(name: str) -> None:
    pattern = os.environ.get(FAILPOINT_ENV)
    if pattern and fnmatch.fnmatchcase(name, pattern):
        raise RuntimeError(f"failpoint {FAILPOINT_ENV} matched {name!r}")
