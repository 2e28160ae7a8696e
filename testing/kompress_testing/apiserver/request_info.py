"""What a request asks for: apiserver's RequestInfo (verb, group, version, resource, namespace, name,
subresource) parsed from the method and URL, and the per-request state the server carries along.

Owns: Kubernetes' URL grammar (`/api/v1/namespaces/NS/pods/NAME/status`, `/api/v1/namespaces/NAME`,
legacy `/watch/` prefixes) and request bodies (JSON, or Kubernetes protobuf from typed kubectl
commands). Must not: decide anything about the request; the server does. KMock's own parser is not
used here because it misreads namespace URLs (`/api/v1/namespaces` raises, `/api/v1/namespaces/x`
is read as namespace x with no resource).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
from kmock._internal import rendering

from kompress_testing.apiserver import errors as E
from kompress_testing.apiserver import protobuf, rbac

NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass
class RequestInfo:
    path: str
    verb: str
    resource_request: bool = False
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None
    parts: list[str] = field(default_factory=list)


def parse(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    parts = [p for p in path.strip("/").split("/") if p]
    watch = query.get("watch") in ("true", "1")
    lower = method.lower()
    if len(parts) < 2 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 3):
        return RequestInfo(path=path, verb=lower, parts=parts)
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        group, version, rest = parts[1], parts[2], parts[3:]
    info = RequestInfo(path=path, verb=lower, group=group, version=version, parts=parts)
    if not rest:
        return info
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
    info.resource_request = True
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        info.namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if rest:
        info.resource = rest[0]
    if len(rest) > 1:
        info.name = rest[1]
    if len(rest) > 2:
        info.subresource = rest[2]
    if info.resource == "namespaces":
        # /api/v1/namespaces/NAME[/status]: the namespace object itself, cluster-scoped.
        info.name, info.namespace = (info.namespace, None) if len(rest) >= 2 else (None, None)
    if watch and lower == "get":
        info.verb = "watch"
    elif lower == "get":
        info.verb = "get" if info.name else "list"
    elif lower == "delete":
        info.verb = "delete" if info.name else "deletecollection"
    else:
        info.verb = {"post": "create", "put": "update", "patch": "patch"}.get(lower, lower)
    return info


@dataclass
class Call:
    """One request on its way through the server."""

    raw: aiohttp.web.BaseRequest
    request: rendering.Request
    info: RequestInfo
    params: dict[str, str]
    body: bytes
    user: rbac.Identity = rbac.ANONYMOUS
    warnings: list[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return (self.raw.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json_body(self) -> Any:
        if self.content_type == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(self.body)
            except protobuf.ProtobufError as exc:
                if "not understood" in str(exc):
                    raise E.unsupported_media_type(self.content_type, ["application/json"]) from exc
                raise E.bad_request(str(exc)) from exc
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except ValueError as exc:
            raise E.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc
