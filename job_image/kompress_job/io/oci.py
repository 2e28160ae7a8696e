"""An oci:// output: the checkpoint as an OCI image in KServe's modelcar layout, over the registry's HTTP API.

Owns: oci://REGISTRY/REPOSITORY:TAG references; the OCI distribution spec's HTTP API as a client (Basic auth, or
a Bearer token from the registry's token service as its WWW-Authenticate challenge names it; blobs checked,
uploaded in one request or in chunks, committed by digest; manifests by tag and by digest; blobs read back by
digest and checked); the image's layout: a base layer holding a static busybox (the `sh`, `ln` and `sleep` that
KServe's modelcar container runs) and an empty /models, then one uncompressed layer per file under /models,
made as the file is streamed (never written to disk as a tar) and byte-identical for an identical file at the
same path, so a registry stores it once across images; the image config and the manifest, which annotates each
layer with its file's path and SHA-256 and the image with kompress.json's SHA-256.
Order: every blob first (the registry is asked, and one it has is not sent again), then the config, then the
manifest by tag: an interrupted push leaves no tag, and a retry sends only the blobs still missing.
Must not: log, return or put in a message any credential; decide what is published (stages/publish.py does).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import requests

from kompress_api.v1alpha1 import OCI_OUTPUT_URI_RE, Output, PublishedDestination
from kompress_api.worker_protocol import ENV_OCI_BUSYBOX, ENV_OUTPUT_OCI_AUTH, OCI_BUSYBOX

from kompress_job.io.credentials import RegistryLogin, registry_login
from kompress_job.errors import AccessDenied, InvalidSpec, KompressError, StorageUnreachable

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX))
DOCKER_HUB_API = "registry-1.docker.io"
MODELS_DIR = "models"
# Annotations: on each layer, the file it holds (relative to /models) and that file's own SHA-256; on the manifest,
# the SHA-256 of kompress.json (also a file of the image), so a reader can check the manifest file without the layers.
ANNOTATION_PATH = "dev.kompress.path"
ANNOTATION_SHA256 = "dev.kompress.sha256"
ANNOTATION_MANIFEST = "dev.kompress.manifest.sha256"
ANNOTATION_BASE = "dev.kompress.base"
# busybox applets the base layer links: KServe's modelcar runs `sh -c 'ln -sf /proc/$$/root/models /mnt/ && sleep infinity'`.
APPLETS = ("sh", "ln", "sleep", "ls", "cat", "echo", "true")
# A blob of at most this many bytes is sent from memory (retried as is); larger ones are streamed from their file.
SMALL_BLOB = 8 << 20
# $KOMPRESS_OCI_CHUNK_MIB: upload blobs in PATCHes of this many MiB instead of one streamed PUT (registries behind a
# proxy that caps a request's size).
ENV_CHUNK_MIB = "KOMPRESS_OCI_CHUNK_MIB"
BLOCK = 8 << 20
# ELF e_machine -> OCI architecture, for the busybox (the only code in the image).
_ELF_ARCH = {0x3E: "amd64", 0xB7: "arm64", 0x28: "arm", 0xF3: "riscv64", 0x15: "ppc64le", 0x16: "s390x"}

ByteCallback = Callable[[int, int], None]
_log = logging.getLogger("kompress.publish.oci")


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OciReference:
    registry: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def uri(self) -> str:
        return f"oci://{self.registry}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")

    def at(self, digest: str) -> "OciReference":
        return OciReference(self.registry, self.repository, self.tag, digest)


def parse_reference(uri: str) -> OciReference:
    """oci://REGISTRY/REPOSITORY:TAG (what spec.output.uri takes) or oci://REGISTRY/REPOSITORY@sha256:HEX (what a
    published image is named by); InvalidSpec, naming the field, otherwise."""
    at = re.match(r"^oci://([^/]+)/([^@:]+(?:/[^@:]+)*)@(sha256:[0-9a-f]{64})$", uri)
    if at and re.match(OCI_OUTPUT_URI_RE, f"oci://{at.group(1)}/{at.group(2)}:latest"):
        return OciReference(at.group(1), at.group(2), digest=at.group(3))
    if not re.match(OCI_OUTPUT_URI_RE, uri):
        from kompress_api.v1alpha1 import OCI_OUTPUT_URI_MESSAGE

        raise InvalidSpec(f"{OCI_OUTPUT_URI_MESSAGE}; got {uri}")
    rest = uri[len("oci://"):]
    registry, _, path = rest.partition("/")
    repository, _, tag = path.rpartition(":")
    return OciReference(registry, repository, tag=tag)


# ---------------------------------------------------------------------------------------------
# The registry's HTTP API
# ---------------------------------------------------------------------------------------------


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="..."` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', rest)}
    return scheme.lower(), params


class RegistryError(KompressError):
    """A registry answer the client cannot go on from (mapped to AccessDenied/StorageUnreachable where they apply)."""


class RegistryClient:
    """The distribution spec's client side for one repository. Thread-safe (a session per thread)."""

    def __init__(self, ref: OciReference, login: RegistryLogin | None, *, insecure: bool = False, timeout: float = 60.0,
                 retries: int = 4, where: str = "spec.output.oci.credentialsSecret") -> None:
        self.ref = ref
        self.login = login
        # Docker Hub's names for itself in references are not where its API answers.
        host = DOCKER_HUB_API if ref.registry in ("docker.io", "index.docker.io") else ref.registry
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.timeout = timeout
        self.retries = retries
        self.where = where
        self._local = threading.local()
        self._lock = threading.Lock()
        self._authorization: str | None = None  # the header value that worked last (Basic or Bearer)

    # -- plumbing -------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = "kompress"
        return session

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else urljoin(self.base + "/", path.lstrip("/"))

    def _basic(self) -> str | None:
        if self.login is None or not self.login.username or not self.login.password:
            return None
        import base64

        return "Basic " + base64.b64encode(f"{self.login.username}:{self.login.password}".encode()).decode()

    def _token(self, params: dict[str, str]) -> str:
        """A Bearer token from the registry's token service for push and pull on the repository."""
        if self.login is not None and self.login.registry_token:
            return self.login.registry_token
        realm = params.get("realm")
        if not realm:
            raise AccessDenied(f"the registry {self.ref.registry} asked for a Bearer token but named no token service (realm)")
        scope = f"repository:{self.ref.repository}:pull,push"
        query = {"scope": scope, **({"service": params["service"]} if params.get("service") else {})}
        session = self._session()
        try:
            if self.login is not None and self.login.identity_token:
                # docker's OAuth2 refresh-token grant (what `docker login` leaves as identitytoken).
                form = {"grant_type": "refresh_token", "refresh_token": self.login.identity_token, "client_id": "kompress", **query}
                response = session.post(realm, data=form, timeout=self.timeout)
            else:
                basic = self._basic()
                response = session.get(realm, params=query, headers={"Authorization": basic} if basic else {}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise StorageUnreachable(f"the token service of {self.ref.registry} did not answer: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise AccessDenied(self._refused("its token service refused the credentials"))
        if response.status_code >= 400:
            raise StorageUnreachable(f"the token service of {self.ref.registry} answered HTTP {response.status_code}")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise AccessDenied(f"the token service of {self.ref.registry} gave no token")
        return token

    def _refused(self, what: str) -> str:
        if self.login is None:
            return f"the registry {self.ref.registry} wants credentials for {self.ref.repository} ({what}): set {self.where} to a Secret of type kubernetes.io/dockerconfigjson"
        return f"the registry {self.ref.registry} refused the credentials in {self.where} for {self.ref.repository} ({what}); check the user, password or token and its push rights"

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), headers: Mapping[str, str] | None = None,
                data: Any = None, stream: bool = False, allow: tuple[int, ...] = ()) -> requests.Response:
        """One API call, authenticated as the registry's challenge asks, retried on connection errors and 5xx (bodies
        that are bytes only). A status in `allow` is returned as is (404 for "not there"); any other not in `ok` raises."""
        url = self._url(path)
        attempt = 0
        challenged = False
        while True:
            send = dict(headers or {})
            with self._lock:
                authorization = self._authorization
            if authorization:
                send["Authorization"] = authorization
            try:
                response = self._session().request(method, url, headers=send, data=data, stream=stream, timeout=self.timeout, allow_redirects=method in ("GET", "HEAD"))
            except requests.RequestException as exc:
                if attempt < self.retries and (data is None or isinstance(data, bytes)):
                    attempt += 1
                    time.sleep(min(8.0, 0.5 * 2 ** attempt))
                    continue
                raise StorageUnreachable(f"the registry {self.ref.registry} did not answer {method} {_path_only(url)}: {type(exc).__name__}") from None
            if response.status_code == 401 and not challenged:
                challenged = True
                scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
                response.close()
                if scheme == "basic":
                    basic = self._basic()
                    if basic is None:
                        raise AccessDenied(self._refused("it wants a user and password"))
                    new = basic
                elif scheme == "bearer":
                    new = "Bearer " + self._token(params)
                else:
                    raise AccessDenied(self._refused(f"it asked for {scheme or 'an unknown'} authentication"))
                with self._lock:
                    self._authorization = new
                if hasattr(data, "seek"):
                    data.seek(0)
                continue
            if response.status_code in ok or response.status_code in allow:
                return response
            if response.status_code >= 500 and attempt < self.retries and (data is None or isinstance(data, bytes)):
                attempt += 1
                response.close()
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
                continue
            raise self._error(method, url, response)

    def _error(self, method: str, url: str, response: requests.Response) -> KompressError:
        try:
            codes = ", ".join(f"{e.get('code')}: {e.get('message')}" for e in response.json().get("errors", []))
        except ValueError:
            codes = ""
        what = f"{method} {_path_only(url)}: HTTP {response.status_code}" + (f" ({codes})" if codes else "")
        if response.status_code == 401:
            return AccessDenied(self._refused(what))
        if response.status_code == 403:
            return AccessDenied(f"the registry {self.ref.registry} does not let these credentials push to {self.ref.repository} ({what})")
        if response.status_code == 404 and "NAME_UNKNOWN" in codes:
            return AccessDenied(f"the repository {self.ref.repository} does not exist on {self.ref.registry} and this registry does not create it on push ({what}); create it first")
        if response.status_code >= 500 or response.status_code == 429:
            return StorageUnreachable(f"the registry {self.ref.registry} failed {what}")
        return RegistryError(f"the registry {self.ref.registry} refused {what}")

    # -- the API ------------------------------------------------------------------------------------

    @property
    def _repo(self) -> str:
        return f"/v2/{self.ref.repository}"

    def ping(self) -> None:
        self.request("GET", "/v2/")

    def has_blob(self, digest: str) -> bool:
        return self.request("HEAD", f"{self._repo}/blobs/{digest}", allow=(404,)).status_code == 200

    def start_upload(self) -> str:
        response = self.request("POST", f"{self._repo}/blobs/uploads/", ok=(202,))
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"the registry {self.ref.registry} started an upload but gave no Location")
        return self._url(location)

    def cancel_upload(self, location: str) -> None:
        try:
            self.request("DELETE", location, ok=(204,), allow=(404, 405, 400))
        except KompressError:
            pass  # housekeeping: the registry purges abandoned uploads itself

    def push_blob(self, digest: str, size: int, chunks: Callable[[], Iterator[bytes]], *, on_bytes: Callable[[int], None] | None = None,
                  chunk_bytes: int | None = None) -> None:
        """Upload the blob `chunks()` yields (`size` bytes with sha256 `digest`), as the distribution spec's monolithic
        upload (POST, then one PUT streaming the body, its length known); with `chunk_bytes`, in PATCHes of that size
        and a closing PUT, for registries that cap a request's size. The registry checks the digest before it stores
        the blob. A connection lost midway starts the blob again (the registry keeps nothing of a broken upload)."""
        attempt = 0
        while True:
            try:
                return self._push_blob_once(digest, size, chunks, on_bytes=on_bytes, chunk_bytes=chunk_bytes)
            except StorageUnreachable:
                if attempt >= self.retries:
                    raise
                attempt += 1
                time.sleep(min(8.0, 0.5 * 2 ** attempt))

    def _push_blob_once(self, digest: str, size: int, chunks: Callable[[], Iterator[bytes]], *, on_bytes: Callable[[int], None] | None,
                        chunk_bytes: int | None) -> None:
        location = self.start_upload()
        body = _Body(chunks, size, on_bytes)
        try:
            if chunk_bytes is None or size <= chunk_bytes:
                response = self.request("PUT", _with_query(location, digest=digest), ok=(201,), data=body if size > SMALL_BLOB else body.read_all(),
                                        headers={"Content-Type": "application/octet-stream"})
            else:
                offset = 0
                for chunk in _rechunk(chunks(), chunk_bytes):
                    response = self.request("PATCH", location, ok=(202,), data=chunk, headers={
                        "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
                    location = self._url(response.headers.get("Location") or location)
                    offset += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                response = self.request("PUT", _with_query(location, digest=digest), ok=(201,), data=b"")
        except BaseException:
            body.rewind_count()
            self.cancel_upload(location)
            raise
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise RegistryError(f"the registry {self.ref.registry} stored {stored} for the blob {digest}")

    def put_manifest(self, reference: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        response = self.request("PUT", f"{self._repo}/manifests/{reference}", ok=(201,), data=body, headers={"Content-Type": media_type})
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise RegistryError(f"the registry {self.ref.registry} stored the manifest as {stored}, not {digest}")
        return digest

    def manifest_digest(self, reference: str) -> str | None:
        """The digest `reference` (a tag) points to; None when there is no such tag."""
        response = self.request("HEAD", f"{self._repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}, allow=(404,))
        if response.status_code == 404:
            return None
        return response.headers.get("Docker-Content-Digest") or self.get_manifest(reference)[1]

    def get_manifest(self, reference: str) -> tuple[dict[str, Any], str]:
        """(manifest, digest) of a tag or digest; the bytes are checked against a digest reference."""
        response = self.request("GET", f"{self._repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"the registry {self.ref.registry} sent a manifest whose digest is {digest}, not {reference}")
        return json.loads(body), digest

    def blob_chunks(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes, streamed; KompressError at the end if they do not hash to `digest`."""
        response = self.request("GET", f"{self._repo}/blobs/{digest}", stream=True)
        h = hashlib.sha256()
        with response:
            for chunk in response.iter_content(BLOCK):
                h.update(chunk)
                yield chunk
        if "sha256:" + h.hexdigest() != digest:
            raise RegistryError(f"the blob {digest} from {self.ref.registry} does not hash to its digest")


def _path_only(url: str) -> str:
    """A URL without its query (upload URLs carry state tokens in theirs) and without the scheme and host."""
    return re.sub(r"^https?://[^/]+", "", url.split("?", 1)[0])


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


class _Body(io.RawIOBase):
    """A blob's bytes as a file of known length, read as the HTTP client sends them (never whole in memory); it rewinds
    (to resend after an auth challenge) by starting `chunks()` again. Counts bytes read into `on_bytes`."""

    def __init__(self, chunks: Callable[[], Iterator[bytes]], size: int, on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._factory, self._size, self._on_bytes = chunks, size, on_bytes
        self._read = 0
        self._start()

    def _start(self) -> None:
        self._pieces = iter(self._factory())
        self._buffer = memoryview(b"")

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._read

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (offset, whence) != (0, io.SEEK_SET):
            raise io.UnsupportedOperation("a blob body only rewinds")
        self.rewind_count()
        self._start()
        return 0

    def rewind_count(self) -> None:
        """Take back the bytes counted so far: they will be sent again, or not at all."""
        if self._on_bytes and self._read:
            self._on_bytes(-self._read)
        self._read = 0

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = memoryview(next(self._pieces))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self._read += n
        if self._on_bytes:
            self._on_bytes(n)
        return n

    def read_all(self) -> bytes:
        data = b"".join(self._factory())
        if self._on_bytes:
            self._on_bytes(len(data))
        self._read = len(data)
        return data


def _rechunk(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


# ---------------------------------------------------------------------------------------------
# Layers: tar streams made as the files are read
# ---------------------------------------------------------------------------------------------


def _tar_header(name: str, *, size: int = 0, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> bytes:
    """One deterministic tar header (PAX where a name or a size needs it): root-owned, mtime 0."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime, info.linkname = size, kind, mode, 0, link
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


_END = b"\0" * (2 * tarfile.BLOCKSIZE)


def _parent_dirs(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


@dataclass
class FileLayer:
    """A layer holding one file at /models/NAME; `source` is a path or the bytes themselves."""

    name: str  # relative to /models, / separated
    source: Path | bytes
    size: int = 0
    sha256: str = ""  # the file's own
    digest: str = ""  # the layer's (sha256:HEX)
    layer_size: int = 0
    skipped: bool = False  # the registry already had it
    _head: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.size = len(self.source) if isinstance(self.source, bytes) else Path(self.source).stat().st_size
        path = f"{MODELS_DIR}/{self.name}"
        self._head = b"".join(_tar_header(d, kind=tarfile.DIRTYPE, mode=0o755) for d in _parent_dirs(path)) + _tar_header(path, size=self.size)
        self.layer_size = len(self._head) + self.size + len(_padding(self.size)) + len(_END)

    def file_chunks(self) -> Iterator[bytes]:
        if isinstance(self.source, bytes):
            yield self.source
            return
        with open(self.source, "rb") as f:
            while block := f.read(BLOCK):
                yield block

    def chunks(self) -> Iterator[bytes]:
        yield self._head
        n = 0
        for block in self.file_chunks():
            n += len(block)
            yield block
        if n != self.size:
            raise KompressError(f"{self.name} changed size while it was published ({self.size} then {n} bytes)")
        yield _padding(self.size) + _END

    def hash(self) -> None:
        """The file's SHA-256 and the layer's digest, in one read."""
        whole, layer = hashlib.sha256(), hashlib.sha256(self._head)
        for block in self.file_chunks():
            whole.update(block)
            layer.update(block)
        layer.update(_padding(self.size) + _END)
        self.sha256, self.digest = whole.hexdigest(), "sha256:" + layer.hexdigest()

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": OCI_LAYER, "digest": self.digest, "size": self.layer_size,
                "annotations": {ANNOTATION_PATH: self.name, ANNOTATION_SHA256: self.sha256}}


def busybox_path(env: Mapping[str, str]) -> Path:
    path = Path(env.get(ENV_OCI_BUSYBOX) or OCI_BUSYBOX)
    if not path.is_file():
        raise KompressError(
            f"an oci:// output needs a static busybox for the image's base layer (KServe's modelcar runs sh, ln and sleep in it), "
            f"and there is none at {path}: install the package busybox-static (the worker image has it) or set ${ENV_OCI_BUSYBOX}"
        )
    return path


def elf_architecture(path: Path) -> str:
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise KompressError(f"{path} is not an ELF binary: the base layer needs a static busybox")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    if machine not in _ELF_ARCH:
        raise KompressError(f"{path} is built for ELF machine {machine:#x}, which has no OCI architecture name here")
    return _ELF_ARCH[machine]


def base_layer(busybox: Path) -> bytes:
    """bin/busybox with its applets linked, an empty models/ and tmp/: the same bytes for the same busybox."""
    data = busybox.read_bytes()
    out = io.BytesIO()
    out.write(_tar_header("bin/", kind=tarfile.DIRTYPE, mode=0o755))
    out.write(_tar_header("bin/busybox", size=len(data), mode=0o755) + data + _padding(len(data)))
    for applet in APPLETS:
        out.write(_tar_header(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox"))
    notice = next((p for p in (busybox.parent / "copyright", Path("/usr/share/doc/busybox-static/copyright")) if p.is_file()), None)
    if notice is not None:
        text = notice.read_bytes()
        for d in ("usr/", "usr/share/", "usr/share/doc/", "usr/share/doc/busybox/"):
            out.write(_tar_header(d, kind=tarfile.DIRTYPE, mode=0o755))
        out.write(_tar_header("usr/share/doc/busybox/copyright", size=len(text)) + text + _padding(len(text)))
    out.write(_tar_header(f"{MODELS_DIR}/", kind=tarfile.DIRTYPE, mode=0o755))
    out.write(_tar_header("tmp/", kind=tarfile.DIRTYPE, mode=0o1777))
    out.write(_END)
    return out.getvalue()


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
        self.base = {"mediaType": OCI_LAYER, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data), "annotations": {ANNOTATION_BASE: "busybox"}}
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
        descriptors = [self.base, *(layer.descriptor() for layer in self.layers)]
        doc = {
            "architecture": self.architecture,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "WorkingDir": f"/{MODELS_DIR}"},
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},  # uncompressed: diff id = digest
            "history": [{"created_by": "kompress: busybox (sh, ln, sleep) and /models"},
                        *({"created_by": f"kompress: /{MODELS_DIR}/{layer.name}"} for layer in self.layers)],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    def push_manifest(self, tag: str, annotations: Mapping[str, str] | None = None) -> PushedImage:
        config = self.config()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self._push(config_digest, len(config), lambda: iter([config]), "the image config")
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [self.base, *(layer.descriptor() for layer in self.layers)],
            **({"annotations": dict(annotations)} if annotations else {}),
        }
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        digest = self.client.put_manifest(tag, body)
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
        _extract_models(client.blob_chunks(layer["digest"]), folder)
    return manifest


def _extract_models(chunks: Iterator[bytes], folder: Path) -> None:
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
