"""Helpers and fixtures for the operator's integration tests: the emulated API server, the operator, and a
stand-in for the Job controller and kubelet that writes Job and Pod status through the API, as they would.
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

KUBECTL = "/usr/bin/kubectl"
NAMESPACE = "ml"
CJOBS = "/apis/kompress.dev/v1alpha1/namespaces/ml/compressionjobs"
JOBS = "/apis/batch/v1/namespaces/ml/jobs"
PODS = "/api/v1/namespaces/ml/pods"


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
    """The emulated API server (the harness's `apiserver` fixture) with the views these tests need."""

    api: Any  # kompress_testing.pytest_plugin.Cluster
    kubeconfig: Path  # admin, default namespace ml

    @property
    def client(self) -> Any:
        return self.api.client

    @property
    def server(self) -> Any:
        return self.api.server

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([KUBECTL, *args], input=input, env=self.api.env(self.kubeconfig), capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def cjob(self, name: str) -> dict[str, Any]:
        return self.client.get(f"{CJOBS}/{name}")

    def status(self, name: str) -> dict[str, Any]:
        return self.cjob(name).get("status") or {}

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == ctype), None)

    def jobs(self) -> list[dict[str, Any]]:
        return self.client.get(JOBS)["items"]

    def job(self, name: str) -> dict[str, Any]:
        return self.client.get(f"{JOBS}/{name}")

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.client.get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
        return [e for e in items if e.get("involvedObject", {}).get("name") == name and e["involvedObject"].get("kind") == "CompressionJob"]

    def wait_phase(self, name: str, phase: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_for(f"{name} to be {phase}", lambda: (s := self.status(name)).get("phase") == phase and s, timeout)


@pytest.fixture
def cluster(apiserver: Any, tmp_path: Path) -> Cluster:
    from kompress_testing.apiserver import ADMIN_TOKEN, write_kubeconfig

    apiserver.client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    return Cluster(apiserver, write_kubeconfig(tmp_path / "kubeconfig-ml", apiserver.url, ADMIN_TOKEN, namespace=NAMESPACE))


@dataclass
class Clock:
    """The operator's clock, which a test may move forward (pending timeouts without waiting 30 minutes)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


class OperatorThread:
    """The real operator (Kopf, real HTTP) in its own thread and event loop."""

    def __init__(self, kubeconfig: Path, clock: Clock, **settings: Any) -> None:
        from kompress_operator.config import OperatorConfig

        settings = {"resync_interval_s": 0.3, "worker_image": "registry.example/kompress-job:1.0", **settings}
        self.config = OperatorConfig(kubeconfig=str(kubeconfig), health_port=0, metrics_port=0, **settings)
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
    op = OperatorThread(cluster.kubeconfig, clock).start()
    yield op
    op.stop()


class JobController:
    """Plays the Job controller and the kubelet: makes a Job's pod and writes Pod and Job status through the API."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def start_pod(self, job_name: str, suffix: str = "aaaaa") -> dict[str, Any]:
        from kompress_testing.wrappers import pod_for

        job = self.cluster.job(job_name)
        pod = pod_for(job, suffix).obj()
        for key in ("uid", "creationTimestamp"):
            pod["metadata"].pop(key, None)
        pod.pop("status", None)
        return self.cluster.client.post(PODS, pod)

    def pod_status(self, pod_name: str, state: Callable[[Any], Any]) -> dict[str, Any]:
        """state: a PodWrapper method chain, e.g. lambda p: p.running(ip="127.0.0.1")."""
        from kompress_testing.wrappers import PodWrapper

        pod = self.cluster.client.get(f"{PODS}/{pod_name}")
        status = state(PodWrapper(copy.deepcopy(pod))).obj()["status"]
        return self.cluster.client.patch(f"{PODS}/{pod_name}/status", {"status": status})

    def job_status(self, job_name: str, state: Callable[[Any], Any]) -> dict[str, Any]:
        """state: a JobWrapper method chain, e.g. lambda j: j.started().counts(active=1)."""
        from kompress_testing.wrappers import JobWrapper

        job = self.cluster.job(job_name)
        status = state(JobWrapper(job)).obj()["status"]
        return self.cluster.client.patch(f"{JOBS}/{job_name}/status", {"status": status})

    def run_to_end(self, job_name: str, pod_state: Callable[[Any], Any], job_state: Callable[[Any], Any], suffix: str = "aaaaa") -> dict[str, Any]:
        """A pod that runs and ends (pod_state), then the Job's verdict (job_state)."""
        pod = self.start_pod(job_name, suffix)
        self.job_status(job_name, lambda j: j.started())
        self.pod_status(pod["metadata"]["name"], pod_state)
        self.job_status(job_name, job_state)
        return pod


@pytest.fixture
def controller(cluster: Cluster) -> JobController:
    return JobController(cluster)


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


def plan(cluster: Cluster, controller: JobController, result: PlannerResult | None = None) -> dict[str, Any]:
    """Let the planning pod succeed with a plan, and return the worker Job that follows."""
    job = one_job(cluster, "plan")
    controller.run_to_end(job["metadata"]["name"], lambda p: p.succeeded(result or PlannerResult(ok=True, plan=PLAN)), lambda j: j.complete())
    return one_job(cluster, "worker")


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def event_reasons(cluster: Cluster, name: str) -> list[str]:
    return [e["reason"] for e in cluster.events(name)]
