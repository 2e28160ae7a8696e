"""Downloads from S3: ranged parallel GETs into a `.partial` file with a small JSON state beside it, so a re-run
fetches only the bytes it lacks, then the whole object checked against the strongest checksum the store has
(composite or full SHA-256, else the MD5 ETag, else the size).

Layout of a download in progress: DEST.partial (sparse, written at offsets) + DEST.partial.json: the ranges done,
and for a range in flight how many of its bytes were written (saved at most every SAVE_EVERY seconds), so a killed
process loses what arrived since the last save, not whole ranges; a resumed range's bytes are hashed from disk at
the end with everything else an earlier process wrote, never taken on trust.
Must not: know about jobs, manifests or progress beyond a byte-count callback.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kompress_job.io.checksums import VerifiedFiles, b64, composite, file_digests, multipart_etag, strip_parts
from kompress_job.io.s3objects import READ_BLOCK, MiB, Meter, RemoteObject, TransferError, TransferSettings, head_object

SAVE_EVERY = 0.25  # seconds between writes of the resume state while bytes arrive

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
        self.progress: dict[int, int] = {}  # range -> bytes of it written, from its start, while not done
        self._lock = threading.Lock()
        self._last_save = 0.0
        self._fd: int | None = None
        self._fresh = fresh
        self._carried: set[int] = set()

    def open(self) -> None:
        self.item.dest.parent.mkdir(parents=True, exist_ok=True)
        state = self._read_state() if not self._fresh else None
        if state is None or not self.partial.exists():
            self.done, self.progress = {}, {}
            self.partial.unlink(missing_ok=True)
        else:
            self.done = {int(k): v for k, v in state["done"].items()}
            self.progress = {int(k): min(int(v), self._chunk_len(int(k))) for k, v in (state.get("progress") or {}).items() if int(k) not in self.done}
            # Ranges from an earlier process, whole or begun, are re-hashed from disk at the end, not taken on trust.
            self._carried = set(self.done) | set(self.progress)
            for index in self.done:
                self.meter.add(self._chunk_len(index))
            for written in self.progress.values():
                self.meter.add(written)
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
        base = index * self.chunk
        end = base + self._chunk_len(index) - 1
        with self._lock:
            written = self.progress.get(index, 0)
            if written:
                self._carried.add(index)  # begun earlier (this process's last attempt, or a killed one's): hashed from disk
        start = base + written
        hasher = _PartHasher(self._algorithm, self.part) if self._algorithm and self.part and not written else None
        offset = start
        if start <= end:
            kwargs: dict[str, Any] = {"Bucket": self.item.bucket, "Key": self.item.remote.key, "Range": f"bytes={start}-{end}"}
            if self.item.remote.etag:
                kwargs["IfMatch"] = f'"{self.item.remote.etag}"'  # the object must not change under us
            body = client.get_object(**kwargs)["Body"]
            try:
                while block := body.read(READ_BLOCK):
                    os.pwrite(self._fd, block, offset)  # type: ignore[arg-type]
                    offset += len(block)
                    if hasher is not None:
                        hasher.update(block)
                    self.meter.add(len(block))
                    with self._lock:
                        self.progress[index] = offset - base  # written: a retry, or a later process, resumes here
                    self.save_state(throttle=True)
            finally:
                body.close()
        if offset != end + 1:
            raise TransferError(f"short read of s3://{self.item.bucket}/{self.item.remote.key} at bytes {start}-{end}")
        with self._lock:
            self.done[index] = ",".join(hasher.finish()) if hasher is not None else ""
            self.progress.pop(index, None)
        self.save_state(throttle=True)

    def save_state(self, *, throttle: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if throttle and now - self._last_save < SAVE_EVERY:
                return
            self._last_save = now
        self._write_state()

    def _write_state(self) -> None:
        r = self.item.remote
        with self._lock:
            state = {"etag": r.etag, "size": r.size, "chunk": self.chunk, "kind": self.kind, "done": {str(k): v for k, v in self.done.items()},
                     "progress": {str(k): v for k, v in self.progress.items()}}
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


class Downloads:
    """One batch of downloads on a transfer's pool (see transfer.S3Transfer)."""

    def __init__(self, client: Any, settings: TransferSettings, parts: ThreadPoolExecutor) -> None:
        self.client, self.settings, self._parts = client, settings, parts

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


def download_items(client: Any, bucket: str, objects: Iterable[tuple[str, str]], root: Path) -> list[DownloadItem]:
    """DownloadItems for (key, relative path) pairs under `root`, with what the store knows of each."""
    items = []
    for key, rel in objects:
        remote = head_object(client, bucket, key, want_part_size=True)
        if remote is None:
            raise FileNotFoundError(f"s3://{bucket}/{key}")
        items.append(DownloadItem(bucket, remote, root / rel, rel))
    return items
