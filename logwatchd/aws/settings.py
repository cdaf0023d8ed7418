"""The Lambda functions' settings: environment variables only (the Lambda convention).

    LOGWATCHD_CLEAN_URI        s3://bucket/prefix   clean Parquet dataset (date=YYYY-MM-DD/…)
    LOGWATCHD_ERRORS_URI       s3://bucket/prefix   error JSON Lines (date=YYYY-MM-DD/…)
    LOGWATCHD_QUARANTINE_URI   s3://bucket/prefix   copies of inputs that are not log data
    LOGWATCHD_LEDGER_TABLE     DynamoDB table name  (its one definition: aws/template.yaml)
    LOGWATCHD_TIMEZONE         IANA zone, default UTC (the daemon's `transform.timezone`)
    LOGWATCHD_MAX_DECOMPRESSED_BYTES  optional: a gzip object expanding beyond it is
                               quarantined (the daemon's `ingest.max_decompressed_bytes`)

The standard AWS variables do the rest (region, credentials, `AWS_ENDPOINT_URL`). Read at
the first invocation, not at import: a missing or bad variable is a `SettingsError` naming
it, before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import Config, IngestConfig, TransformConfig, _timezone

CLEAN_URI = "LOGWATCHD_CLEAN_URI"
ERRORS_URI = "LOGWATCHD_ERRORS_URI"
QUARANTINE_URI = "LOGWATCHD_QUARANTINE_URI"
LEDGER_TABLE = "LOGWATCHD_LEDGER_TABLE"
TIMEZONE = "LOGWATCHD_TIMEZONE"
MAX_DECOMPRESSED = "LOGWATCHD_MAX_DECOMPRESSED_BYTES"

# S3's bucket naming rules (3–63 characters, lower case, digits, dots, hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# DynamoDB's table naming rules.
_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")


class SettingsError(ValueError):
    """A missing or malformed environment variable; the message names it."""


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix`: where one kind of output goes."""

    bucket: str
    prefix: str  # no leading or trailing "/"; may be empty

    @classmethod
    def parse(cls, name: str, value: str) -> S3Location:
        if not value.startswith("s3://"):
            raise SettingsError(f"{name}: must be s3://bucket/prefix, got {value[:200]!r}")
        bucket, _, prefix = value[len("s3://"):].partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise SettingsError(f"{name}: {bucket[:200]!r} is not a valid S3 bucket name")
        prefix = prefix.strip("/")
        if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
            raise SettingsError(f"{name}: the prefix {prefix[:200]!r} has an empty, '.' or '..' part")
        return cls(bucket, prefix)

    def key(self, relative: str) -> str:
        """The object key of `relative` (e.g. "date=2026-01-01/x.parquet") under this prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def path(self, relative: str = "") -> str:
        """The same as a pyarrow.fs path ("bucket/key")."""
        key = self.key(relative) if relative else self.prefix
        return f"{self.bucket}/{key}" if key else self.bucket

    def uri(self, relative: str = "") -> str:
        return f"s3://{self.path(relative)}"


@dataclass(frozen=True)
class Settings:
    clean: S3Location
    errors: S3Location
    quarantine: S3Location
    ledger_table: str
    timezone: str
    max_decompressed_bytes: int | None = None  # None: the daemon's default

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise SettingsError(f"{name}: not set (see the README, \"Running on AWS\")")
            return value

        clean = S3Location.parse(CLEAN_URI, required(CLEAN_URI))
        errors = S3Location.parse(ERRORS_URI, required(ERRORS_URI))
        quarantine = S3Location.parse(QUARANTINE_URI, required(QUARANTINE_URI))
        table = required(LEDGER_TABLE)
        if not _TABLE.fullmatch(table):
            raise SettingsError(f"{LEDGER_TABLE}: {table[:300]!r} is not a valid DynamoDB table name")
        zone = env.get(TIMEZONE, "").strip() or "UTC"
        problem = _timezone(zone)
        if problem:
            raise SettingsError(f"{TIMEZONE}: {problem}")
        locations = {CLEAN_URI: clean, ERRORS_URI: errors, QUARANTINE_URI: quarantine}
        for a, la in locations.items():
            for b, lb in locations.items():
                if a < b and la.bucket == lb.bucket and _overlap(la.prefix, lb.prefix):
                    raise SettingsError(f"{a} and {b} overlap ({la.uri()}, {lb.uri()}); "
                                        "give each its own prefix")
        bound = None
        raw = env.get(MAX_DECOMPRESSED, "").strip()
        if raw:
            lo, hi = _bounds("max_decompressed_bytes")
            if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
                raise SettingsError(f"{MAX_DECOMPRESSED}: must be a whole number of bytes in "
                                    f"[{lo}, {hi}], got {raw[:100]!r}")
            bound = int(raw)
        return cls(clean, errors, quarantine, table, zone, bound)

    def config(self) -> Config:
        """The daemon's configuration these settings amount to (record rules, compaction, API)."""
        ingest = IngestConfig()
        if self.max_decompressed_bytes is not None:
            ingest = dataclasses.replace(ingest, max_decompressed_bytes=self.max_decompressed_bytes)
        return Config(ingest=ingest, transform=TransformConfig(timezone=self.timezone))


def _bounds(name: str) -> tuple[int, int]:
    """The [min, max] the daemon's configuration documents for an `ingest` key."""
    [f] = [f for f in dataclasses.fields(IngestConfig) if f.name == name]
    lo, hi = f.metadata["range"]
    return int(lo), int(hi)


def s3_filesystem(environ: Mapping[str, str] | None = None, **options: Any) -> Any:
    """pyarrow's S3 client, pointed where boto3 points: pyarrow reads neither `AWS_ENDPOINT_URL`
    nor `AWS_ENDPOINT_URL_S3` itself (apache/arrow#49643), so they are passed on here, the
    service-specific one first as boto3 does; the region from `AWS_REGION` (set by Lambda)
    or `AWS_DEFAULT_REGION`. `options` go to `S3FileSystem` as they are."""
    from pyarrow.fs import S3FileSystem

    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = dict(options)
    endpoint = env.get("AWS_ENDPOINT_URL_S3", "").strip() or env.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SettingsError(f"AWS_ENDPOINT_URL: must be http(s)://host[:port], got {endpoint[:200]!r}")
        kwargs.update(endpoint_override=url.netloc, scheme=url.scheme)
    region = env.get("AWS_REGION", "").strip() or env.get("AWS_DEFAULT_REGION", "").strip()
    if region:
        kwargs["region"] = region
    return S3FileSystem(**kwargs)


def _overlap(a: str, b: str) -> bool:
    return a == b or not a or not b or a.startswith(b + "/") or b.startswith(a + "/")
