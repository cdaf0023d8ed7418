"""`logwatchd replay`: moves quarantined or dead-lettered files back into the inbox for another try."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

from .config import Config
from .durable import free_name, move, sha256_file, sync_dirs
from .ledger import Ledger
from .pipeline import display_name
from .runtime import data_dirs

REASON_SUFFIX = ".reason.json"


def replay(config: Config, source: str, names: list[str]) -> int:
    """Moves the named (or all) files back; forgets a quarantined content so it is not a duplicate."""
    directory = config.paths.quarantine if source == "quarantine" else config.paths.dead_letter
    if not directory.is_dir():
        print(f"logwatchd: {directory} does not exist", file=sys.stderr)
        return 1
    if names:
        entries = [directory / n for n in names]
    else:
        entries = sorted(p for p in directory.iterdir()
                         if not p.name.endswith(REASON_SUFFIX) and not p.name.startswith("."))
    ledger = Ledger.open(config.paths.ledger, data_dirs(config), root=config.paths.root)
    status = 0
    try:
        for entry in entries:
            if not os.path.lexists(entry) or entry.name.endswith(REASON_SUFFIX):
                print(f"logwatchd: no such file in {source}: {entry.name}", file=sys.stderr)
                status = 1
                continue
            sha = sha256_file(entry)
            if sha is not None:
                ledger.forget(sha)  # first: a crash after this leaves the file where it was
            target = free_name(config.paths.inbox, entry.name, sha)
            synced: set[Path] = set()
            move(entry, target, synced)
            sidecar = entry.with_name(entry.name + REASON_SUFFIX)
            if sidecar.exists():
                move(sidecar, None, synced)
            sync_dirs(synced)
            sys.stdout.buffer.write(orjson.dumps({"file": display_name(entry.name), "from": source,
                                                  "to": str(target)}) + b"\n")
    finally:
        ledger.close()
    return status
