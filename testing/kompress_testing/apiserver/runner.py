"""Running the emulated API server: in a background thread (tests) or in the foreground (the CLI).

Owns: the event loop and aiohttp server around `ApiServer` on 127.0.0.1 (a random free port unless
told; HTTPS with a throwaway CA unless told otherwise), kubeconfig files for kubectl, Kopf and the kubernetes client, and a small synchronous admin
client for tests. Must not: add API behaviour; that is server.py's.

We serve with aiohttp directly rather than with `kmock.Server`: the latter patches aiohttp's DNS
resolution process-wide and must be exited in LIFO order, which breaks with several servers in
threads and with Kopf's own aiohttp client in the same process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp.web
import requests
import yaml

from kompress_testing.apiserver.server import ADMIN_TOKEN, ApiServer
from kompress_testing.apiserver.tls import certificates

T = TypeVar("T")


def kubeconfig(url: str, token: str = ADMIN_TOKEN, namespace: str = "default", user: str = "admin") -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": url}
    if url.startswith("https://"):
        cluster["certificate-authority-data"] = base64.b64encode(certificates().ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": user, "namespace": namespace}}],
        "current-context": "emulated",
        "preferences": {},
    }


def write_kubeconfig(path: str | pathlib.Path, url: str, token: str = ADMIN_TOKEN, namespace: str = "default") -> pathlib.Path:
    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump(kubeconfig(url, token, namespace), sort_keys=False))
    return path


async def serve(server: ApiServer, host: str = "127.0.0.1", port: int = 0, tls: bool = True) -> tuple[aiohttp.web.BaseRunner, str]:
    """Start serving `server` (already entered) and return the runner and its URL.

    TLS by default, as a real API server: kubectl sends bearer tokens only over HTTPS.
    """
    low_level = aiohttp.web.Server(server, handler_cancellation=True, access_log=None)
    runner = aiohttp.web.ServerRunner(low_level, shutdown_timeout=0.5)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port, shutdown_timeout=0.5, ssl_context=certificates().server_context() if tls else None)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - aiohttp exposes the port only here
    actual_port = sockets[0].getsockname()[1] if sockets else port
    server.address = f"{host}:{actual_port}"
    return runner, f"{'https' if tls else 'http'}://{host}:{actual_port}"


class ServerThread:
    """An `ApiServer` served from its own thread and event loop; use as a context manager."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.url = ""
        self.server: ApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="emulated-apiserver", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("the emulated API server did not start") from self._error
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that waits for readiness
            self._error = exc
            self._ready.set()

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        port = int(self.options.pop("port", 0))
        tls = bool(self.options.pop("tls", True))
        async with ApiServer(**self.options) as server:
            runner, self.url = await serve(server, port=port, tls=tls)
            self.server = server
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

    def call(self, fn: Callable[[], T] | Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        """Run fn in the server's loop (where its state may be touched safely) and return its result."""
        assert self._loop is not None

        async def run() -> T:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result  # type: ignore[return-value]

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)


class KubeClient:
    """A small synchronous client for tests: JSON in, JSON out, Kubernetes errors as `ApiStatusError`."""

    def __init__(self, url: str, token: str | None = ADMIN_TOKEN) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides our CA, and proxies apply to 127.0.0.1
        self.session.verify = str(certificates().ca_path)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                content_type: str = "application/json", headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        response = self.session.request(method, self.url + path, data=data, params=params,
                                        headers={"Content-Type": content_type, **(headers or {})}, timeout=30)
        payload = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else response.text
        if response.status_code >= 400:
            raise ApiStatusError(response.status_code, payload)
        return payload

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("POST", path, body, params=params or None)

    def put(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("PUT", path, body, params=params or None)

    def patch(self, path: str, body: Any, patch_type: str = "merge", **params: Any) -> Any:
        content_type = {"merge": "application/merge-patch+json", "json": "application/json-patch+json",
                        "strategic": "application/strategic-merge-patch+json", "apply": "application/apply-patch+yaml"}[patch_type]
        return self.request("PATCH", path, body, params=params or None, content_type=content_type)

    def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("DELETE", path, body, params=params or None)

    def watch(self, path: str, timeout: float = 10, **params: Any) -> Iterator[dict[str, Any]]:
        """Watch events until the server closes the stream (pass timeoutSeconds) or the caller stops."""
        query = {"watch": "true", **params}
        with self.session.get(self.url + path, params=query, stream=True, timeout=timeout) as response:
            if response.status_code >= 400:
                raise ApiStatusError(response.status_code, response.json())
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)

    def path(self, api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if namespace is not None:
            base += f"/namespaces/{urllib.parse.quote(namespace)}"
        base += f"/{plural}"
        if name is not None:
            base += f"/{urllib.parse.quote(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


class ApiStatusError(Exception):
    def __init__(self, code: int, status: Any) -> None:
        message = status.get("message") if isinstance(status, dict) else str(status)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.reason = status.get("reason") if isinstance(status, dict) else None
        self.message = message or ""
