"""A local OCI registry: the CNCF distribution registry (built from Go modules, testing/registry/) on a free
loopback port, with htpasswd authentication and a real credential, and the dockerconfigjson a Secret holds.

    with LocalRegistry(tmp_path) as registry:   registry.host ("127.0.0.1:PORT"), registry.docker_config()
    registry.tags("repo"), registry.linked_blobs("repo"), registry.log_text()

Owns: the registry's binary path (`make registry`: .tools/registry-<version>/, the version read from
testing/registry/go.mod), its config (filesystem storage under the work folder, delete enabled, htpasswd),
the user and password (random per registry, with characters that need escaping in JSON, URLs and Basic
auth), starting it, waiting for /v2/ to answer, and stopping it. `UploadGate` is a proxy in front of it that
stops answering after a number of blob uploads, so a test can kill a client mid-push at a known point.
Must not: be imported by product code.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from kompress_testing.cluster.build import REPO_ROOT, TOOLS
from kompress_testing.s3 import free_port

GO_MODULE = REPO_ROOT / "testing" / "registry"
BUSYBOX = TOOLS / "busybox" / "busybox"


def registry_version() -> str:
    """The github.com/distribution/distribution/v3 version go.mod pins, e.g. 'v3.1.2'."""
    found = re.search(r"^\s*github\.com/distribution/distribution/v3 (v\S+)", (GO_MODULE / "go.mod").read_text(), re.MULTILINE)
    if not found:
        raise RuntimeError(f"no github.com/distribution/distribution/v3 requirement in {GO_MODULE / 'go.mod'}")
    return found.group(1)


def binaries_dir() -> Path:
    path = TOOLS / f"registry-{registry_version()}"
    if not (path / "registry").exists() or not (path / "htpasswd").exists():
        raise RuntimeError(f"the test registry is not built ({path}): run `make registry`")
    return path


def busybox_binary() -> Path:
    """The static busybox the worker packs as the image's base layer (`make busybox`, from Debian's busybox-static)."""
    if not BUSYBOX.exists():
        raise RuntimeError(f"busybox is not installed ({BUSYBOX}): run `make busybox`")
    return BUSYBOX


class TokenService:
    """The Docker registry token protocol's server side, for a registry with `auth: token` (what Docker Hub, GHCR,
    Quay and Harbor run): GET /token?service=S&scope=repository:NAME:pull,push with Basic auth of the one user, or
    POST /token with an OAuth2 refresh-token grant of its identity token (what `docker login` stores as identitytoken),
    answers an ES256 JWT the registry checks against the JWKS written here. Wrong credentials: 401."""

    ISSUER = "kompress-test-token-service"
    KEY_ID = "kompress-test-key"

    def __init__(self, workdir: Path, service: str, username: str, password: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.service, self.username, self.password = service, username, password
        self.identity_token = f"refresh/{secrets.token_urlsafe(16)}+it="
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "kid": self.KEY_ID, "alg": "ES256", "use": "sig",
               "x": _b64url(numbers.x.to_bytes(32, "big")), "y": _b64url(numbers.y.to_bytes(32, "big"))}
        self.jwks = Path(workdir) / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [jwk]}))
        self.issued: list[str] = []  # the scopes tokens were issued for
        self._server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def token(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        header = {"alg": "ES256", "typ": "JWT", "kid": self.KEY_ID}
        claims = {"iss": self.ISSUER, "sub": self.username, "aud": self.service, "exp": now + 300, "nbf": now - 5, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def start(self) -> "TokenService":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                from urllib.parse import parse_qs, urlparse

                query = parse_qs(urlparse(self.path).query)
                expected = "Basic " + base64.b64encode(f"{owner.username}:{owner.password}".encode()).decode()
                if self.headers.get("Authorization") != expected or query.get("service") != [owner.service]:
                    return self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong credentials"}]})
                scopes = query.get("scope", [])
                owner.issued += scopes
                self._answer(200, {"token": owner.token(scopes), "expires_in": 300})

            def do_POST(self) -> None:  # noqa: N802
                from urllib.parse import parse_qs

                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [owner.identity_token]:
                    return self._answer(401, {"error": "invalid_grant"})
                scopes = form.get("scope", [""])[0].split()
                owner.issued += scopes
                self._answer(200, {"access_token": owner.token(scopes), "expires_in": 300})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="token-service", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalRegistry:
    """`with LocalRegistry(workdir) as registry:` a running registry at `registry.host` that wants a password
    (`auth="htpasswd"`: HTTP Basic; `auth="token"`: Bearer tokens from a TokenService, as public registries do)."""

    def __init__(self, workdir: Path, *, username: str = "kompress-pusher", password: str | None = None, auth: str = "htpasswd") -> None:
        self.workdir = Path(workdir)
        self.auth = auth
        self.tokens: TokenService | None = None
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.username = username
        # Characters that JSON, URLs and Basic auth each treat specially: a leak in any encoding is found by the scans.
        self.password = password or f"oci/{secrets.token_urlsafe(12)}+p:w=%41"
        self.storage = self.workdir / "storage"
        self.log_path = self.workdir / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        binaries = binaries_dir()
        self.workdir.mkdir(parents=True, exist_ok=True)
        htpasswd = self.workdir / "htpasswd"
        line = subprocess.run([str(binaries / "htpasswd"), self.username], input=self.password + "\n", capture_output=True, text=True, check=True).stdout
        htpasswd.write_text(line)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": "kompress-test", "path": str(htpasswd)}},
        }
        if self.auth == "token":
            self.tokens = TokenService(self.workdir, "kompress-test-registry", self.username, self.password).start()
            config["auth"] = {"token": {"realm": self.tokens.realm, "service": self.tokens.service, "issuer": TokenService.ISSUER,
                                        "jwks": str(self.tokens.jwks), "signingalgorithms": ["ES256"]}}
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(config))  # YAML is a superset of JSON
        return path

    def start(self, timeout: float = 30.0) -> "LocalRegistry":
        config = self._config()
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen([str(binaries_dir() / "registry"), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the registry exited with {self._process.returncode}: {self.log_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/v2/", timeout=2).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the registry did not answer on {self.url} within {timeout:.0f} s: {self.log_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.tokens is not None:
            self.tokens.stop()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> "LocalRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a Secret holds, and what a test looks at --------------------------------------------------

    def docker_config(self, host: str | None = None) -> str:
        """The `.dockerconfigjson` of a kubernetes.io/dockerconfigjson Secret for this registry (as `kubectl create
        secret docker-registry` writes it: username, password and their base64 `auth`)."""
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return json.dumps({"auths": {host or self.host: {"username": self.username, "password": self.password, "auth": auth}}})

    @property
    def session(self) -> requests.Session:
        """A client session of the one user: Basic auth, or (token auth) a Bearer token for every repository."""
        session = requests.Session()
        if self.tokens is not None:
            session.headers["Authorization"] = "Bearer " + self.tokens.token(["registry:catalog:*", *(f"repository:{r}:pull,push" for r in self._repositories())])
        else:
            session.auth = (self.username, self.password)
        return session

    def _repositories(self) -> list[str]:
        root = self.storage / "docker" / "registry" / "v2" / "repositories"
        return sorted(str(p.parent.relative_to(root)) for p in root.rglob("_manifests")) if root.is_dir() else []

    def tags(self, repository: str) -> list[str]:
        """The repository's tags ([] when it has none or does not exist)."""
        response = self.session.get(f"{self.url}/v2/{repository}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])

    def blob_digests(self) -> set[str]:
        """Every blob the registry stores (its filesystem layout: blobs/sha256/XX/HEX/data)."""
        root = self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return {f"sha256:{p.parent.name}" for p in root.glob("*/*/data")} if root.is_dir() else set()

    def linked_blobs(self, repository: str) -> set[str]:
        """The blobs `repository` holds (the registry stores a blob once, and links it into each repository that has it:
        a client asking this repository is told of these only)."""
        root = self.storage / "docker" / "registry" / "v2" / "repositories" / repository / "_layers" / "sha256"
        return {f"sha256:{p.parent.name}" for p in root.glob("*/link")} if root.is_dir() else set()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class UploadGate:
    """A proxy in front of a registry that forwards everything until `hold_after` blob uploads have completed
    (PUT .../blobs/uploads/...?digest=), then holds every later request unanswered until `release()`.

    `held` is set once a request is being held: the client is then stuck before its next write, at a known point.
    """

    def __init__(self, upstream: str, hold_after: int) -> None:
        self.upstream_host, _, port = upstream.partition(":")
        self.upstream_port = int(port)
        self.hold_after = hold_after
        self.completed_blobs = 0
        self.requests: list[str] = []
        self.held = threading.Event()
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        self._open.set()

    def start(self) -> "UploadGate":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _forward(self) -> None:
                with owner._lock:
                    holding = owner.completed_blobs >= owner.hold_after
                if holding:
                    owner.held.set()
                    owner._open.wait()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive", "transfer-encoding")}
                headers["Host"] = f"{owner.upstream_host}:{owner.upstream_port}"
                conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    with owner._lock:
                        owner.requests.append(f"{self.command} {self.path.split('?', 1)[0]}")
                        if self.command == "PUT" and "/blobs/uploads/" in self.path and "digest=" in self.path and resp.status == 201:
                            owner.completed_blobs += 1
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                            # Location headers name the upstream: the client must keep talking to the gate.
                            self.send_header(k, v.replace(f"{owner.upstream_host}:{owner.upstream_port}", owner.host))
                    self.send_header("Content-Length", str(len(data)) if self.command != "HEAD" else resp.getheader("Content-Length", "0"))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="upload-gate", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "UploadGate":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
