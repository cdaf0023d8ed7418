"""Opening the state: directories, the single-instance lock, the ledger, crash recovery.

Shared by the commands that write outputs (`run`, `process`, `compact`, `rebuild-ledger`):
one process at a time owns a state directory; on start it replays the ledger's journal,
removes staged files that no committed transaction refers to, and moves a file left in
hand back into the inbox. `replay` only moves files
into the inbox, so it runs beside the daemon under a lock of its own (`try_lock`).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .config import Config
from .durable import ensure_dir, give_back_all, sync_dirs
from .errors import ConfigError, LedgerError
from .ledger import Ledger
from .writers import iter_staging_files


@dataclass
class Runtime:
    config: Config
    ledger: Ledger
    lock: IO[bytes]
    recovered: int
    removed_staging: int

    def close(self) -> None:
        self.ledger.close()
        self.lock.close()


def data_dirs(config: Config) -> tuple[Path, ...]:
    p = config.paths
    return tuple(d for d in (p.clean, p.errors, p.archive) if d is not None)


def open_runtime(config: Config) -> Runtime:
    """Creates the directories, takes the lock, opens and recovers the ledger."""
    p = config.paths
    for d in (p.inbox, p.clean, p.errors, p.quarantine, p.dead_letter, p.state, p.archive):
        if d is not None:
            ensure_dir(d)
    lock = acquire_lock(config)
    try:
        ledger = Ledger.open(p.ledger, data_dirs(config), root=p.root)
    except BaseException:
        lock.close()
        raise
    try:
        check_timezone(config, ledger)
    except BaseException:
        ledger.close()
        lock.close()
        raise
    recovered = ledger.recover()
    removed = remove_orphans(config, ledger)
    # A file a process held when it died (not committed: the journal moved those on).
    give_back_all(p.inbox)
    return Runtime(config, ledger, lock, recovered, removed)


TIMEZONE_KEY = "timezone"  # the ledger's `meta` key of the zone the data was written in


def check_timezone(config: Config, ledger: Ledger) -> None:
    """Refuses (ConfigError) a `transform.timezone` other than the one the data was written in.

    Partition dates, `day_of_week`, the formatted timestamps and the per-day counts all
    depend on the zone: mixing two would answer counts of neither. A ledger without a
    recorded zone (new, or from before zones were recorded) records the configured one.
    """
    configured = config.transform.timezone
    recorded = ledger.meta(TIMEZONE_KEY)
    if recorded is None:
        ledger.set_meta(TIMEZONE_KEY, configured)
    elif recorded != configured:
        raise ConfigError(
            f"transform.timezone: the data under {config.paths.root} was written in the time "
            f"zone {recorded!r} (recorded in the ledger {config.paths.ledger}), but the config "
            f"says {configured!r}; refusing to mix them (partition dates and counts would be "
            f"wrong). Set transform.timezone = {recorded!r} again, or, to migrate to "
            f"{configured!r}, point paths.root at a new, empty root and process the archived "
            "inputs there again (`logwatchd process FILE...`), or move the old root aside "
            "and start afresh.")


def try_lock(path: Path) -> IO[bytes] | None:
    """An exclusive lock on `path` (held until the returned file is closed), or None when
    another process holds it."""
    ensure_dir(path.parent)
    lock = open(path, "ab")  # noqa: SIM115 - held (and the lock with it) until close()
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def acquire_lock(config: Config) -> IO[bytes]:
    """Takes the state directory's exclusive lock (held until the returned file is closed)."""
    path = config.paths.lock
    lock = try_lock(path)
    if lock is None:
        raise LedgerError(f"another logwatchd process holds {path}; "
                          "only one may use a state directory at a time")
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n".encode())
    lock.flush()
    return lock


def remove_orphans(config: Config, ledger: Ledger) -> int:
    """Deletes staged files of transactions that never committed (a crash mid-write)."""
    keep = ledger.pending_paths()
    roots = [config.paths.clean, config.paths.errors, config.paths.quarantine, config.paths.dead_letter]
    removed = 0
    synced: set[Path] = set()
    for staged in iter_staging_files(*roots):
        if staged not in keep:
            staged.unlink(missing_ok=True)
            synced.add(staged.parent)
            removed += 1
    sync_dirs(synced)
    return removed
