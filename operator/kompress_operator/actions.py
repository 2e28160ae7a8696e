"""What to do next for a CompressionJob, given its (new) status and its children.

Owns: the order of the flow (plan first, then the worker; nothing GPU-shaped before a plan),
suspension (a Job's spec.suspend, or for Kueue, deleting and re-creating the Job), and the rule
that a finished CompressionJob leaves nothing running.
Must not: call the API or read a clock; every action is safe to repeat (names are deterministic,
so a repeated create meets a 409 and finds its own Job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kompress_api import v1alpha1 as api

from kompress_operator import children
from kompress_operator import conditions as c
from kompress_operator.child_state import deleting, job_active, name_of
from kompress_operator.config import OperatorConfig
from kompress_operator.observed import Observed


@dataclass(frozen=True)
class Create:
    manifest: dict[str, Any]
    role: str


@dataclass(frozen=True)
class SetSuspend:
    job: str
    suspend: bool


@dataclass(frozen=True)
class Delete:
    job: str
    why: str


Action = Create | SetSuspend | Delete


def next_actions(obs: Observed, status: dict[str, Any], config: OperatorConfig) -> list[Action]:
    """The changes to children that bring them in line with the spec and the status just computed."""
    if deleting(obs.cjob):
        return []  # the garbage collector removes the children
    cjob = obs.job
    conds = status.get("conditions") or []
    if c.is_finished(conds):
        # Failed without the Job failing (a pending timeout, a rejected plan): stop what still runs.
        return [Delete(name_of(job), "the CompressionJob has finished") for job in (obs.plan_job, obs.worker_job) if job_active(job)]
    if not c.is_planned(conds):
        return [] if obs.plan_job is not None else [Create(children.build_plan_job(cjob, config), children.ROLE_PLAN)]

    spec, job = cjob.spec, obs.worker_job
    kueue = children.uses_kueue(spec)
    if job is None:
        if spec.suspend:
            return []
        plan = api.PlanSummary.model_validate(status["plan"]) if status.get("plan") else None
        return [Create(children.build_worker_job(cjob, plan, config), children.ROLE_WORKER)]
    if not job_active(job):
        return []
    if kueue:
        # Kueue re-admits a suspended Job it manages; stopping one means deleting it.
        return [Delete(name_of(job), "spec.suspend is true")] if spec.suspend else []
    if bool(job.get("spec", {}).get("suspend")) != spec.suspend:
        return [SetSuspend(name_of(job), spec.suspend)]
    return []
