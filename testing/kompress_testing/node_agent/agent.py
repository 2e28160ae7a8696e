"""The played kubelet: one Node and the pods bound to it, as local processes, in one asyncio loop.

    agent = NodeAgent(AgentConfig(kubeconfig=..., state_dir=...))
    await agent.run(stop_event)                      # or AgentThread(config).start() ... .stop()

Everything else is Kubernetes' own: kube-scheduler binds pods, kube-controller-manager's Job
controller makes them (`kompress_testing.cluster`). Owns: registering the Node (capacity, Ready,
the kubelet's HTTPS log endpoint that kube-apiserver proxies `kubectl logs` to), removing the
`node.kubernetes.io/not-ready` taint the TaintNodesByCondition admission plugin puts on a new Node
(the node lifecycle controller would, but it is not run: played nodes stop heartbeating between
tests), the loop (the kubelet re-reads its pods after any watch event, a process exit or `resync_s`:
level-triggered, so a restarted agent picks up where the cluster is), Events, the RBAC rules its
identity needs, and a clean stop (every child process ended, pods left Failed with DisruptionTarget
as graceful node shutdown leaves them, then the Node deleted so nothing is scheduled to it again).
Must not: read or write anything but through the API (api.py) with its own credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import aiohttp

from kompress_testing.node_agent.api import Api, ApiError, Credentials, path
from kompress_testing.node_agent.config import AgentConfig
from kompress_testing.node_agent.objects import iso
from kompress_testing.node_agent.kubelet import Kubelet
from kompress_testing.node_agent.logserver import LogServer, self_signed_context

log = logging.getLogger("kompress.node_agent")

AGENT_NAMESPACE = "kube-system"
AGENT_SERVICE_ACCOUNT = "kompress-node-agent"
# The kubelet version a Node reports: the API server's own, marked as played (`kubectl get nodes` shows it).
VERSION_SUFFIX = "-kompress-node-agent"


class Events:
    """core/v1 Events, as the kubelet records them."""

    def __init__(self, api: Api, node_name: str) -> None:
        self.api = api
        self.node_name = node_name

    async def emit(self, obj: dict[str, Any], etype: str, reason: str, message: str, component: str, *, field_path: str | None = None) -> None:
        meta = obj["metadata"]
        now = iso(datetime.now(timezone.utc))
        involved = {"apiVersion": obj.get("apiVersion") or "v1", "kind": obj.get("kind") or "Pod",
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
    """What the agent's ServiceAccount needs, and no more: the requests it makes (a subset of the Node
    authorizer's kubelet rights); each rule is shown needed by tests/testing/test_node_agent_life.py."""
    role = "kompress-node-agent"
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "persistentvolumes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "create", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
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
        self.registered = False  # the Node exists (made or found by us): it is left on stop
        self.kubelet_version = "v0.0.0" + VERSION_SUFFIX  # the server's, once read (run)
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
            "nodeInfo": {"kubeletVersion": self.kubelet_version, "kubeProxyVersion": self.kubelet_version, "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "kompress-node-agent://0.1", "osImage": "local processes",
                         "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        }

    async def _register_node(self, api: Api) -> None:
        self.kubelet_version = (await api.get("/version"))["gitVersion"] + VERSION_SUFFIX
        url = path("v1", "nodes", None, self.config.node_name)
        if await api.get_or_none(url) is None:
            await api.create(path("v1", "nodes"), self.node_object())
        self.registered = True
        # TaintNodesByCondition gave the new Node `not-ready:NoSchedule`; the node lifecycle controller
        # would lift it once Ready, and is not run here (see the module docstring).
        await api.merge_patch(url, {"spec": {"taints": None}})
        await api.merge_patch(url + "/status", {"status": self.node_status(ready=True)})

    def _my_pods(self) -> str:
        return path("v1", "pods") + "?" + urllib.parse.urlencode({"fieldSelector": f"spec.nodeName={self.config.node_name}"})

    # -----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        async with Api(self.credentials) as api:
            events = Events(api, self.config.node_name)
            self.kubelet = Kubelet(api, self.config, events, self.node_ip)
            logs = LogServer(lambda ns, pod, container: self.config.state_dir / "logs" / f"{ns}_{pod}_{container}.log",
                             self.kubelet.container_running, self.kubelet.container_waiting)
            self.kubelet_port = await logs.start(self.node_ip, ssl_context=self_signed_context(self.config.state_dir, self.node_ip))
            watchers: list[asyncio.Task[None]] = []
            try:
                await self._register_node(api)
                await self.kubelet.adopt_leftovers((await api.get(self._my_pods()))["items"])
                # Secrets and ConfigMaps too: a pod waiting for one starts when it appears.
                watched = [self._my_pods(), path("v1", "secrets"), path("v1", "configmaps")]
                watchers = [asyncio.create_task(api.watch_changes(url, self.wake), name=f"watch {url}") for url in watched]
                if ready is not None:
                    ready()
                log.info("node %s ready: pods get IPs in %s, state in %s", self.config.node_name, self.config.pod_cidr, self.config.state_dir)
                await self._sync_until(api, stop)
            finally:
                for task in watchers:
                    task.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
                await self.kubelet.shutdown(min(3.0, self.config.max_grace_s))
                await logs.stop()
                if self.registered:  # also when starting failed half-way: no Node of ours is left for kube-scheduler
                    await self._leave(api)

    async def _sync_until(self, api: Api, stop: asyncio.Event) -> None:
        assert self.kubelet is not None
        while not stop.is_set():
            await self._wait(stop)
            try:
                await self.kubelet.sync((await api.get(self._my_pods()))["items"])
            except (ApiError, OSError, aiohttp.ClientError, asyncio.TimeoutError) as err:
                log.warning("sync pass failed (retrying): %s", err)
            except Exception as err:  # noqa: BLE001 - a bug of ours: keep the node up, report it
                log.exception("sync pass failed unexpectedly")
                self.errors.append(err)

    async def _leave(self, api: Api) -> None:
        """Mark the Node NotReady, or delete it (the default for tests: kube-scheduler must never bind a later
        test's pod to a node nobody plays any more; podgc then removes what was left bound to it)."""
        url = path("v1", "nodes", None, self.config.node_name)
        try:
            if self.config.delete_node_on_stop:
                await asyncio.wait_for(api.delete(url), 5)
            else:
                await asyncio.wait_for(api.merge_patch(url + "/status", {"status": {"conditions": self.node_status(ready=False)["conditions"]}}), 5)
        except (ApiError, OSError, asyncio.TimeoutError):
            pass

    async def _wait(self, stop: asyncio.Event) -> None:
        assert self.kubelet is not None
        waiters = [asyncio.create_task(e.wait()) for e in (self.wake, self.kubelet.changed, stop)]
        try:
            await asyncio.wait(waiters, timeout=self.config.resync_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
        self.wake.clear()
        self.kubelet.changed.clear()


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
