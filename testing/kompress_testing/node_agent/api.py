"""The node agent's only way to the cluster: a small asyncio client of the Kubernetes API over HTTPS.

Owns: reading a kubeconfig (server, bearer token, CA), JSON requests, Kubernetes errors as
`ApiError`, and watch streams that only say "something changed" (the agent re-lists, level-triggered).
Must not: know any resource's meaning; reach into an API server's memory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml


class ApiError(Exception):
    def __init__(self, code: int, status: Any) -> None:
        message = status.get("message") if isinstance(status, dict) else str(status)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = status.get("reason") if isinstance(status, dict) else None


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str | None
    ca_pem: bytes | None
    insecure: bool = False

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None) -> Credentials:
        doc = yaml.safe_load(Path(path).read_text())
        ctx_name = context or doc.get("current-context")
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in doc.get("users") or [] if u["name"] == ctx.get("user")), {})
        ca = None
        if cluster.get("certificate-authority-data"):
            ca = base64.b64decode(cluster["certificate-authority-data"])
        elif cluster.get("certificate-authority"):
            ca = Path(cluster["certificate-authority"]).read_bytes()
        return cls(cluster["server"].rstrip("/"), user.get("token"), ca, bool(cluster.get("insecure-skip-tls-verify")))


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    if namespace:
        base += f"/namespaces/{urllib.parse.quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{urllib.parse.quote(name)}"
    return base + (f"/{sub}" if sub else "")


class Api:
    """`async with Api(credentials) as api:` JSON over one aiohttp session."""

    def __init__(self, credentials: Credentials, user_agent: str = "kompress-node-agent") -> None:
        self.credentials = credentials
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        ssl_context: ssl.SSLContext | bool = False
        if self.credentials.server.startswith("https://"):
            if self.credentials.insecure:
                ssl_context = False
            else:
                ssl_context = ssl.create_default_context(cadata=self.credentials.ca_pem.decode() if self.credentials.ca_pem else None)
        headers = {"User-Agent": self.user_agent}
        if self.credentials.token:
            headers["Authorization"] = f"Bearer {self.credentials.token}"
        self._session = aiohttp.ClientSession(
            base_url=self.credentials.server, headers=headers, connector=aiohttp.TCPConnector(ssl=ssl_context, limit=16),
            trust_env=False,
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Api as an async context manager"
        return self._session

    async def request(self, method: str, url: str, body: Any = None, *, params: dict[str, str] | None = None,
                      content_type: str = "application/json", timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, url, data=data, params=params, headers={"Content-Type": content_type},
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            text = await response.text()
            payload = json.loads(text) if text and response.content_type == "application/json" else text
            if response.status >= 400:
                raise ApiError(response.status, payload)
            return payload

    async def get(self, url: str, **params: str) -> Any:
        return await self.request("GET", url, params=params or None)

    async def get_or_none(self, url: str) -> Any:
        try:
            return await self.get(url)
        except ApiError as err:
            if err.code == 404:
                return None
            raise

    async def create(self, url: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", url, body)

    async def merge_patch(self, url: str, body: dict[str, Any]) -> Any:
        return await self.request("PATCH", url, body, content_type="application/merge-patch+json")

    async def json_patch(self, url: str, ops: list[dict[str, Any]]) -> Any:
        return await self.request("PATCH", url, ops, content_type="application/json-patch+json")

    async def delete(self, url: str, **options: Any) -> Any:
        """DELETE with DeleteOptions in the body; a 404 is not an error (already gone)."""
        try:
            return await self.request("DELETE", url, {"apiVersion": "v1", "kind": "DeleteOptions", **options} if options else None)
        except ApiError as err:
            if err.code != 404:
                raise
            return None

    async def watch_changes(self, url: str, changed: asyncio.Event, *, timeout_s: int = 60) -> None:
        """Set `changed` on every event of a watch on `url`, forever (reconnecting); cancel to stop."""
        since = ""
        while True:
            try:
                if not since:
                    listing = await self.get(url)
                    since = listing["metadata"]["resourceVersion"]
                    changed.set()
                params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": str(timeout_s), "allowWatchBookmarks": "true"}
                async with self.session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_s + 15)) as response:
                    if response.status >= 400:
                        since = ""
                        await asyncio.sleep(0.5)
                        continue
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":  # 410 Expired: start again from a fresh list
                            since = ""
                            break
                        since = event["object"].get("metadata", {}).get("resourceVersion", since)
                        if event.get("type") != "BOOKMARK":
                            changed.set()
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
                since = ""
                await asyncio.sleep(0.5)
