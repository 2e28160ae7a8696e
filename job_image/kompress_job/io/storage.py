"""Where a compressed model is published: an S3 prefix, a local folder, a Hub repository (kompress_job.io.hub_destination)
or an OCI image (kompress_job.io.oci), with one behaviour for all.

Owns: the destination of spec.output.uri (and its `.rejected` sibling for models that missed the
quality gate), checking early that it can be written, reading and deleting the manifest, uploading
files (skipping those already there with the same content) and reporting each file's size and
SHA-256. Files land whole: S3 completes an object atomically; a folder gets a rename; the Hub commits them all at once
in finish().
Must not: decide what is uploaded or in which order (stages/publish.py does: the manifest last).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kompress_api.v1alpha1 import Output, PublishedDestination

from kompress_job.io.checksums import file_digests
from kompress_job.errors import AccessDenied
from kompress_job.io.s3client import S3Location, make_client, parse_s3_uri, raise_storage_error
from kompress_job.io.sources import local_path
from kompress_job.io.s3objects import head_object, TransferSettings
from kompress_job.io.transfer import S3Transfer
from kompress_job.io.upload import abort_stale_uploads, UploadItem

MANIFEST = "kompress.json"
MODEL_CARD = "README.md"
# The OpenSSF model signing signature of every other published file (spec.output.signing), beside them.
SIGNATURE = "model.sig"
REJECTED_SUFFIX = ".rejected"

ByteCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class StoredFile:
    name: str  # path relative to the destination, / separated
    size: int
    sha256: str
    s3_checksum: str | None = None  # the store's own checksum (S3 SHA-256, composite for multipart)
    skipped: bool = False  # already there with the same content
    sent: int = 0  # bytes that went over the wire (less than size when an interrupted upload was resumed)
    layer_digest: str | None = None  # oci: the digest of the image layer that holds the file


class Destination(Protocol):
    uri: str

    def uri_of(self, name: str) -> str: ...
    def check_writable(self) -> None: ...
    def read_text(self, name: str) -> str | None: ...
    def upload(self, files: list[tuple[Path, str]], *, on_bytes: ByteCallback | None = None) -> list[StoredFile]: ...
    def put_text(self, name: str, text: str) -> StoredFile: ...
    def delete(self, names: list[str]) -> None: ...
    def finish(self) -> None: ...
    def published(self) -> PublishedDestination: ...


def rejected_uri(uri: str) -> str:
    """The sibling prefix a model that missed the quality gate is published to, never the final one.

    An output at a bucket's root has no sibling: its rejected copy goes to the `kompress.rejected/` folder
    (the root itself then holds no manifest, so it is still not a finished model).
    """
    stripped = uri.rstrip("/")
    if stripped.startswith("s3://") and "/" not in stripped[len("s3://"):]:
        return f"{stripped}/kompress{REJECTED_SUFFIX}"
    return stripped + REJECTED_SUFFIX


def open_destination(output: Output, env: Mapping[str, str], *, uri: str | None = None, quick: bool = False) -> Destination:
    """The destination of `output` (or of `uri`, e.g. its rejected sibling). `quick`: few retries, short timeouts (preflight)."""
    uri = uri or output.uri
    if uri.startswith("hf://"):
        from kompress_job.io.hub_destination import HubDestination

        return HubDestination(output, env, uri, quick=quick, replaceable=uri.rstrip("/") != output.uri.rstrip("/"))
    if uri.startswith("oci://"):
        from kompress_job.io.oci import OciDestination

        return OciDestination(output, env, uri, quick=quick)
    if uri.startswith("s3://"):
        limits = {"max_attempts": 2, "connect_timeout": 5.0, "read_timeout": 30.0} if quick else {}
        client = make_client(output.s3, env, "output", **limits)
        return S3Destination(uri, client, endpoint=output.s3.endpoint if output.s3 else None, settings=TransferSettings.from_env(dict(env)))
    return FolderDestination(uri)


class S3Destination:
    def __init__(self, uri: str, client: Any, *, endpoint: str | None = None, settings: TransferSettings | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.location: S3Location = parse_s3_uri(uri)
        self.client = client
        self.endpoint = endpoint
        self.settings = settings or TransferSettings()

    def uri_of(self, name: str) -> str:
        return f"s3://{self.location.bucket}/{self.location.child(name)}"

    def _fail(self, exc: BaseException) -> None:
        raise_storage_error(exc, what="output", uri=self.uri, endpoint=self.endpoint)

    def check_writable(self) -> None:
        """Seconds, not hours: the bucket exists, the key is accepted, and a probe object can be written."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except (ClientError, BotoCoreError) as exc:
            from kompress_job.io.s3client import storage_error

            mapped = storage_error(exc, what="output", uri=self.uri, endpoint=self.endpoint, bucket_level=True)
            raise (mapped or exc) from None
        probe = self.location.child(f".kompress-write-probe-{uuid.uuid4().hex[:12]}")
        try:
            self.client.put_object(Bucket=self.location.bucket, Key=probe, Body=b"")
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=probe)
        except (ClientError, BotoCoreError):
            pass  # a key that may write but not delete can still publish; the probe is empty

    def read_text(self, name: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if head_object(self.client, self.location.bucket, self.location.child(name)) is None:
                return None
            body = self.client.get_object(Bucket=self.location.bucket, Key=self.location.child(name))["Body"]
            return body.read().decode()
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
            raise

    def upload(self, files: list[tuple[Path, str]], *, on_bytes: ByteCallback | None = None) -> list[StoredFile]:
        from botocore.exceptions import BotoCoreError, ClientError

        items = [UploadItem(path, self.location.bucket, self.location.child(name)) for path, name in files]
        try:
            with S3Transfer(self.client, self.settings) as transfer:
                results = transfer.upload_files(items, on_bytes=on_bytes)
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
            raise
        return [StoredFile(name, r.size, r.sha256, r.s3_checksum, r.skipped, r.bytes_sent) for (_, name), r in zip(files, results)]

    def put_text(self, name: str, text: str) -> StoredFile:
        from botocore.exceptions import BotoCoreError, ClientError

        from kompress_job.io.checksums import b64

        data = text.encode()
        digest = hashlib.sha256(data).digest()
        try:
            self.client.put_object(
                Bucket=self.location.bucket,
                Key=self.location.child(name),
                Body=data,
                ChecksumSHA256=b64(digest),
                ContentType="application/json" if name.endswith(".json") else "text/markdown; charset=utf-8",
            )
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        return StoredFile(name, len(data), digest.hex(), b64(digest), sent=len(data))

    def delete(self, names: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for start in range(0, len(names), 1000):
                batch = [{"Key": self.location.child(n)} for n in names[start : start + 1000]]
                if batch:
                    self.client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)

    def published(self) -> PublishedDestination:
        return PublishedDestination(kind="s3", reference=self.uri)

    def finish(self) -> None:
        """Abort multipart uploads that interrupted runs left open under the prefix (they cost storage)."""
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.location.key}/" if self.location.key else ""
        try:
            abort_stale_uploads(self.client, self.location.bucket, prefix)
        except (ClientError, BotoCoreError):
            pass  # housekeeping only


class FolderDestination:
    """file:///PATH: the same layout as S3, written with temporary names and renamed into place."""

    def __init__(self, uri: str, workers: int = 4) -> None:
        self.uri = uri.rstrip("/")
        self.root = local_path(self.uri)
        self.workers = workers

    def uri_of(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def _denied(self, exc: OSError) -> AccessDenied:
        return AccessDenied(f"cannot write the output folder {self.root}: {exc.strerror or exc}; mount it read-write (spec.output.volume) or pick another path")

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".kompress-write-probe-{uuid.uuid4().hex[:12]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise self._denied(exc) from None

    def read_text(self, name: str) -> str | None:
        path = self.root / name
        return path.read_text() if path.is_file() else None

    def upload(self, files: list[tuple[Path, str]], *, on_bytes: ByteCallback | None = None) -> list[StoredFile]:
        from kompress_job.io.s3objects import Meter

        meter = Meter(sum(p.stat().st_size for p, _ in files), on_bytes)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="copy") as pool:
                results = list(pool.map(lambda pair: self._copy(pair[0], pair[1], meter), files))
        except OSError as exc:
            raise self._denied(exc) from None
        meter.flush()
        return results

    def _copy(self, source: Path, name: str, meter: Any) -> StoredFile:
        target = self.root / name
        size = source.stat().st_size
        if target.is_file() and target.stat().st_size == size:
            mine, theirs = file_digests(source), file_digests(target)
            if mine.sha256 == theirs.sha256:
                meter.add(size)
                return StoredFile(name, size, mine.sha256, None, True)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.kompress-{uuid.uuid4().hex[:8]}.tmp")
        h = hashlib.sha256()
        try:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(8 << 20):
                    h.update(block)
                    dst.write(block)
                    meter.add(len(block))
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredFile(name, size, h.hexdigest(), None, False, size)

    def put_text(self, name: str, text: str) -> StoredFile:
        data = text.encode()
        target = self.root / name
        tmp = target.with_name(f".{target.name}.kompress-{uuid.uuid4().hex[:8]}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._denied(exc) from None
        return StoredFile(name, len(data), hashlib.sha256(data).hexdigest(), sent=len(data))

    def delete(self, names: list[str]) -> None:
        for name in names:
            (self.root / name).unlink(missing_ok=True)

    def published(self) -> PublishedDestination:
        return PublishedDestination(kind="file", reference=self.uri)

    def finish(self) -> None:
        for tmp in self.root.rglob(".*.kompress-*.tmp"):
            tmp.unlink(missing_ok=True)
