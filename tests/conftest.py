"""Shared fixtures: a temporary logwatchd root with its own config, and helpers that run the
real CLI in a subprocess and read the outputs back with pyarrow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Env:
    """A logwatchd installation under a temporary directory."""

    base: Path

    @property
    def config(self) -> Path:
        return self.base / "config.toml"

    @property
    def root(self) -> Path:
        return self.base / "var"

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def write_config(self, extra: str = "", **sections: dict[str, Any]) -> None:
        """Writes config.toml: [paths] root = "var" plus the given tables."""
        text = ['[paths]\nroot = "var"\n']
        for name, table in sections.items():
            text.append(f"[{name}]")
            for k, v in table.items():
                text.append(f"{k} = {json.dumps(v)}")
            text.append("")
        self.config.write_text("\n".join(text) + extra)

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Runs `logwatchd ARGS -c config` in a subprocess."""
        cmd = [sys.executable, "-m", "logwatchd", *args]
        if "-c" not in args and args and args[0] not in ("--help", "--version"):
            cmd[4:4] = ["-c", str(self.config)]
        proc = subprocess.run(cmd, capture_output=True, check=False, text=True, timeout=timeout, cwd=self.base, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def process(self, *files: Path | str, check: bool = True) -> list[dict[str, Any]]:
        """Runs `logwatchd process FILES` and returns the summary lines."""
        proc = self.cli("process", *map(str, files), check=check)
        return [json.loads(line) for line in proc.stdout.splitlines()]

    def clean_rows(self) -> list[dict[str, Any]]:
        clean = self.path("clean")
        if not clean.exists() or not any(clean.rglob("*.parquet")):
            return []
        table = ds.dataset(clean, format="parquet", partitioning="hive").to_table()
        return sorted(table.to_pylist(), key=lambda r: (r["source_file"], r["source_line"]))

    def error_rows(self) -> list[dict[str, Any]]:
        rows = []
        for f in sorted(self.path("errors").rglob("*.jsonl")):
            if not f.name.startswith("."):
                # Split on \n only: U+2028 and friends may sit raw inside a JSON string.
                text = f.read_text(encoding="utf-8")
                rows += [json.loads(line) for line in text.split("\n") if line]
        return sorted(rows, key=lambda r: (r["source_file"], r["source_line"]))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    e.write_config()
    return e


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def jsonl(*records: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
