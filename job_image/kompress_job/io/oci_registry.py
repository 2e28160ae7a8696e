"""An oci:// registry's HTTP API (the OCI distribution spec), as a client for one repository.

Owns: oci://REGISTRY/REPOSITORY:TAG and oci://REGISTRY/REPOSITORY@sha256:HEX references; the API calls: blobs
checked, uploaded in one request or in chunks, committed by digest; manifests by tag and by digest; blobs read back by
digest and checked; retries on connection errors and 5xx; the registry's answers mapped to AccessDenied,
StorageUnreachable or RegistryError. Authentication is kompress_job.io.oci_auth's (Basic, or a Bearer token from the
registry's token service as its WWW-Authenticate challenge names it).
Must not: log, return or put in a message any credential or an upload URL's query (it carries state tokens); know
what an image holds (kompress_job.io.oci_layout) or the order of a push (kompress_job.io.oci).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin

import requests

from kompress_api.v1alpha1 import OCI_OUTPUT_URI_RE

from kompress_job.errors import AccessDenied, InvalidSpec, KompressError, StorageUnreachable
from kompress_job.io.credentials import RegistryLogin
from kompress_job.io.oci_auth import RegistryAuth
from kompress_job.io.oci_layout import BLOCK, OCI_MANIFEST

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX))
DOCKER_HUB_API = "registry-1.docker.io"
# A blob of at most this many bytes is sent from memory (retried as is); larger ones are streamed from their file.
SMALL_BLOB = 8 << 20


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
        self.auth = RegistryAuth(ref.registry, ref.repository, login, where=where, timeout=timeout)
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
                if attempt < self.retries and _resendable(data):
                    attempt += 1
                    _back_off(attempt)
                    continue
                raise StorageUnreachable(f"the registry {self.ref.registry} did not answer {method} {_path_only(url)}: {type(exc).__name__}") from None
            if response.status_code == 401 and not challenged:
                # Once per call: a second 401 means the credentials themselves were refused (_error says so).
                challenged = True
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                answer = self.auth.authorization(challenge, self._session())
                with self._lock:
                    self._authorization = answer
                if hasattr(data, "seek"):
                    data.seek(0)
                continue
            if response.status_code in ok or response.status_code in allow:
                return response
            if response.status_code >= 500 and attempt < self.retries and _resendable(data):
                attempt += 1
                response.close()
                _back_off(attempt)
                continue
            raise self._error(method, url, response)

    def _error(self, method: str, url: str, response: requests.Response) -> KompressError:
        try:
            codes = ", ".join(f"{e.get('code')}: {e.get('message')}" for e in response.json().get("errors", []))
        except ValueError:
            codes = ""
        what = f"{method} {_path_only(url)}: HTTP {response.status_code}" + (f" ({codes})" if codes else "")
        if response.status_code == 401:
            return AccessDenied(self.auth.refused(what))
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
                _back_off(attempt)

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


def _resendable(data: Any) -> bool:
    """Whether a call can be sent again as is: no body, or one in memory (a streamed body is retried whole by push_blob)."""
    return data is None or isinstance(data, bytes)


def _back_off(attempt: int) -> None:
    time.sleep(min(8.0, 0.5 * 2 ** attempt))


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


