"""What the operator keeps of each watched object (snapshots.py) is enough: the status, the next actions and the
progress address computed from the snapshots are those computed from the whole objects, in every step of the flow
and every failure class, while what no reader needs (managedFields, the pod template, the last-applied spec) is left."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

import pytest
from kompress_api import v1alpha1 as api
from kompress_api.worker_protocol import PlannerResult, WorkerResult
from kompress_testing.wrappers import JobWrapper, make_cjob, pod_for

from kompress_operator import actions, children, snapshots
from kompress_operator.config import OperatorConfig
from kompress_operator.observed import Observed
from kompress_operator.progress_client import progress_url
from kompress_operator.status import compute_status

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig()
UID = "5a5a5a5a-0000-4000-8000-000000000001"
NOW = datetime(2026, 11, 26, 10, 10, tzinfo=timezone.utc)
PLAN = api.PlanSummary(host_memory_bytes=8 * 1024**3, disk_bytes=20 * 1024**3, servable=True)
MANAGED = [{"manager": "kube-controller-manager", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:active": {}}}}]


def _served(obj: dict[str, Any]) -> dict[str, Any]:
    """As the API server sends it: with managedFields."""
    obj["metadata"]["managedFields"] = MANAGED
    return obj


def _planned(wrapper: Any) -> dict[str, Any]:
    cjob = wrapper.obj()
    cjob["metadata"]["annotations"] = {snapshots.LAST_APPLIED: json.dumps(wrapper.manifest())}
    cjob["status"] = {"conditions": [{"type": "Planned", "status": "True", "reason": "PlanSucceeded", "message": "planned", "lastTransitionTime": "2026-11-26T10:00:00Z", "observedGeneration": 1}],
                      "plan": PLAN.wire(), "children": {"planJob": "x-plan"}}
    return _served(cjob)


def _worker(cjob: dict[str, Any], *changes: Callable[[JobWrapper], JobWrapper]) -> JobWrapper:
    job = JobWrapper(children.build_worker_job(api.parse(cjob), PLAN, CONFIG)).created()
    for change in changes:
        job = change(job)
    return job


def _scene(name: str) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """(cjob, plan Job, plan pods, worker Job, worker pods) of one moment."""
    wrapper = make_cjob(uid=UID)
    if name == "planning-unschedulable":
        cjob = _served(wrapper.obj())
        job = JobWrapper(children.build_plan_job(api.parse(cjob), CONFIG)).created().started()
        return cjob, _served(job.obj()), [_served(pod_for(job.obj()).unschedulable().obj())], None, []
    if name == "plan-rejected":
        cjob = _served(wrapper.obj())
        job = JobWrapper(children.build_plan_job(api.parse(cjob), CONFIG)).created().counts(failed=1).failed("PodFailurePolicy", "exit code 20")
        rejected = api.PlanSummary(problems=[api.PlanProblem(severity="error", code="GroupSizeMismatch", message="10944 % 128", fix="groupSize 64")])
        pod = pod_for(job.obj()).failed(20, PlannerResult(ok=False, exit_code=20, reason="PlanRejected", message="1 error", plan=rejected))
        return cjob, _served(job.obj()), [_served(pod.obj())], None, []
    if name == "kueue-waiting":
        cjob = _planned(make_cjob(uid=UID).with_queue("gpu-batch"))
        return cjob, None, [], _served(_worker(cjob, lambda j: j.suspend()).obj()), []
    cjob = _planned(wrapper.with_spec(activeDeadlineSeconds=3600, backoffLimit=0) if name in ("deadline", "oom-killed") else wrapper)
    job = _worker(cjob, lambda j: j.started())
    if name == "running":
        return cjob, None, [], _served(job.obj()), [_served(pod_for(job.obj()).running(ip="10.0.0.9").obj())]
    if name == "image-pull":
        return cjob, None, [], _served(job.obj()), [_served(pod_for(job.obj()).waiting("ImagePullBackOff", "back-off pulling").obj())]
    if name == "oom-killed":
        failed = job.counts(failed=1).failed()
        return cjob, None, [], _served(failed.obj()), [_served(pod_for(failed.obj()).oom_killed().obj())]
    if name == "deadline":
        return cjob, None, [], _served(job.failed("DeadlineExceeded", "active too long").obj()), []
    if name == "retried-then-failed":
        failed = job.counts(failed=3).failed()
        result = WorkerResult(ok=False, exit_code=30, reason="StorageUnreachable", message="timeout")
        return cjob, None, [], _served(failed.obj()), [_served(pod_for(failed.obj(), s).failed(30, result).obj()) for s in ("aaaaa", "bbbbb", "ccccc")]
    if name == "succeeded":
        done = job.complete()
        result = WorkerResult(ok=True, output_uri="s3://models/tiny", checkpoint_bytes=3_100_000, compression_ratio=2.5)
        return cjob, None, [], _served(done.obj()), [_served(pod_for(done.obj()).succeeded(result).obj())]
    raise ValueError(name)


SCENES = ["planning-unschedulable", "plan-rejected", "kueue-waiting", "running", "image-pull", "oom-killed", "deadline", "retried-then-failed", "succeeded"]


@pytest.mark.parametrize("name", SCENES)
def test_the_status_and_the_actions_from_snapshots_are_those_from_the_whole_objects(name):
    cjob, plan_job, plan_pods, worker_job, worker_pods = _scene(name)
    whole = Observed(cjob, plan_job, plan_pods, worker_job, worker_pods, {"stage": "compress", "percent": 40})
    kept = Observed(snapshots.compression_job(cjob), snapshots.job(plan_job) if plan_job else None, [snapshots.pod(p) for p in plan_pods],
                    snapshots.job(worker_job) if worker_job else None, [snapshots.pod(p) for p in worker_pods], {"stage": "compress", "percent": 40})
    expected, got = compute_status(whole, NOW), compute_status(kept, NOW)
    assert got == expected
    assert actions.next_actions(kept, got.status, CONFIG) == actions.next_actions(whole, expected.status, CONFIG)
    for full, slim in zip(worker_pods, kept.worker_pods):
        assert progress_url(slim, CONFIG.progress_port) == progress_url(full, CONFIG.progress_port)


def test_what_no_reader_needs_is_not_kept():
    cjob, plan_job, plan_pods, _, _ = _scene("planning-unschedulable")
    cjob["metadata"]["annotations"] = {snapshots.LAST_APPLIED: "{...}", "team": "ml"}
    kept_cjob, kept_job, kept_pod = snapshots.compression_job(cjob), snapshots.job(plan_job), snapshots.pod(plan_pods[0])
    assert "managedFields" not in kept_cjob["metadata"] and kept_cjob["metadata"]["annotations"] == {"team": "ml"}
    assert kept_cjob["spec"] is cjob["spec"]  # shared with the event, not copied
    assert set(kept_job["spec"]) <= {"suspend", "backoffLimit", "activeDeadlineSeconds"} and "template" not in kept_job["spec"]
    assert "managedFields" not in kept_job["metadata"] and "managedFields" not in kept_pod["metadata"]
    # the pod's env holds the whole job document; only the container's name, limits and ports are kept
    assert all(set(c) <= {"name", "resources", "ports"} for c in kept_pod["spec"]["containers"])
    assert len(json.dumps(kept_pod)) < len(json.dumps(plan_pods[0])) / 2
