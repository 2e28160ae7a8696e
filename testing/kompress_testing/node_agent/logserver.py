"""The kubelet's log endpoint, which the API server proxies `kubectl logs` to.

    GET https://<node IP>:<port>/containerLogs/NAMESPACE/POD/CONTAINER?tailLines=N&limitBytes=N&follow=true

Owns: reading a container's log file (runtime.py writes it), the last N lines, following it until the
container ends. HTTPS on the node's loopback address, as a kubelet serves it on 10250 (kube-apiserver
is started without --kubelet-certificate-authority, so a self-signed certificate does).
Must not: touch pods or the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KUBELET_PORT = 10250


def tail_lines(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def self_signed_context(directory: Path, ip: str) -> ssl.SSLContext:
    """A serving TLS context for the node's address, with a throwaway self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kubelet@{ip}")])
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


class LogServer:
    def __init__(self, log_path: Callable[[str, str, str], Path], running: Callable[[str, str, str], bool],
                 waiting: Callable[[str, str, str], str | None] = lambda *_: None) -> None:
        self.log_path = log_path
        self.running = running
        self.waiting = waiting
        self._runner: aiohttp.web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int = KUBELET_PORT, ssl_context: ssl.SSLContext | None = None) -> int:
        app = aiohttp.web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        self._runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        for candidate in (port, 0):
            try:
                site = aiohttp.web.TCPSite(self._runner, host, candidate, ssl_context=ssl_context)
                await site.start()
            except OSError:
                continue
            self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp exposes the port only here
            return self.port
        raise OSError(f"cannot serve container logs on {host}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _logs(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        path = self.log_path(ns, pod, container)
        reason = self.waiting(ns, pod, container)
        if reason is not None:
            # The kubelet's words (validateContainerLogStatus), as 400: kube-apiserver passes a BadRequest's body on.
            raise aiohttp.web.HTTPBadRequest(text=f'container "{container}" in pod "{pod}" is waiting to start: {reason}')
        if not path.exists():
            raise aiohttp.web.HTTPNotFound(text=f'container "{container}" in pod "{pod}" has no log yet')
        data = path.read_bytes()
        if "tailLines" in request.query:
            data = tail_lines(data, int(request.query["tailLines"]))
        limit = int(request.query["limitBytes"]) if "limitBytes" in request.query else None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent = 0

        async def send(chunk: bytes) -> bool:
            nonlocal sent
            if limit is not None:
                chunk = chunk[: max(0, limit - sent)]
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
            return limit is None or sent < limit

        more = await send(data)
        if request.query.get("follow") in ("true", "1"):
            offset = path.stat().st_size
            while more:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                more = await send(chunk) if chunk else True
                if not chunk and not self.running(ns, pod, container):
                    break
                await asyncio.sleep(0.2)
        await response.write_eof()
        return response
