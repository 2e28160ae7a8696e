"""S3 objects as the transfers see them: settings, what the store says of an object (HEAD, LIST), a byte meter.

Shared by upload.py and download.py (and the sources, the cache and the task source, which only HEAD and LIST).
Tuning (env): KOMPRESS_TRANSFER_WORKERS (parts in flight, default twice the CPUs, 4 to 16: every part is
hashed, so more requests than cores only contend), KOMPRESS_TRANSFER_PART_MIB (smallest part, default 16),
KOMPRESS_TRANSFER_RANGE_MIB (bytes per ranged GET, default 64).
Must not: know about jobs, manifests or progress beyond a byte-count callback.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kompress_job.errors import KompressError
from kompress_job.io.s3client import is_not_found

MiB = 1 << 20
MAX_PARTS = 10_000
MIN_PART = 5 * MiB
READ_BLOCK = 1 * MiB
# Object metadata we set on upload: lets a later reader verify per part, and a re-run skip the object.
META_PART_SIZE = "kompress-part-size"
META_SHA256 = "kompress-sha256"


def _default_workers() -> int:
    # Chosen with bench/bench_transfer.py against boto3's defaults (its figures are in the README's benchmarks
    # table): on 2 cores a few requests at once are as fast as many; a GPU node's many cores keep 16 busy against a
    # distant store.
    return min(16, max(4, 2 * (os.cpu_count() or 2)))


@dataclass(frozen=True)
class TransferSettings:
    workers: int = field(default_factory=_default_workers)  # part requests in flight
    part_size: int = 16 * MiB  # grows so an object needs at most 10,000 parts
    threshold: int = 16 * MiB  # objects up to this size go in one request
    file_workers: int = 4  # files read at once on upload (each read sequentially)
    range_size: int = 64 * MiB  # bytes per ranged GET (a whole number of parts when verifying per part)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "TransferSettings":
        env = env if env is not None else dict(os.environ)
        base = cls()
        workers = int(env.get("KOMPRESS_TRANSFER_WORKERS", base.workers))
        part = int(env.get("KOMPRESS_TRANSFER_PART_MIB", base.part_size // MiB)) * MiB
        ranges = int(env.get("KOMPRESS_TRANSFER_RANGE_MIB", base.range_size // MiB)) * MiB  # what a killed download loses at most per request
        return cls(workers=max(1, workers), part_size=max(MIN_PART, part), threshold=max(MIN_PART, part), file_workers=base.file_workers, range_size=max(MIN_PART, ranges))


def part_size_for(size: int, settings: TransferSettings) -> int:
    """The part size for an object of `size` bytes: deterministic, so a re-run cuts the same parts."""
    part = max(settings.part_size, MIN_PART)
    while math.ceil(size / part) > MAX_PARTS:
        part *= 2
    return part


class TransferError(KompressError):
    """An object did not arrive intact (retriable: exit code 1)."""


class Meter:
    """Thread-safe byte count; calls `callback(done, total)` at most every `interval` seconds, and at the end."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None, interval: float = 0.5) -> None:
        self.total = total
        self.done = 0
        self._callback = callback
        self._interval = interval
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count `n` more bytes done (negative: bytes that will be moved again)."""
        if not n:
            return
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self._callback is None or (now - self._last < self._interval and self.done < self.total):
                return
            self._last = now
            done = self.done
        self._callback(done, self.total)

    def flush(self) -> None:
        if self._callback is not None:
            self._callback(self.done, self.total)


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    etag: str | None = None
    checksum_sha256: str | None = None  # as the store reports it (base64, maybe with -N)
    checksum_type: str | None = None  # FULL_OBJECT or COMPOSITE, when reported
    metadata: dict[str, str] = field(default_factory=dict)
    parts: int | None = None  # from a multipart ETag's -N
    part_size: int | None = None  # when known (our metadata, or the store's answer for part 1)
    encrypted_kms: bool = False

    @property
    def multipart(self) -> bool:
        return bool(self.parts and self.parts > 1) or bool(self.etag and "-" in self.etag)


def head_object(client: Any, bucket: str, key: str, *, want_part_size: bool = False) -> RemoteObject | None:
    """What the store knows about one object, or None if it is not there."""
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    etag = (head.get("ETag") or "").strip('"') or None
    parts = int(etag.rsplit("-", 1)[1]) if etag and "-" in etag and etag.rsplit("-", 1)[1].isdigit() else None
    metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
    size = int(head["ContentLength"])
    part_size = int(metadata[META_PART_SIZE]) if metadata.get(META_PART_SIZE, "").isdigit() else None
    if part_size is None and want_part_size and parts and parts > 1:
        # S3 answers a HEAD for part 1 with that part's length; a store that doesn't (moto) answers the whole size.
        try:
            first = client.head_object(Bucket=bucket, Key=key, PartNumber=1)
            if 0 < int(first["ContentLength"]) < size:
                part_size = int(first["ContentLength"])
        except ClientError:
            pass
    return RemoteObject(
        key=key,
        size=size,
        etag=etag,
        checksum_sha256=head.get("ChecksumSHA256"),
        checksum_type=head.get("ChecksumType"),
        metadata=metadata,
        parts=parts,
        part_size=part_size,
        encrypted_kms=head.get("ServerSideEncryption") == "aws:kms",
    )


def list_objects(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix` (a folder: the prefix ends with / unless empty)."""
    paginator = client.get_paginator("list_objects_v2")
    out: list[dict[str, Any]] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Contents", []))
    return out
