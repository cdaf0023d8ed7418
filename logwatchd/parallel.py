"""Chunks of one input → Parquet parts + error lines, in this process or across worker processes.

A large file is cut into independent chunks; each worker owns one Parquet part per event
date for the input in hand, so the parts of one input are `<sha>-<worker>.parquet`. Results
come back in any order and are re-sequenced, so error lines keep the file's line order.
At most `2 × workers` chunks are in flight: memory is bounded by the chunk size.

The chunks of an uncompressed file are not sent through the pipes: the parent only hashes
the bytes and finds the newline-aligned cuts, and sends (offset, length, CRC-32); the
worker reads the range itself and checks the CRC, so a file changed meanwhile is noticed.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import traceback
import zlib
from collections.abc import Container, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Cancelled, MalformedFile, TransientIOError
from .layout import clean_path, parquet_schema, part_stem
from .procs import context, die_with_parent, ignore_stop_signals
from .reader import (
    Chunk,
    Elements,
    Lines,
    LongLine,
    count_newlines,
    is_span,
    own_span_fd,
    read_span,
)
from .records import ChunkResult, CountTables, RecordBatcher, RecordError
from .storage import LocalDir, as_store
from .writers import (
    PartitionedParquet,
    SpillIndex,
    WrittenPart,
    release_memory,
    remove_staged_parts,
    spill_path,
)

if TYPE_CHECKING:  # imported by the processes that build columns, never by the coordinator
    import pyarrow as pa

    from .storage import Store


@dataclass(frozen=True)
class JobSpec:
    """What a sink needs to know about the input in hand."""

    sha256: str
    stem: str          # output names: <stem>-<part>.parquet; the SHA-256, tagged on a repeat
    source_file: str
    clean: Store       # the dataset: a local directory (staged parts) or an S3 prefix
    timezone: str
    ingested_at: str
    max_line_bytes: int


SLICE_BYTES = 1 << 20  # JSON Lines parsed per step inside a chunk
SLICE_ELEMENTS = 4096  # array elements parsed per step inside a chunk


class SpanUnreadable(Exception):
    """This process may not reopen the parent's descriptor (e.g. /proc is restricted)."""


class ChunkSink:
    """Processes chunks of one input and writes its valid rows to staged Parquet parts."""

    def __init__(self, spec: JobSpec, part: int) -> None:
        self.batcher = RecordBatcher(spec.source_file, spec.timezone, spec.ingested_at,
                                     spec.max_line_bytes)
        self.parquet = PartitionedParquet(spec.clean, part_stem(spec.stem, part),
                                          parquet_schema(spec.sha256, spec.source_file))
        self.counts = CountTables()
        self._origin: str | None = None
        self._fd = -1

    def handle(self, chunk: Chunk) -> ChunkResult:
        if isinstance(chunk, LongLine):
            if chunk.blank:  # a blank line, however long: no record
                return ChunkResult()
            res = ChunkResult(processed=1, errors=1, parsed=1)  # never read: not known not JSON
            res.error_lines.append(self.batcher.long_line(chunk.number, chunk.prefix, chunk.length))
            return res
        table, res = self._parse(chunk)  # the bytes it read are freed before rows are written
        if table is not None:
            self.parquet.write_chunk(table)
            self.counts.add(table)
        release_memory()  # the chunk's Python objects and columns are freed by now
        return res

    def _parse(self, chunk: Lines | Elements) -> tuple[pa.Table | None, ChunkResult]:
        try:
            if isinstance(chunk, Lines):
                if is_span(chunk):
                    fd = own_span_fd(chunk)
                    chunk = read_span(fd if fd >= 0 else self._open(chunk.origin), chunk)
                return self._lines(chunk)
            return self._elements(chunk)
        except RecordError as exc:  # only raised for array elements
            raise MalformedFile("invalid_array", f"an array element is not JSON: {exc}") from None

    def _lines(self, chunk: Lines) -> tuple[pa.Table | None, ChunkResult]:
        """A chunk in slices: the Python objects of one slice at a time, one row group per chunk.

        The parsed lines cost several times their size as Python objects; Arrow columns
        cost about their size. Slicing keeps a worker's memory near the chunk size, and
        the per-column work is still done once per chunk (`finish`).
        """
        data = chunk.data
        total = ChunkResult()
        batches = []
        first = chunk.first
        pos = 0
        while pos < len(data):
            end = data.rfind(b"\n", pos, pos + SLICE_BYTES) + 1
            if end <= pos:  # one line longer than a slice: up to its end
                end = data.find(b"\n", pos + SLICE_BYTES) + 1 or len(data)
            piece = data if pos == 0 and end == len(data) else data[pos:end]
            batch, res = self.batcher.parse_lines(piece, first, chunk.strip_bom and pos == 0)
            first += count_newlines(piece)
            pos = end
            total.merge(res)
            if batch is not None:
                batches.append(batch)
        return self.batcher.finish(batches, total, counts=False)

    def _elements(self, chunk: Elements) -> tuple[pa.Table | None, ChunkResult]:
        """Array elements in slices, as `_lines` does."""
        total = ChunkResult()
        batches = []
        items = chunk.items
        for k in range(0, len(items), SLICE_ELEMENTS):
            batch, res = self.batcher.parse_elements(items[k:k + SLICE_ELEMENTS], chunk.first + k)
            total.merge(res)
            if batch is not None:
                batches.append(batch)
        return self.batcher.finish(batches, total, counts=False)

    def _open(self, origin: str | None) -> int:
        """This process's own descriptor of the input (a span names it by /proc/PID/fd/N)."""
        if origin != self._origin:
            self._close_input()
            assert origin is not None
            try:
                self._fd = os.open(origin, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise SpanUnreadable(f"{origin}: {exc.strerror}") from None
            self._origin = origin
        return self._fd

    def _close_input(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._origin = -1, None

    def hand_over(self) -> tuple[SpillIndex | None, list[str]]:
        self._close_input()
        return self.parquet.hand_over()

    def close(self, mine: Container[str] | None = None, others: Sequence[SpillIndex] = ()) -> Finished:
        self._close_input()
        return Finished(self.parquet.close(mine, others), self.counts.result())

    def abort(self) -> None:
        self._close_input()
        self.parquet.abort()


class Finished(list[WrittenPart]):
    """The last result of a run: the input's Parquet parts, and the rows in them per
    (date, action) in `counts` (summed once at the end, not per chunk)."""

    def __init__(self, parts: Iterable[WrittenPart] = (),
                 counts: dict[tuple[str, str], int] | None = None) -> None:
        super().__init__(parts)
        self.counts = counts if counts is not None else {}


class LocalRunner:
    """Runs every chunk in this process: no start-up cost, for small files."""

    def run(self, spec: JobSpec, chunks: Iterable[Chunk]) -> Generator[ChunkResult | Finished, None, None]:
        sink = ChunkSink(spec, 0)
        try:
            for chunk in chunks:
                yield sink.handle(chunk)
            yield sink.close()
        except BaseException:
            sink.abort()
            raise


def _owner_watch(owner: int) -> int:
    """A pidfd of the owning process (readable once it exits), or -1 where there is none."""
    try:
        return os.pidfd_open(owner)
    except ProcessLookupError:
        return -2  # already gone
    except (AttributeError, OSError):
        return -1  # no pidfd support: fall back to signal 0


def _owner_alive(owner: int, pidfd: int) -> bool:
    """Whether the process that owns the pool still runs.

    Not os.getppid(): a forkserver worker's parent is the forkserver, not the owner.
    """
    if pidfd == -2:
        return False
    if pidfd >= 0:
        readable, _, _ = select.select([pidfd], [], [], 0)
        return not readable
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_main(wid: int, inq: Any, outq: Any, owner: int) -> None:
    """A worker process: begin / chunk / end / abort messages, one input at a time.

    `owner` is the pid of the process that started the pool: a worker exits once that
    process is gone (kill -9), and waits for work, however long, while it runs.
    """
    die_with_parent()  # the forkserver: it dies with the owner (procs.py)
    ignore_stop_signals()  # the forkserver hands SIGINT's handler back to its children
    import pyarrow as pa

    # The system allocator hands freed Arrow buffers back; mimalloc keeps them cached, and
    # a worker's footprint would grow by tens of MB for nothing in return here.
    pa.set_memory_pool(pa.system_memory_pool())
    # One thread: the pool's processes already use every core, and Arrow's own threads
    # would each grow a malloc arena of their own.
    pa.set_cpu_count(1)
    pidfd = _owner_watch(owner)
    sink: ChunkSink | None = None
    while True:
        try:
            msg = inq.get(timeout=1.0)
        except queue.Empty:
            msg = None
        # Checked before every message too: chunks queued by an owner that died since are
        # never worked on (they would write staged files a restarted owner would meet).
        if not _owner_alive(owner, pidfd):
            os._exit(0)  # not a normal exit: the queues' feeder threads could block it forever
        if msg is None:
            continue
        kind = msg[0]
        try:
            if kind == "begin":
                sink = ChunkSink(msg[1], wid)
            elif kind == "chunk":
                assert sink is not None
                outq.put((wid, msg[1], "ok", sink.handle(msg[2])))
            elif kind == "hand_over":
                assert sink is not None
                outq.put((wid, -1, "ok", sink.hand_over()))
            elif kind == "end":
                assert sink is not None
                outq.put((wid, -1, "ok", sink.close(msg[1], msg[2])))
                sink = None
            elif kind == "abort":
                if sink is not None:
                    sink.abort()
                sink = None
            elif kind == "stop":
                return
        except MalformedFile as exc:
            outq.put((wid, msg[1] if kind == "chunk" else -1, "malformed", (exc.reason, exc.detail)))
        except SpanUnreadable:  # the parent sends this chunk's bytes instead
            outq.put((wid, msg[1] if kind == "chunk" else -1, "nospan", None))
        except TransientIOError as exc:  # the input changed since the parent hashed it
            outq.put((wid, msg[1] if kind == "chunk" else -1, "transient", str(exc)))
        except (OSError, MemoryError) as exc:  # the host's or the file's trouble, not a bug:
            # the parent raises it again as what it is, for errors.classify to decide.
            errno_ = exc.errno if isinstance(exc, OSError) else None
            filename = getattr(exc, "filename", None)
            outq.put((wid, msg[1] if kind == "chunk" else -1, "oserror",
                      (type(exc).__name__, errno_, str(exc), None if filename is None else str(filename))))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
            outq.put((wid, msg[1] if kind == "chunk" else -1, "error",
                      f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


_NO_SPAN = object()


def _with_data(chunk: Chunk) -> Chunk:
    """A span read here, in the process that cut the file, for a worker that cannot."""
    if isinstance(chunk, Lines) and is_span(chunk):
        return read_span(chunk.fd, chunk)
    return chunk


def _as_span(chunk: Chunk) -> Chunk:
    """A Lines chunk of an uncompressed file travels as its place in the file, not its bytes."""
    if isinstance(chunk, Lines) and chunk.data and chunk.origin is not None and chunk.offset >= 0:
        return Lines(chunk.first, b"", chunk.strip_bom, chunk.offset, chunk.origin,
                     len(chunk.data), zlib.crc32(chunk.data), chunk.fd)
    return chunk


def _reraised(kind: str, errno_: int | None, text: str, filename: str | None) -> BaseException:
    """A worker's OSError or MemoryError, as this process raises it again."""
    if kind == "MemoryError":
        return MemoryError(text)
    if errno_ is None:
        return OSError(f"in a worker: {text}")
    return OSError(errno_, f"in a worker: {os.strerror(errno_)}", filename)


class WorkerError(Exception):
    """A worker raised an unexpected exception (a bug): carries its traceback text."""


class PoolRunner:
    """Worker processes for large files; started on first use, kept for the next file."""

    def __init__(self, workers: int) -> None:
        self.n = workers
        self._procs: list[Any] = []
        self._inqs: list[Any] = []
        self._outq: Any = None
        # Workers reopen the input through /proc/PID/fd; where that is refused, this process
        # reads the spans itself and sends their bytes, from the first refusal on.
        self.spans_ok = True
        self._inflight: dict[int, Chunk | None] = {}
        # Set (by the owner, at shutdown): the input in hand is abandoned at once — the wait
        # for a result stops, and the workers are killed rather than drained.
        self.cancel: threading.Event | None = None

    def _start(self) -> None:
        # forkserver: workers never inherit the daemon's threads or open sockets.
        ctx = context()
        self._outq = ctx.Queue()
        for wid in range(self.n):
            inq = ctx.Queue()
            p = ctx.Process(target=_worker_main, args=(wid, inq, self._outq, os.getpid()),
                            name=f"logwatchd-worker-{wid}", daemon=True)
            p.start()
            self._procs.append(p)
            self._inqs.append(inq)

    def _alive(self) -> bool:
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def prestart(self) -> None:
        """Starts the worker processes now (they take ~0.2 s to be ready), if not running.

        A caller that knows a large file is coming (before hashing it, say) can overlap
        that start with its own work; `run` starts them otherwise.
        """
        if not self._alive():
            self.close()
            self._start()

    def run(self, spec: JobSpec, chunks: Iterable[Chunk]) -> Generator[ChunkResult | Finished, None, None]:
        self.prestart()
        for q in self._inqs:
            q.put(("begin", spec))
        load = [0] * self.n
        done: dict[int, ChunkResult] = {}
        next_seq = 0
        sent = 0
        ok = False
        try:
            for seq, chunk in enumerate(chunks):
                chunk = _as_span(chunk) if self.spans_ok else _with_data(chunk)
                # A chunk that carries its bytes (gzip, arrays) is held here and in the
                # queue until a worker takes it: one in flight per worker, and one more
                # queued so that a worker finishing a chunk does not wait for the next to
                # be inflated and sent (gzip one-year: 5.4 s -> 4.7 s; +4 MB).
                while sum(load) >= (2 * self.n if is_span(chunk) else self.n + 1):
                    self._receive(load, done)
                    while next_seq in done:
                        yield done.pop(next_seq)
                        next_seq += 1
                wid = load.index(min(load))
                # Only a span may come back refused (`_NO_SPAN`) and need sending again.
                self._inflight[seq] = chunk if is_span(chunk) else None
                self._inqs[wid].put(("chunk", seq, chunk))
                load[wid] += 1
                sent = seq + 1
            while next_seq < sent:
                if next_seq not in done:
                    self._receive(load, done)
                    continue
                yield done.pop(next_seq)
                next_seq += 1
            self._inflight.clear()
            yield self._close_all(spec)
            ok = True
        finally:
            self._inflight.clear()
            if not ok:
                self._abort()
                # Workers killed meanwhile (shutdown, a crash) left their files behind.
                store = as_store(spec.clean)
                for wid in range(self.n):
                    spill_path(store, part_stem(spec.stem, wid)).unlink(missing_ok=True)
                if isinstance(store, LocalDir):
                    remove_staged_parts(store.root, spec.stem)

    def _receive(self, load: list[int], done: dict[int, ChunkResult]) -> None:
        wid, seq, res = self._get_tagged()
        if res is _NO_SPAN:  # the worker may not reopen the input: send it the bytes
            self.spans_ok = False
            span = self._inflight[seq]
            assert span is not None  # only a span is refused
            self._inqs[wid].put(("chunk", seq, _with_data(span)))
            return
        del self._inflight[seq]
        load[wid] -= 1
        done[seq] = res

    def _get_tagged(self) -> tuple[int, int, Any]:
        while True:
            try:
                wid, seq, status, payload = self._outq.get(timeout=0.2)
            except queue.Empty:
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled("abandoned for shutdown") from None
                if not self._alive():
                    raise WorkerError("a worker process died") from None
                continue
            if status == "malformed":
                raise MalformedFile(*payload)
            if status == "transient":
                raise TransientIOError(payload)
            if status == "oserror":
                raise _reraised(*payload)
            if status == "error":
                raise WorkerError(payload)
            if status == "nospan":
                return wid, seq, _NO_SPAN
            return wid, seq, payload

    def _get(self) -> Any:
        return self._get_tagged()[2]

    def _close_all(self, spec: JobSpec) -> Finished:
        """Ends the input in every worker: each date is written by one of them.

        The workers hand over what they set aside (their spill files) and the dates they
        have a part open for; each date goes to a worker with its part open, the others
        in consecutive ranges of about equal rows, so that a date spread thin over the
        input gets one part and each worker reads its dates back in ranges.
        """
        for q in self._inqs:
            q.put(("hand_over",))
        handed: dict[int, tuple[SpillIndex | None, list[str]]] = {}
        while len(handed) < self.n:
            wid, _seq, payload = self._get_tagged()
            handed[wid] = payload
        spills = {wid: spill for wid, (spill, _open) in handed.items() if spill is not None}
        owner: dict[str, int] = {}
        for wid in sorted(handed):
            for day in handed[wid][1]:
                owner.setdefault(day, wid)
        rows: dict[str, int] = {}
        for spill in spills.values():
            for day, n in spill.rows().items():
                rows[day] = rows.get(day, 0) + n
        load = [0] * self.n
        for day, wid in owner.items():
            load[wid] += rows.get(day, 0)
        # The other dates in date order, cut into one consecutive range per worker of about
        # equal rows: a worker reads its small dates back a range at a time (`_write_block`).
        free = sorted(day for day in rows if day not in owner)
        share = (sum(load) + sum(rows[day] for day in free)) / self.n
        wid = 0
        for day in free:
            while wid < self.n - 1 and load[wid] >= share:
                wid += 1
            owner[day] = wid
            load[wid] += rows[day]
        mine: list[set[str]] = [set() for _ in range(self.n)]
        for day, wid in owner.items():
            mine[wid].add(day)
        for wid, q in enumerate(self._inqs):
            q.put(("end", mine[wid], [s for w, s in spills.items() if w != wid]))
        done = Finished()
        try:
            for _ in range(self.n):
                part: Finished = self._get()
                done.extend(part)
                for key, n in part.counts.items():
                    done.counts[key] = done.counts.get(key, 0) + n
        except BaseException:
            store = as_store(spec.clean)
            for p in done:  # the parts of the workers that did finish
                store.remove(clean_path(p.date, p.name))
            raise
        finally:
            for spill in spills.values():
                Path(spill.path).unlink(missing_ok=True)
        return done

    def _abort(self) -> None:
        """Drops the input in hand: workers delete their staged parts; stale results drained."""
        if not self._alive():
            self.close()
            return
        if self.cancel is not None and self.cancel.is_set():
            # Shutdown: no waiting for chunks in flight. Their staged parts are hidden
            # `.tmp` files, which the next start-up deletes (nothing committed names them).
            self.kill()
            return
        for q in self._inqs:
            q.put(("abort",))
        # Results of chunks still in flight would be mistaken for the next input's: the
        # simplest sound answer is a fresh pool for the next large file.
        self.close()

    def kill(self) -> None:
        """Kills the workers now (SIGKILL); the next large file starts a fresh pool."""
        for p in self._procs:
            p.kill()
        for p in self._procs:
            p.join(timeout=2)
        self._procs, self._inqs, self._outq = [], [], None

    def close(self) -> None:
        for q in self._inqs:
            try:
                q.put(("stop",))
            except (OSError, ValueError):
                pass
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=1)
        self._procs, self._inqs, self._outq = [], [], None
