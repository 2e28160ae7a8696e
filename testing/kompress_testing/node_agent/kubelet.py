"""The kubelet of the node agent's one node: pods bound to it become local processes, and back.

Owns, per pod: its sandbox folder (emptyDir and ephemeral volumes, ConfigMap/Secret volumes as files,
PersistentVolumeClaims as their bound PersistentVolume's hostPath or local path (FailedMount while a claim is
missing or unbound), hostPath as itself, a `medium: Memory`
emptyDir at /dev/shm as the host's /dev/shm), its loopback IP, its containers' processes (runtime.py)
and environment (podenv.py), the pod status a kubelet writes (phase Pending -> Running ->
Succeeded/Failed, PodScheduled/PodReadyToStartContainers/Initialized/ContainersReady/Ready
conditions, containerStatuses waiting/running/terminated with exitCode, reason and the termination
message, `FallbackToLogsOnError`), CreateContainerConfigError while a Secret or ConfigMap is missing,
graceful stop of a deleted pod (SIGTERM, the grace period, SIGKILL, then the final DELETE), and the
node's shutdown (pods terminated with the DisruptionTarget condition, as graceful node shutdown does).
Must not: decide anything a controller decides (how many pods, retries, where they run): the
Job controller and kube-scheduler do.
Not modelled: init and sidecar containers, container restarts (restartPolicy is taken as Never),
probes (a running container is ready), resource limits other than memory, pod-level activeDeadlineSeconds.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import json
import logging
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kompress_testing.node_agent import podenv, runtime
from kompress_testing.node_agent.api import Api, ApiError, path
from kompress_testing.node_agent.config import AgentConfig
from kompress_testing.node_agent.objects import (KUBELET_CONDITIONS, condition, deleting, drop_nulls, had_started, keep_transition_times, name,
                                                 parse_quantity, terminal, uid)

log = logging.getLogger("kompress.node_agent.kubelet")

SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
UNKNOWN_MESSAGE = "The container could not be located when the pod was terminated"


@dataclass
class ContainerState:
    name: str
    image: str
    waiting: tuple[str, str] = ("ContainerCreating", "")
    process: runtime.Process | None = None
    exit: runtime.Exit | None = None


@dataclass
class PodRuntime:
    """What this node holds for one pod."""

    namespace: str
    name: str
    uid: str
    ip: str
    sandbox: Path
    started_at: str
    containers: dict[str, ContainerState] = field(default_factory=dict)
    stopping: asyncio.Task[None] | None = None
    disruption: dict[str, Any] | None = None  # a DisruptionTarget condition, when the node ended it
    status_reason: tuple[str, str] | None = None  # pod status.reason / message
    confirmed_deletion: bool = False
    mount_error: str = ""

    @property
    def started(self) -> bool:
        return any(c.process is not None or c.exit is not None for c in self.containers.values())

    @property
    def running(self) -> bool:
        return any(c.process is not None and c.process.running for c in self.containers.values())

    @property
    def finished(self) -> bool:
        return all(c.exit is not None for c in self.containers.values())


def container_status(state: ContainerState, spec: dict[str, Any], log_path: Path, termination_file: Path) -> dict[str, Any]:
    status: dict[str, Any] = {"name": state.name, "image": state.image, "imageID": "", "restartCount": 0}
    if state.exit is not None:
        terminated: dict[str, Any] = {"exitCode": state.exit.code, "reason": state.exit.reason,
                                      "startedAt": state.exit.started_at, "finishedAt": state.exit.finished_at}
        message = state.exit.message or runtime.read_termination_message(termination_file)
        if not message and state.exit.code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = runtime.log_tail(log_path)
        if message:
            terminated["message"] = message
        if state.process is not None and state.process.pid is not None:
            terminated["containerID"] = f"kompress://{state.process.pid}"
            status["containerID"] = terminated["containerID"]
        status.update(state={"terminated": terminated}, ready=False, started=False)
    elif state.process is not None:
        status.update(state={"running": {"startedAt": state.process.started_at}}, ready=True, started=True,
                      containerID=f"kompress://{state.process.pid}")
    else:
        reason, message = state.waiting
        waiting = {"reason": reason, **({"message": message} if message else {})}
        status.update(state={"waiting": waiting}, ready=False, started=False)
    return status


class Kubelet:
    def __init__(self, api: Api, config: AgentConfig, events: Any, node_ip: str) -> None:
        self.api = api
        self.config = config
        self.events = events
        self.node_ip = node_ip
        self.pods: dict[str, PodRuntime] = {}
        self.changed = asyncio.Event()
        self._network = ipaddress.ip_network(config.pod_cidr)
        self._ips_in_use: set[str] = set()

    # -----------------------------------------------------------------------------------------
    # Paths and addresses
    # -----------------------------------------------------------------------------------------

    def log_path(self, pod: dict[str, Any], container: str) -> Path:
        return self.config.state_dir / "logs" / f"{pod['metadata']['namespace']}_{name(pod)}_{container}.log"

    def termination_file(self, rt: PodRuntime, container: str) -> Path:
        return rt.sandbox / "termination" / container

    def _allocate_ip(self, ports: Sequence[int]) -> str:
        """The next free address of the pod network on which every declared port can be bound."""
        for address in self._network.hosts():
            ip = str(address)
            if ip in self._ips_in_use or ip == self.node_ip:
                continue
            if all(_bindable(ip, port) for port in ports):
                self._ips_in_use.add(ip)
                return ip
        raise RuntimeError(f"no free pod IP left in {self._network}")

    async def _claim_folders(self, pod: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        """The host folder of each PersistentVolumeClaim volume, by volume name, as a kubelet mounts it: the claim's
        bound PersistentVolume's `hostPath.path` or `local.path` (any other kind of PV: a folder per PV under the
        state dir); or the FailedMount message of a claim that is gone or not bound."""
        folders: dict[str, str] = {}
        ns = pod["metadata"]["namespace"]
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            if "persistentVolumeClaim" not in volume:
                continue
            claim = volume["persistentVolumeClaim"]["claimName"]
            pvc = await self.api.get_or_none(path("v1", "persistentvolumeclaims", ns, claim))
            pv_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            pv = await self.api.get_or_none(path("v1", "persistentvolumes", None, pv_name)) if pv_name else None
            if pvc is None or pv is None or ((pvc.get("status") or {}).get("phase")) != "Bound":
                state = "not found" if pvc is None else "is not bound"
                return {}, f'MountVolume.SetUp failed for volume "{volume["name"]}" : persistentvolumeclaim "{claim}" {state}'
            source = pv.get("spec") or {}
            host = (source.get("hostPath") or {}).get("path") or (source.get("local") or {}).get("path")
            folder = Path(host) if host else self.config.state_dir / "volumes" / "pv" / pv_name
            folder.mkdir(parents=True, exist_ok=True)  # hostPath DirectoryOrCreate; a local PV's folder exists already
            folders[volume["name"]] = str(folder)
        return folders, None

    def _volumes(self, pod: dict[str, Any], sandbox: Path, secrets: dict[podenv.Ref, dict[str, Any] | None],
                 claims: dict[str, str] | None = None) -> dict[str, str]:
        """Each volume's host folder, by volume name (`claims`: those of PersistentVolumeClaims, _claim_folders)."""
        hosts: dict[str, str] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            vname = volume["name"]
            folder = sandbox / "volumes" / vname
            if "emptyDir" in volume and (volume["emptyDir"] or {}).get("medium") == "Memory" and Path("/dev/shm").is_dir():
                hosts[vname] = "/dev/shm"
                continue
            if "hostPath" in volume:
                hosts[vname] = volume["hostPath"]["path"]
                continue
            if "persistentVolumeClaim" in volume:
                hosts[vname] = (claims or {})[vname]
                continue
            folder.mkdir(parents=True, exist_ok=True)
            for kind, key in (("secrets", "secret"), ("configmaps", "configMap")):
                if key in volume:
                    ref_name = volume[key].get("secretName") if kind == "secrets" else volume[key].get("name")
                    obj = secrets.get(podenv.Ref(kind, ref_name)) or {}
                    for item, value in (obj.get("data") or {}).items():
                        data = base64.b64decode(value) if kind == "secrets" else value.encode()
                        (folder / item).write_bytes(data)
            hosts[vname] = str(folder)
        return hosts

    # -----------------------------------------------------------------------------------------
    # The sync of one pod
    # -----------------------------------------------------------------------------------------

    async def sync(self, pods: Sequence[dict[str, Any]]) -> None:
        """Every pod bound to this node, and the processes of pods that are gone."""
        seen = set()
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") != self.config.node_name:
                continue
            seen.add(uid(pod))
            try:
                await self.sync_pod(pod)
            except ApiError as err:
                log.debug("pod %s: %s", name(pod), err)
        for gone in [u for u in self.pods if u not in seen]:
            await self._forget(self.pods[gone])

    async def sync_pod(self, pod: dict[str, Any]) -> None:
        rt = self.pods.get(uid(pod))
        if terminal(pod):
            if rt is not None and rt.running:  # someone else wrote a terminal phase: stop what runs
                await self._stop(rt, 0)
            await self._confirm_deletion(pod, rt)
            return
        if rt is None:
            if deleting(pod):
                # Deleted before it started: a kubelet still moves it to a terminal phase, then deletes it.
                await self._write_status(pod, self._never_started_status(pod))
                await self._confirm_deletion(pod, None)
                return
            rt = await self._admit(pod)
        if deleting(pod) and rt.stopping is None and not rt.finished:
            grace = min(float((pod["metadata"].get("deletionGracePeriodSeconds") or 0)), self.config.max_grace_s)
            for cname in rt.containers:
                await self.events.emit(pod, "Normal", "Killing", f"Stopping container {cname}", "kubelet", field_path=f"spec.containers{{{cname}}}")
            rt.stopping = asyncio.get_running_loop().create_task(self._stop(rt, grace))
        if not rt.started and not deleting(pod):
            await self._start(pod, rt)
        if deleting(pod) and not rt.started:
            for state in rt.containers.values():  # it never ran: the container ends as the runtime reports it
                state.exit = runtime.Exit(137, "ContainerStatusUnknown", rt.started_at, runtime.now_iso(), UNKNOWN_MESSAGE)
        await self._write_status(pod, self.status(pod, rt))
        if rt.finished and deleting(pod):
            await self._confirm_deletion(pod, rt)

    async def _admit(self, pod: dict[str, Any]) -> PodRuntime:
        spec = pod.get("spec") or {}
        ports = [int(p["containerPort"]) for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("containerPort")]
        sandbox = self.config.state_dir / "pods" / f"{pod['metadata']['namespace']}_{name(pod)}_{uid(pod)[:8]}"
        for sub in ("termination", "home", "tmp", "volumes"):
            (sandbox / sub).mkdir(parents=True, exist_ok=True)
        rt = PodRuntime(pod["metadata"]["namespace"], name(pod), uid(pod), self._allocate_ip(ports), sandbox, runtime.now_iso())
        for container in spec.get("containers") or []:
            rt.containers[container["name"]] = ContainerState(container["name"], container.get("image", ""))
            self.termination_file(rt, container["name"]).touch()
        self.pods[rt.uid] = rt
        return rt

    async def _start(self, pod: dict[str, Any], rt: PodRuntime) -> None:
        """Build each container's environment (Secrets and ConfigMaps read now) and start it."""
        spec = pod.get("spec") or {}
        pod = copy.deepcopy(pod)
        pod.setdefault("status", {}).update(podIP=rt.ip, hostIP=self.node_ip)
        if spec.get("initContainers"):
            for state in rt.containers.values():
                state.waiting = ("CreateContainerConfigError", "init containers are not supported by the node agent")
            return
        refs = set()
        for container in spec.get("containers") or []:
            refs |= podenv.references(container)
        refs |= {ref for volume in spec.get("volumes") or [] if (ref := _volume_ref(volume)) is not None}
        ns = pod["metadata"]["namespace"]
        objects = {ref: await self.api.get_or_none(path("v1", ref.kind, ns, ref.name)) for ref in refs}
        missing = [(volume["name"], ref) for volume in spec.get("volumes") or [] for ref in [_volume_ref(volume)]
                   if ref is not None and objects.get(ref) is None and not (volume.get("secret") or volume.get("configMap") or {}).get("optional")]
        if missing:
            vname, ref = missing[0]
            message = f'MountVolume.SetUp failed for volume "{vname}" : {ref.kind[:-1]} "{ref.name}" not found'
            if rt.mount_error != message:
                await self.events.emit(pod, "Warning", "FailedMount", message, "kubelet")
            rt.mount_error = message
            return
        claims, problem = await self._claim_folders(pod)
        if problem is not None:
            if rt.mount_error != problem:
                await self.events.emit(pod, "Warning", "FailedMount", problem, "kubelet")
            rt.mount_error = problem
            return
        hosts = self._volumes(pod, rt.sandbox, objects, claims)
        launches = []
        for container in spec.get("containers") or []:
            cname = container["name"]
            mounts = {m["mountPath"]: os.path.join(hosts[m["name"]], m["subPath"]) if m.get("subPath") else hosts[m["name"]]
                      for m in container.get("volumeMounts") or [] if m.get("name") in hosts}
            paths = podenv.PodPaths(mounts=mounts, termination_log=str(self.termination_file(rt, cname)), pod_ip=rt.ip)
            try:
                env = podenv.container_env(pod, container, objects, paths, self._base_env(pod, rt))
                argv = podenv.command_line(container, self.config.entrypoints, env, paths)
            except podenv.ContainerConfigError as err:
                if rt.containers[cname].waiting != ("CreateContainerConfigError", str(err)):
                    await self.events.emit(pod, "Warning", "Failed", f"Error: {err}", "kubelet", field_path=f"spec.containers{{{cname}}}")
                rt.containers[cname].waiting = ("CreateContainerConfigError", str(err))
                return
            workdir = paths.rewrite(container["workingDir"]) if container.get("workingDir") else str(rt.sandbox / "home")
            launches.append((container, argv, env, workdir))
        for container, argv, env, workdir in launches:
            state = rt.containers[container["name"]]
            limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            Path(workdir).mkdir(parents=True, exist_ok=True)
            state.process = runtime.Process(
                argv, env, Path(workdir), self.log_path(pod, state.name), bin_dirs=self.config.bin_dirs,
                memory_limit=parse_quantity(limit) if (limit and self.config.enforce_memory_limits) else None,
            )
            state.process.exited.add_done_callback(lambda fut, state=state: self._on_exit(rt, state, fut))
            if state.process.popen is not None:
                await self.events.emit(pod, "Normal", "Started", f"Started container {state.name}", "kubelet",
                                       field_path=f"spec.containers{{{state.name}}}")

    def _on_exit(self, rt: PodRuntime, state: ContainerState, fut: asyncio.Future[runtime.Exit]) -> None:
        state.exit = fut.result()
        self._record(rt, state)
        self.changed.set()

    def _record(self, rt: PodRuntime, state: ContainerState) -> None:
        """One JSON line per ended container in <state-dir>/containers.jsonl: what no pod status says (peak memory)."""
        assert state.exit is not None and state.process is not None
        line = {"namespace": rt.namespace, "pod": rt.name, "container": state.name, "exitCode": state.exit.code,
                "reason": state.exit.reason, "seconds": state.process.seconds, "peakMemoryBytes": state.process.peak_rss,
                "memoryLimitBytes": state.process.memory_limit}
        with open(self.config.state_dir / "containers.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        log.info("container %s of pod %s/%s ended: exit %d (%s), peak memory %.0f MiB", state.name, rt.namespace, rt.name,
                 state.exit.code, state.exit.reason, state.process.peak_rss / 2**20)

    def _base_env(self, pod: dict[str, Any], rt: PodRuntime) -> dict[str, str]:
        """The image's environment: this repository's tools first on PATH, a home and temp folder of the pod's own."""
        bin_path = os.pathsep.join(str(d) for d in self.config.bin_dirs)
        host, _, port = self.config.api_host_port.partition(":")
        env = {
            "PATH": os.pathsep.join(p for p in (bin_path, "/usr/local/bin:/usr/bin:/bin") if p),
            "HOME": str(rt.sandbox / "home"),
            "TMPDIR": str(rt.sandbox / "tmp"),
            "HOSTNAME": name(pod),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
        }
        env.update(self.config.extra_env)
        return env

    async def _stop(self, rt: PodRuntime, grace_s: float) -> None:
        await asyncio.gather(*(c.process.stop(grace_s) for c in rt.containers.values() if c.process is not None and c.process.running))
        self.changed.set()

    async def _confirm_deletion(self, pod: dict[str, Any], rt: PodRuntime | None) -> None:
        """The kubelet's final DELETE (grace 0) once the containers are gone: the pod leaves the API."""
        if not deleting(pod) or (rt is not None and rt.confirmed_deletion):
            return
        await self.api.delete(path("v1", "pods", pod["metadata"]["namespace"], name(pod)), gracePeriodSeconds=0,
                              preconditions={"uid": uid(pod)})
        if rt is not None:
            rt.confirmed_deletion = True

    async def _forget(self, rt: PodRuntime) -> None:
        """The pod left the API: stop whatever still runs, free its IP, remove its sandbox (logs stay)."""
        if rt.running:
            await self._stop(rt, 0)
        self.pods.pop(rt.uid, None)
        self._ips_in_use.discard(rt.ip)
        shutil.rmtree(rt.sandbox, ignore_errors=True)

    def container_waiting(self, namespace: str, pod: str, container: str) -> str | None:
        """The reason a container of a pod this node holds has not started yet (None: it started, or is unknown)."""
        for rt in self.pods.values():
            if (rt.namespace, rt.name) == (namespace, pod) and container in rt.containers:
                state = rt.containers[container]
                return state.waiting[0] if state.process is None and state.exit is None else None
        return None

    def container_running(self, namespace: str, pod: str, container: str) -> bool:
        for rt in self.pods.values():
            if (rt.namespace, rt.name) == (namespace, pod) and container in rt.containers:
                state = rt.containers[container]
                return state.exit is None
        return False

    # -----------------------------------------------------------------------------------------
    # Status
    # -----------------------------------------------------------------------------------------

    def status(self, pod: dict[str, Any], rt: PodRuntime) -> dict[str, Any]:
        old = pod.get("status") or {}
        specs = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
        statuses = [container_status(state, specs.get(cname, {}), self.log_path(pod, cname), self.termination_file(rt, cname))
                    for cname, state in rt.containers.items()]
        now = runtime.now_iso()
        if rt.finished:
            pod_phase = "Succeeded" if all(s.exit.code == 0 for s in rt.containers.values() if s.exit) else "Failed"
        elif rt.started:
            pod_phase = "Running"
        else:
            pod_phase = "Pending"
        not_ready = [s["name"] for s in statuses if not s["ready"]]
        if pod_phase in ("Succeeded", "Failed"):
            ready = (False, "PodCompleted", None)
        elif not_ready:
            ready = (False, "ContainersNotReady", f"containers with unready status: [{' '.join(not_ready)}]")
        else:
            ready = (True, None, None)
        conditions = [
            condition("PodReadyToStartContainers", not rt.finished, since=now),
            condition("Initialized", True, since=now),
            condition("Ready", ready[0], ready[1], ready[2], since=now),
            condition("ContainersReady", ready[0], ready[1], ready[2], since=now),
            condition("PodScheduled", True, since=now),
        ]
        if rt.disruption:
            conditions.insert(0, rt.disruption)
        # Conditions others wrote stay, as the kubelet's status manager keeps them (mergePodStatus): above all
        # kube-apiserver's DisruptionTarget on an evicted pod, which a podFailurePolicy matches once it ends.
        mine = {c["type"] for c in conditions}
        conditions += [c for c in old.get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS | mine]
        status: dict[str, Any] = {
            "phase": pod_phase,
            "conditions": keep_transition_times(conditions, old.get("conditions") or []),
            "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
            "podIP": rt.ip, "podIPs": [{"ip": rt.ip}],
            "startTime": rt.started_at,
            "containerStatuses": statuses,
        }
        if old.get("qosClass"):
            status["qosClass"] = old["qosClass"]
        if rt.status_reason:
            status["reason"], status["message"] = rt.status_reason
        return status

    def _never_started_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        old = copy.deepcopy(pod.get("status") or {})
        now = runtime.now_iso()
        old["phase"] = "Failed"
        old["containerStatuses"] = [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "", "restartCount": 0, "ready": False, "started": False,
            "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown", "message": UNKNOWN_MESSAGE,
                                     "startedAt": None, "finishedAt": now}},
        } for c in (pod.get("spec") or {}).get("containers") or []]
        return old

    async def _write_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        status = drop_nulls(status)  # as the server stores a built-in object (Go structs have no nulls)
        if status == (pod.get("status") or {}):
            return
        await self.api.json_patch(path("v1", "pods", pod["metadata"]["namespace"], name(pod), "status"),
                                  [{"op": "add", "path": "/status", "value": status}])

    # -----------------------------------------------------------------------------------------
    # The node going away, and coming back
    # -----------------------------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Graceful node shutdown: every pod is stopped and left Failed with DisruptionTarget (TerminationByKubelet)."""
        now = runtime.now_iso()
        for rt in list(self.pods.values()):
            if not rt.finished:
                rt.disruption = condition("DisruptionTarget", True, "TerminationByKubelet", SHUTDOWN_MESSAGE, since=now)
                rt.status_reason = ("Terminated", SHUTDOWN_MESSAGE)
        await asyncio.gather(*(self._stop(rt, grace_s) for rt in self.pods.values() if rt.running))
        for rt in list(self.pods.values()):
            for state in rt.containers.values():
                if state.exit is None:
                    state.exit = runtime.Exit(137, "ContainerStatusUnknown", rt.started_at, runtime.now_iso(), UNKNOWN_MESSAGE)
            try:
                pod = await asyncio.wait_for(self.api.get_or_none(path("v1", "pods", rt.namespace, rt.name)), 5)
                if pod is not None and uid(pod) == rt.uid and not terminal(pod):
                    await asyncio.wait_for(self._write_status(pod, self.status(pod, rt)), 5)
            except (ApiError, OSError, asyncio.TimeoutError) as err:
                log.debug("could not report %s at shutdown: %s", rt.name, err)

    async def adopt_leftovers(self, pods: Sequence[dict[str, Any]]) -> None:
        """Pods bound here whose containers an earlier agent started (the agent was restarted): they are lost.
        A pod none of whose containers had started (bound while no agent ran, or between this agent's
        registration and now) is simply started by the next sync, as a kubelet starts a pod it finds."""
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") != self.config.node_name or terminal(pod) or uid(pod) in self.pods:
                continue
            if not had_started(pod) and not deleting(pod):
                continue
            status = self._never_started_status(pod)
            for cs, old in zip(status["containerStatuses"], (pod.get("status") or {}).get("containerStatuses") or []):
                started = ((old.get("state") or {}).get("running") or {}).get("startedAt")
                if started:
                    cs["state"]["terminated"]["startedAt"] = started
            await self._write_status(pod, status)
            if deleting(pod):
                await self._confirm_deletion(pod, None)


def _volume_ref(volume: dict[str, Any]) -> podenv.Ref | None:
    if "secret" in volume:
        return podenv.Ref("secrets", volume["secret"]["secretName"])
    if "configMap" in volume:
        return podenv.Ref("configmaps", volume["configMap"]["name"])
    return None


def _bindable(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True
