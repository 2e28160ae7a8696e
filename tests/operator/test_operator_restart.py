"""An operator stopped or killed at any point and started again makes no second Job and loses no status."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from kompress_api import v1alpha1 as api
from kompress_api.worker_protocol import PlannerResult
from kompress_testing.wrappers import make_cjob

from kompress_operator import child_names, children
from kompress_operator.config import OperatorConfig
from operator_cluster import PLAN, OperatorThread, jobs_of, plan, wait_for

pytestmark = pytest.mark.integration


def _conditions(status):
    return {c["type"]: (c["status"], c["reason"], c["lastTransitionTime"]) for c in status.get("conditions") or []}


def test_restart_mid_flight_keeps_one_job_and_the_status(cluster, controller, clock):
    first = OperatorThread(cluster, clock).start()
    cluster.apply(make_cjob("tiny").manifest())
    worker = plan(cluster, controller)
    before = cluster.wait_phase("tiny", "Queued")
    first.stop()

    # while no operator runs, the worker starts
    name = worker["metadata"]["name"]
    pod = controller.start_pod(name)
    controller.pod_status(pod["metadata"]["name"], lambda p: p.running())

    second = OperatorThread(cluster, clock).start()
    try:
        after = cluster.wait_phase("tiny", "Running")
        # the replayed history (every object listed again as new) made nothing twice
        wait_for("a few resyncs", lambda: second.runtime.metrics.reconciles._value.get() > 5)
        assert len(jobs_of(cluster, "plan")) == 1 and len(jobs_of(cluster, "worker")) == 1
        assert after["plan"] == before["plan"]
        # what was true before the restart keeps its transition time
        assert _conditions(after)["Planned"] == _conditions(before)["Planned"]
        reasons = [e["reason"] for e in cluster.events("tiny")]
        assert reasons.count("PlanSucceeded") == 1 and reasons.count("Planning") == 1
    finally:
        second.stop()


def test_a_job_created_just_before_a_crash_is_adopted_not_duplicated(cluster, controller, clock):
    # The operator created the planning Job and died before recording it in the status.
    cluster.apply(make_cjob("tiny").manifest())
    cjob = api.parse(cluster.cjob("tiny"))
    cluster.client.post(cluster.jobs_path, children.build_plan_job(cjob, OperatorConfig(worker_image="registry.example/kompress-job:1.0")))
    assert cluster.status("tiny") == {}

    op = OperatorThread(cluster, clock).start()
    try:
        status = cluster.wait_phase("tiny", "Planning")
        assert status["children"]["planJob"] == child_names.plan_job_name(cjob)
        assert len(jobs_of(cluster, "plan")) == 1
        assert op.runtime.metrics.reconcile_errors._value.get() == 0
    finally:
        op.stop()


def test_a_job_of_the_same_name_owned_by_another_is_not_adopted(cluster, clock):
    cluster.apply(make_cjob("tiny").manifest())
    cjob = api.parse(cluster.cjob("tiny"))
    squatter = children.build_plan_job(cjob, OperatorConfig())
    squatter["metadata"]["ownerReferences"] = []
    cluster.client.post(cluster.jobs_path, squatter)

    op = OperatorThread(cluster, clock).start()
    try:
        cluster.wait_phase("tiny", "Failed")
        failed = cluster.condition("tiny", "Failed")
        assert failed["reason"] == "ChildNameTaken" and "is not controlled by CompressionJob" in failed["message"]
        assert cluster.status("tiny").get("children") is None
        assert len(cluster.jobs()) == 1
    finally:
        op.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_process(cluster, health: int, metrics: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "kompress_operator", f"--kubeconfig={cluster.kubeconfig}", f"--watch-namespaces={cluster.namespace}", f"--health-port={health}", f"--metrics-port={metrics}", "--resync-interval=0.3", "--worker-image=registry.example/kompress-job:1.0"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "KOMPRESS_LOG_FORMAT": "json"})


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_a_killed_operator_process_restarts_without_duplicates(cluster, controller):
    """SIGKILL mid-flight: no graceful shutdown, no chance to finish a write."""
    health, metrics = _free_port(), _free_port()
    process = _start_process(cluster, health, metrics)
    try:
        wait_for("the probe", lambda: _get(f"http://127.0.0.1:{health}/healthz"), timeout=20)
        for i in range(5):
            cluster.apply(make_cjob(f"job-{i}").manifest())
        # killed while the five are being planned (some Jobs made, some statuses written, maybe not all)
        wait_for("a first planning Job", lambda: jobs_of(cluster, "plan"), timeout=10, interval=0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

        process = _start_process(cluster, health, metrics)
        wait_for("every job planning", lambda: all(cluster.status(f"job-{i}").get("phase") == "Planning" for i in range(5)), timeout=20)
        for i in range(5):
            controller.run_to_end(child_names.plan_job_name(api.parse(cluster.cjob(f"job-{i}"))), lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)))
        wait_for("every job queued", lambda: all(cluster.status(f"job-{i}").get("phase") == "Queued" for i in range(5)), timeout=20)
        time.sleep(1)  # a few resyncs
        assert len(jobs_of(cluster, "plan")) == 5 and len(jobs_of(cluster, "worker")) == 5
        owners = sorted(j["metadata"]["ownerReferences"][0]["name"] for j in jobs_of(cluster, "worker"))
        assert owners == [f"job-{i}" for i in range(5)]
        # the probe and the metrics a platform team scrapes
        text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert 'kompress_compressionjobs{phase="Queued"} 5.0' in text
        assert "kompress_time_to_first_child_seconds_count" in text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    assert cluster.client.get(cluster.cjobs_path)["items"]
