"""What the operator does next: plan first, then exactly one worker Job; suspension; nothing left running."""

from __future__ import annotations

import pytest
from kompress_api import v1alpha1 as api
from kompress_testing.wrappers import JobWrapper, make_cjob

from kompress_operator import actions, child_names, children
from kompress_operator.actions import Create, Delete, SetSuspend
from kompress_operator.config import OperatorConfig
from kompress_operator.observed import Observed

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig()
UID = "5e5e5e5e-0000-4000-8000-000000000001"
PLANNED = {
    "conditions": [{"type": "Planned", "status": "True", "reason": "PlanSucceeded", "message": "", "lastTransitionTime": "2026-11-26T10:00:00Z"}],
    "plan": {"hostMemoryBytes": 64 * 1024**3, "diskBytes": 200 * 1024**3},
}
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "Unschedulable", "message": "", "lastTransitionTime": "2026-11-26T10:00:00Z"}]}


def worker_job(wrapper, **status):
    return JobWrapper(children.build_worker_job(api.parse(wrapper.obj()), None, CONFIG)).created().obj()


def plan_job(wrapper):
    return JobWrapper(children.build_plan_job(api.parse(wrapper.obj()), CONFIG)).created().obj()


def test_a_new_job_gets_a_planning_job_first_and_nothing_with_a_gpu():
    wrapper = make_cjob(uid=UID)
    (action,) = actions.next_actions(Observed(wrapper.obj()), {}, CONFIG)
    assert isinstance(action, Create) and action.role == "plan"
    assert action.manifest["metadata"]["name"] == child_names.plan_job_name(api.parse(wrapper.obj()))


def test_while_planning_nothing_more_is_created():
    wrapper = make_cjob(uid=UID)
    assert actions.next_actions(Observed(wrapper.obj(), plan_job=plan_job(wrapper)), {}, CONFIG) == []


def test_once_planned_one_worker_job_sized_by_the_plan():
    wrapper = make_cjob(uid=UID)
    (action,) = actions.next_actions(Observed(wrapper.obj(), plan_job=plan_job(wrapper)), PLANNED, CONFIG)
    assert isinstance(action, Create) and action.role == "worker"
    limits = action.manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "64Gi"


def test_a_worker_job_that_exists_is_not_created_again():
    wrapper = make_cjob(uid=UID)
    assert actions.next_actions(Observed(wrapper.obj(), worker_job=worker_job(wrapper)), PLANNED, CONFIG) == []


def test_suspended_before_the_worker_exists_creates_nothing():
    wrapper = make_cjob(uid=UID).suspended()
    assert actions.next_actions(Observed(wrapper.obj()), PLANNED, CONFIG) == []


def test_suspend_and_resume_flip_the_jobs_suspend():
    running = make_cjob(uid=UID)
    job = worker_job(running)
    suspended = make_cjob(uid=UID).suspended()
    assert actions.next_actions(Observed(suspended.obj(), worker_job=job), PLANNED, CONFIG) == [SetSuspend(job["metadata"]["name"], True)]
    stopped = JobWrapper(job).suspend().obj()
    assert actions.next_actions(Observed(running.obj(), worker_job=stopped), PLANNED, CONFIG) == [SetSuspend(job["metadata"]["name"], False)]


def test_kueue_admission_is_left_to_kueue():
    wrapper = make_cjob(uid=UID).with_queue("gpu-batch")
    job = worker_job(wrapper)
    assert job["spec"]["suspend"] is True
    assert actions.next_actions(Observed(wrapper.obj(), worker_job=job), PLANNED, CONFIG) == []


def test_suspending_a_kueue_job_deletes_it_so_kueue_cannot_readmit_it():
    wrapper = make_cjob(uid=UID).with_queue("gpu-batch").suspended()
    job = worker_job(make_cjob(uid=UID).with_queue("gpu-batch"))
    (action,) = actions.next_actions(Observed(wrapper.obj(), worker_job=job), PLANNED, CONFIG)
    assert action == Delete(job["metadata"]["name"], "spec.suspend is true")


def test_a_finished_compression_job_leaves_nothing_running():
    wrapper = make_cjob(uid=UID)
    job = worker_job(wrapper)
    assert actions.next_actions(Observed(wrapper.obj(), worker_job=job), FAILED, CONFIG) == [Delete(job["metadata"]["name"], "the CompressionJob has finished")]
    ended = JobWrapper(job).failed().obj()
    assert actions.next_actions(Observed(wrapper.obj(), worker_job=ended), FAILED, CONFIG) == []


def test_a_compression_job_being_deleted_is_left_to_the_garbage_collector():
    wrapper = make_cjob(uid=UID).deleting()
    assert actions.next_actions(Observed(wrapper.obj()), {}, CONFIG) == []
