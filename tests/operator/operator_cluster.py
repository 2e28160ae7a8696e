"""Helpers and fixtures for the operator's integration tests: the session's real control plane (a namespace
per test), the operator, and the test playing the kubelet of one Node (it writes Pod status through the API,
as a kubelet would). The Job controller, the scheduler and the garbage collector are Kubernetes' own.
(conftest.py re-exports the fixtures; tests import the helpers from here.)"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from kompress_api import v1alpha1 as api
from kompress_api.worker_protocol import PlannerResult, WorkerResult
from kompress_testing.wrappers import make_cjob



def wait_for(what: str, probe: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until probe() returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (KeyError, IndexError, TypeError, AssertionError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


@dataclass
class Cluster:
    """The session's control plane seen from this test's namespace, with the views these tests need."""

    api: Any  # kompress_testing.pytest_plugin.Cluster

    @property
    def namespace(self) -> str:
        return self.api.namespace

    @property
    def kubeconfig(self) -> Path:
        return self.api.kubeconfig

    @property
    def client(self) -> Any:
        return self.api.client

    @property
    def cjobs_path(self) -> str:
        return f"/apis/kompress.dev/v1alpha1/namespaces/{self.namespace}/compressionjobs"

    @property
    def jobs_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs"

    @property
    def pods_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.api.kubectl(*args, input=input, check=check)

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """kubectl apply, into this test's namespace whatever the manifest says."""
        manifest = copy.deepcopy(manifest)
        manifest["metadata"]["namespace"] = self.namespace
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def cjob(self, name: str) -> dict[str, Any]:
        return self.client.get(f"{self.cjobs_path}/{name}")

    def status(self, name: str) -> dict[str, Any]:
        return self.cjob(name).get("status") or {}

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == ctype), None)

    def jobs(self) -> list[dict[str, Any]]:
        return self.client.get(self.jobs_path)["items"]

    def job(self, name: str) -> dict[str, Any]:
        return self.client.get(f"{self.jobs_path}/{name}")

    def pods(self, job_name: str) -> list[dict[str, Any]]:
        return self.client.get(self.pods_path, labelSelector=f"batch.kubernetes.io/job-name={job_name}")["items"]

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.client.get(f"/api/v1/namespaces/{self.namespace}/events")["items"]
        return [e for e in items if e.get("involvedObject", {}).get("name") == name and e["involvedObject"].get("kind") == "CompressionJob"]

    def wait_phase(self, name: str, phase: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(f"{name} to be {phase}", lambda: (s := self.status(name)).get("phase") == phase and s, timeout)


@pytest.fixture
def cluster(apiserver: Any) -> Cluster:
    return Cluster(apiserver)


@dataclass
class Clock:
    """The operator's clock, which a test may move forward (pending timeouts without waiting 30 minutes)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


class OperatorThread:
    """The real operator (Kopf, real HTTP) in its own thread and event loop. It watches only the test's
    namespace unless told otherwise: the session's cluster holds other tests' leftovers."""

    def __init__(self, cluster: Cluster, clock: Clock, **settings: Any) -> None:
        from kompress_operator.config import OperatorConfig

        settings = {"kubeconfig": cluster.kubeconfig, "resync_interval_s": 0.3, "worker_image": "registry.example/kompress-job:1.0",
                    "watch_namespaces": (cluster.namespace,), "health_port": 0, "metrics_port": 0, **settings}
        settings["kubeconfig"] = str(settings["kubeconfig"])
        self.config = OperatorConfig(**settings)
        self.clock = clock
        self.runtime: Any = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> OperatorThread:
        from kompress_operator import main

        def run() -> None:
            try:
                asyncio.run(main.run(self.config, stop_flag=self._stop, ready_flag=self._ready, clock=self.clock, on_runtime=self._keep))
            except BaseException as err:  # noqa: BLE001 - surfaced by the test
                self.error = err
                self._ready.set()

        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=run, name="kompress-operator", daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "the operator did not get ready"
        if self.error is not None:
            raise self.error
        return self

    def _keep(self, runtime: Any) -> None:
        self.runtime = runtime

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(15)
            assert not self._thread.is_alive(), "the operator did not stop"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def operator(cluster: Cluster, clock: Clock) -> Iterator[OperatorThread]:
    op = OperatorThread(cluster, clock).start()
    yield op
    op.stop()


GPU_NODE_CAPACITY = {"cpu": "64", "memory": "1Ti", "ephemeral-storage": "10Ti", "pods": "110", "nvidia.com/gpu": "8"}


class Kubelet:
    """The test plays the kubelet of one Node (8 GPUs) that kube-scheduler binds pods to: it writes the
    status of the pods the real Job controller made, and the Job controller decides the rest."""

    def __init__(self, cluster: Cluster, node_name: str) -> None:
        self.cluster = cluster
        self.node_name = node_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._confirm_deletions, name=f"kubelet {node_name}", daemon=True)

    def _confirm_deletions(self) -> None:
        """What a kubelet does for a deleted pod (the Job controller's, on suspend or a deadline): the container is
        stopped (SIGTERM: exit 143) and the pod's deletion confirmed with grace 0, so replacements can follow."""
        from kompress_testing.cluster.client import ApiStatusError
        from kompress_testing.wrappers import PodWrapper

        client = self.cluster.client
        while not self._stop.wait(0.2):
            try:
                pods = client.get("/api/v1/pods", fieldSelector=f"spec.nodeName={self.node_name}")["items"]
                for pod in (p for p in pods if p["metadata"].get("deletionTimestamp")):
                    url = f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"
                    if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                        client.patch(url + "/status", {"status": PodWrapper(copy.deepcopy(pod)).terminated(143).obj()["status"]})
                    client.delete(url, {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                        "preconditions": {"uid": pod["metadata"]["uid"]}})
            except (ApiStatusError, OSError):
                continue

    def register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "labels": {"kubernetes.io/hostname": self.node_name}}}
        url = f"/api/v1/nodes/{self.node_name}"
        self.cluster.client.post("/api/v1/nodes", node)
        # TaintNodesByCondition's not-ready taint: the node lifecycle controller would lift it (not run here).
        self.cluster.client.patch(url, {"spec": {"taints": None}})
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "played by the test",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
        self.cluster.client.patch(url + "/status", {"status": {"capacity": GPU_NODE_CAPACITY, "allocatable": GPU_NODE_CAPACITY,
                                                               "conditions": [ready]}})
        self._thread.start()

    def remove(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.cluster.client.delete(f"/api/v1/nodes/{self.node_name}")

    def start_pod(self, job_name: str) -> dict[str, Any]:
        """The pod the Job controller made for `job_name` (waits for it); the newest if there are several."""
        pods = wait_for(f"a pod of Job {job_name}", lambda: [p for p in self.cluster.pods(job_name) if not p["metadata"].get("deletionTimestamp")
                                                              and (p.get("status") or {}).get("phase") in (None, "Pending")])
        return max(pods, key=lambda p: p["metadata"]["creationTimestamp"])

    def pod_status(self, pod_name: str, state: Callable[[Any], Any]) -> dict[str, Any]:
        """state: a PodWrapper method chain, e.g. lambda p: p.running(ip="127.0.0.1")."""
        from kompress_testing.wrappers import PodWrapper

        pod = self.cluster.client.get(f"{self.cluster.pods_path}/{pod_name}")
        status = state(PodWrapper(copy.deepcopy(pod))).obj()["status"]
        return self.cluster.client.patch(f"{self.cluster.pods_path}/{pod_name}/status", {"status": status})

    def run_to_end(self, job_name: str, pod_state: Callable[[Any], Any]) -> dict[str, Any]:
        """The Job's pod runs and ends (pod_state); the Job controller then gives the Job its verdict."""
        pod = self.start_pod(job_name)
        self.pod_status(pod["metadata"]["name"], lambda p: p.running())
        return self.pod_status(pod["metadata"]["name"], pod_state)


@pytest.fixture
def controller(cluster: Cluster) -> Iterator[Kubelet]:
    kubelet = Kubelet(cluster, f"gpu-node-{cluster.namespace[-6:]}")
    kubelet.register()
    yield kubelet
    kubelet.remove()


def reconciled_again(cluster: Cluster, op: OperatorThread, name: str, times: int = 5) -> None:
    """Bring `times` more reconciles of `name`, one change to it each (a job waiting quietly is not resynced)."""
    for touch in range(times):
        before = op.runtime.metrics.reconciles._value.get()
        cluster.client.patch(f"{cluster.cjobs_path}/{name}", {"metadata": {"labels": {"touched": str(touch)}}})
        wait_for("the reconcile a change brings", lambda: op.runtime.metrics.reconciles._value.get() > before)


def result_json(model: Any) -> str:
    return json.dumps(model.wire())


# --- what the flow tests share ---------------------------------------------------------------------

GIB = 1024**3
PLAN = api.PlanSummary(
    total_parameters=2_000_000,
    estimated_checkpoint_bytes=3_000_000,
    compression_ratio=2.6,
    host_memory_bytes=8 * GIB,
    gpu_memory_bytes=1 * GIB,
    disk_bytes=20 * GIB,
    servable=True,
    problems=[api.PlanProblem(severity="warning", code="TensorParallelMisaligned", message="TP-4 splits 1408 into 352", fix="serve with TP 1 or 2")],
)
RESULT = WorkerResult(ok=True, output_uri="s3://models/tiny", manifest_uri="s3://models/tiny/kompress.json", checkpoint_bytes=3_100_000, compression_ratio=2.5)


def tiny(name: str = "tiny") -> Any:
    return make_cjob(name).with_hub_token("hf-token").with_s3_credentials("output", "s3-creds")


def jobs_of(cluster: Cluster, role: str) -> list[dict[str, Any]]:
    return [j for j in cluster.jobs() if j["metadata"]["labels"].get("kompress.dev/role") == role]


def one_job(cluster: Cluster, role: str) -> dict[str, Any]:
    (job,) = wait_for(f"a {role} Job", lambda: jobs_of(cluster, role))
    return job


def plan(cluster: Cluster, controller: Kubelet, result: PlannerResult | None = None) -> dict[str, Any]:
    """Let the planning pod succeed with a plan, and return the worker Job that follows."""
    job = one_job(cluster, "plan")
    controller.run_to_end(job["metadata"]["name"], lambda p: p.succeeded(result or PlannerResult(ok=True, plan=PLAN)))
    return one_job(cluster, "worker")


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def event_reasons(cluster: Cluster, name: str) -> list[str]:
    return [e["reason"] for e in cluster.events(name)]
