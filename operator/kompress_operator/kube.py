"""The only module that talks to the Kubernetes API.

Owns: the connection (in-cluster, else a kubeconfig; the same credentials are handed to Kopf), and
the handful of calls the operator makes: read a CompressionJob, create-or-adopt a child Job (a 409
reads the existing one and checks it is ours), flip a Job's suspend, delete a Job, list a job's
pods (only when the watch-fed indices may lag), write status through the /status subresource with
the resourceVersion as a precondition, post an Event.
It uses the kubernetes client's transport (auth, TLS, token refresh) and plain JSON bodies: no
client models, quantities as strings. Calls run in a small thread pool so the event loop never blocks, a
child's creation before the requests already waiting (priority_pool.py).
Must not: decide anything. Never reads a Secret.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

import kopf
import kubernetes.client
import kubernetes.config
from kompress_api import v1alpha1 as api

from kompress_operator import child_names
from kompress_operator.config import OperatorConfig
from kompress_operator.observed import Event
from kompress_operator.priority_pool import Priority, PriorityPool

COMPONENT = "kompress-operator"


def _user_agent() -> str:
    # Our requests name themselves in the API server's audit log and metrics (Kopf's watches say kopf/<version>).
    try:
        return f"{COMPONENT}/{importlib.metadata.version('kompress-operator')}"
    except importlib.metadata.PackageNotFoundError:
        return f"{COMPONENT}/dev"


USER_AGENT = _user_agent()

# core/v1 Event messages are cut at 1 KiB by some API servers; say the essential first.
EVENT_MESSAGE_LIMIT = 1024


# 400 (malformed), 403 (RBAC, admission: PodSecurity, quota), 422 (invalid): not transient.
REFUSED = (400, 403, 422)


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        reason = body
        try:
            reason = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            pass
        super().__init__(f"{method} {path}: HTTP {status}: {reason}")
        self.status = status
        self.reason = reason

    @property
    def refused(self) -> bool:
        """The server will give the same answer to the same request: bad request, forbidden, invalid."""
        return self.status in REFUSED


class Conflict(ApiError):
    """The object changed since it was read (stale resourceVersion): read again and recompute."""


class NotOurs(Exception):
    """A Job with a child's name exists but another object controls it: refuse to adopt it."""


def load_client_configuration(config: OperatorConfig) -> kubernetes.client.Configuration:
    """In-cluster service account, else the kubeconfig named by the settings or $KUBECONFIG (read now, not at import)."""
    cfg = kubernetes.client.Configuration()
    if config.kubeconfig:
        kubernetes.config.load_kube_config(config_file=config.kubeconfig, client_configuration=cfg, persist_config=False)
        return cfg
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg, persist_config=False)
    return cfg


def connection_info(cfg: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """The same credentials for Kopf's own watches (as kopf.login_via_client does)."""
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def merge_patch(old: Any, new: Any) -> Any:
    """An RFC 7386 merge patch turning `old` into `new`: removed keys become null, lists are replaced."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def _cjob_path(namespace: str, name: str) -> str:
    return f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{quote(namespace)}/{api.PLURAL}/{quote(name)}"


def _jobs_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs"
    return f"{path}/{quote(name)}" if name else path


def event_name(name: str, unique: int) -> str:
    """`<object>.<unique hex>`, as client-go names Events; a name cut to 200 must not end in '-' or '.'
    (then `-.` or `..` would make it no DNS subdomain, and the Event would be refused)."""
    return f"{name[:200].rstrip('-.')}.{unique:x}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Kube:
    def __init__(self, cfg: kubernetes.client.Configuration, *, timeout_s: float = 15.0, workers: int = 32, clock: Callable[[], datetime] = _utcnow) -> None:
        cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, workers)
        self.configuration = cfg
        # The operator's clock (a test moves it): Event times agree with the conditions' times.
        self._clock = clock
        self._client = kubernetes.client.ApiClient(cfg)
        self._client.user_agent = USER_AGENT
        self._timeout = timeout_s
        self._pool = PriorityPool(workers, "kube")
        self._instance = os.environ.get("HOSTNAME") or socket.gethostname()

    @classmethod
    def connect(cls, config: OperatorConfig, clock: Callable[[], datetime] = _utcnow) -> Kube:
        return cls(load_client_configuration(config), clock=clock)

    def close(self) -> None:
        self._pool.shutdown()
        self._client.close()

    # --- transport ---

    def _request_sync(self, method: str, path: str, body: Any, query: dict[str, str] | None, content_type: str) -> tuple[int, Any, str]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        url_path = path + ("?" + urlencode(query) if query else "")
        method, url, headers, body, post = self._client.param_serialize(method=method, resource_path=url_path, header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self._client.call_api(method, url, headers, body, post, _request_timeout=self._timeout)
        raw = response.read() or b""
        text = raw.decode("utf-8", "replace")
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = None
        return response.status, doc, text

    async def _request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None, content_type: str = "application/json",
                       ok: tuple[int, ...] = (200, 201), priority: Priority = Priority.NORMAL) -> Any:
        future = self._pool.submit(priority, self._request_sync, method, path, body, query, content_type)
        status, doc, text = await asyncio.wrap_future(future)
        if status in ok:
            return doc
        if status == 409:
            raise Conflict(status, method, path, text)
        raise ApiError(status, method, path, text)

    async def _get(self, path: str, priority: Priority = Priority.NORMAL) -> dict[str, Any] | None:
        try:
            return await self._request("GET", path, priority=priority)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    # --- CompressionJobs ---

    async def write_status(self, cjob: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """One merge patch of /status, only valid against the resourceVersion the status was computed from."""
        meta = cjob["metadata"]
        patch: dict[str, Any] = {"status": merge_patch(cjob.get("status") or {}, status)}
        if meta.get("resourceVersion"):
            patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        return await self._request("PATCH", _cjob_path(meta["namespace"], meta["name"]) + "/status", patch, content_type="application/merge-patch+json")

    # --- Jobs and pods ---

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(_jobs_path(namespace, name))

    async def create_job(self, manifest: dict[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        """(the Job, created?). A name taken by our own Job is adopted: that is how a restart finds its work."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            return await self._request("POST", _jobs_path(namespace), manifest, ok=(201, 200), priority=Priority.CREATE), True
        except Conflict:
            existing = await self._get(_jobs_path(namespace, name), Priority.CREATE)
            if existing is None:  # deleted in between: the next reconcile creates it
                raise
            if not child_names.is_owned_by(existing, owner_uid):
                raise NotOurs(f"Job {namespace}/{name} exists and is not controlled by CompressionJob uid {owner_uid}; delete or rename it") from None
            return existing, False

    async def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> dict[str, Any]:
        return await self._request("PATCH", _jobs_path(namespace, name), {"spec": {"suspend": suspend}}, content_type="application/merge-patch+json")

    async def delete_job(self, namespace: str, name: str) -> None:
        # Background: the Job goes now, its pods right after (the GPU is freed without waiting on us).
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            await self._request("DELETE", _jobs_path(namespace, name), body, ok=(200, 202))
        except ApiError as err:
            if err.status != 404:
                raise

    async def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())}
        doc = await self._request("GET", f"/api/v1/namespaces/{quote(namespace)}/pods", query=query)
        return list((doc or {}).get("items") or [])

    async def pod_creation_failure(self, job: dict[str, Any]) -> str | None:
        """The Job controller's latest FailedCreate Event on `job`, if any: a pod it could not create (a missing
        ServiceAccount, PriorityClass or RuntimeClass, a quota) shows nowhere else, neither in the Job's status
        nor as a pod."""
        meta = job["metadata"]
        query = {"fieldSelector": f"involvedObject.uid={meta['uid']},reason=FailedCreate"}
        doc = await self._request("GET", f"/api/v1/namespaces/{quote(meta['namespace'])}/events", query=query)
        items = sorted((doc or {}).get("items") or [], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return str(items[-1].get("message") or "") if items else None

    # --- Events ---

    async def post_event(self, cjob: dict[str, Any], event: Event) -> None:
        meta = cjob["metadata"]
        now = self._clock().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = event.message if len(event.message) <= EVENT_MESSAGE_LIMIT else event.message[: EVENT_MESSAGE_LIMIT - 1] + "…"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            # client-go names events <object>.<unique hex>; no generateName round trip needed
            # time_ns, not the clock: the name must be unique even when a test's clock stands still
            "metadata": {"name": event_name(meta["name"], time.time_ns()), "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": event.reason,
            "message": message,
            "type": event.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("POST", f"/api/v1/namespaces/{quote(meta['namespace'])}/events", body, ok=(201, 200))
