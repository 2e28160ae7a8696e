"""Moving files to and from S3: parallel, resumable, and checked.

Owns: multipart uploads with a SHA-256 checksum on every part (the store verifies each part as it
lands; the object ends up with S3's composite checksum), resuming an interrupted multipart upload
(parts already there with the same MD5 are not sent again), skipping objects already uploaded with
the same content, and ranged parallel downloads into a `.partial` file with a small JSON state
beside it, so a re-run fetches only the ranges it lacks and then checks the whole object against
the strongest checksum the store has (composite or full SHA-256, else the MD5 ETag, else the size).
Must not: know about jobs, manifests or progress beyond a byte-count callback.

Layout of a download in progress: DEST.partial (sparse, written at offsets) + DEST.partial.json.
Tuning (env): KOMPRESS_TRANSFER_WORKERS (parts in flight, default twice the CPUs, 4 to 16: every part is
hashed, so more requests than cores only contend), KOMPRESS_TRANSFER_PART_MIB (smallest part, default 16).
Memory: about (workers + 4) x part size during uploads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kompress_job.checksums import FileDigests, VerifiedFiles, b64, composite, file_digests, multipart_etag, strip_parts
from kompress_job.errors import KompressError
from kompress_job.s3client import is_not_found

MiB = 1 << 20
MAX_PARTS = 10_000
MIN_PART = 5 * MiB
READ_BLOCK = 1 * MiB
# Object metadata we set on upload: lets a later reader verify per part, and a re-run skip the object.
META_PART_SIZE = "kompress-part-size"
META_SHA256 = "kompress-sha256"


def _default_workers() -> int:
    # Measured against boto3's defaults on a 2-core machine (bench/bench_transfer.py): 16 x 8 MiB parts uploaded
    # at 0.97x, 4 x 16 MiB at 1.05x; a GPU node's many cores keep 16 requests busy against a distant store.
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
        return cls(workers=max(1, workers), part_size=max(MIN_PART, part), threshold=max(MIN_PART, part), file_workers=base.file_workers)


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


# ---------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadItem:
    path: Path
    bucket: str
    key: str


@dataclass(frozen=True)
class UploadResult:
    key: str
    size: int
    sha256: str  # hex of the whole file
    s3_checksum: str  # what the store records: base64 SHA-256, or base64 composite with -N
    part_size: int | None
    skipped: bool  # already there with the same content
    bytes_sent: int


def same_content(path: Path, remote: RemoteObject | None) -> FileDigests | None:
    """The file's digests if `remote` holds exactly its content (as far as the store lets us tell)."""
    if remote is None or remote.size != path.stat().st_size:
        return None
    if remote.multipart:
        if not remote.part_size or not remote.checksum_sha256:
            return None
        digests = file_digests(path, remote.part_size)
        return digests if strip_parts(remote.checksum_sha256) == digests.composite_sha256 else None
    digests = file_digests(path)
    if remote.checksum_sha256 and strip_parts(remote.checksum_sha256) == b64(bytes.fromhex(digests.sha256)):
        return digests
    if remote.metadata.get(META_SHA256) == digests.sha256:
        return digests
    return None


class S3Transfer:
    """Parallel transfers with one S3 client. Use as a context manager; thread pools end with it."""

    def __init__(self, client: Any, settings: TransferSettings | None = None) -> None:
        self.client = client
        self.settings = settings or TransferSettings()
        self._parts = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="s3-part")
        # Bounds memory: each in-flight upload part is one buffer of part_size bytes.
        self._buffers = threading.BoundedSemaphore(self.settings.workers + self.settings.file_workers)

    def __enter__(self) -> "S3Transfer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._parts.shutdown(wait=True, cancel_futures=True)

    # -- upload ---------------------------------------------------------------------------------

    def upload_files(
        self,
        items: list[UploadItem],
        *,
        on_bytes: Callable[[int, int], None] | None = None,
        skip_existing: bool = True,
    ) -> list[UploadResult]:
        """Upload every item; objects already there with the same content are skipped."""
        meter = Meter(sum(item.path.stat().st_size for item in items), on_bytes)
        with ThreadPoolExecutor(max(1, min(self.settings.file_workers, len(items))), thread_name_prefix="s3-file") as files:
            futures = [files.submit(self._upload_one, item, meter, skip_existing) for item in items]
            results = [f.result() for f in futures]
        meter.flush()
        return results

    def _upload_one(self, item: UploadItem, meter: Meter, skip_existing: bool) -> UploadResult:
        size = item.path.stat().st_size
        if skip_existing:
            remote = head_object(self.client, item.bucket, item.key)
            digests = same_content(item.path, remote)
            if digests is not None and remote is not None:
                meter.add(size)
                return UploadResult(item.key, size, digests.sha256, remote.checksum_sha256 or "", remote.part_size, True, 0)
        if size <= self.settings.threshold:
            return self._put_single(item, size, meter)
        return self._put_multipart(item, size, meter)

    def _put_single(self, item: UploadItem, size: int, meter: Meter) -> UploadResult:
        data = item.path.read_bytes()
        digest = hashlib.sha256(data).digest()
        self.client.put_object(
            Bucket=item.bucket,
            Key=item.key,
            Body=data,
            ChecksumSHA256=b64(digest),
            Metadata={META_SHA256: digest.hex()},
        )
        meter.add(size)
        return UploadResult(item.key, size, digest.hex(), b64(digest), None, False, size)

    def _put_multipart(self, item: UploadItem, size: int, meter: Meter, *, resume: bool = True) -> UploadResult:
        from botocore.exceptions import ClientError

        part_size = part_size_for(size, self.settings)
        count = math.ceil(size / part_size)
        upload_id, existing = self._resumable_upload(item, part_size, count) if resume else (None, {})
        resumed = upload_id is not None
        if upload_id is None:
            upload_id = self.client.create_multipart_upload(
                Bucket=item.bucket, Key=item.key, ChecksumAlgorithm="SHA256", Metadata={META_PART_SIZE: str(part_size)}
            )["UploadId"]
        whole = hashlib.sha256()
        futures: list[Future] = []
        sent = [0]
        counted = [0]  # bytes this attempt added to the meter: taken back if the upload starts over
        sent_lock = threading.Lock()
        failed = threading.Event()

        def send(number: int, data: bytes) -> dict[str, Any]:
            try:
                if failed.is_set():
                    raise TransferError(f"upload of s3://{item.bucket}/{item.key} abandoned after a failed part")
                digest = hashlib.sha256(data).digest()
                known = existing.get(number)
                if known is not None and known == hashlib.md5(data).hexdigest():
                    etag = known  # this part survived an earlier, interrupted attempt
                else:
                    etag = self.client.upload_part(
                        Bucket=item.bucket, Key=item.key, UploadId=upload_id, PartNumber=number, Body=data, ChecksumSHA256=b64(digest)
                    )["ETag"].strip('"')
                    with sent_lock:
                        sent[0] += len(data)
                with sent_lock:
                    counted[0] += len(data)
                meter.add(len(data))
                return {"PartNumber": number, "ETag": f'"{etag}"', "ChecksumSHA256": b64(digest), "_digest": digest}
            except BaseException:
                failed.set()  # stop reading and sending the rest of this file
                raise
            finally:
                self._buffers.release()

        try:
            with open(item.path, "rb") as f:
                for number in range(1, count + 1):
                    if failed.is_set():
                        break
                    data = f.read(part_size)
                    whole.update(data)
                    self._buffers.acquire()
                    try:
                        futures.append(self._parts.submit(send, number, data))
                    except BaseException:
                        self._buffers.release()
                        raise
            parts = [fut.result() for fut in futures]
        except BaseException:
            for fut in futures:
                fut.cancel()
            # The upload is left open on purpose: a re-run resumes it (see _resumable_upload).
            raise
        digests = [p.pop("_digest") for p in parts]
        try:
            self.client.complete_multipart_upload(Bucket=item.bucket, Key=item.key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except ClientError:
            if not resumed:
                raise
            # An open upload we could not finish (made by another tool, without SHA-256): start clean. Its bytes
            # were counted as done; the new upload counts them again, so progress never passes 100 %.
            self.client.abort_multipart_upload(Bucket=item.bucket, Key=item.key, UploadId=upload_id)
            meter.add(-counted[0])
            return self._put_multipart(item, size, meter, resume=False)
        return UploadResult(item.key, size, whole.hexdigest(), f"{composite(digests)}-{count}", part_size, False, sent[0])

    def _resumable_upload(self, item: UploadItem, part_size: int, count: int) -> tuple[str | None, dict[int, str]]:
        """An open multipart upload of this key from an interrupted run, cut the same way, and its parts' MD5s."""
        uploads = [
            u
            for u in self.client.list_multipart_uploads(Bucket=item.bucket, Prefix=item.key).get("Uploads", [])
            if u["Key"] == item.key and u.get("ChecksumAlgorithm") in (None, "SHA256")
        ]
        for upload in sorted(uploads, key=lambda u: u.get("Initiated") or 0, reverse=True):
            parts: dict[int, str] = {}
            compatible = True
            for page in self.client.get_paginator("list_parts").paginate(Bucket=item.bucket, Key=item.key, UploadId=upload["UploadId"]):
                for part in page.get("Parts", []):
                    number, psize = int(part["PartNumber"]), int(part["Size"])
                    if number > count or (number < count and psize != part_size):
                        compatible = False
                    parts[number] = part["ETag"].strip('"')
            if compatible:
                return upload["UploadId"], parts
        return None, {}

    # -- download -------------------------------------------------------------------------------

    def download_objects(
        self,
        items: list["DownloadItem"],
        *,
        verified: VerifiedFiles | None = None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> list["DownloadResult"]:
        """Download every item into its dest; complete files verified before are kept, partial ones resumed."""
        meter = Meter(sum(item.remote.size for item in items), on_bytes)
        results: dict[str, DownloadResult] = {}
        todo = list(items)
        for attempt in (1, 2):
            mismatched = self._download_round(todo, verified, meter, results, fresh=attempt == 2)
            if not mismatched:
                break
            if attempt == 2:
                names = ", ".join(f"s3://{i.bucket}/{i.remote.key}" for i in mismatched)
                raise TransferError(f"downloaded data does not match the store's checksum twice: {names}")
            todo = mismatched
            meter.add(-sum(item.remote.size for item in mismatched))  # fetched again from the start: counted again
        meter.flush()
        return [results[item.rel] for item in items]

    def _download_round(
        self, items: list["DownloadItem"], verified: VerifiedFiles | None, meter: Meter, results: dict, *, fresh: bool
    ) -> list["DownloadItem"]:
        jobs: list[_FileDownload] = []
        for item in items:
            tag = item.remote.etag or str(item.remote.size)
            known = verified.get(item.rel, item.dest, tag) if verified is not None and not fresh else None
            if known is not None:
                meter.add(item.remote.size)
                results[item.rel] = DownloadResult(item.rel, item.dest, item.remote.size, known.get("verified_by", "size"), True)
                continue
            jobs.append(_FileDownload(item, self.settings, meter, fresh=fresh))
        futures: list[tuple[_FileDownload, Future]] = []
        for job in jobs:
            job.open()
            for index in job.missing_chunks():
                futures.append((job, self._parts.submit(job.fetch_chunk, self.client, index)))
        errors: list[BaseException] = []
        for job, fut in futures:
            try:
                fut.result()
            except BaseException as exc:  # noqa: BLE001 - keep the others' progress, report the first
                errors.append(exc)
        for job in jobs:
            job.save_state()
        if errors:
            for job in jobs:
                job.close()
            raise errors[0]
        mismatched = []
        for job in jobs:
            outcome = job.finish()
            if outcome is None:
                mismatched.append(job.item)
                continue
            if verified is not None:
                verified.put(job.item.rel, job.item.dest, job.item.remote.etag or str(job.item.remote.size), verified_by=outcome)
            results[job.item.rel] = DownloadResult(job.item.rel, job.item.dest, job.item.remote.size, outcome, False)
        return mismatched


@dataclass(frozen=True)
class DownloadItem:
    bucket: str
    remote: RemoteObject
    dest: Path
    rel: str  # name of the file relative to the download root (for VerifiedFiles)


@dataclass(frozen=True)
class DownloadResult:
    rel: str
    path: Path
    size: int
    verified_by: str  # composite-sha256, sha256, multipart-md5, md5 or size
    reused: bool  # already complete and verified before this run


def verification_plan(remote: RemoteObject) -> tuple[str, int | None]:
    """How a download of `remote` will be checked, and the part size that check needs (None: whole file)."""
    if remote.multipart:
        if remote.part_size:
            if remote.checksum_sha256:
                return "composite-sha256", remote.part_size
            if remote.etag and not remote.encrypted_kms:
                return "multipart-md5", remote.part_size
        return "size", None
    if remote.checksum_sha256:
        return "sha256", None
    if remote.etag and len(remote.etag) == 32 and not remote.encrypted_kms:
        return "md5", None
    return "size", None


class _PartHasher:
    """Digests of consecutive `part_size` pieces of a stream that starts on a part boundary."""

    def __init__(self, algorithm: Callable[[], Any], part_size: int) -> None:
        self.algorithm, self.part_size = algorithm, part_size
        self.digests: list[str] = []
        self._h = algorithm()
        self._in = 0

    def update(self, block: bytes | memoryview) -> None:
        view = memoryview(block)
        while view:
            take = min(len(view), self.part_size - self._in)
            self._h.update(view[:take])
            self._in += take
            view = view[take:]
            if self._in == self.part_size:
                self.digests.append(self._h.hexdigest())
                self._h, self._in = self.algorithm(), 0

    def finish(self) -> list[str]:
        if self._in:
            self.digests.append(self._h.hexdigest())
            self._h, self._in = self.algorithm(), 0
        return self.digests


class _FileDownload:
    """One object being fetched in ranges into DEST.partial, with its resume state."""

    def __init__(self, item: DownloadItem, settings: TransferSettings, meter: Meter, *, fresh: bool) -> None:
        self.item = item
        self.meter = meter
        self.kind, self.part = verification_plan(item.remote)
        # Ranges are a whole number of parts when parts are checked, so each range yields its parts' digests.
        self.chunk = self.part * max(1, settings.range_size // self.part) if self.part else settings.range_size
        self._algorithm = {"composite-sha256": hashlib.sha256, "multipart-md5": hashlib.md5}.get(self.kind)
        self.partial = item.dest.with_name(item.dest.name + ".partial")
        self.state_path = item.dest.with_name(item.dest.name + ".partial.json")
        self.count = max(1, math.ceil(item.remote.size / self.chunk))
        self.done: dict[int, str] = {}
        self._lock = threading.Lock()
        self._last_save = 0.0
        self._fd: int | None = None
        self._fresh = fresh
        self._carried: set[int] = set()

    def open(self) -> None:
        self.item.dest.parent.mkdir(parents=True, exist_ok=True)
        state = self._read_state() if not self._fresh else None
        if state is None or not self.partial.exists():
            self.done = {}
            self.partial.unlink(missing_ok=True)
        else:
            self.done = {int(k): v for k, v in state["done"].items()}
            # Ranges from an earlier process are re-hashed from disk at the end, not taken on trust.
            self._carried = set(self.done)
            for index in self.done:
                self.meter.add(self._chunk_len(index))
        self._fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self._fd, self.item.remote.size)
        self._write_state()

    def _read_state(self) -> dict | None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        r = self.item.remote
        if state.get("etag") != r.etag or state.get("size") != r.size or state.get("chunk") != self.chunk or state.get("kind") != self.kind:
            return None  # a different version of the object, or cut differently: start over
        return state

    def _chunk_len(self, index: int) -> int:
        return min(self.chunk, self.item.remote.size - index * self.chunk)

    def missing_chunks(self) -> list[int]:
        if self.item.remote.size == 0:
            return []
        return [i for i in range(self.count) if i not in self.done]

    def fetch_chunk(self, client: Any, index: int, attempts: int = 4) -> None:
        """Fetch one range; a connection dropped mid-body is retried (botocore retries only the request)."""
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
        from urllib3.exceptions import ProtocolError

        dropped = (BotoConnectionError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError, ProtocolError, ConnectionError, TransferError)
        for attempt in range(1, attempts + 1):
            try:
                return self._fetch_chunk(client, index)
            except dropped:
                if attempt == attempts:
                    raise
                time.sleep(min(8.0, 0.5 * 2**attempt))

    def _fetch_chunk(self, client: Any, index: int) -> None:
        start = index * self.chunk
        end = start + self._chunk_len(index) - 1
        kwargs: dict[str, Any] = {"Bucket": self.item.bucket, "Key": self.item.remote.key, "Range": f"bytes={start}-{end}"}
        if self.item.remote.etag:
            kwargs["IfMatch"] = f'"{self.item.remote.etag}"'  # the object must not change under us
        body = client.get_object(**kwargs)["Body"]
        hasher = _PartHasher(self._algorithm, self.part) if self._algorithm and self.part else None
        offset = start
        try:
            while block := body.read(READ_BLOCK):
                os.pwrite(self._fd, block, offset)  # type: ignore[arg-type]
                offset += len(block)
                if hasher is not None:
                    hasher.update(block)
                self.meter.add(len(block))
        except BaseException:
            self.meter.add(start - offset)  # this range will be fetched again
            raise
        finally:
            body.close()
        if offset != end + 1:
            raise TransferError(f"short read of s3://{self.item.bucket}/{self.item.remote.key} at bytes {start}-{end}")
        with self._lock:
            self.done[index] = ",".join(hasher.finish()) if hasher is not None else ""
        self.save_state(throttle=True)

    def save_state(self, *, throttle: bool = False) -> None:
        now = time.monotonic()
        if throttle and now - self._last_save < 2.0:
            return
        self._last_save = now
        self._write_state()

    def _write_state(self) -> None:
        r = self.item.remote
        with self._lock:
            state = {"etag": r.etag, "size": r.size, "chunk": self.chunk, "kind": self.kind, "done": {str(k): v for k, v in self.done.items()}}
        tmp = self.state_path.with_name(self.state_path.name + f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self) -> str | None:
        """Check the whole file; on success move it into place and return how it was verified."""
        self.close()
        if self._verify():
            os.replace(self.partial, self.item.dest)
            self.state_path.unlink(missing_ok=True)
            return self.kind
        self.partial.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        return None

    def _verify(self) -> bool:
        r = self.item.remote
        if self.partial.stat().st_size != r.size:
            return False
        if self._algorithm and self.part:
            with open(self.partial, "rb") as f:
                for index in self._carried:
                    f.seek(index * self.chunk)
                    hasher, left = _PartHasher(self._algorithm, self.part), self._chunk_len(index)
                    while left > 0 and (block := f.read(min(left, 8 * MiB))):
                        hasher.update(block)
                        left -= len(block)
                    self.done[index] = ",".join(hasher.finish())
            digests = [bytes.fromhex(d) for i in range(self.count) for d in self.done[i].split(",")]
            if self.kind == "composite-sha256":
                return composite(digests) == strip_parts(r.checksum_sha256)
            return multipart_etag(digests) == r.etag
        if self.kind == "sha256":
            return b64(bytes.fromhex(file_digests(self.partial).sha256)) == strip_parts(r.checksum_sha256)
        if self.kind == "md5":
            h = hashlib.md5()
            with open(self.partial, "rb") as f:
                while block := f.read(8 * MiB):
                    h.update(block)
            return h.hexdigest() == r.etag
        return True


def abort_stale_uploads(client: Any, bucket: str, prefix: str) -> int:
    """Abort multipart uploads left open under `prefix` by interrupted runs (they cost storage)."""
    aborted = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted += 1
    return aborted


def download_items(client: Any, bucket: str, objects: Iterable[tuple[str, str]], root: Path) -> list[DownloadItem]:
    """DownloadItems for (key, relative path) pairs under `root`, with what the store knows of each."""
    items = []
    for key, rel in objects:
        remote = head_object(client, bucket, key, want_part_size=True)
        if remote is None:
            raise FileNotFoundError(f"s3://{bucket}/{key}")
        items.append(DownloadItem(bucket, remote, root / rel, rel))
    return items
