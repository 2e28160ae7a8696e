"""Readers of what the Job controller and the kubelet report about a child Job and its pods.

Owns: a Job's outcome, a pod's phase and container states, the result JSON a pod leaves in its termination
message (one reader, `last_result`, for the planner's and the worker's), why a pod failed and why one waits,
and the RFC 3339 timestamps Kubernetes writes. status.py says what these mean for the CompressionJob.
Must not: call the API, read a clock (`now` comes in), or hold state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from kompress_api.exit_codes import ExitCode
from kompress_api.worker_protocol import PlannerResult, WorkerResult
from pydantic import ValidationError

from kompress_operator import conditions
from kompress_operator.conditions import FALSE, TRUE

Result = TypeVar("Result", WorkerResult, PlannerResult)


# --- timestamps ---------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- Jobs -----------------------------------------------------------------------------------------


def name_of(obj: dict[str, Any]) -> str:
    return obj.get("metadata", {}).get("name", "")


def deleting(obj: dict[str, Any] | None) -> bool:
    return obj is not None and bool(obj.get("metadata", {}).get("deletionTimestamp"))


def job_outcome(job: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """("Complete" | "Failed" | None, the deciding Job condition).

    FailureTarget/SuccessCriteriaMet (Kubernetes >= 1.31) are set as soon as the outcome is decided,
    before the pods are gone: they count, so the status doesn't lag a termination grace period.
    """
    conds = job.get("status", {}).get("conditions") or []
    for ctype, outcome in (("Failed", "Failed"), ("FailureTarget", "Failed"), ("Complete", "Complete"), ("SuccessCriteriaMet", "Complete")):
        for cond in conds:
            if cond.get("type") == ctype and cond.get("status") == TRUE:
                return outcome, cond
    return None, {}


def job_active(job: dict[str, Any] | None) -> bool:
    """Not being deleted and not ended: a Job that may still run a pod."""
    return job is not None and not deleting(job) and job_outcome(job)[0] is None


# --- pods -----------------------------------------------------------------------------------------


def by_creation(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: (p.get("metadata", {}).get("creationTimestamp") or "", name_of(p)))


def live(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in by_creation(pods) if not deleting(p)]


def pod_phase(pod: dict[str, Any]) -> str:
    return pod.get("status", {}).get("phase") or "Pending"


def in_phase(pods: Sequence[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    """The pods in `phase`, oldest first."""
    return [p for p in by_creation(pods) if pod_phase(p) == phase]


def container_status(pod: dict[str, Any], container: str) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return status
    return {}


def terminated(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    status = container_status(pod, container)
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")


def memory_limit(pod: dict[str, Any], container: str) -> str | None:
    for spec in pod.get("spec", {}).get("containers") or []:
        if spec.get("name") == container:
            return ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    return None


def read_result(model: type[Result], message: str | None) -> Result | None:
    """The JSON a pod left in its termination message, or None (a crash leaves its log's tail instead)."""
    if not message:
        return None
    try:
        return model.model_validate(json.loads(message))
    except (ValueError, ValidationError):
        return None


def last_result(model: type[Result], pods: Sequence[dict[str, Any]], phase: str, container: str) -> Result | None:
    """What the newest pod in `phase` (Succeeded or Failed) left as its result: the one reader of results."""
    ended = in_phase(pods, phase)
    return read_result(model, (terminated(ended[-1], container) or {}).get("message")) if ended else None


def _tail(text: str | None, limit: int = 600) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "…" + text[-limit:]


# --- why a pod failed, why it waits ----------------------------------------------------------------


def pod_failure(pod: dict[str, Any], container: str, result_model: type[Result], who: str) -> tuple[str, str] | None:
    """(reason, message) for a failed pod, most specific first: OOM, the worker's own words, its exit code."""
    term = terminated(pod, container)
    if term is None:
        status = pod.get("status", {})
        if status.get("reason"):
            return status["reason"], status.get("message") or f"the {who} pod {name_of(pod)} failed"
        return None
    if term.get("reason") == "OOMKilled":
        limit = memory_limit(pod, container) or "unknown"
        return conditions.OOM_KILLED.name, conditions.OOM_KILLED.message(who=who, limit=limit, fix=conditions.OOM_FIX.get(who, "give it more memory"))
    result = read_result(result_model, term.get("message"))
    if result is not None and not result.ok:
        stage = getattr(result, "stage", None)
        return result.reason, (f"stage {stage}: " if stage else "") + result.message
    code = term.get("exitCode")
    known = ExitCode.from_code(code) if isinstance(code, int) else None
    log = _tail(term.get("message"))
    detail = f"; last log lines: {log}" if log else ""
    if known is not None and known is not ExitCode.OK:
        return known.reason, f"the {who} exited with code {code}: {known.summary}{detail}"
    signal = f" ({term['reason']})" if term.get("reason") and term.get("reason") != "Error" else ""
    return ExitCode.INTERNAL.reason, f"the {who} exited with code {code}{signal}{detail}"


def last_failure(pods: Sequence[dict[str, Any]], container: str, result_model: type[Result], who: str) -> tuple[str, str] | None:
    """pod_failure of the newest failed pod, if any."""
    failed = in_phase(pods, "Failed")
    return pod_failure(failed[-1], container, result_model, who) if failed else None


@dataclass(frozen=True)
class Waiting:
    """Why a pending pod isn't running yet."""

    reason: str
    message: str
    problem: bool  # something a person must fix (after spec.pendingTimeoutSeconds the job fails)
    since: datetime | None


def waiting_of(pod: dict[str, Any], container: str, who: str) -> Waiting:
    status = pod.get("status", {})
    since = parse_time(pod.get("metadata", {}).get("creationTimestamp"))
    name = name_of(pod)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == FALSE and cond.get("reason") == "Unschedulable":
            detail = cond.get("message") or "no node fits it"
            return Waiting(conditions.UNSCHEDULABLE.name, conditions.UNSCHEDULABLE.message(pod=name, detail=detail), True, since)
    waiting = (container_status(pod, container).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in conditions.WAITING_PROBLEMS:
        detail = waiting.get("message") or reason
        return Waiting(reason, f"the {who} pod {name}: {reason}: {detail}; {conditions.WAITING_PROBLEMS[reason]}", True, since)
    state = reason or ("being scheduled" if not any(cd.get("type") == "PodScheduled" and cd.get("status") == TRUE for cd in status.get("conditions") or []) else "starting")
    return Waiting(conditions.POD_PENDING.name, conditions.POD_PENDING.message(pod=name, state=state), False, since)


def not_created(job: dict[str, Any], message: str, who: str) -> Waiting:
    """A Job whose pod the Job controller could not create, waiting as a pending pod would (since the Job's creation)."""
    since = parse_time(job.get("metadata", {}).get("creationTimestamp"))
    return Waiting(conditions.FAILED_CREATE, f"the {who} Job {name_of(job)}: {message}; {conditions.WAITING_PROBLEMS[conditions.FAILED_CREATE]}", True, since)


def timed_out(waiting: Waiting, now: datetime, timeout_s: int) -> bool:
    if waiting.reason in conditions.HOPELESS_WAITING:
        return True
    return waiting.problem and waiting.since is not None and (now - waiting.since).total_seconds() >= timeout_s


def timeout_message(waiting: Waiting, timeout_s: int) -> str:
    if waiting.reason in conditions.HOPELESS_WAITING:
        return waiting.message
    fix = conditions.WAITING_PROBLEMS.get(waiting.reason, "")
    detail = waiting.message.removesuffix(f"; {fix}").rstrip(". ")
    return conditions.PENDING_TIMEOUT_MESSAGE.format(detail=detail, seconds=timeout_s, fix=fix)


def job_failure(job: dict[str, Any], pods: Sequence[dict[str, Any]], container: str, result_model: type[Result], who: str) -> tuple[str, str]:
    """(reason, message) for a failed Job: its deadline, else the last pod's own failure, else the Job's words."""
    _, cond = job_outcome(job)
    job_reason, job_message = cond.get("reason") or "JobFailed", cond.get("message") or "the Job failed"
    if job_reason == "DeadlineExceeded":
        seconds = job.get("spec", {}).get("activeDeadlineSeconds")
        return conditions.DEADLINE_EXCEEDED.name, conditions.DEADLINE_EXCEEDED.message(seconds=seconds, where="")
    last = last_failure(pods, container, result_model, who)
    if last is None:
        return job_reason, job_message
    reason, message = last
    if job_reason == "BackoffLimitExceeded":
        spec, status = job.get("spec", {}), job.get("status", {})
        # batch/v1 counts a failure in uncountedTerminatedPods before it moves it to status.failed.
        uncounted = len((status.get("uncountedTerminatedPods") or {}).get("failed") or [])
        count = max(int(status.get("failed") or 0) + uncounted, len(in_phase(pods, "Failed")))
        # Only the worker's limit is the user's (spec.backoffLimit); the planning Job's is the operator's own.
        limit_source = "spec.backoffLimit" if who == "worker" else "the planning Job's backoffLimit"
        message = conditions.BACKOFF_LIMIT_EXCEEDED.message(who=who, failed=count, limit_source=limit_source, limit=spec.get("backoffLimit"), detail=message)
    return reason, message
