"""The configuration: frozen dataclasses mirroring the TOML tables; the only code that sees raw TOML.

Every key has a default. Unknown keys and bad values raise `ConfigError` naming the key
(`section.key`), which the CLI turns into exit code 2.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import ipaddress
import json
import math
import os
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/logwatchd/config.toml")
DEFAULT_PATTERNS = ("*.json", "*.jsonl", "*.ndjson", "*.json.gz", "*.jsonl.gz", "*.ndjson.gz")


# Zone names that exist as files under the zone directory but are not usable zones: a
# placeholder ("Factory", offset 0 and abbreviation "-00"), the host's own zone
# ("localtime": another machine, another meaning), and POSIX TZ rules ("posixrules").
_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules"})
# Instants a zone must convert (1970, 2000, 2038 + 1 s, 2100): its rules are readable.
_PROBE_INSTANTS = (0, 946684800, 2147483648, 4102444800)


def _timezone(v: str) -> str | None:
    if v.startswith(("posix/", "right/")):
        # right/ zones count leap seconds (pyarrow and SQL engines do not); posix/ are
        # aliases of the canonical names, unknown to pyarrow's zone database.
        return f"{v!r} is not a canonical IANA zone name; use {v.split('/', 1)[1]!r}"
    if v in _NOT_ZONES or v not in _available_zones():
        return f"unknown IANA time zone {v!r} (e.g. \"UTC\", \"Europe/Berlin\")"
    try:
        zone = zoneinfo.ZoneInfo(v)
        for t in _PROBE_INSTANTS:
            local = datetime.fromtimestamp(t, zone)
            if local.utcoffset() is None or local.timestamp() != t:
                return f"time zone {v!r} does not convert instants"
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, OverflowError) as exc:
        return f"unusable time zone {v!r} ({exc})"
    return None


@functools.cache
def _available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _level(v: str) -> str | None:
    levels = ("debug", "info", "warning", "error", "critical")
    return None if v in levels else f"must be one of {', '.join(levels)}"


def _format(v: str) -> str | None:
    return None if v in ("json", "console") else 'must be "json" or "console"'


def _listen(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return 'must be "HOST:PORT", e.g. "127.0.0.1:8000"'
    # The endpoint has no authentication: it answers on loopback only (SPEC §1).
    name = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    if not loopback:
        return f"must be a loopback address (127.0.0.1, [::1] or localhost), not {name!r}"
    return None


def _patterns(v: tuple[str, ...]) -> str | None:
    if not v or not all(v):
        return "must be a non-empty list of non-empty glob patterns"
    bad = [p for p in v if "/" in p or "\0" in p]
    if bad:
        return f"patterns match file names in the inbox, never paths: {bad[0]!r} has a '/'"
    return None


def _key(check: Callable[[Any], str | None] | None = None, doc: str = "",
         lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """A key's metadata: its check, its doc, and for a number its inclusive range [lo, hi]."""
    return {"check": check, "doc": doc, "range": None if lo is None else (lo, hi)}


def _num(lo: float, hi: float, doc: str, check: Callable[[Any], str | None] | None = None) -> dict[str, Any]:
    return _key(check, doc, lo, hi)


# Ranges of the numeric keys: every number has both bounds, so that a typo (an interval of
# 1e12 s, a negative size) is a config error (exit 2), never a crash later in the scheduler
# or an allocation. Durations are capped at a week (MAX_RETRY at 30 days), sizes at what a
# single host handles.
KIB, MIB, GIB, TIB, PIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40, 1 << 50
DAY, WEEK = 86400.0, 604800.0


@dataclass(frozen=True)
class PathsConfig:
    root: Path = field(default=Path("var"), metadata=_key(doc="every path below is relative to root unless absolute"))
    inbox: Path = field(default=Path("inbox"), metadata=_key(doc="producers drop files here"))
    clean: Path = field(default=Path("clean"), metadata=_key(doc="the Parquet dataset"))
    errors: Path = field(default=Path("errors"), metadata=_key(doc="JSON Lines error files"))
    quarantine: Path = field(default=Path("quarantine"), metadata=_key(doc="files that are not log data"))
    dead_letter: Path = field(default=Path("dead-letter"), metadata=_key(doc="files that failed max_attempts times"))
    archive: Path | None = field(default=Path("archive"), metadata=_key(doc='processed inputs are moved here; "" deletes them instead'))
    state: Path = field(default=Path("state"), metadata=_key(doc="the ledger"))

    @property
    def ledger(self) -> Path:
        return self.state / "ledger.sqlite3"

    @property
    def lock(self) -> Path:
        return self.state / "logwatchd.lock"


@dataclass(frozen=True)
class IngestConfig:
    patterns: tuple[str, ...] = field(default=DEFAULT_PATTERNS, metadata=_key(_patterns, "file names taken from the inbox"))
    settle_seconds: float = field(default=1.0, metadata=_num(0.0, 3600.0, "a file seen without a close/rename event must be unchanged this long"))
    rescan_seconds: float = field(default=30.0, metadata=_num(0.1, DAY, "safety-net scan of the inbox (missed events, overflow)"))
    max_attempts: int = field(default=5, metadata=_num(1, 1000, "unexpected failures before a file goes to dead-letter"))
    dedupe: bool = field(default=True, metadata=_key(doc="a file whose content was already processed is not processed again"))
    max_line_bytes: int = field(default=1048576, metadata=_num(64, GIB, "a longer line (or array element) is an error line: line_too_long"))
    workers: int = field(default=0, metadata=_num(0, 256, "processes that parse a large file in parallel; 0 = one per CPU core"))
    chunk_bytes: int = field(default=8388608, metadata=_num(64, GIB, "a large file is processed in chunks of about this many bytes (memory is bounded by it)"))
    max_retry_seconds: float = field(default=3600.0, metadata=_num(1.0, 30 * DAY, "a file still failing this long after its first failure (a transient error too) goes to dead-letter"))
    max_decompressed_bytes: int = field(default=17179869184, metadata=_num(KIB, TIB, "a compressed input that expands beyond this many bytes is quarantined (decompressed_too_large)"))

    def matches(self, name: str) -> bool:
        """True when `name` matches a pattern and is not a temporary name."""
        if name.startswith(".") or name.endswith((".tmp", ".part", ".partial")):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


@dataclass(frozen=True)
class TransformConfig:
    timezone: str = field(default="UTC", metadata=_key(_timezone, 'IANA zone: the formatted timestamp, day_of_week, partition date, "today"'))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


@dataclass(frozen=True)
class CompactionConfig:
    interval_seconds: float = field(default=900.0, metadata=_num(1.0, WEEK, "how often the daemon runs a compaction pass"))
    target_file_bytes: int = field(default=134217728, metadata=_num(4 * KIB, 8 * GIB, "merged files grow up to about this size"))
    min_files: int = field(default=4, metadata=_num(2, 100000, "a partition with fewer small files is left alone"))


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = field(default=True, metadata=_key(doc="serve the HTTP endpoint inside the daemon"))
    listen: str = field(default="127.0.0.1:8000", metadata=_key(_listen, "HOST:PORT; keep it on loopback"))
    max_oldest_file_seconds: float = field(default=600.0, metadata=_num(1.0, WEEK, "/healthz fails while a file has waited in the inbox longer than this"))
    min_free_bytes: int = field(default=104857600, metadata=_num(0, PIB, "/healthz fails while paths.root has less free space than this; 0 turns the check off"))

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class MetricsConfig:
    interval_seconds: float = field(default=60.0, metadata=_num(0.1, DAY, "how often the `metrics` summary event is logged"))
    alert_error_ratio: float = field(default=0.2, metadata=_num(0.0, 1.0, "errors / processed over the window above which `alert` is logged"))
    alert_window_seconds: float = field(default=300.0, metadata=_num(1.0, WEEK, "the window of the error ratio"))


@dataclass(frozen=True)
class LoggingConfig:
    level: str = field(default="info", metadata=_key(_level, "debug, info, warning, error"))
    format: str = field(default="json", metadata=_key(_format, '"json" (one object per line) or "console"'))


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: Path | None = None  # the file it was read from, for messages


SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """`-c`, else $LOGWATCHD_CONFIG, else /etc/logwatchd/config.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("LOGWATCHD_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Reads, validates and resolves a config file; raises ConfigError naming the key."""
    path = find_config_path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return parse_config(raw, base_dir=path.resolve().parent, source=path)


def parse_config(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Builds a Config from a TOML document (already parsed); relative paths resolve against base_dir."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    sections = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: must be a table")
        sections[name] = _build_section(name, cls, table)
    config = Config(**sections, source=source)
    paths = _resolve_paths(config.paths, base_dir)
    _refuse_overlaps(paths)
    _refuse_other_filesystems(paths)
    return dataclasses.replace(config, paths=paths)


def _build_section(section: str, cls: type, table: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown key (known: {', '.join(fields)})")
    values = {}
    for key, value in table.items():
        f = fields[key]
        values[key] = _coerce(f"{section}.{key}", f, value)
    return cls(**values)


def _coerce(name: str, f: dataclasses.Field[Any], value: Any) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    kind = type(default)
    if isinstance(default, Path) or f.name == "archive":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: must be a string (a path), got {_tname(value)}")
        if f.name == "archive" and value == "":
            return None
        if not value or "\x00" in value:
            raise ConfigError(f"{name}: must be a non-empty path")
        return Path(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: must be true or false, got {_tname(value)}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: must be an integer, got {_tname(value)}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: must be a number, got {_tname(value)}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: must be a string, got {_tname(value)}")
    elif kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: must be a list of strings")
        value = tuple(value)
    if kind in (int, float):
        value = _in_range(name, f.metadata["range"], value, kind)
    check = f.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ConfigError(f"{name}: {problem} (got {value!r})")
    return value


def _in_range(name: str, bounds: tuple[float, float], value: float, kind: type) -> Any:
    """The value, within its key's inclusive range; NaN, infinities and overflow refused."""
    lo, hi = bounds
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: must be between {_num_text(lo)} and {_num_text(hi)} "
                          f"(got {value!r:.40})")
    return float(value) if kind is float else value


def _num_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _resolve_paths(paths: PathsConfig, base_dir: Path) -> PathsConfig:
    root = paths.root if paths.root.is_absolute() else base_dir / paths.root
    resolved: dict[str, Path | None] = {"root": root}
    for f in dataclasses.fields(PathsConfig):
        if f.name == "root":
            continue
        p = getattr(paths, f.name)
        resolved[f.name] = None if p is None else (p if p.is_absolute() else root / p)
    return PathsConfig(**resolved)  # type: ignore[arg-type]


def _refuse_overlaps(paths: PathsConfig) -> None:
    """Raises ConfigError naming both keys when two directories are the same or nest.

    Each directory is scanned or moved into on its own terms: an inbox inside quarantine
    would take its own rejects again, errors inside clean would put .jsonl in the dataset.
    Compared as real absolute paths (symlinks resolved), so another spelling does not hide it.
    """
    real = [(f"paths.{f.name}", os.path.realpath(getattr(paths, f.name)))
            for f in dataclasses.fields(PathsConfig)
            if f.name != "root" and getattr(paths, f.name) is not None]
    for i, (key_a, a) in enumerate(real):
        for key_b, b in real[i + 1:]:
            if a == b:
                raise ConfigError(f"{key_a} and {key_b} are the same directory ({a}); "
                                  "each needs its own")
            for inner, outer, child, parent in ((key_a, key_b, a, b), (key_b, key_a, b, a)):
                if _inside(child, parent):
                    raise ConfigError(f"{inner} ({child}) is inside {outer} ({parent}); "
                                      "these directories must not nest")


# Inbox entries are moved into these by rename (and replayed back), which cannot cross
# filesystems: a file committed but never moved would block every start after it.
_MOVED_FROM_INBOX = ("archive", "quarantine", "dead_letter")


def _refuse_other_filesystems(paths: PathsConfig) -> None:
    """Raises ConfigError when the inbox and a folder its files move to are on different
    filesystems (a directory not made yet counts as on its nearest existing parent's)."""
    inbox = _device(paths.inbox)
    for name in _MOVED_FROM_INBOX:
        target = getattr(paths, name)
        if target is None or inbox is None:
            continue
        device = _device(target)
        if device is not None and device != inbox:
            raise ConfigError(f"paths.inbox ({paths.inbox}) and paths.{name} ({target}) are on "
                              "different filesystems; files move between them by rename, which "
                              "cannot cross filesystems: put them on one")


def _device(path: Path) -> int | None:
    """st_dev of `path`, or of its nearest existing parent; None if none can be read."""
    p = Path(os.path.abspath(path))
    while True:
        try:
            return os.stat(p).st_dev
        except FileNotFoundError:
            if p.parent == p:
                return None
            p = p.parent
        except OSError:
            return None


def _inside(child: str, parent: str) -> bool:
    return os.path.commonpath([child, parent]) == parent


def to_toml(config: Config) -> str:
    """The effective config as TOML (paths resolved), as `check-config` prints it."""
    out: list[str] = []
    for name in SECTIONS:
        section = getattr(config, name)
        out.append(f"[{name}]")
        for f in dataclasses.fields(section):
            out.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # also a valid TOML basic string
