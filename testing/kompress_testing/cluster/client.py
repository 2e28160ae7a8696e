"""A small synchronous Kubernetes client for tests: JSON in, JSON out, errors as `ApiStatusError`.

Why not the kubernetes package: tests assert on the API's own wire format (Status bodies, causes,
fields the typed models would drop), and a plain client shows exactly what was sent.
Owns: requests over HTTPS with the cluster's CA, a client certificate or a bearer token.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests


class ApiStatusError(Exception):
    def __init__(self, code: int, status: Any) -> None:
        self.code = code
        self.status = status
        message = status.get("message") if isinstance(status, dict) else status
        super().__init__(f"{code}: {message}")

    @property
    def reason(self) -> str | None:
        return self.status.get("reason") if isinstance(self.status, dict) else None


class KubeClient:
    def __init__(self, url: str, ca: Path, *, cert: tuple[Path, Path] | None = None, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides our CA, and proxies apply to 127.0.0.1
        self.session.verify = str(ca)
        if cert:
            self.session.cert = (str(cert[0]), str(cert[1]))
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

    def get_or_none(self, path: str, **params: Any) -> Any:
        try:
            return self.get(path, **params)
        except ApiStatusError as err:
            if err.code == 404:
                return None
            raise

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

    @staticmethod
    def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
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
