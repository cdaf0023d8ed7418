"""`logwatchd replay`: moves quarantined or dead-lettered files back into the inbox for another try.

Names are data, never paths: a name with `/` or NUL, empty, `.` or `..` is refused before
anything moves. A file lands in the inbox under its own name, or, when that is taken, under
a free name tagged before its first dot (`a.<tag>.jsonl`); nothing in the inbox is ever
overwritten (rename with RENAME_NOREPLACE, else link + unlink).

Locking: replay is meant to run while the daemon runs (the daemon simply picks the files
up), so it does not take the daemon's state lock. It takes its own short lock,
`state/replay.lock`, so two replays never move the same file at once; its one ledger write
(`forget`) is an ordinary SQLite transaction, safe beside the daemon's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .config import Config
from .durable import NAME_MAX, ensure_dir, free_name, keep, sha256_file, sync_dirs
from .layout import REASON_SUFFIX
from .ledger import Ledger
from .runtime import data_dirs, try_lock

LOCK_NAME = "replay.lock"


class ReplayError(Exception):
    """Replay cannot start: the message says why."""


class BadName(ReplayError):
    """A name that is a path (or no name at all): a usage error, nothing was moved."""


class ReplayBusy(ReplayError):
    """Another replay holds the replay lock."""


@dataclass(frozen=True)
class Replayed:
    """One named (or listed) entry: where it went, or why it could not go."""

    name: str
    target: Path | None = None
    problem: str | None = None


def check_name(name: str) -> None:
    """Raises BadName unless `name` is a plain entry name of one directory."""
    if not name:
        raise BadName("an empty name is not a file name")
    if "\0" in name:
        raise BadName(f"{name!r}: names must not contain NUL")
    if "/" in name:
        raise BadName(f"{name!r}: names are file names in the folder, not paths; no '/'")
    if name in (".", ".."):
        raise BadName(f"{name!r}: not a file name")


def is_sidecar(directory: Path, name: str) -> bool:
    """A `.reason.json` file is a sidecar only when the file it explains is beside it."""
    return name.endswith(REASON_SUFFIX) and os.path.lexists(directory / name[:-len(REASON_SUFFIX)])


def replayable(directory: Path) -> list[str]:
    """Every entry of the folder that is a file to replay (not hidden, not a sidecar)."""
    names = sorted(os.listdir(directory))
    return [n for n in names if not n.startswith(".") and not is_sidecar(directory, n)]


def replay(config: Config, source: str, names: list[str]) -> Iterator[Replayed]:
    """Moves the named (or all) files of `source` back into the inbox, one result each.

    Raises BadName (before anything moves), ReplayBusy, or ReplayError for a missing folder.
    A quarantined content is forgotten by the ledger first, so it is not a duplicate.
    """
    for name in names:
        check_name(name)
    directory = config.paths.quarantine if source == "quarantine" else config.paths.dead_letter
    if not directory.is_dir():
        raise ReplayError(f"{directory} does not exist")
    lock = _acquire_replay_lock(config)
    try:
        ensure_dir(config.paths.inbox)
        ledger = Ledger.open(config.paths.ledger, data_dirs(config), root=config.paths.root)
        try:
            for name in names or replayable(directory):
                yield _replay_one(config, ledger, directory, source, name)
        finally:
            ledger.close()
    finally:
        lock.close()


def _replay_one(config: Config, ledger: Ledger, directory: Path, source: str, name: str) -> Replayed:
    entry = directory / name
    if not os.path.lexists(entry) or is_sidecar(directory, name):
        return Replayed(name, problem=f"no such file in {source}")
    sha = sha256_file(entry)
    if sha is not None:
        ledger.forget(sha)  # first: a crash after this leaves the file where it was
    synced: set[Path | str] = {directory, config.paths.inbox}
    sidecar = directory / (name + REASON_SUFFIX)
    # Back under the name it was dropped with (kept under a tagged or shortened one when that
    # was taken or too long), never over a producer's file: a taken name gets a tag.
    original = _dropped_as(sidecar) or name
    target = keep(entry, free_name(config.paths.inbox, original, sha, limit=NAME_MAX), synced, sha)
    if os.path.lexists(sidecar):
        os.unlink(sidecar)
    sync_dirs(synced)
    return Replayed(name, target=target)


def _dropped_as(sidecar: Path) -> str | None:
    """The name the sidecar says its file was dropped with, if it says and it is a name."""
    try:
        doc = json.loads(sidecar.read_bytes())
        raw = bytes.fromhex(doc["file_bytes"]) if "file_bytes" in doc else doc["file"].encode()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    name = os.fsdecode(raw)
    try:
        check_name(name)
    except BadName:
        return None
    return name


def _acquire_replay_lock(config: Config) -> IO[bytes]:
    path = config.paths.state / LOCK_NAME
    lock = try_lock(path)
    if lock is None:
        raise ReplayBusy(f"another replay holds {path}; try again when it is done")
    return lock
