"""Polls a running worker's progress over HTTP: GET http://<podIP>:<port>/progress.

Owns: the request, its short timeout, and the port (the pod's container port named `progress`,
else the configured one). The worker needs no Kubernetes rights and no log is scraped. Any failure
(not yet listening, a slow answer, a pod gone) is "no news": the last known progress stands.
Must not: interpret the progress (status.py does) or talk to the Kubernetes API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from kompress_api.worker_protocol import PROGRESS_PATH


def progress_url(pod: dict[str, Any], default_port: int) -> str | None:
    ip = pod.get("status", {}).get("podIP")
    if not ip:
        return None
    port = default_port
    for container in pod.get("spec", {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == "progress" and declared.get("containerPort"):
                port = declared["containerPort"]
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{PROGRESS_PATH}"


class ProgressClient:
    def __init__(self, *, timeout_s: float, default_port: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._default_port = default_port
        self._session: aiohttp.ClientSession | None = None

    async def poll(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        url = progress_url(pod, self._default_port)
        if url is None:
            return None
        if self._session is None or self._session.closed:
            # no proxies from the environment: pod IPs are reached directly
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    return None
                doc = await response.json(content_type=None)
                return doc if isinstance(doc, dict) else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
