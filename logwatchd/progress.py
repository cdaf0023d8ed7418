"""The progress bar `process` shows on a terminal for a large file: bytes, lines/s, ETA (tqdm, on stderr)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tqdm import tqdm

# Smaller files take well under a second: a bar would only flicker.
MIN_BYTES = 4 << 20


class FileProgress:
    """One file's bar; `update(bytes_read, records)` is the pipeline's `watch` hook."""

    def __init__(self, name: str, size: int, stream: IO[str]) -> None:
        self._started = time.monotonic()
        self._bar = tqdm(total=size, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                         file=stream, leave=False, mininterval=0.2, dynamic_ncols=True)

    @classmethod
    def for_file(cls, path: Path, show: bool, stream: IO[str] | None = None) -> FileProgress | _NoBar:
        """A bar when `show` and the file is large enough to take a while, else nothing."""
        try:
            size = os.stat(path).st_size
        except OSError:
            return _NoBar()
        if not show or size < MIN_BYTES:
            return _NoBar()
        name = os.fsencode(path.name).decode("utf-8", "replace")
        printable = "".join(c if c.isprintable() else "?" for c in name)
        return cls(printable, size, stream or sys.stderr)

    def update(self, bytes_read: int, records: int) -> None:
        elapsed = max(1e-6, time.monotonic() - self._started)
        self._bar.set_postfix_str(f"{records / elapsed:,.0f} lines/s", refresh=False)
        self._bar.update(max(0, min(bytes_read, self._bar.total) - self._bar.n))
        if self._bar.n >= self._bar.total:
            self._bar.refresh()  # the last state is drawn, however fast the file went

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bar.close()


class _NoBar:
    """No bar: `with` works the same and the pipeline gets no hook."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
