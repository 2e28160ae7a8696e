"""What a CompressionJob's status should say, from what its children say.

Owns: the mapping (CompressionJob, planning Job + pods, worker Job + pods, worker progress, the
pods' termination messages, now) -> (new status, Events to emit). Every failure gets a reason a
user can act on: the plan's errors with their fixes, the scheduler's message, the memory that was
asked when a pod is OOMKilled, the deadline, the worker's own exit reason and message.
The status is built as the API's typed `CompressionJobStatus` (so it is always one the CRD keeps whole)
and handed on in its wire form. Terminal states are sticky: once Succeeded or Failed, nothing but
observedGeneration changes. The readers of Jobs and pods are child_state.py; suspension is suspension.py.
Must not: call the API, read a clock (`now` comes in), or decide which objects to create (actions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kompress_api import v1alpha1 as api
from kompress_api.worker_protocol import DONE, PUBLISH, PlannerResult, WorkerResult
from pydantic import ValidationError

from kompress_operator import child_names, conditions, suspension
from kompress_operator.child_state import (
    in_phase,
    iso,
    job_failure,
    job_outcome,
    last_failure,
    last_result,
    live,
    name_of,
    not_created,
    pod_phase,
    timed_out,
    timeout_message,
    waiting_of,
)
from kompress_operator.conditions import FALSE, TRUE, UNKNOWN, Conditions
from kompress_operator.observed import Event, Observed, StatusUpdate


# ---------------------------------------------------------------------------------------------
# Words for humans
# ---------------------------------------------------------------------------------------------


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def plan_summary(plan: api.PlanSummary) -> str:
    parts = []
    if plan.estimated_checkpoint_bytes is not None:
        ratio = f" ({plan.compression_ratio:.1f}x smaller than bf16)" if plan.compression_ratio else ""
        parts.append(f"checkpoint ≈ {human_bytes(plan.estimated_checkpoint_bytes)}{ratio}")
    if plan.host_memory_bytes is not None:
        parts.append(f"host RAM {human_bytes(plan.host_memory_bytes)}")
    if plan.gpu_memory_bytes is not None:
        parts.append(f"GPU memory {human_bytes(plan.gpu_memory_bytes)} per device")
    if plan.disk_bytes is not None:
        parts.append(f"scratch {human_bytes(plan.disk_bytes)}")
    if plan.servable is not None:
        parts.append("servable by vLLM" if plan.servable else "NOT servable by vLLM")
    if plan.cache is not None:
        parts.append(f"model cache: {human_bytes(plan.cache.cached_bytes)} of {human_bytes(plan.cache.total_bytes)} cached, {human_bytes(plan.cache.download_bytes)} to download")
    warnings = [p for p in plan.problems if p.severity == "warning"]
    if warnings:
        parts.append(f"{len(warnings)} warning(s): " + "; ".join(p.code for p in warnings))
    return "planned: " + (", ".join(parts) if parts else "no figures")


def problem_text(problem: api.PlanProblem) -> str:
    return f"{problem.code}: {problem.message}" + (f" Fix: {problem.fix}" if problem.fix else "")


def progress_detail(progress: api.Progress | None) -> str:
    if progress is None or not progress.stage:
        return "the worker is running"
    text = f"stage {progress.stage}"
    if progress.stage_index and progress.stage_count:
        text += f" ({progress.stage_index}/{progress.stage_count})"
    if progress.message:
        text += f": {progress.message}"
    if progress.percent is not None:
        text += f", {progress.percent}% done"
    if progress.eta_seconds:
        minutes = round(progress.eta_seconds / 60)
        text += f", about {minutes // 60}h{minutes % 60:02d}m left"
    return text


def result_summary(result: WorkerResult | None, spec: api.CompressionJobSpec) -> str:
    if result is None:
        return f"the worker succeeded but left no result in its termination message; check {spec.output.uri}"
    text = f"published {human_bytes(result.checkpoint_bytes)} to {result.output_uri or spec.output.uri}" if result.checkpoint_bytes else f"published to {result.output_uri or spec.output.uri}"
    destination = result.destination
    if destination is not None and destination.reference != (result.output_uri or spec.output.uri):
        text += f" ({destination.kind}: {destination.reference})"
    if destination is not None and destination.signature:
        text += f", signed ({destination.signature})"
    if result.compression_ratio:
        text += f" ({result.compression_ratio:.1f}x smaller than bf16)"
    metrics = result.metrics
    if metrics is not None:
        figures = []
        if metrics.perplexity_increase is not None:
            figures.append(f"perplexity {metrics.perplexity_increase:+.1%}")
        if metrics.top1_agreement is not None:
            figures.append(f"top-1 agreement {metrics.top1_agreement:.1%}")
        if metrics.kl_divergence is not None:
            figures.append(f"KL {metrics.kl_divergence:.4f}")
        figures += task_figures(metrics)
        if figures:
            text += "; " + ", ".join(figures)
    return text


def task_figures(metrics: api.EvaluationMetrics, shown: int = 3) -> list[str]:
    """The first lm-eval scores in words (status.result.metrics.tasks has them all, within its bound)."""
    scores = [s for s in metrics.tasks or [] if s.original is not None and s.compressed is not None]
    words = [f"{s.task} {s.metric} {s.original:.3f} -> {s.compressed:.3f}" for s in scores[:shown]]
    more = len(metrics.tasks or []) - len(words) + (metrics.task_scores_omitted or 0)
    if more > 0:
        words.append(f"{more} more task scores in status.result.metrics.tasks and the manifest")
    return words


_RESULT_FIELDS = set(api.JobResult.model_fields)


def job_result(result: WorkerResult) -> api.JobResult:
    values = {k: v for k, v in result.model_dump().items() if k in _RESULT_FIELDS and v is not None}
    return api.JobResult(**values)


def clean_progress(doc: dict[str, Any] | None) -> api.Progress | None:
    """The fields of status.progress from a /progress answer; None if it isn't one."""
    if not isinstance(doc, dict):
        return None
    known = {info.alias or name for name, info in api.Progress.model_fields.items()}
    try:
        return api.Progress.model_validate({k: v for k, v in doc.items() if k in known})
    except ValidationError:
        return None


# ---------------------------------------------------------------------------------------------
# The status
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One computation: the inputs, the status being built, the extra Events."""

    obs: Observed
    status: api.CompressionJobStatus
    conds: Conditions
    now: datetime
    events: list[Event] = field(default_factory=list)

    @property
    def spec(self) -> api.CompressionJobSpec:
        return self.obs.spec

    @property
    def kids(self) -> api.Children:
        if self.status.children is None:
            self.status.children = api.Children()
        return self.status.children

    def fail(self, reason: str, message: str) -> None:
        self.conds.set(conditions.FAILED, TRUE, reason, message)
        self.conds.clear(conditions.RUNNING, conditions.WORKER_STOPPED)
        self.conds.clear(conditions.QUEUED, conditions.WORKER_STOPPED)
        if self.status.completion_time is None:
            self.status.completion_time = iso(self.now)


def _begin(cjob: dict[str, Any], now: datetime) -> tuple[dict[str, Any], api.CompressionJobStatus, Conditions]:
    """(the stored status as sent, a typed copy to build on, its conditions bound to this reconcile)."""
    old = cjob.get("status") or {}
    status = api.CompressionJobStatus.model_validate(old)
    conds = Conditions(status.conditions, now=iso(now), generation=cjob.get("metadata", {}).get("generation"))
    return old, status, conds


def _finish(old: dict[str, Any], status: api.CompressionJobStatus, conds: Conditions, more_events: Sequence[Event] = ()) -> StatusUpdate:
    """The tail every status shares: kstatus conditions, the phase made from the conditions, observedGeneration,
    the wire form, and one Event per transition."""
    _kstatus(conds)
    status.phase = conds.phase()
    status.observed_generation = conds.generation
    wire = _pruned(status.wire())
    events = transition_events(old.get("conditions") or [], wire.get("conditions") or []) + list(more_events)
    return StatusUpdate(wire, events, wire != old)


def compute_status(obs: Observed, now: datetime) -> StatusUpdate:
    """The status the CompressionJob should have now, and the Events that announce the change."""
    old, status, conds = _begin(obs.cjob, now)
    run = _Run(obs, status, conds, now)
    if not conds.finished():
        _suspension(run)
        _planning(run)
        if conds.is_true(conditions.PLANNED) and not conds.finished():
            _worker(run)
    return _finish(old, status, conds, run.events)


def failed_status(cjob: dict[str, Any], reason: str, message: str, now: datetime) -> StatusUpdate:
    """Failed for a reason found outside the children: a spec the model refuses (an old CRD, a server
    without CEL), or a child's name taken by an object this CompressionJob does not own. Takes the raw
    object: its spec may be the very thing that does not parse."""
    old, status, conds = _begin(cjob, now)
    if not conds.finished():
        conds.set(conditions.FAILED, TRUE, reason, message)
        if status.completion_time is None:
            status.completion_time = iso(now)
    return _finish(old, status, conds)


def invalid_spec_status(cjob: dict[str, Any], error: str, now: datetime) -> StatusUpdate:
    return failed_status(cjob, conditions.INVALID_SPEC.name, conditions.INVALID_SPEC.message(detail=error), now)


def _suspension(run: _Run) -> None:
    if run.spec.suspend:
        run.conds.set(conditions.SUSPENDED, TRUE, conditions.SUSPENDED_BY_SPEC)
    else:
        run.conds.clear(conditions.SUSPENDED, conditions.RESUMED)


def _store_plan(run: _Run, result: PlannerResult | None) -> None:
    if result is None or result.plan is None:
        return
    first_time = run.status.plan is None
    run.status.plan = result.plan
    if first_time:
        for problem in result.plan.problems:
            if problem.severity == "warning":
                run.events.append(Event("Warning", "PlanWarning", problem_text(problem)))


def _planning(run: _Run) -> None:
    if run.conds.status(conditions.PLANNED) in (TRUE, FALSE):
        return
    job, pods = run.obs.plan_job, run.obs.plan_pods
    if job is None:
        return
    name = name_of(job)
    run.kids.plan_job = name
    outcome, _ = job_outcome(job)
    if outcome == "Complete":
        result = last_result(PlannerResult, pods, "Succeeded", child_names.PLAN_CONTAINER_NAME)
        _store_plan(run, result)
        if result is not None and result.ok and result.plan is not None:
            run.conds.set(conditions.PLANNED, TRUE, conditions.PLAN_SUCCEEDED, summary=plan_summary(result.plan))
        else:
            _plan_failed(run, conditions.PLAN_FAILED.name, conditions.PLAN_FAILED.message(detail="it finished without leaving a plan in its termination message"))
    elif outcome == "Failed":
        result = last_result(PlannerResult, pods, "Failed", child_names.PLAN_CONTAINER_NAME)
        _store_plan(run, result)
        errors = [p for p in result.plan.problems if p.severity == "error"] if result is not None and result.plan is not None else []
        # A rejected plan exits with its errors' own code (TargetsMatchNothing 14...) or PlanRejected (20): either way
        # the condition is PlanRejected, with every error and its fix.
        if errors:
            message = conditions.PLAN_REJECTED.message(count=len(errors), errors=" ".join(problem_text(p) for p in errors) or result.message)
            _plan_failed(run, conditions.PLAN_REJECTED.name, message)
        else:
            reason, message = job_failure(job, pods, child_names.PLAN_CONTAINER_NAME, PlannerResult, "planning pod")
            _plan_failed(run, reason, message)
    else:
        waiting = next((waiting_of(p, child_names.PLAN_CONTAINER_NAME, "planning") for p in live(pods) if pod_phase(p) == "Pending"), None)
        if not live(pods) and run.obs.plan_pod_not_created:
            waiting = not_created(job, run.obs.plan_pod_not_created, "planning")
        timeout = run.spec.pending_timeout_seconds
        if waiting is not None and timed_out(waiting, run.now, timeout):
            _plan_failed(run, waiting.reason, timeout_message(waiting, timeout))
        elif waiting is not None and waiting.problem:
            run.conds.set(conditions.PLANNED, UNKNOWN, waiting.reason, waiting.message)
        else:
            run.conds.set(conditions.PLANNED, UNKNOWN, conditions.PLANNING, job=name)


def _plan_failed(run: _Run, reason: str, message: str) -> None:
    run.conds.set(conditions.PLANNED, FALSE, reason, message)
    run.fail(reason, message)


def _worker_stopped(run: _Run) -> None:
    run.conds.clear(conditions.RUNNING, conditions.WORKER_STOPPED)
    run.conds.clear(conditions.QUEUED, conditions.WORKER_STOPPED)


def _worker(run: _Run) -> None:
    job = run.obs.worker_job
    how = suspension.of(run.spec)
    if how.gone(job):
        recorded = run.kids.worker_job
        if job is None and recorded and not how.deletes_when_suspended(run.spec):
            run.fail(conditions.WORKER_JOB_DELETED.name, conditions.WORKER_JOB_DELETED.message(job=recorded, output=run.spec.output.uri))
        elif recorded:
            # Deleted by the suspension (Kueue would admit a suspended Job again); resuming makes a new one, once
            # the old one is gone.
            run.kids.worker_job = None
            run.kids.worker_pod = None
        if run.spec.suspend:
            _worker_stopped(run)
        return
    assert job is not None
    run.kids.worker_job = name_of(job)
    outcome, _ = job_outcome(job)
    if outcome == "Complete":
        _succeeded(run, job)
    elif outcome == "Failed":
        _failed(run, job)
    elif run.spec.suspend:
        _worker_stopped(run)
    elif job.get("spec", {}).get("suspend"):
        reason, values = how.waiting()
        run.conds.set(conditions.QUEUED, TRUE, reason, **values)
    else:
        _active(run, job)


def _attempts(run: _Run, job: dict[str, Any]) -> int:
    """Worker pods made so far (the Job controller's counts; a disruption's pod is not counted)."""
    job_status = job.get("status", {})
    seen = sum(job_status.get(key) or 0 for key in ("failed", "succeeded", "active"))
    return max(run.status.attempts or 0, seen)


def _active(run: _Run, job: dict[str, Any]) -> None:
    pods = live(run.obs.worker_pods)
    running = [p for p in pods if pod_phase(p) == "Running"]
    attempts = _attempts(run, job)
    limit = run.spec.backoff_limit + 1
    failed = in_phase(run.obs.worker_pods, "Failed")
    failure = last_failure(run.obs.worker_pods, child_names.CONTAINER_NAME, WorkerResult, "worker")
    if attempts > (run.status.attempts or 0) and attempts > 1 and failure is not None:
        run.events.append(Event("Warning", conditions.WORKER_RETRYING.name, f"attempt {attempts} of {limit} after: {failure[0]}: {failure[1]}"))
    if attempts:
        run.status.attempts = attempts

    if running:
        pod = running[-1]
        run.kids.worker_pod = name_of(pod)
        if run.status.start_time is None:
            run.status.start_time = pod.get("status", {}).get("startTime") or iso(run.now)
        fresh = clean_progress(run.obs.progress)
        if fresh is not None:
            run.status.progress = fresh
        progress = run.status.progress
        reason = conditions.PUBLISHING if progress is not None and progress.stage == PUBLISH else conditions.WORKER_RUNNING
        run.conds.set(conditions.RUNNING, TRUE, reason, detail=progress_detail(progress))
        run.conds.clear(conditions.QUEUED, conditions.STARTED, pod=name_of(pod))
        return

    ended_well = [p for p in pods if pod_phase(p) == "Succeeded"]
    if ended_well:
        # The pod is done and the Job controller marks the Job Complete a moment later: still Running, never
        # back to Queued in between (the phase must not go backwards).
        run.conds.set(conditions.RUNNING, TRUE, conditions.WORKER_FINISHED, pod=name_of(ended_well[-1]))
        return

    if failure is not None:
        run.conds.set(conditions.RUNNING, FALSE, conditions.WORKER_RETRYING, attempt=len(failed), limit=limit, failure=f"{failure[0]}: {failure[1]}")
    else:
        run.conds.clear(conditions.RUNNING, conditions.WORKER_STOPPED)
    pending = [p for p in pods if pod_phase(p) == "Pending"]
    if not pending and not run.obs.worker_pod_not_created:
        run.conds.set(conditions.QUEUED, TRUE, conditions.WAITING_FOR_POD)
        return
    if pending:
        run.kids.worker_pod = name_of(pending[-1])
        waiting = waiting_of(pending[-1], child_names.CONTAINER_NAME, "worker")
    else:
        waiting = not_created(job, run.obs.worker_pod_not_created or "", "worker")
    timeout = run.spec.pending_timeout_seconds
    if timed_out(waiting, run.now, timeout):
        run.fail(waiting.reason, timeout_message(waiting, timeout))
    else:
        run.conds.set(conditions.QUEUED, TRUE, waiting.reason, waiting.message)


def _succeeded(run: _Run, job: dict[str, Any]) -> None:
    result = last_result(WorkerResult, run.obs.worker_pods, "Succeeded", child_names.CONTAINER_NAME)
    if result is not None:
        run.status.result = job_result(result)
    run.status.attempts = _attempts(run, job)
    job_status = job.get("status", {})
    if run.status.start_time is None:
        run.status.start_time = job_status.get("startTime") or iso(run.now)
    if run.status.completion_time is None:
        run.status.completion_time = job_status.get("completionTime") or iso(run.now)
    if run.status.progress is not None:
        run.status.progress = run.status.progress.model_copy(update={"stage": DONE, "percent": 100, "eta_seconds": 0})
    run.conds.set(conditions.SUCCEEDED, TRUE, conditions.JOB_SUCCEEDED, summary=result_summary(result, run.spec))
    run.conds.clear(conditions.RUNNING, conditions.COMPLETED)
    run.conds.clear(conditions.QUEUED, conditions.COMPLETED)


def _failed(run: _Run, job: dict[str, Any]) -> None:
    reason, message = job_failure(job, run.obs.worker_pods, child_names.CONTAINER_NAME, WorkerResult, "worker")
    result = last_result(WorkerResult, run.obs.worker_pods, "Failed", child_names.CONTAINER_NAME)
    if result is not None:
        # A missed quality gate still has figures and a rejected_uri worth showing.
        run.status.result = job_result(result)
    run.status.attempts = _attempts(run, job)
    stage = run.status.progress.stage if run.status.progress is not None else None
    if reason == conditions.DEADLINE_EXCEEDED.name and stage:
        message = conditions.DEADLINE_EXCEEDED.message(seconds=job.get("spec", {}).get("activeDeadlineSeconds"), where=f" and was stopped in stage {stage}")
    run.fail(reason, message)


def _kstatus(conds: Conditions) -> None:
    """Reconciling/Stalled for kstatus-based tools (Flux, kpt, cli-utils)."""
    phase = conds.phase()
    if conds.is_true(conditions.FAILED):
        conds.set(conditions.RECONCILING, FALSE, conds.reason(conditions.FAILED) or "Failed", "the job failed")
        conds.set(conditions.STALLED, TRUE, conds.reason(conditions.FAILED) or "Failed", "the job failed; see the Failed condition")
    elif conds.is_true(conditions.SUCCEEDED):
        conds.set(conditions.RECONCILING, FALSE, "Succeeded", "the job succeeded")
        conds.set(conditions.STALLED, FALSE, "Succeeded", "")
    elif phase == api.Phase.SUSPENDED:
        conds.set(conditions.RECONCILING, FALSE, "Suspended", "spec.suspend is true")
        conds.set(conditions.STALLED, FALSE, "Suspended", "")
    else:
        conds.set(conditions.RECONCILING, TRUE, phase.value, f"the job is {phase.value.lower()}")
        conds.set(conditions.STALLED, FALSE, phase.value, "")


def _pruned(value: Any) -> Any:
    """Drop empty mappings (children with nothing yet, metrics without a figure): absence is how an unset field looks."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v != {}}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------

# The kubelet alternates between these two while it backs off; they are one story, told once.
_SAME_STORY = {"ErrImagePull": "ImagePullBackOff"}


def _event_for(cond: dict[str, Any]) -> Event | None:
    ctype, status, reason, message = cond["type"], cond["status"], cond["reason"], cond.get("message", "")
    warning = "Warning" if reason in conditions.WARNING_REASONS else "Normal"
    if ctype == conditions.PLANNED:
        return Event("Warning" if status == FALSE else warning, reason, message)
    if ctype in (conditions.QUEUED, conditions.RUNNING) and status == TRUE:
        return Event(warning, reason, message)
    if ctype == conditions.SUSPENDED:
        return Event("Normal", reason, message)
    if ctype == conditions.SUCCEEDED and status == TRUE:
        return Event("Normal", reason, message)
    if ctype == conditions.FAILED and status == TRUE:
        return Event("Warning", reason, message)
    return None


def transition_events(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[Event]:
    """One Event per condition whose status or reason changed: every transition is told, replays are not."""
    events = []
    for cond in new:
        if cond["type"] in (conditions.RECONCILING, conditions.STALLED):
            continue
        before = conditions.get(old, cond["type"])
        if before is not None and before.get("status") == cond["status"] and _SAME_STORY.get(before.get("reason"), before.get("reason")) == _SAME_STORY.get(cond["reason"], cond["reason"]):
            continue
        if before is None and cond["type"] == conditions.SUSPENDED and cond["status"] == FALSE:
            continue
        event = _event_for(cond)
        if event is not None:
            events.append(event)
    return events
