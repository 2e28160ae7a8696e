"""The node agent: one Node, its scheduler, its kubelet, and the Job controller, in one asyncio loop.

    agent = NodeAgent(AgentConfig(kubeconfig=..., state_dir=...))
    await agent.run(stop_event)                      # or AgentThread(config).start() ... .stop()

Owns: registering the Node (capacity, Ready, the kubelet's log endpoint for `kubectl logs`), the loop (every controller re-reads Jobs and Pods
after any watch event, a process exit, a due timer, or `resync_s`: level-triggered, so a restarted
agent picks up where the cluster is), binding pending pods to the node (scheduler.py decides),
Events, the RBAC rules its identity needs, and a clean stop (every child process ended, pods
left Failed with DisruptionTarget as graceful node shutdown leaves them, the Node NotReady).
Must not: read or write anything but through the API (api.py) with its own credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from kompress_testing.node_agent import scheduler
from kompress_testing.node_agent.api import Api, ApiError, Credentials, path
from kompress_testing.node_agent.config import AgentConfig
from kompress_testing.node_agent.jobs import JobController, deleting, iso, name
from kompress_testing.node_agent.kubelet import Kubelet
from kompress_testing.node_agent.logserver import LogServer

log = logging.getLogger("kompress.node_agent")

AGENT_NAMESPACE = "kube-system"
AGENT_SERVICE_ACCOUNT = "kompress-node-agent"
VERSION = "v1.32.0-kompress-node-agent"


class Events:
    """core/v1 Events, as the job controller, the scheduler and the kubelet record them."""

    def __init__(self, api: Api, node_name: str) -> None:
        self.api = api
        self.node_name = node_name

    async def emit(self, obj: dict[str, Any], etype: str, reason: str, message: str, component: str, *, field_path: str | None = None) -> None:
        meta = obj["metadata"]
        now = iso(datetime.now(timezone.utc))
        involved = {"apiVersion": obj.get("apiVersion") or ("batch/v1" if component == "job-controller" else "v1"),
                    "kind": obj.get("kind") or ("Job" if component == "job-controller" else "Pod"),
                    "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            involved["fieldPath"] = field_path
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": involved, "reason": reason, "message": message, "type": etype,
            "source": {"component": component, **({"host": self.node_name} if component == "kubelet" else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": component, "reportingInstance": self.node_name if component == "kubelet" else component,
        }
        try:
            await self.api.create(path("v1", "events", meta["namespace"]), event)
        except ApiError as err:  # an Event is best effort, as in client-go's recorder
            log.debug("event %s on %s not recorded: %s", reason, meta["name"], err)


def rbac_manifests(namespace: str = AGENT_NAMESPACE, service_account: str = AGENT_SERVICE_ACCOUNT) -> list[dict[str, Any]]:
    """What the agent's ServiceAccount needs on a server enforcing RBAC (the job controller's and a node's rights)."""
    role = "kompress-node-agent"
    rules = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete", "patch", "update"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["secrets", "configmaps", "persistentvolumeclaims"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "create", "patch", "update"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["get", "patch", "update"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]},
    ]


class NodeAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.credentials = Credentials.from_kubeconfig(config.kubeconfig)
        if not config.api_host_port:
            config.api_host_port = urllib.parse.urlsplit(self.credentials.server).netloc
        network = ipaddress.ip_network(config.pod_cidr)
        self.node_ip = str(next(network.hosts()))
        self.wake = asyncio.Event()
        self.kubelet: Kubelet | None = None
        self.kubelet_port = 0
        self.jobs: JobController | None = None
        # Unexpected exceptions of sync passes (bugs in the agent); AgentThread.stop() raises if any.
        self.errors: list[BaseException] = []

    # -----------------------------------------------------------------------------------------

    def node_object(self) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": self.config.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "kompress.dev/node-agent": "true"}
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.config.node_name, "labels": labels}, "spec": {}}

    def node_status(self, ready: bool) -> dict[str, Any]:
        now = iso(datetime.now(timezone.utc))
        condition = ({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"} if ready
                     else {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."})
        condition.update(lastHeartbeatTime=now, lastTransitionTime=now)
        return {
            "capacity": dict(self.config.capacity), "allocatable": dict(self.config.capacity), "conditions": [condition],
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.config.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {"kubeletVersion": VERSION, "kubeProxyVersion": VERSION, "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "kompress-node-agent://0.1", "osImage": "local processes",
                         "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        }

    async def _register_node(self, api: Api) -> dict[str, Any]:
        url = path("v1", "nodes", None, self.config.node_name)
        if await api.get_or_none(url) is None:
            await api.create(path("v1", "nodes"), self.node_object())
        return await api.merge_patch(url + "/status", {"status": self.node_status(ready=True)})

    # -----------------------------------------------------------------------------------------

    async def _schedule(self, api: Api, events: Events, node: dict[str, Any], pods: Sequence[dict[str, Any]]) -> None:
        """Bind each pending pod that fits; tell the others why not (PodScheduled=False, Unschedulable)."""
        bound = [p for p in pods if (p.get("spec") or {}).get("nodeName") == self.config.node_name]
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            spec = pod.get("spec") or {}
            if spec.get("nodeName") or deleting(pod) or spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            ns = pod["metadata"]["namespace"]
            now = iso(datetime.now(timezone.utc))
            problems = scheduler.fit_problems(pod, node, bound)
            status = pod.get("status") or {}
            others = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            if problems:
                message = scheduler.unschedulable_message(problems)
                previous = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
                if previous.get("message") != message:
                    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": now}
                    await api.merge_patch(path("v1", "pods", ns, name(pod), "status"), {"status": {"conditions": [*others, cond]}})
                    await events.emit(pod, "Warning", "FailedScheduling", message, "default-scheduler")
                continue
            # kube-scheduler POSTs a Binding; the emulated server has no binding subresource, so spec.nodeName is set directly.
            bound_pod = await api.merge_patch(path("v1", "pods", ns, name(pod)), {"spec": {"nodeName": self.config.node_name}})
            cond = {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
            await api.merge_patch(path("v1", "pods", ns, name(pod), "status"), {"status": {"conditions": [*others, cond]}})
            await events.emit(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name(pod)} to {self.config.node_name}", "default-scheduler")
            bound.append(bound_pod)

    # -----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        async with Api(self.credentials) as api:
            events = Events(api, self.config.node_name)
            self.kubelet = Kubelet(api, self.config, events, self.node_ip)
            self.jobs = JobController(api, events, timedelta(seconds=self.config.backoff_base_s))
            logs = LogServer(lambda ns, pod, container: self.config.state_dir / "logs" / f"{ns}_{pod}_{container}.log",
                             self.kubelet.container_running)
            self.kubelet_port = await logs.start(self.node_ip)
            node = await self._register_node(api)
            await self.kubelet.adopt_leftovers((await api.get(path("v1", "pods")))["items"])
            watched = [path("batch/v1", "jobs"), path("v1", "pods"), path("v1", "secrets"), path("v1", "configmaps")]
            watchers = [asyncio.create_task(api.watch_changes(url, self.wake), name=f"watch {url}") for url in watched]
            if ready is not None:
                ready()
            log.info("node %s ready: pods get IPs in %s, state in %s", self.config.node_name, self.config.pod_cidr, self.config.state_dir)
            due: datetime | None = None
            try:
                while not stop.is_set():
                    await self._wait(stop, due)
                    try:
                        due = await self._pass(api, events, node)
                    except (ApiError, OSError, aiohttp.ClientError, asyncio.TimeoutError) as err:
                        log.warning("sync pass failed (retrying): %s", err)
                        due = datetime.now(timezone.utc) + timedelta(seconds=0.5)
                    except Exception as err:  # noqa: BLE001 - a bug of ours: keep the node up, report it
                        log.exception("sync pass failed unexpectedly")
                        self.errors.append(err)
                        due = datetime.now(timezone.utc) + timedelta(seconds=0.5)
            finally:
                for task in watchers:
                    task.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
                await self.kubelet.shutdown(min(3.0, self.config.max_grace_s))
                await logs.stop()
                try:
                    await asyncio.wait_for(api.merge_patch(path("v1", "nodes", None, self.config.node_name, "status"),
                                                           {"status": {"conditions": self.node_status(ready=False)["conditions"]}}), 5)
                except (ApiError, OSError, asyncio.TimeoutError):
                    pass

    async def _wait(self, stop: asyncio.Event, due: datetime | None) -> None:
        assert self.kubelet is not None
        timeout = self.config.resync_s
        if due is not None:
            timeout = max(0.0, min(timeout, (due - datetime.now(timezone.utc)).total_seconds()))
        waiters = [asyncio.create_task(e.wait()) for e in (self.wake, self.kubelet.changed, stop)]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
        self.wake.clear()
        self.kubelet.changed.clear()

    async def _pass(self, api: Api, events: Events, node: dict[str, Any]) -> datetime | None:
        assert self.kubelet is not None and self.jobs is not None
        now = datetime.now(timezone.utc)
        jobs = (await api.get(path("batch/v1", "jobs")))["items"]
        pods = (await api.get(path("v1", "pods")))["items"]
        due = await self.jobs.sync_all(jobs, pods, now)
        pods = (await api.get(path("v1", "pods")))["items"]
        await self._schedule(api, events, node, pods)
        pods = (await api.get(path("v1", "pods")))["items"]
        await self.kubelet.sync(pods)
        return due


class AgentThread:
    """A NodeAgent in its own thread and event loop, for tests: `with AgentThread(config) as agent:`."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.agent = NodeAgent(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="node-agent", daemon=True)

    def __enter__(self) -> AgentThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> AgentThread:
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None:
            raise RuntimeError("the node agent did not start") from self.error
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError("the node agent failed") from self.error
        if self.agent.errors:
            raise RuntimeError(f"the node agent hit {len(self.agent.errors)} unexpected error(s)") from self.agent.errors[0]

    def _main(self) -> None:
        async def amain() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.agent.run(self._stop, self._ready.set)

        try:
            asyncio.run(amain())
        except BaseException as exc:  # noqa: BLE001 - surfaced by start() and stop()
            self.error = exc
            self._ready.set()

    def call(self, fn: Callable[[NodeAgent], Any], timeout: float = 30) -> Any:
        """Run fn(agent) in the agent's loop (await it if it is a coroutine)."""
        assert self._loop is not None

        async def run() -> Any:
            result = fn(self.agent)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)
