"""Bytes → numbered lines or array elements, streaming: gzip, BOM, CRLF, arrays, size limits.

Memory is bounded by the chunk size, never by the file: JSON Lines are cut at the last
newline of each block; arrays are scanned token by token for their top-level elements.
The raw bytes are hashed as they are read, so the SHA-256 costs no second pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from isal import igzip, isal_zlib

from .errors import FileVanished, MalformedFile, RefusedFile, TransientIOError

try:
    from . import _scan
except ImportError:  # built without a C compiler: the regex below does the same, slower
    _scan = None  # type: ignore[assignment]


def count_newlines(data: bytes, start: int = 0, end: int | None = None) -> int:
    """How many b"\n" are in data[start:end]: in C when it is built (~2.7x bytes.count,
    which every line of a large input goes through twice: here and in its worker)."""
    end = len(data) if end is None else end
    if _scan is not None:
        return _scan.count_newlines(data, start, end)
    return data.count(b"\n", start, end)

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
# RFC 8259 whitespace. bytes.strip() would also drop \x0b and \x0c, which are not JSON:
# a line of only those is an error line, not a blank one.
JSON_WS = b" \t\r\n"
READ_BYTES = 1 << 20
LONG_PREFIX = 4096  # bytes of an over-long line kept in memory
PROGRESS_BYTES = 4 << 20  # the progress callback fires at least this often while reading


@dataclass
class Lines:
    """Complete JSON Lines text; its first line has number `first`.

    For an uncompressed file, `origin` (a path that reopens the input: /proc/PID/fd/N, the
    descriptor `fd` of process PID) and `offset` say where `data` lies in it, so a worker
    process can read the bytes itself instead of receiving them through a pipe.
    """

    first: int
    data: bytes
    strip_bom: bool = False
    offset: int = -1
    origin: str | None = None
    length: int = -1   # with empty `data`: the bytes are only in the file (a span)
    crc: int = 0       # CRC-32 of those bytes, to notice a file changed since it was hashed
    fd: int = -1       # the descriptor behind `origin`, valid in the process that cut the file


@dataclass
class Elements:
    """Raw JSON text of consecutive array elements, the first numbered `first`."""

    first: int
    items: list[bytes]


@dataclass
class LongLine:
    """A line (or element) longer than max_line_bytes: only its start is kept. `blank`:
    it holds only whitespace, so it is a blank line (skipped), however long; it is still
    yielded, as its bytes count towards the input read."""

    number: int
    prefix: bytes
    length: int
    blank: bool = False


_INK = re.compile(b"[^" + re.escape(JSON_WS) + b"]")  # a byte that is not JSON whitespace


def _ink(data: bytes | memoryview) -> bool:
    return _INK.search(data) is not None


Chunk = Lines | Elements | LongLine


def open_input(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Opens a regular, singly-linked file without following links or blocking on FIFOs."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileVanished(str(path)) from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the name is a symlink
            raise RefusedFile("symlink", "the inbox entry is a symbolic link") from None
        if exc.errno in (6, 19):  # ENXIO / ENODEV: a socket or device
            raise RefusedFile("special_file", f"cannot be opened as a file: {exc.strerror}") from None
        raise
    st = os.fstat(fd)
    try:
        check_regular(st)
    except RefusedFile:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0), st


def check_regular(st: os.stat_result) -> None:
    """Raises RefusedFile unless `st` describes a regular file with a single link."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise RefusedFile("symlink", "the inbox entry is a symbolic link")
    if not stat.S_ISREG(mode):
        kind = ("fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
                else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "directory"
                if stat.S_ISDIR(mode) else "special file")
        raise RefusedFile("special_file", f"the inbox entry is a {kind}, not a regular file")
    if st.st_nlink != 1:
        raise RefusedFile("hard_link", f"the file has {st.st_nlink} links; only single-link files are taken")


class HashingReader:
    """A read-only stream that hashes every byte it hands out (with a small push-back)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.bytes_read = 0
        self._pushback = b""

    def read(self, n: int = -1) -> bytes:
        if self._pushback:
            data, self._pushback = self._pushback, b""
            if n is not None and 0 <= n < len(data):
                data, self._pushback = data[:n], data[n:]
            return data
        data = self.raw.read(READ_BYTES if n is None or n < 0 else n) or b""
        self.sha.update(data)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """`read` into a buffer (how the gzip reader pulls the compressed bytes)."""
        data = self.read(len(buffer))
        memoryview(buffer)[:len(data)] = data
        return len(data)

    def peek(self, n: int) -> bytes:
        while len(self._pushback) < n:
            data = self.raw.read(READ_BYTES) or b""
            if not data:
                break
            self.sha.update(data)
            self.bytes_read += len(data)
            self._pushback += data
        return self._pushback[:n]

    def drain(self) -> None:
        """Reads (and hashes) whatever is left, so the digest covers the whole file."""
        self._pushback = b""
        while self.read(READ_BYTES):
            pass

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


# What a corrupt or truncated gzip stream raises (isal's stub types `error` as an instance).
_GZIP_ERRORS: tuple[type[Exception], ...] = (igzip.BadGzipFile, isal_zlib.error,  # type: ignore[assignment]
                                             zlib.error, EOFError)


class _Decoded:
    """The decompressed content stream; gzip and stream errors become MalformedFile.

    A compressed input may expand to `limit` bytes: one byte more and it is malformed
    (`decompressed_too_large`), found without decompressing further. `progress` is called
    every PROGRESS_BYTES read, so that a long scan without a chunk still shows life.
    """

    def __init__(self, src: HashingReader, gz: bool, limit: int | None = None,
                 progress: Callable[[], None] | None = None) -> None:
        self.src = src
        # ISA-L's inflate (python-isal): the same gzip format, ~3x zlib's speed.
        self.gz = igzip.GzipFile(fileobj=src, mode="rb") if gz else None
        self.limit = limit
        self.progress = progress
        self.total = 0         # content bytes handed out
        self._next_beat = PROGRESS_BYTES

    def read(self, n: int) -> bytes:
        if self.gz is None:
            data = self.src.read(n)
        else:
            if self.limit is not None:
                n = max(1, min(n, self.limit + 1 - self.total))  # never inflate past the bound
            try:
                data = self.gz.read(n)
            except _GZIP_ERRORS as exc:
                raise MalformedFile("corrupt_gzip", f"cannot decompress: {exc or 'truncated stream'}") from None
        self.total += len(data)
        if self.gz is not None and self.limit is not None and self.total > self.limit:
            raise MalformedFile("decompressed_too_large",
                                f"expands beyond ingest.max_decompressed_bytes ({self.limit} bytes)")
        if self.total >= self._next_beat and self.progress is not None:
            self._next_beat = self.total + PROGRESS_BYTES
            self.progress()
        return data


def iter_chunks(src: HashingReader, name: str, chunk_bytes: int, max_line_bytes: int,
                spans: bool = True, max_decompressed: int | None = None,
                progress: Callable[[], None] | None = None) -> Iterator[Chunk]:
    """Splits a (possibly gzipped) JSON Lines or JSON array file into chunks.

    An uncompressed JSON Lines file is cut into spans (Lines without data): this process
    only hashes its bytes and finds the cuts; whoever processes a span reads it again from
    the page cache (`read_span`), so no chunk is held here or sent through a pipe.
    A gzipped input expanding beyond `max_decompressed` bytes raises MalformedFile
    (`decompressed_too_large`); `progress` is called every few MB read.
    """
    gz = name.endswith(".gz") or src.peek(2) == GZIP_MAGIC
    stream = _Decoded(src, gz, max_decompressed, progress)
    # The first non-blank byte tells an array from JSON Lines. Blank lines before it are
    # looked at once each, and at most about a chunk of them is held: past that, they are
    # dropped (counted: their lines keep their numbers), however many there are.
    blocks: list[bytes] = []
    held = 0
    skipped = newlines = 0  # blank bytes dropped from the start, and the newlines in them
    first = b""
    while not first:
        block = stream.read(READ_BYTES)
        if not block:
            break
        if held < len(BOM) and not skipped:  # a BOM may straddle short reads: the start is looked at whole
            start = b"".join(blocks) + block
            blocks, held = [start], len(start)
            if held < len(BOM) and BOM.startswith(start):
                continue
            first = (start[3:] if start.startswith(BOM) else start).lstrip(JSON_WS)[:1]
        else:
            blocks.append(block)
            held += len(block)
            first = block.lstrip(JSON_WS)[:1]
        if not first and held > chunk_bytes:  # all blank so far: not held
            skipped += held
            newlines += sum(b.count(b"\n") for b in blocks)
            blocks, held = [], 0
    head = b"".join(blocks)
    del blocks
    body = head[3:] if head.startswith(BOM) and not skipped else head
    # Chunks that carry their bytes (not spans) are held by the sender and the receiver,
    # and copied through a pipe: half the size keeps both processes' memory as for spans.
    carried = max(1, chunk_bytes // 2)
    if first == b"[":
        yield from _array_chunks(stream, body, carried, max_line_bytes)
    else:
        origin = None if gz else reopen_path(src.raw)
        fd = src.raw.fileno() if origin is not None else -1
        at = (skipped, 1 + newlines)  # where `head` starts: offset, line number
        if origin is not None and spans:
            yield from _line_spans(stream, head, chunk_bytes, max_line_bytes, origin, fd, at)
        else:
            yield from _line_chunks(stream, head, carried, max_line_bytes, origin, fd, at)


def reopen_path(raw: object) -> str | None:
    """A path that opens the same file as `raw`'s descriptor (even once renamed), or None."""
    try:
        fd = raw.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    path = f"/proc/{os.getpid()}/fd/{fd}"
    return path if os.access(path, os.R_OK) else None


def _line_chunks(stream: _Decoded, head: bytes, chunk_bytes: int, max_line: int,
                 origin: str | None = None, fd: int = -1,
                 at: tuple[int, int] = (0, 1)) -> Iterator[Chunk]:
    """Chunks of whole lines; `head` starts at offset at[0] of the stream, on line at[1]."""
    base, line_no = at  # offset of pending[0] in the stream (= in the file when uncompressed)
    pending = head
    first = base == 0  # at the start of the input: a BOM may lead
    eof = False
    while pending or not eof:
        while not eof and len(pending) < chunk_bytes:
            block = stream.read(max(READ_BYTES, chunk_bytes - len(pending)))
            eof = not block
            pending += block
        if not pending:
            break
        cut = len(pending) if eof else pending.rfind(b"\n") + 1
        if cut == 0:  # no newline yet: one line is at least a chunk long
            if len(pending) <= max_line + 1:  # + a CR, which is not part of the line
                block = stream.read(READ_BYTES)  # within the limit: read on to its end
                eof = not block
                pending += block
                continue
            prefix = pending[:LONG_PREFIX]
            length, pending, ink = _skip_line(stream, pending)
            yield LongLine(line_no, _line_start(prefix, first, length), length, blank=not ink)
            base += length + 1
            line_no += 1
            first = False
            continue
        data = pending[:cut]
        pending = pending[cut:]
        yield Lines(line_no, data, strip_bom=first, offset=base if origin else -1, origin=origin,
                    fd=fd)
        base += cut
        line_no += count_newlines(data)
        first = False


def _line_spans(stream: _Decoded, head: bytes, chunk_bytes: int, max_line: int,
                origin: str, fd: int, at: tuple[int, int] = (0, 1)) -> Iterator[Chunk]:
    """Newline-aligned spans of about chunk_bytes, found block by block (memory: one block);
    `head` starts at offset at[0] of the file, on line at[1]."""
    line_no = at[1]    # number of the line that starts at `start`
    start = at[0]      # offset where the current region begins
    end = at[0]        # offset just past the bytes seen so far
    nl_end = -1        # offset just past the region's last newline (<= start: none yet)
    nls = 0            # newlines in [start, nl_end)
    crc_nl = 0         # CRC-32 of [start, nl_end)
    crc_all = 0        # CRC-32 of [start, end)
    crc_tail = 0       # CRC-32 of [nl_end, end)
    prefix = b""       # the first LONG_PREFIX bytes of the region (an over-long line's start)
    tail_prefix = b""  # ... of [nl_end, end), the next region's start
    skipping = False   # inside a line longer than max_line, looking for its end
    tail_ink = False   # [nl_end, end), the line being read, holds more than whitespace
    skip_ink = False   # ... the line being skipped
    first = at[0] == 0  # at the start of the input: a BOM may lead
    # Blocks no larger than a chunk, so that a cut (at most one per block) comes every
    # chunk_bytes to 2 × chunk_bytes even when chunks are small.
    size = max(1, min(READ_BYTES, chunk_bytes))
    blocks = _blocks(head, stream, size)
    for block in blocks:
        view = memoryview(block)
        i = 0
        while True:
            if skipping:
                j = block.find(b"\n", i)
                if len(prefix) < LONG_PREFIX:  # the line's start is all that is kept of it
                    prefix += block[i:min(j if j >= 0 else len(block), i + LONG_PREFIX - len(prefix))]
                skip_ink = skip_ink or _ink(view[i:j if j >= 0 else len(block)])
                if j < 0:
                    break
                yield LongLine(line_no, _line_start(prefix, first, end + j - start), end + j - start,
                               blank=not skip_ink)
                line_no += 1
                first = skipping = tail_ink = False
                start = end + j + 1
                nl_end, nls, crc_all, prefix = -1, 0, 0, b""
                i = j + 1
            if len(prefix) < LONG_PREFIX:
                prefix += block[i:i + LONG_PREFIX - len(prefix)]
            last = block.rfind(b"\n", i)
            if last >= 0:
                nls += count_newlines(block, i, last + 1)
                crc_nl = zlib.crc32(view[i:last + 1], crc_all)
                crc_tail = zlib.crc32(view[last + 1:])
                crc_all = zlib.crc32(view[last + 1:], crc_nl)
                tail_prefix = block[last + 1:last + 1 + LONG_PREFIX]
                tail_ink = _ink(view[last + 1:])
                nl_end = end + last + 1
            else:
                crc_all = zlib.crc32(view[i:], crc_all)
                crc_tail = zlib.crc32(view[i:], crc_tail)
                tail_ink = tail_ink or _ink(view[i:])
                if len(tail_prefix) < LONG_PREFIX:
                    tail_prefix += block[i:i + LONG_PREFIX - len(tail_prefix)]
            block_end = end + len(block)
            if nl_end > start and block_end - start >= chunk_bytes:
                yield Lines(line_no, b"", strip_bom=first, offset=start, origin=origin,
                            length=nl_end - start, crc=crc_nl, fd=fd)
                line_no += nls
                first = False
                start, nls, crc_all, prefix = nl_end, 0, crc_tail, tail_prefix
            if nl_end <= start and block_end - start > max_line + 1:  # + a CR, not part of it
                skipping = True  # the region is one line, already too long
                skip_ink = tail_ink
            break
        end += len(block)
    if skipping:
        yield LongLine(line_no, _line_start(prefix, first, end - start), end - start,
                       blank=not skip_ink)
    elif end > start:
        yield Lines(line_no, b"", strip_bom=first, offset=start, origin=origin,
                    length=end - start, crc=crc_all, fd=fd)


def _line_start(prefix: bytes, first: bool, length: int) -> bytes:
    """The kept start of an over-long line, as the record path would cut it from a chunk:
    without the BOM (not part of the first line), nor the CR of a CRLF it reaches."""
    if len(prefix) >= length and prefix.endswith(b"\r"):
        prefix = prefix[:-1]
    return prefix[3:] if first and prefix.startswith(BOM) else prefix


def _blocks(head: bytes, stream: _Decoded, size: int) -> Iterator[bytes]:
    """The already-read head, then the rest of the stream, in blocks of at most `size` bytes."""
    for k in range(0, len(head), size):
        yield head[k:k + size]
    while block := stream.read(size):
        yield block


def is_span(chunk: Chunk) -> bool:
    """A Lines chunk whose bytes are only in the file."""
    return isinstance(chunk, Lines) and chunk.length >= 0 and not chunk.data


def own_span_fd(chunk: Lines) -> int:
    """The span's descriptor when this process cut the file, else -1 (it must reopen it)."""
    origin = chunk.origin or ""
    return chunk.fd if origin.startswith(f"/proc/{os.getpid()}/fd/") else -1


def read_span(fd: int, chunk: Lines) -> Lines:
    """The bytes of a span, read through `fd`; TransientIOError if they are not the ones hashed."""
    data = os.pread(fd, chunk.length, chunk.offset)
    if len(data) != chunk.length or zlib.crc32(data) != chunk.crc:
        raise TransientIOError("the input changed while it was read")
    return Lines(chunk.first, data, strip_bom=chunk.strip_bom)


def _skip_line(stream: _Decoded, pending: bytes) -> tuple[int, bytes, bool]:
    """Consumes an over-long line to its newline: (its length, the bytes after the newline,
    whether it holds anything but whitespace)."""
    length = len(pending)
    ink = _ink(pending)
    while True:
        block = stream.read(READ_BYTES)
        if not block:
            return length, b"", ink
        nl = block.find(b"\n")
        if nl >= 0:
            return length + nl, block[nl + 1:], ink or _ink(memoryview(block)[:nl])
        ink = ink or _ink(block)
        length += len(block)


# A whole string token, or one structural character (an unterminated string: a lone quote).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},"]', re.DOTALL)
# The rest of a string whose opening quote was seen: stops at its closing quote, at the end
# of the bytes, or before a final backslash whose escaped byte is still to come.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# A whole element that is an object without nested objects or arrays, with the comma or
# bracket after it: the common case, taken in one match (possessive, so never backtracking)
# instead of a match per string and bracket; anything else goes token by token.
_FLAT_OBJECT = re.compile(rb'[ \t\n\r]*+\{(?:[^{}\[\]"\\]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+\}[ \t\n\r]*+[,\]]',
                          re.DOTALL)
_ELEMENTS_PER_CHUNK = 10_000


def _array_chunks(stream: _Decoded, head: bytes, chunk_bytes: int, max_line: int) -> Iterator[Chunk]:
    """Top-level elements of a JSON array, streamed. Raises MalformedFile if it does not parse.

    Only the structure is checked here (brackets, strings, top-level commas); each element
    is parsed later by the record path, which raises for an element that is not JSON.
    Every byte is scanned once: a string cut by the end of a read is resumed where the scan
    stopped (`in_string`), not rescanned from its quote. Memory: the element in hand, up to
    max_line bytes; past that only its first LONG_PREFIX bytes are kept while the scan
    skips to its end (a LongLine).
    """
    buf = bytearray(head[head.index(b"[") + 1:])
    pos = 0            # scan position in buf
    elem_start = 0     # where the current element begins in buf
    depth = 0          # nesting inside the current element
    in_string = False  # the scan stopped inside a string (after its opening quote)
    number = 1         # 1-based index of the current element
    skipped = -1       # bytes of the current element already dropped (over-long), or -1
    prefix = b""
    run: list[bytes] = []
    run_first = 1
    run_bytes = 0
    eof = closed = False
    while not closed:
        if _scan is not None and pos == elem_start and skipped < 0 and not in_string:
            # As many flat objects as the run takes, in one call (the same cut as below).
            elems, at, size, closed = _scan.flat_objects(
                buf, pos, _ELEMENTS_PER_CHUNK - len(run), chunk_bytes - run_bytes, max_line)
            if elems:
                run += elems
                run_bytes += size
                number += len(elems)
                pos = elem_start = at
                if closed or len(run) >= _ELEMENTS_PER_CHUNK or run_bytes >= chunk_bytes:
                    yield Elements(run_first, run)
                    run, run_bytes, run_first = [], 0, number
                continue
        if in_string:
            pos = _STRING_REST.match(buf, pos).end()  # type: ignore[union-attr]  # always matches
            if pos < len(buf) and buf[pos] == 0x22:  # the closing quote
                pos += 1
                in_string = False
                continue
        else:
            # (With the C module, flat objects were taken above: what is left is not one.)
            flat = (_FLAT_OBJECT.match(buf, pos) if _scan is None and pos == elem_start and skipped < 0
                    else None)
            if flat is not None:  # a whole element and what ends it
                pos = flat.end()
                end = pos - 1
            else:
                m = _TOKEN.search(buf, pos)
                if m is not None and m.end() - m.start() == 1 and buf[m.start()] == 0x22:
                    in_string, pos = True, m.end()  # a string cut by the end of the bytes
                    continue
                end = -1 if m is None else m.start()
                if m is not None:
                    pos = m.end()
            if end >= 0:
                c = buf[end]
                if c == 0x22 or (c == 0x2C and depth > 0):  # a string; a comma inside
                    continue
                if c in b"[{":
                    depth += 1
                    continue
                if c in b"]}" and depth > 0:
                    depth -= 1
                    continue
                if c == 0x7D:  # "}"
                    raise MalformedFile("invalid_array", "mismatched bracket at the end of the array")
                closed = c == 0x5D  # "]"
                elem = bytes(buf[elem_start:end].strip(JSON_WS))
                elem_start = pos
                if skipped >= 0:
                    if run:
                        yield Elements(run_first, run)
                    yield LongLine(number, prefix, skipped + len(elem))
                    run, run_bytes, run_first, skipped = [], 0, number + 1, -1
                elif elem:
                    if len(elem) > max_line:
                        if run:
                            yield Elements(run_first, run)
                        yield LongLine(number, elem[:LONG_PREFIX], len(elem))
                        run, run_bytes, run_first = [], 0, number + 1
                    else:
                        run.append(elem)
                        run_bytes += len(elem)
                elif not (closed and number == 1):  # only "[]" may have no element
                    raise MalformedFile("invalid_array", f"missing element at index {number}")
                number += 1
                if run and (closed or len(run) >= _ELEMENTS_PER_CHUNK or run_bytes >= chunk_bytes):
                    yield Elements(run_first, run)
                    run, run_bytes, run_first = [], 0, number
                continue
            pos = len(buf)  # no token in the bytes left: all scanned
        # Everything up to `pos` is scanned: read on.
        if eof:
            raise MalformedFile("invalid_array", "the JSON array is not terminated")
        if skipped < 0 and pos - elem_start > max_line:  # over-long: keep only its start
            skipped = 0
            prefix = bytes(buf[elem_start:elem_start + max_line].lstrip(JSON_WS)[:LONG_PREFIX])
        if skipped >= 0:
            skipped += pos - elem_start
            elem_start = pos
        del buf[:elem_start]
        pos, elem_start = pos - elem_start, 0
        block = stream.read(READ_BYTES)
        eof = not block
        buf += block
    rest = bytes(buf[pos:])
    while rest:
        if rest.strip(JSON_WS):
            raise MalformedFile("invalid_array", "content after the end of the JSON array")
        rest = stream.read(READ_BYTES)
