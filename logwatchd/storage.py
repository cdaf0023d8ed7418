"""Where output files are written: the interface the writers see, and the local directory.

    Store.create(relative, arrow) -> OutputFile   one output, at `relative` under the root
    OutputFile.stream                              takes the bytes (`write`, `tell`)
    OutputFile.close() -> int                      durable; its size in bytes
    OutputFile.abort()                             dropped, open or closed: nothing of it stays
    Store.final(relative)                          where it is once published
    Store.remove(relative)                         drops a closed output never published
    Store.sync()                                   makes the directories created durable
    Store.scratch(name) -> Path                    a local path for a writer's temporary file

`LocalDir` writes under the staging name (`.NAME.tmp`) and fsyncs on close; the ledger's
journal renames it to its final name when the outcome commits. `aws.s3.S3Prefix` writes
the final key directly: S3 has no rename, and an object appears whole or not at all when
its upload completes.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any, Protocol

from .durable import ensure_dir, fsync_close, fsync_dir
from .layout import staged_name


class OutputFile(Protocol):
    stream: Any

    def close(self) -> int: ...

    def abort(self) -> None: ...


class Store(Protocol):
    # Most writers open at once in this store, None for the process's own bound
    # (`writers.writer_cap`): an S3 upload buffers a part in memory, a local file does not.
    max_writers: int | None

    def create(self, relative: str, arrow: bool = False) -> OutputFile: ...

    def final(self, relative: str) -> PurePath: ...

    def remove(self, relative: str) -> None: ...

    def sync(self) -> None: ...

    def scratch(self, name: str) -> Path: ...


class LocalFile:
    """A staged local file; `final` is where the ledger's journal publishes it."""

    def __init__(self, final: Path, arrow: bool) -> None:
        self.final = final
        self.staged = staged_name(final)
        if arrow:  # pyarrow's own file: ~0.5 ms less per Parquet file than a Python one
            import pyarrow as pa

            self.stream: Any = pa.OSFile(str(self.staged), "wb")
        else:
            self.stream = open(self.staged, "wb")  # noqa: SIM115 - written to until close()/abort()

    def close(self) -> int:
        """Flushes, fsyncs and closes; returns the size in bytes."""
        return fsync_close(self.stream)

    def abort(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass  # closing flushes, which fails again on a full disk
        self.staged.unlink(missing_ok=True)


class LocalDir:
    """A local output directory: partitions are subdirectories created on demand."""

    max_writers: int | None = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[Path] = set()   # directories known to exist
        self._new_dirs = False          # made some: the root needs an fsync

    def final(self, relative: str) -> Path:
        return self.root / relative

    def remove(self, relative: str) -> None:
        staged_name(self.root / relative).unlink(missing_ok=True)

    def create(self, relative: str, arrow: bool = False) -> LocalFile:
        final = self.root / relative
        self._mkdir(final.parent)
        return LocalFile(final, arrow)

    def _mkdir(self, directory: Path) -> None:
        """A partition directory; the root is fsynced once, in `sync`."""
        if directory in self._made:
            return
        if directory.parent != self.root:  # not a partition: every new level fsynced now
            ensure_dir(directory)
        else:
            if not self._made:
                ensure_dir(self.root)
            try:
                os.mkdir(directory)
                self._new_dirs = True
            except FileExistsError:
                pass
        self._made.add(directory)

    def scratch(self, name: str) -> Path:
        """`name` (a hidden staging name: start-up removes one a crash left) in the root."""
        if self.root not in self._made:
            ensure_dir(self.root)
            self._made.add(self.root)
        return self.root / name

    def sync(self) -> None:
        if self._new_dirs:
            fsync_dir(self.root)
            self._new_dirs = False


def as_store(clean: Path | Store) -> Store:
    """A store as given, or the local directory at a path."""
    return LocalDir(clean) if isinstance(clean, Path) else clean
