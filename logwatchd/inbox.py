"""Watching and scanning the inbox → a bounded queue of files ready to take. No processing here.

A file is ready on close-after-write or on being renamed into the inbox; a file seen any
other way (a rescan, a create/modify without close, the backlog at start-up) is ready once
its writer has not touched it for `settle_seconds` and no writer is known to hold it open.
watchdog's inotify thread only records events; a tick thread settles and enqueues, and an
inotify queue overflow brings the next rescan forward.
The queue is bounded: past its capacity a file is left in the inbox, and the next rescan
(brought forward as soon as the queue drains) picks it up — the inbox is the durable queue.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyEvent, InotifyFD, Mask

from .config import IngestConfig
from .durable import ensure_dir, lease_probe


class Intake:
    """The bounded FIFO of inbox files ready to be processed; a path is in it at most once."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._delayed: dict[Path, float] = {}  # waiting out a backoff: path -> when (clock)
        self._q: deque[Path] = deque()
        self._members: set[Path] = set()   # queued or being processed
        self._in_hand: set[Path] = set()   # taken, not yet done
        self._again: set[Path] = set()     # offered while in hand: a new file under that name
        self._since: dict[Path, float] = {}  # wall time each waiting file was first queued
        self._cv = threading.Condition()
        self.overflowed = False

    def offer(self, path: Path) -> bool:
        """Queues a path unless it is already queued; False when the queue is full.

        A path offered while it is in hand (a producer renamed a new file over the name
        being processed) is queued again when the one in hand is done.
        """
        with self._cv:
            if path in self._in_hand:
                self._again.add(path)
                return True
            if path in self._delayed:  # a new file under a failing name: try it now
                del self._delayed[path]
                self._q.append(path)
                self._cv.notify()
                return True
            if path in self._members:
                return True
            if len(self._q) >= self.capacity:
                self.overflowed = True
                return False
            self._q.append(path)
            self._members.add(path)
            self._since.setdefault(path, time.time())
            self._cv.notify()
            return True

    def retry(self, path: Path, delay: float) -> None:
        """Sets the path in hand aside for `delay` seconds; the queue goes on meanwhile, and
        the path joins its tail when its time comes (a failing file never blocks the others)."""
        with self._cv:
            self._in_hand.discard(path)
            self._again.discard(path)
            self._delayed[path] = self._clock() + max(0.0, delay)
            self._cv.notify()

    def _release_due(self) -> float | None:
        """Caller holds the lock. Queues the delayed paths whose time came; returns the
        seconds until the next one, or None when none waits."""
        if not self._delayed:
            return None
        now = self._clock()
        for path, at in sorted(self._delayed.items(), key=lambda kv: kv[1]):
            if at > now:
                return at - now
            del self._delayed[path]
            self._q.append(path)
        return None

    def queued(self) -> int:
        """Files ready to be taken now."""
        with self._cv:
            return len(self._q)

    def take(self, timeout: float) -> Path | None:
        with self._cv:
            wait = self._release_due()
            if not self._q:
                self._cv.wait(timeout if wait is None else min(timeout, wait))
                self._release_due()
            if not self._q:
                return None
            path = self._q.popleft()
            self._in_hand.add(path)
            return path

    def done(self, path: Path) -> None:
        with self._cv:
            self._in_hand.discard(path)
            if path in self._again:
                self._again.discard(path)
                self._q.append(path)  # still a member: the new file under the name
                self._cv.notify()
                return
            self._members.discard(path)
            self._since.pop(path, None)

    def contains(self, path: Path) -> bool:
        with self._cv:
            return path in self._members

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._q)

    def room(self) -> int:
        with self._cv:
            return self.capacity - len(self._q)


def waiting_files(inbox: Path, ingest: IngestConfig) -> list[tuple[float, Path]]:
    """(mtime, path) of every entry of the inbox that matches the patterns and is not a
    directory: what waits to be taken."""
    found: list[tuple[float, Path]] = []
    with os.scandir(inbox) as it:
        for entry in it:
            if not ingest.matches(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                found.append((st.st_mtime, Path(entry.path)))
    return found


def writer_active(path: Path) -> bool:
    """True when some process holds the file open for writing (a Linux read lease says so).

    Without leases of our own to take (`durable.read_lease`) this says False, and the
    inotify open/close bookkeeping and the settle time decide alone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return lease_probe(fd) is False
    finally:
        os.close(fd)


# What the inbox watch asks the kernel for. IN_MODIFY keeps a quiet writer's open count fresh.
_MASK = (InotifyConstants.IN_CREATE | InotifyConstants.IN_MODIFY | InotifyConstants.IN_OPEN
         | InotifyConstants.IN_CLOSE_WRITE | InotifyConstants.IN_CLOSE_NOWRITE
         | InotifyConstants.IN_MOVED_TO | InotifyConstants.IN_MOVED_FROM
         | InotifyConstants.IN_DELETE | InotifyConstants.IN_DELETE_SELF
         | InotifyConstants.IN_MOVE_SELF | InotifyConstants.IN_EXCL_UNLINK)


class _Callback:
    """Runs on watchdog's inotify thread: records what happened, never touches file contents.

    watchdog's low-level InotifyFD is used rather than its Observer: the Observer holds every
    unpaired IN_MOVED_FROM for 0.5 s to pair it, and its queue is FIFO, so each file the
    daemon moves out of the inbox would delay every later event by half a second.
    """

    def __init__(self, watcher: InboxWatcher) -> None:
        self.w = watcher
        self.retired = False  # a watch replaced by `rewatch`: its late events are not news

    def on_event(self, event: InotifyEvent) -> None:
        if self.retired:
            return
        if event.is_move_self or event.is_delete_self:
            self.w.watch_lost = True  # the watch follows the old directory: /healthz says so
            return
        if not event.name or event.is_directory:
            return
        w = self.w
        path = w.inbox / os.fsdecode(event.name)
        if event.is_moved_to or event.is_create:
            w.new_inode(path)  # opens counted so far were of the file this one replaced
        if event.is_moved_to:
            w.ready_now(path)
        elif event.is_close_write:
            w.note_open(path, -1)
            w.ready_now(path)
        elif event.is_close_nowrite:
            w.note_open(path, -1)
        elif event.is_open:
            w.note_open(path, +1)
        elif event.is_create or event.is_modify:
            w.note_seen(path)
        elif event.is_moved_from or event.is_delete:
            w.forget(path)

    def on_watch_deleted(self, wd: int) -> None:
        if not self.retired:
            self.w.watch_lost = True

    def on_queue_overflow(self) -> None:
        self.w.rescan_soon()


class InboxWatcher:
    """inotify events + periodic rescans → `Intake`, with settle-time bookkeeping."""

    def __init__(self, inbox: Path, ingest: IngestConfig, intake: Intake,
                 on_refused_name: Callable[[Path], None] | None = None) -> None:
        self.inbox = inbox
        self.ingest = ingest
        self.intake = intake
        self._lock = threading.Lock()
        self._pending: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, since)
        # Opens minus closes seen by inotify, with the time of the last such event. A count
        # with no event for STALE_OPEN_S is not trusted: a close event can be lost (queue
        # overflow), and a writer that neither writes nor closes for that long is gone.
        self._opens: dict[Path, tuple[int, float]] = {}
        self.stale_open_s = max(60.0, 10 * ingest.settle_seconds)
        self._first_seen: dict[Path, float] = {}  # wall time the watcher first saw each file
        self._inotify: InotifyFD | None = None
        self._callback: _Callback | None = None
        self.watch_lost = False     # the inbox itself was deleted or moved away
        self._stop = threading.Event()
        self._tick: threading.Thread | None = None
        self._next_rescan = 0.0
        self.backlog = 0
        self.oldest_seen: float | None = None
        self.last_tick = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Starts watching, then scans the backlog (so nothing lands unseen in between)."""
        self._watch()
        self.rescan()
        self._tick = threading.Thread(target=self._tick_loop, name="inbox-tick", daemon=True)
        self._tick.start()

    def rewatch(self) -> bool:
        """Watches the inbox again after it was deleted or moved away (made anew if it is
        gone); what landed meanwhile is found by a rescan. True if it was lost."""
        inotify = self._inotify
        if not self.watch_lost and inotify is not None and inotify.is_alive():
            return False
        ensure_dir(self.inbox)
        if self._callback is not None:
            self._callback.retired = True
        self.watch_lost = False  # before the new watch: a loss from now on is seen again
        self._watch()
        if inotify is not None:
            inotify.stop()
        self.rescan()
        return True

    def _watch(self) -> None:
        self._callback = _Callback(self)
        inotify = InotifyFD()
        inotify.daemon = True
        inotify.add_callback(os.fsencode(self.inbox), Mask(_MASK), self._callback, CallbackId(id(self)))
        inotify.start()
        self._inotify = inotify

    def stop(self) -> None:
        self._stop.set()
        if self._inotify is not None:
            self._inotify.stop()
            self._inotify.join(timeout=5)
        if self._tick is not None:
            self._tick.join(timeout=5)

    def alive(self) -> bool:
        """The observer thread runs and the tick loop has run recently."""
        return (self._inotify is not None and self._inotify.is_alive() and not self.watch_lost
                and time.monotonic() - self.last_tick < 30)

    # --- events (observer thread) -----------------------------------------------------------
    def wanted(self, path: Path) -> bool:
        return self.ingest.matches(path.name)

    def ready_now(self, path: Path) -> None:
        """A close-after-write or a rename into the inbox: take it, unless still open elsewhere."""
        if not self.wanted(path):
            return
        with self._lock:
            if self._held_open(path):
                self._pending.setdefault(path, (-1, -1, time.monotonic()))
                return
            self._pending.pop(path, None)
        if not self.intake.offer(path):
            return  # full: the rescan finds it

    def note_open(self, path: Path, delta: int) -> None:
        if not self.wanted(path):
            return
        with self._lock:
            n = self._opens.get(path, (0, 0.0))[0] + delta
            if n > 0:
                self._opens[path] = (n, time.monotonic())
            else:
                self._opens.pop(path, None)

    def new_inode(self, path: Path) -> None:
        with self._lock:
            self._opens.pop(path, None)

    def forget(self, path: Path) -> None:
        """The name left the inbox (deleted, moved out): drop what was known about it."""
        with self._lock:
            self._opens.pop(path, None)
            self._pending.pop(path, None)
            self._first_seen.pop(path, None)

    def _held_open(self, path: Path) -> bool:
        """Caller holds the lock. True while a writer is known to keep the file open."""
        entry = self._opens.get(path)
        if entry is None:
            return False
        if time.monotonic() - entry[1] > self.stale_open_s:
            del self._opens[path]
            return False
        return entry[0] > 0

    def note_seen(self, path: Path) -> None:
        if not self.wanted(path):
            return
        with self._lock:
            entry = self._opens.get(path)
            if entry is not None:  # a writer at work: its open is not stale
                self._opens[path] = (entry[0], time.monotonic())
            if path in self._pending or self.intake.contains(path):
                return
            self._pending[path] = (-1, -1, time.monotonic())

    def rescan_soon(self) -> None:
        """inotify lost events (queue overflow): list the inbox at the next tick."""
        self._next_rescan = 0.0

    def defer(self, path: Path) -> None:
        """The worker found a writer still active: settle it again later."""
        with self._lock:
            self._pending[path] = (-1, -1, time.monotonic())

    # --- settling and rescanning (tick thread) ---------------------------------------------
    def _tick_loop(self) -> None:
        interval = max(0.05, min(0.25, self.ingest.settle_seconds / 4))
        while not self._stop.wait(interval):
            self.last_tick = time.monotonic()
            try:
                self._settle()
                now = time.monotonic()
                overflow_drained = self.intake.overflowed and self.intake.room() > self.intake.capacity // 2
                if now >= self._next_rescan or overflow_drained:
                    self.rescan()
            except OSError:
                continue  # e.g. the inbox briefly unreadable: try again next tick

    def _settle(self) -> None:
        now = time.monotonic()
        settle = self.ingest.settle_seconds
        with self._lock:
            items = list(self._pending.items())
        for path, (size, mtime, since) in items:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                with self._lock:
                    self._pending.pop(path, None)
                    self._opens.pop(path, None)
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                with self._lock:
                    if path in self._pending:
                        self._pending[path] = (st.st_size, st.st_mtime_ns, now)
                continue
            with self._lock:
                if now - since < settle or self._held_open(path):
                    continue
            if self.intake.offer(path):
                with self._lock:
                    self._pending.pop(path, None)

    def _list(self) -> list[tuple[float, Path]]:
        """(mtime, path) of every matching non-directory entry; also recounts the backlog."""
        found = waiting_files(self.inbox, self.ingest)
        # The backlog's age counts from when a file was first seen here, not its mtime:
        # a file renamed in with an old mtime (cp -p, rsync -t) has only just arrived.
        now = time.time()
        with self._lock:
            present = {p for _, p in found}
            for p in list(self._first_seen):
                if p not in present:
                    del self._first_seen[p]
            for p in present:
                self._first_seen.setdefault(p, now)
            self.oldest_seen = min(self._first_seen.values(), default=None)
        self.backlog = len(found)
        return found

    def refresh_backlog(self) -> None:
        """Recounts the files waiting in the inbox (for /stats and the metrics event)."""
        self._list()

    def rescan(self) -> None:
        """Lists the inbox: queues settled files (oldest first) and tracks the others."""
        self.intake.overflowed = False
        self._next_rescan = time.monotonic() + self.ingest.rescan_seconds
        wall = time.time()
        for mtime, path in sorted(self._list(), key=lambda x: x[0]):
            if self.intake.contains(path):
                continue
            with self._lock:
                if path in self._pending or self._held_open(path):
                    continue
                if wall - mtime < self.ingest.settle_seconds:
                    self._pending[path] = (-1, -1, time.monotonic())
                    continue
            if not self.intake.offer(path):
                break  # full: the rest wait for the next rescan
