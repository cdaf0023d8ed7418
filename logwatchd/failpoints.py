"""Named failpoints at every step of a commit, for tests that crash the process there.

Off unless `LOGWATCHD_FAILPOINTS` names them when the process starts: a comma-separated
list of `NAME` or `NAME=ACTION`, ACTION being `kill` (SIGKILL this process, the default),
`raise` (a RuntimeError, as a bug would; `raise:N` only the first N times, as a fault of
the host that clears) or `sleep` (0.05 s, each time: slows the step
down, so that a test can stop the process in the middle of it; `sleep:SECONDS` for
another time). `NAME` may end with `*`.
Unset, a failpoint costs one dictionary lookup.

The names (`tests/test_failpoints.py` kills the process at each in turn):

    input.staged          outputs written and fsynced, nothing committed
    input.committed       outcome and journal committed, no file moved
    input.moved-first     the first journalled move done
    input.moved-more      a later move done
    input.moved           every move done, directories not yet fsynced
    input.synced          directories fsynced, journal not yet cleared
    compact.staged        merged files written and fsynced, catalog unchanged
    compact.committed     catalog swapped and journal committed, no file moved
    compact.moved-first / compact.moved-more / compact.moved / compact.synced   as above
    parquet.part_closed   one Parquet part of an input closed (staged, not yet fsynced)
    aws.claimed           the ingest Lambda: an object's content claimed, nothing written
    aws.outputs_written   its outputs in S3 (or its quarantine copy), the ledger not completed
"""

from __future__ import annotations

import fnmatch
import os
import signal
import time

ENV = "LOGWATCHD_FAILPOINTS"
SLEEP_S = 0.05


def _parse(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, action = item.partition("=")
        points[name] = action or "kill"
    return points


_POINTS = _parse(os.environ.get(ENV, ""))
_RAISED: dict[str, int] = {}  # name -> times `raise:N` has raised there


def failpoint(name: str) -> None:
    """Crashes here when the environment asked for it; else does nothing."""
    if not _POINTS:
        return
    action = _POINTS.get(name)
    if action is None:
        action = next((a for p, a in _POINTS.items() if fnmatch.fnmatchcase(name, p)), None)
        if action is None:
            return
    if action == "raise":
        raise RuntimeError(f"failpoint {name}")
    if action.startswith("raise:"):
        if _RAISED.get(name, 0) < int(action[6:]):
            _RAISED[name] = _RAISED.get(name, 0) + 1
            raise RuntimeError(f"failpoint {name}")
        return
    if action == "sleep" or action.startswith("sleep:"):
        time.sleep(float(action[6:]) if action != "sleep" else SLEEP_S)
        return
    os.kill(os.getpid(), signal.SIGKILL)
