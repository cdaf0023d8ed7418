"""Child processes that never outlive the process that started them.

Every child — pool workers, the HTTP process, a compaction pass — is forked by
multiprocessing's forkserver. The forkserver is started from the main thread and asks the
kernel to SIGKILL it when that thread's process dies (`PR_SET_PDEATHSIG`, set by
`logwatchd._forkserver_init` as the forkserver imports it); each child asks the same of
the forkserver (`die_with_parent`). A `kill -9` of the daemon (or of `process`) so takes
its whole tree with it at once: no orphaned worker goes on writing staged files that a
restarted daemon would meet, nor holds hundreds of MB.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
from multiprocessing import forkserver
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Asks the kernel to SIGKILL this process when its parent dies; exits at once if the
    parent is already gone (it died before the request could be made)."""
    parent = os.getppid()
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def ignore_stop_signals() -> None:
    """A child process ends when the daemon says so, or dies with it (`die_with_parent`);
    never on SIGTERM or SIGINT, which reach every process of the group on a Ctrl-C or a
    `kill` of the process group, in the middle of what the daemon is still winding down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def context() -> Any:
    """The forkserver context every child is started from."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["logwatchd._forkserver_init"])
    return ctx


def start_forkserver() -> None:
    """Starts the forkserver now, from the calling thread — call it from the main thread:
    the kernel's parent-death signal follows the thread that forked it, not the process."""
    context()
    forkserver.ensure_running()
