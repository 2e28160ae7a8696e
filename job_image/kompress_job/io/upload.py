"""Uploads to S3: multipart with a SHA-256 checksum on every part (the store verifies each part as it lands; the
object ends up with S3's composite checksum), resuming an interrupted multipart upload (parts already there with
the same MD5 are not sent again), and skipping objects already uploaded with the same content.

Memory: about (workers + 4) x part size, bounded by the transfer's buffer semaphore.
Must not: know about jobs, manifests or progress beyond a byte-count callback.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kompress_job.io.checksums import FileDigests, b64, composite, file_digests, strip_parts
from kompress_job.io.s3objects import META_PART_SIZE, META_SHA256, Meter, RemoteObject, TransferError, TransferSettings, head_object, part_size_for


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


class _PartSender:
    """Sends the parts of one multipart upload, from the pool's threads: a part an interrupted attempt already
    uploaded with the same MD5 is not sent again; once a part fails, the rest are abandoned. Each call releases
    the buffer its part was read into."""

    def __init__(self, client: Any, buffers: threading.BoundedSemaphore, item: UploadItem, upload_id: str, existing: dict[int, str], meter: Meter) -> None:
        self.client, self.buffers, self.item, self.upload_id, self.existing, self.meter = client, buffers, item, upload_id, existing, meter
        self.sent = 0  # bytes this attempt sent
        self.counted = 0  # bytes this attempt added to the meter: taken back if the upload starts over
        self.failed = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, number: int, data: bytes) -> dict[str, Any]:
        item = self.item
        try:
            if self.failed.is_set():
                raise TransferError(f"upload of s3://{item.bucket}/{item.key} abandoned after a failed part")
            digest = hashlib.sha256(data).digest()
            known = self.existing.get(number)
            if known is not None and known == hashlib.md5(data).hexdigest():
                etag = known  # this part survived an earlier, interrupted attempt
            else:
                etag = self.client.upload_part(
                    Bucket=item.bucket, Key=item.key, UploadId=self.upload_id, PartNumber=number, Body=data, ChecksumSHA256=b64(digest)
                )["ETag"].strip('"')
                with self._lock:
                    self.sent += len(data)
            with self._lock:
                self.counted += len(data)
            self.meter.add(len(data))
            return {"PartNumber": number, "ETag": f'"{etag}"', "ChecksumSHA256": b64(digest), "_digest": digest}
        except BaseException:
            self.failed.set()  # stop reading and sending the rest of this file
            raise
        finally:
            self.buffers.release()


class Uploads:
    """One batch of uploads on a transfer's pool and buffers (see transfer.S3Transfer)."""

    def __init__(self, client: Any, settings: TransferSettings, parts: ThreadPoolExecutor, buffers: threading.BoundedSemaphore) -> None:
        self.client, self.settings, self._parts, self._buffers = client, settings, parts, buffers

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
        sender = _PartSender(self.client, self._buffers, item, upload_id, existing, meter)
        whole, parts = self._send_parts(item, part_size, count, sender)
        digests = [p.pop("_digest") for p in parts]
        try:
            self.client.complete_multipart_upload(Bucket=item.bucket, Key=item.key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except ClientError:
            if not resumed:
                raise
            # An open upload we could not finish (made by another tool, without SHA-256): start clean. Its bytes
            # were counted as done; the new upload counts them again, so progress never passes 100 %.
            self.client.abort_multipart_upload(Bucket=item.bucket, Key=item.key, UploadId=upload_id)
            meter.add(-sender.counted)
            return self._put_multipart(item, size, meter, resume=False)
        return UploadResult(item.key, size, whole.hexdigest(), f"{composite(digests)}-{count}", part_size, False, sender.sent)

    def _send_parts(self, item: UploadItem, part_size: int, count: int, sender: _PartSender) -> tuple[Any, list[dict[str, Any]]]:
        """Read the file a part at a time (each read waits for a free buffer), send the parts on the pool and wait
        for them all: the whole file's SHA-256 and the parts' entries, in order. Stops reading after a failed part."""
        whole = hashlib.sha256()
        futures: list[Future] = []
        try:
            with open(item.path, "rb") as f:
                for number in range(1, count + 1):
                    if sender.failed.is_set():
                        break
                    data = f.read(part_size)
                    whole.update(data)
                    self._buffers.acquire()
                    try:
                        futures.append(self._parts.submit(sender, number, data))
                    except BaseException:
                        self._buffers.release()
                        raise
            parts = [fut.result() for fut in futures]
        except BaseException:
            for fut in futures:
                fut.cancel()
            # The upload is left open on purpose: a re-run resumes it (see _resumable_upload).
            raise
        return whole, parts

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


def abort_stale_uploads(client: Any, bucket: str, prefix: str) -> int:
    """Abort multipart uploads left open under `prefix` by interrupted runs (they cost storage)."""
    aborted = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted += 1
    return aborted
