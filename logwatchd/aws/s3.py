"""S3 for the ingest Lambda: boto3's and pyarrow's clients at the same endpoint (boto3 reads
`AWS_ENDPOINT_URL[_S3]` itself, pyarrow is given it by `settings.s3_filesystem`), an output
`Store` at a prefix (final keys, no staging), and objects read as streams pinned to one version.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import FileVanished, TransientIOError
from .settings import S3Location, s3_filesystem

# Open Parquet parts at once per input, far fewer than the daemon's local files: each open
# part costs its writer's and its upload's buffers (~8 MiB of RSS measured with 8 open). A
# file of a few dates (most) never needs more; one of many dates gets more, smaller parts
# than the daemon would write (one per date and buffer flush), which compaction merges.
MAX_WRITERS = 4


def new_client() -> Any:
    """boto3's S3 client: standard retries with backoff (throttling, 5xx, broken connections)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}))


def new_filesystem() -> Any:
    """pyarrow's S3 filesystem for writing outputs, at boto3's endpoint (`settings.s3_filesystem`)."""
    import pyarrow.fs as pafs

    # Uploads in the foreground: a part is sent before the next one is buffered, so memory
    # does not depend on how fast the network takes the parts. Delayed open: an object
    # smaller than one part is a single PutObject at close (half the time of a multipart
    # upload's three requests; most daily parts are small).
    return s3_filesystem(background_writes=False, allow_delayed_open=True,
                         retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=5))


class S3File:
    """One object being uploaded at its final key: it appears, whole, when closed."""

    def __init__(self, prefix: S3Prefix, relative: str) -> None:
        self.prefix = prefix
        self.relative = relative
        self.stream = prefix.fs.open_output_stream(prefix.location.path(relative))

    def close(self) -> int:
        """Completes the upload; returns the object's size."""
        size = int(self.stream.tell())
        self.stream.close()
        return size

    def abort(self) -> None:
        """Drops the object. pyarrow cannot abort an upload, only complete it: closing then
        deleting is the way (an upload never closed, as in a killed process, never appears)."""
        try:
            self.stream.close()
        except OSError:
            pass  # the upload failed: nothing appeared
        self.prefix.remove(self.relative)


class S3Prefix:
    """The `storage.Store` of an S3 prefix: outputs at their final keys, written through
    pyarrow's filesystem (`fs`), deleted through boto3's `client` (pyarrow's would leave a
    "directory" marker object behind in the dataset)."""

    max_writers: int | None = MAX_WRITERS

    def __init__(self, fs: Any, client: Any, location: S3Location) -> None:
        self.fs = fs
        self.client = client
        self.location = location

    def create(self, relative: str, arrow: bool = True) -> S3File:
        return S3File(self, relative)

    def final(self, relative: str) -> PurePosixPath:
        return PurePosixPath(relative)

    def remove(self, relative: str) -> None:
        self.client.delete_object(Bucket=self.location.bucket, Key=self.location.key(relative))

    def sync(self) -> None:
        pass  # S3 has no directories

    def scratch(self, name: str) -> Path:
        """A new file named after `name` in the temporary directory (/tmp on Lambda), unique
        to its caller (invocations may share a process)."""
        fd, path = tempfile.mkstemp(prefix=name + ".")
        os.close(fd)
        return Path(path)


@dataclass(frozen=True)
class ObjectVersion:
    """What pins an object between two reads: its ETag, and its version in a versioned bucket."""

    etag: str
    version_id: str | None
    size: int


def open_object(client: Any, bucket: str, key: str, version_id: str | None = None,
                pin: ObjectVersion | None = None) -> tuple[Any, ObjectVersion]:
    """A streaming GET of the object (`read(n)`, never whole in memory) and its version.

    With `pin`, the very object read before: TransientIOError when it was replaced since
    (If-Match on its ETag, or its version id), FileVanished when it is gone.
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    version_id = pin.version_id if pin is not None and pin.version_id else version_id
    if version_id:
        kwargs["VersionId"] = version_id
    if pin is not None:
        kwargs["IfMatch"] = pin.etag
    try:
        got = client.get_object(**kwargs)
    except client.exceptions.NoSuchKey:
        raise FileVanished(f"s3://{bucket}/{key}: no such object") from None
    except client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("NoSuchVersion", "404"):
            raise FileVanished(f"s3://{bucket}/{key}: no such object version") from None
        if code in ("PreconditionFailed", "412"):
            raise TransientIOError(f"s3://{bucket}/{key}: replaced since it was first read") from None
        raise
    return got["Body"], ObjectVersion(got["ETag"], got.get("VersionId"), int(got["ContentLength"]))
