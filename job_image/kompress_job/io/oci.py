"""An oci:// output: the checkpoint pushed as an OCI image in KServe's modelcar layout, and such an image read back.

Owns: the order of a push: every blob first (the registry is asked, and one it has is not sent again), then the
config, then the manifest by tag: an interrupted push leaves no tag, and a retry sends only the blobs still missing;
pulling an image's /models files (each blob checked against its digest); the publish destination of an oci:// output
(OciDestination) with the client and login of spec.output.
The image's bytes are kompress_job.io.oci_layout's, the registry's HTTP API and its auth kompress_job.io.oci_registry's
and kompress_job.io.oci_auth's.
Must not: log, return or put in a message any credential; decide what is published (stages/publish.py does).
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import Output, PublishedDestination
from kompress_api.worker_protocol import ENV_OUTPUT_OCI_AUTH

from kompress_job.errors import AccessDenied, KompressError
from kompress_job.io.credentials import registry_login
from kompress_job.io.oci_layout import (
    ANNOTATION_MANIFEST, ANNOTATION_PATH, BLOCK, MODELS_DIR, FileLayer, base_descriptor, base_layer, busybox_path, elf_architecture,
    image_config, image_manifest, manifest_bytes,
)
from kompress_job.io.oci_registry import OciReference, RegistryClient, RegistryError, parse_reference

# $KOMPRESS_OCI_CHUNK_MIB: upload blobs in PATCHes of this many MiB instead of one streamed PUT (registries behind a
# proxy that caps a request's size).
ENV_CHUNK_MIB = "KOMPRESS_OCI_CHUNK_MIB"

ByteCallback = Callable[[int, int], None]
_log = logging.getLogger("kompress.publish.oci")


# ---------------------------------------------------------------------------------------------
# Push and pull
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushedImage:
    reference: OciReference  # with the tag and the digest
    digest: str
    config_digest: str
    layers: int
    bytes_sent: int


class ImagePusher:
    """Builds and pushes one image: `add(...)` files as layers (each blob goes up at once unless the registry has
    it), then `push_manifest()` (config, then the manifest by tag). Nothing is tagged before the last call."""

    def __init__(self, client: RegistryClient, busybox: Path, *, workers: int = 4, chunk_bytes: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.workers = workers
        self.chunk_bytes = chunk_bytes
        self.log = log or (lambda message: None)
        self.architecture = elf_architecture(busybox)
        data = base_layer(busybox)
        self.base = base_descriptor(data)
        self._base_data = data
        self.layers: list[FileLayer] = []
        self.sent = 0
        self._lock = threading.Lock()

    def push_base(self) -> None:
        self._push(self.base["digest"], len(self._base_data), lambda: iter([self._base_data]), "the base layer (busybox)")

    def _push(self, digest: str, size: int, chunks: Callable[[], Iterator[bytes]], what: str, on_bytes: Callable[[int], None] | None = None) -> bool:
        if self.client.has_blob(digest):
            self.log(f"oci: {what} is already in the registry ({digest})")
            return False
        self.client.push_blob(digest, size, chunks, on_bytes=on_bytes, chunk_bytes=self.chunk_bytes)
        with self._lock:
            self.sent += size
        self.log(f"oci: pushed {what} ({size} bytes, {digest})")
        return True

    def add(self, files: list[FileLayer], *, on_bytes: ByteCallback | None = None) -> list[FileLayer]:
        """Hash and push each file's layer (in parallel); they are appended to the image in the order given."""
        from kompress_job.io.s3objects import Meter

        meter = Meter(sum(f.size for f in files), on_bytes)

        def one(layer: FileLayer) -> FileLayer:
            layer.hash()
            pushed = self._push(layer.digest, layer.layer_size, layer.chunks, f"/{MODELS_DIR}/{layer.name}", on_bytes=lambda n: meter.add(n * layer.size // max(1, layer.layer_size)))
            layer.skipped = not pushed
            if not pushed:
                meter.add(layer.size)
            return layer

        with ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="oci-push") as pool:
            done = list(pool.map(one, files))
        meter.flush()
        self.layers.extend(done)
        return done

    def config(self) -> bytes:
        return image_config(self.architecture, self.base, self.layers)

    def push_manifest(self, tag: str, annotations: Mapping[str, str] | None = None) -> PushedImage:
        config = self.config()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self._push(config_digest, len(config), lambda: iter([config]), "the image config")
        manifest = image_manifest(config, self.base, self.layers, annotations)
        digest = self.client.put_manifest(tag, manifest_bytes(manifest))
        self.log(f"oci: tagged {tag} as {digest}")
        return PushedImage(self.client.ref.at(digest), digest, config_digest, len(manifest["layers"]), self.sent)


def read_layer_files(chunks: Iterator[bytes]) -> dict[str, bytes]:
    """The regular files of an uncompressed tar layer, by path (small layers only: the whole layer is in memory)."""
    data = b"".join(chunks)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return out


def pull(client: RegistryClient, reference: str, folder: Path) -> dict[str, Any]:
    """Every file of the image at `reference` (a digest, or a tag) under /models, written into `folder` as they come
    (each layer's blob checked against its digest); returns the manifest."""
    manifest, _ = client.get_manifest(reference)
    for layer in manifest["layers"]:
        if ANNOTATION_PATH not in (layer.get("annotations") or {}):
            continue
        extract_models(client.blob_chunks(layer["digest"]), folder)
    return manifest


def extract_models(chunks: Iterator[bytes], folder: Path) -> None:
    """The files under /models of the uncompressed tar layer `chunks`, written into `folder` as the layer streams."""
    stream = _ChunkReader(chunks)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or not member.name.startswith(f"{MODELS_DIR}/"):
                continue
            target = folder / member.name[len(MODELS_DIR) + 1:]
            if ".." in Path(member.name).parts:
                raise RegistryError(f"a layer holds a path outside /models: {member.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            with open(target, "wb") as out:
                while block := source.read(BLOCK):  # type: ignore[union-attr]
                    out.write(block)


class _ChunkReader(io.RawIOBase):
    """An iterator of byte chunks as a readable stream, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


# ---------------------------------------------------------------------------------------------
# The destination stages/publish.py writes to
# ---------------------------------------------------------------------------------------------


def client_for(output: Output, env: Mapping[str, str], uri: str | None = None, *, quick: bool = False) -> RegistryClient:
    """A client for the repository of `uri` (default spec.output.uri), with the login of the mounted Secret."""
    ref = parse_reference(uri or output.uri)
    settings = output.oci
    secret = settings.credentials_secret if settings is not None else None
    login = None
    auth_file = env.get(ENV_OUTPUT_OCI_AUTH)
    if auth_file:
        # In a pod: the mounted Secret. On a laptop (`kompress run`) any dockerconfigjson, e.g. ~/.docker/config.json.
        login = registry_login(Path(auth_file), ref.registry, where=f"Secret {secret}" if secret else f"${ENV_OUTPUT_OCI_AUTH}")
        if login is None and secret:
            raise AccessDenied(f"the Secret {secret} (spec.output.oci.credentialsSecret) has no credentials for the registry {ref.registry}")
    elif secret:
        raise AccessDenied(f"spec.output.oci.credentialsSecret is set but the worker has no ${ENV_OUTPUT_OCI_AUTH} (the operator mounts the Secret and sets it)")
    where = "spec.output.oci.credentialsSecret" if secret or not auth_file else f"${ENV_OUTPUT_OCI_AUTH}"
    return RegistryClient(ref, login, insecure=bool(settings and settings.insecure), timeout=15.0 if quick else 120.0,
                          retries=1 if quick else 4, where=where)


class OciDestination:
    """spec.output.uri oci://REGISTRY/REPOSITORY:TAG as a publish destination (kompress_job.io.storage.Destination).

    upload() and put_text() push layers (blobs only); finish() pushes the config and the manifest by tag. A tag that
    exists already counts as a finished model (OutputExists unless spec.output.overwrite); overwriting moves the tag,
    and the image it pointed to stays in the registry by its digest."""

    def __init__(self, output: Output, env: Mapping[str, str], uri: str | None = None, *, quick: bool = False, workers: int = 4,
                 chunk_bytes: int | None = None, log: Callable[[str], None] | None = None) -> None:
        self.output = output
        self.env = env
        self.client = client_for(output, env, uri, quick=quick)
        self.ref = self.client.ref
        self.uri = self.ref.uri
        self.workers = workers
        mib = env.get(ENV_CHUNK_MIB, "")
        self.chunk_bytes = chunk_bytes or (int(mib) << 20 if mib.isdigit() and int(mib) > 0 else None)
        self.log = log or _log.info
        self._pusher: ImagePusher | None = None
        self._annotations: dict[str, str] = {}
        self.pushed: PushedImage | None = None

    def uri_of(self, name: str) -> str:
        ref = self.pushed.reference.uri if self.pushed else self.uri
        return f"{ref}#/{MODELS_DIR}/{name}"

    def check_writable(self) -> None:
        """Seconds, not hours: the registry answers, takes the credentials, and lets them start an upload here."""
        self.client.ping()
        location = self.client.start_upload()
        self.client.cancel_upload(location)

    def read_text(self, name: str) -> str | None:
        """`name` from the image the tag points to; None without the tag. An image at the tag that has no such file (not
        made by Kompress) reads as "{}": the tag is taken all the same."""
        digest = self.client.manifest_digest(self.ref.tag or "")
        if digest is None:
            return None
        manifest, _ = self.client.get_manifest(digest)
        for layer in manifest.get("layers", []):
            if (layer.get("annotations") or {}).get(ANNOTATION_PATH) == name:
                files = read_layer_files(self.client.blob_chunks(layer["digest"]))
                return files.get(f"{MODELS_DIR}/{name}", b"{}").decode()
        return "{}"

    def _image(self) -> ImagePusher:
        if self._pusher is None:
            self._pusher = ImagePusher(self.client, busybox_path(self.env), workers=self.workers, chunk_bytes=self.chunk_bytes, log=self.log)
            self._pusher.push_base()
        return self._pusher

    def upload(self, files: list[tuple[Path, str]], *, on_bytes: ByteCallback | None = None) -> list[Any]:
        from kompress_job.io.storage import StoredFile

        layers = self._image().add([FileLayer(name, path) for path, name in files], on_bytes=on_bytes)
        return [StoredFile(l.name, l.size, l.sha256, None, l.skipped, 0 if l.skipped else l.size, layer_digest=l.digest) for l in layers]

    def put_text(self, name: str, text: str) -> Any:
        from kompress_job.io.storage import MANIFEST, StoredFile

        [layer] = self._image().add([FileLayer(name, text.encode())])
        if name == MANIFEST:
            self._annotations[ANNOTATION_MANIFEST] = layer.sha256
        return StoredFile(name, layer.size, layer.sha256, None, layer.skipped, layer.size, layer_digest=layer.digest)

    def delete(self, names: list[str]) -> None:
        """Nothing to delete: the new image holds only its own files, and the tag moves to it last."""

    def finish(self) -> None:
        self.pushed = self._image().push_manifest(self.ref.tag or "latest", self._annotations)

    def published(self) -> PublishedDestination:
        if self.pushed is None:
            raise KompressError(f"the image {self.uri} was not pushed: publish did not finish")
        return PublishedDestination(kind="oci", reference=self.pushed.reference.uri, digest=self.pushed.digest, tag=self.ref.tag)
