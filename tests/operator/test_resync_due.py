"""The resync looks only where time may change the status: a job waiting quietly (planning, queued for Kueue, its
pod made and pending without a problem, a problem whose pending timeout is far) is left to its watch events; a
running worker (progress), a problem whose timeout may end before the next round, a spec not reconciled yet, a
recorded child the index lacks and a Job without a pod (its FailedCreate Event) are looked at."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kompress_api import v1alpha1 as api
from kompress_testing.wrappers import JobWrapper, make_cjob, pod_for

from kompress_operator import children
from kompress_operator.config import OperatorConfig
from kompress_operator.resync_due import resync_due

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig()
T = "2026-11-26T10:00:00Z"  # when the wrappers' objects were created
SOON = datetime(2026, 11, 26, 10, 1, tzinfo=timezone.utc)
INTERVAL = 10.0


def due(cjob: dict, jobs: dict, pods: dict, now: datetime = SOON) -> bool:
    return resync_due(cjob, jobs, pods, now, INTERVAL)


def cond(ctype: str, status: str, reason: str) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": "", "lastTransitionTime": T}


def scene(conditions: list[dict[str, Any]], *, pod: Any = lambda p: p.running(), generation: int = 1, worker: bool = False, suspended: bool = False) -> tuple[dict, dict, dict]:
    cjob = make_cjob().obj()
    uid = cjob["metadata"]["uid"]
    build = (lambda: children.build_worker_job(api.parse(cjob), None, CONFIG)) if worker else (lambda: children.build_plan_job(api.parse(cjob), CONFIG))
    job = JobWrapper(build()).created().started(active=1 if pod else 0).suspend(suspended).obj()
    cjob["status"] = {"observedGeneration": generation, "conditions": conditions,
                      "children": {("workerJob" if worker else "planJob"): job["metadata"]["name"]}}
    pods = [pod(pod_for(job)).obj()] if pod else []
    return cjob, {uid: [job]}, {uid: pods}


PLANNING = [cond("Planned", "Unknown", "Planning")]
QUEUED_KUEUE = [cond("Planned", "True", "PlanSucceeded"), cond("Queued", "True", "WaitingForKueueAdmission")]


@pytest.mark.parametrize(("what", "args", "kwargs"), [
    ("planning, its pod running", (PLANNING,), {}),
    ("planning, its pod pending without a problem", (PLANNING,), {"pod": lambda p: p.waiting("ContainerCreating")}),
    ("unschedulable, the pending timeout (1800 s) far", ([cond("Planned", "Unknown", "Unschedulable")],), {"pod": lambda p: p.unschedulable()}),
    ("waiting for Kueue", (QUEUED_KUEUE,), {"pod": None, "worker": True, "suspended": True}),
])
def test_a_job_waiting_quietly_is_left_to_its_events(what, args, kwargs):
    assert not due(*scene(*args, **kwargs)), what


@pytest.mark.parametrize(("what", "args", "kwargs"), [
    ("a running worker: progress", ([cond("Planned", "True", "PlanSucceeded"), cond("Running", "True", "WorkerRunning")],), {"worker": True}),
    ("a spec not reconciled yet", (PLANNING,), {"generation": 0}),
    ("a Job without a pod: its FailedCreate Event", (PLANNING,), {"pod": None}),
])
def test_where_time_may_tell_the_job_is_looked_at(what, args, kwargs):
    assert due(*scene(*args, **kwargs)), what


@pytest.mark.parametrize("reason", ["Unschedulable", "ImagePullBackOff", "CreateContainerConfigError"])
def test_a_problem_is_looked_at_once_its_pending_timeout_may_end_before_the_next_round(reason):
    cjob, jobs, pods = scene([cond("Planned", "True", "PlanSucceeded"), cond("Queued", "True", reason)], worker=True, pod=lambda p: p.waiting(reason))
    start = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    assert not due(cjob, jobs, pods, start + timedelta(seconds=1800 - INTERVAL - 1))
    assert due(cjob, jobs, pods, start + timedelta(seconds=1800 - INTERVAL))
    cjob["spec"]["pendingTimeoutSeconds"] = 60
    assert due(cjob, jobs, pods, start + timedelta(seconds=55))


def test_a_recorded_child_the_index_lacks_is_looked_at_and_a_finished_job_never():
    cjob, jobs, pods = scene(PLANNING)
    assert due(cjob, {}, pods)
    cjob["status"]["conditions"] = [cond("Failed", "True", "PlanRejected")]
    assert not due(cjob, {}, {})
