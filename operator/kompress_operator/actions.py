"""What to do next for a CompressionJob, given its (new) status and its children.

Owns: the order of the flow (plan first, then the worker; nothing GPU-shaped before a plan),
bringing the worker Job in line with spec.suspend (how: suspension.py), and the rule that a
finished CompressionJob leaves nothing running.
Must not: call the API or read a clock; every action is safe to repeat (names are deterministic,
so a repeated create meets a 409 and finds its own Job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kompress_api import v1alpha1 as api

from kompress_operator import child_names, children, conditions, suspension
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
    """The changes to children that bring them in line with the spec and the status just computed (wire form)."""
    if deleting(obs.cjob):
        return []  # the garbage collector removes the children
    conds = status.get("conditions") or []
    if conditions.is_finished(conds):
        # Failed without the Job failing (a pending timeout, a rejected plan): stop what still runs.
        return [Delete(name_of(job), "the CompressionJob has finished") for job in (obs.plan_job, obs.worker_job) if job is not None and job_active(job)]
    if not conditions.is_planned(conds):
        return [] if obs.plan_job is not None else [Create(children.build_plan_job(obs.job, config), child_names.ROLE_PLAN)]

    spec, job = obs.spec, obs.worker_job
    if job is None:
        if spec.suspend:
            return []
        plan = api.PlanSummary.model_validate(status["plan"]) if status.get("plan") else None
        return [Create(children.build_worker_job(obs.job, plan, config), child_names.ROLE_WORKER)]
    if not job_active(job):
        return []
    change = suspension.of(spec).change(job, spec)
    if change is suspension.Change.DELETE:
        return [Delete(name_of(job), "spec.suspend is true")]
    if change is not None:
        return [SetSuspend(name_of(job), spec.suspend)]
    return []
