"""What a CompressionJob's status should say, from what its children say.

Owns: the mapping (CompressionJob, planning Job + pods, worker Job + pods, worker progress, the
pods' termination messages, now) -> (new status, Events to emit). Every failure gets a reason a
user can act on: the plan's errors with their fixes, the scheduler's message, the memory that was
asked when a pod is OOMKilled, the deadline, the worker's own exit reason and message.
Terminal states are sticky: once Succeeded or Failed, nothing but observedGeneration changes.
Must not: call the API, read a clock (`now` comes in), or decide which objects to create (actions.py).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kompress_api import v1alpha1 as api
from kompress_api.exit_codes import ExitCode
from kompress_api.worker_protocol import DONE, PUBLISH, PlannerResult, WorkerResult
from pydantic import ValidationError

from kompress_operator import children
from kompress_operator import conditions as c
from kompress_operator.conditions import FALSE, TRUE, UNKNOWN, Conditions


@dataclass(frozen=True)
class Observed:
    """Everything the status is made from, read by the caller."""

    cjob: dict[str, Any]
    plan_job: dict[str, Any] | None = None
    plan_pods: Sequence[dict[str, Any]] = ()
    worker_job: dict[str, Any] | None = None
    worker_pods: Sequence[dict[str, Any]] = ()
    # GET /progress of the running worker, if it was polled this time; None keeps the last one.
    progress: dict[str, Any] | None = None
    # The Job controller's FailedCreate message for a child Job that has no pod (read only then).
    plan_pod_not_created: str | None = None
    worker_pod_not_created: str | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StatusUpdate:
    status: dict[str, Any]
    events: list[Event]
    changed: bool


# ---------------------------------------------------------------------------------------------
# Small readers of Kubernetes objects
# ---------------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _name(obj: dict[str, Any]) -> str:
    return obj.get("metadata", {}).get("name", "")


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


def _by_creation(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: (p.get("metadata", {}).get("creationTimestamp") or "", _name(p)))


def _live(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in _by_creation(pods) if not p.get("metadata", {}).get("deletionTimestamp")]


def _pod_phase(pod: dict[str, Any]) -> str:
    return pod.get("status", {}).get("phase") or "Pending"


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


def read_result(model: type[WorkerResult] | type[PlannerResult], message: str | None) -> WorkerResult | PlannerResult | None:
    """The JSON a pod left in its termination message, or None (a crash leaves its log's tail instead)."""
    if not message:
        return None
    try:
        return model.model_validate(json.loads(message))
    except (ValueError, ValidationError):
        return None


def _tail(text: str | None, limit: int = 600) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "…" + text[-limit:]


# ---------------------------------------------------------------------------------------------
# Why a pod failed, why it waits
# ---------------------------------------------------------------------------------------------


def pod_failure(pod: dict[str, Any], container: str, result_model: type[WorkerResult] | type[PlannerResult], who: str) -> tuple[str, str] | None:
    """(reason, message) for a failed pod, most specific first: OOM, the worker's own words, its exit code."""
    term = terminated(pod, container)
    if term is None:
        status = pod.get("status", {})
        if status.get("reason"):
            return status["reason"], status.get("message") or f"the {who} pod {_name(pod)} failed"
        return None
    if term.get("reason") == "OOMKilled":
        limit = memory_limit(pod, container) or "unknown"
        return c.OOM_KILLED.name, c.OOM_KILLED.message(who=who, limit=limit, fix=c.OOM_FIX.get(who, "give it more memory"))
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
    name = _name(pod)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == FALSE and cond.get("reason") == "Unschedulable":
            detail = cond.get("message") or "no node fits it"
            return Waiting(c.UNSCHEDULABLE.name, c.UNSCHEDULABLE.message(pod=name, detail=detail), True, since)
    waiting = (container_status(pod, container).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in c.WAITING_PROBLEMS:
        detail = waiting.get("message") or reason
        return Waiting(reason, f"the {who} pod {name}: {reason}: {detail}; {c.WAITING_PROBLEMS[reason]}", True, since)
    state = reason or ("being scheduled" if not any(cd.get("type") == "PodScheduled" and cd.get("status") == TRUE for cd in status.get("conditions") or []) else "starting")
    return Waiting(c.POD_PENDING.name, c.POD_PENDING.message(pod=name, state=state), False, since)


def not_created(job: dict[str, Any], message: str, who: str) -> Waiting:
    """A Job whose pod the Job controller could not create, waiting as a pending pod would (since the Job's creation)."""
    since = parse_time(job.get("metadata", {}).get("creationTimestamp"))
    return Waiting(c.FAILED_CREATE, f"the {who} Job {_name(job)}: {message}; {c.WAITING_PROBLEMS[c.FAILED_CREATE]}", True, since)


def _timed_out(waiting: Waiting, now: datetime, timeout_s: int) -> bool:
    if waiting.reason in c.HOPELESS_WAITING:
        return True
    return waiting.problem and waiting.since is not None and (now - waiting.since).total_seconds() >= timeout_s


def _timeout_message(waiting: Waiting, timeout_s: int) -> str:
    if waiting.reason in c.HOPELESS_WAITING:
        return waiting.message
    fix = c.WAITING_PROBLEMS.get(waiting.reason, "")
    detail = waiting.message.removesuffix(f"; {fix}").rstrip(". ")
    return c.PENDING_TIMEOUT_MESSAGE.format(detail=detail, seconds=timeout_s, fix=fix)


def job_failure(job: dict[str, Any], pods: Sequence[dict[str, Any]], container: str, result_model: Any, who: str) -> tuple[str, str]:
    """(reason, message) for a failed Job: its deadline, else the last pod's own failure, else the Job's words."""
    _, cond = job_outcome(job)
    job_reason, job_message = cond.get("reason") or "JobFailed", cond.get("message") or "the Job failed"
    if job_reason == "DeadlineExceeded":
        seconds = job.get("spec", {}).get("activeDeadlineSeconds")
        return c.DEADLINE_EXCEEDED.name, c.DEADLINE_EXCEEDED.message(seconds=seconds, where="")
    failed = [p for p in _by_creation(pods) if _pod_phase(p) == "Failed"]
    last = pod_failure(failed[-1], container, result_model, who) if failed else None
    if last is None:
        return job_reason, job_message
    reason, message = last
    if job_reason == "BackoffLimitExceeded":
        spec, status = job.get("spec", {}), job.get("status", {})
        # batch/v1 counts a failure in uncountedTerminatedPods before it moves it to status.failed.
        uncounted = len((status.get("uncountedTerminatedPods") or {}).get("failed") or [])
        count = max(int(status.get("failed") or 0) + uncounted, len(failed))
        # Only the worker's limit is the user's (spec.backoffLimit); the planning Job's is the operator's own.
        limit_source = "spec.backoffLimit" if who == "worker" else "the planning Job's backoffLimit"
        message = c.BACKOFF_LIMIT_EXCEEDED.message(who=who, failed=count, limit_source=limit_source, limit=spec.get("backoffLimit"), detail=message)
    return reason, message


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


def progress_detail(progress: dict[str, Any] | None) -> str:
    if not progress or not progress.get("stage"):
        return "the worker is running"
    text = f"stage {progress['stage']}"
    if progress.get("stageIndex") and progress.get("stageCount"):
        text += f" ({progress['stageIndex']}/{progress['stageCount']})"
    if progress.get("message"):
        text += f": {progress['message']}"
    if progress.get("percent") is not None:
        text += f", {progress['percent']}% done"
    if progress.get("etaSeconds"):
        minutes = round(progress["etaSeconds"] / 60)
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


def job_result(result: WorkerResult) -> dict[str, Any]:
    values = {k: v for k, v in result.model_dump().items() if k in _RESULT_FIELDS and v is not None}
    return api.JobResult(**values).wire()


def clean_progress(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fields of status.progress from a /progress answer; None if it isn't one."""
    if not isinstance(doc, dict):
        return None
    known = {info.alias or name for name, info in api.Progress.model_fields.items()}
    try:
        return api.Progress.model_validate({k: v for k, v in doc.items() if k in known}).wire()
    except ValidationError:
        return None


# ---------------------------------------------------------------------------------------------
# The status
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One computation: the inputs, the status being built, the extra Events."""

    job: api.CompressionJob
    obs: Observed
    status: dict[str, Any]
    conds: Conditions
    now: datetime
    events: list[Event] = field(default_factory=list)

    @property
    def spec(self) -> api.CompressionJobSpec:
        return self.job.spec

    @property
    def kids(self) -> dict[str, Any]:
        return self.status.setdefault("children", {})

    def fail(self, reason: str, message: str) -> None:
        self.conds.set(c.FAILED, TRUE, reason, message)
        self.conds.clear(c.RUNNING, c.WORKER_STOPPED)
        self.conds.clear(c.QUEUED, c.WORKER_STOPPED)
        self.status.setdefault("completionTime", iso(self.now))


def compute_status(obs: Observed, now: datetime) -> StatusUpdate:
    """The status the CompressionJob should have now, and the Events that announce the change."""
    job = api.parse(obs.cjob)
    old = obs.cjob.get("status") or {}
    status = copy.deepcopy(old)
    generation = obs.cjob.get("metadata", {}).get("generation")
    conds = Conditions(status.setdefault("conditions", []), now=iso(now), generation=generation)
    run = _Run(job, obs, status, conds, now)
    if not conds.finished():
        _suspension(run)
        _planning(run)
        if conds.is_true(c.PLANNED) and not conds.finished():
            _worker(run)
    _kstatus(conds)
    status["phase"] = conds.phase().value
    status["observedGeneration"] = generation
    status = _pruned(status)
    events = transition_events(old.get("conditions") or [], status.get("conditions") or []) + run.events
    return StatusUpdate(status, events, status != old)


def failed_status(cjob: dict[str, Any], reason: str, message: str, now: datetime) -> StatusUpdate:
    """Failed for a reason found outside the children: a spec the model refuses (an old CRD, a server
    without CEL), or a child's name taken by an object this CompressionJob does not own."""
    old = cjob.get("status") or {}
    status = copy.deepcopy(old)
    conds = Conditions(status.setdefault("conditions", []), now=iso(now), generation=cjob.get("metadata", {}).get("generation"))
    if not conds.finished():
        conds.set(c.FAILED, TRUE, reason, message)
        status.setdefault("completionTime", iso(now))
    _kstatus(conds)
    status["phase"] = conds.phase().value
    status["observedGeneration"] = cjob.get("metadata", {}).get("generation")
    status = _pruned(status)
    return StatusUpdate(status, transition_events(old.get("conditions") or [], status["conditions"]), status != old)


def invalid_spec_status(cjob: dict[str, Any], error: str, now: datetime) -> StatusUpdate:
    return failed_status(cjob, c.INVALID_SPEC.name, c.INVALID_SPEC.message(detail=error), now)


def _suspension(run: _Run) -> None:
    if run.spec.suspend:
        run.conds.set(c.SUSPENDED, TRUE, c.SUSPENDED_BY_SPEC)
    else:
        run.conds.clear(c.SUSPENDED, c.RESUMED)


def _store_plan(run: _Run, result: PlannerResult | None) -> None:
    if result is None or result.plan is None:
        return
    first_time = "plan" not in run.status
    run.status["plan"] = result.plan.wire()
    if first_time:
        for problem in result.plan.problems:
            if problem.severity == "warning":
                run.events.append(Event("Warning", "PlanWarning", problem_text(problem)))


def _planning(run: _Run) -> None:
    if run.conds.status(c.PLANNED) in (TRUE, FALSE):
        return
    job, pods = run.obs.plan_job, run.obs.plan_pods
    if job is None:
        return
    name = _name(job)
    run.kids["planJob"] = name
    outcome, _ = job_outcome(job)
    if outcome == "Complete":
        done = [p for p in _by_creation(pods) if _pod_phase(p) == "Succeeded"]
        result = read_result(PlannerResult, (terminated(done[-1], children.PLAN_CONTAINER_NAME) or {}).get("message")) if done else None
        _store_plan(run, result)
        if result is not None and result.ok and result.plan is not None:
            run.conds.set(c.PLANNED, TRUE, c.PLAN_SUCCEEDED, summary=plan_summary(result.plan))
        else:
            _plan_failed(run, c.PLAN_FAILED.name, c.PLAN_FAILED.message(detail="it finished without leaving a plan in its termination message"))
    elif outcome == "Failed":
        failed = [p for p in _by_creation(pods) if _pod_phase(p) == "Failed"]
        result = read_result(PlannerResult, (terminated(failed[-1], children.PLAN_CONTAINER_NAME) or {}).get("message")) if failed else None
        _store_plan(run, result)
        errors = [p for p in result.plan.problems if p.severity == "error"] if result is not None and result.plan is not None else []
        # A rejected plan exits with its errors' own code (TargetsMatchNothing 14...) or PlanRejected (20): either way
        # the condition is PlanRejected, with every error and its fix.
        if errors:
            message = c.PLAN_REJECTED.message(count=len(errors), errors=" ".join(problem_text(p) for p in errors) or result.message)
            _plan_failed(run, c.PLAN_REJECTED.name, message)
        else:
            reason, message = job_failure(job, pods, children.PLAN_CONTAINER_NAME, PlannerResult, "planning pod")
            _plan_failed(run, reason, message)
    else:
        waiting = next((waiting_of(p, children.PLAN_CONTAINER_NAME, "planning") for p in _live(pods) if _pod_phase(p) == "Pending"), None)
        if not _live(pods) and run.obs.plan_pod_not_created:
            waiting = not_created(job, run.obs.plan_pod_not_created, "planning")
        timeout = run.spec.pending_timeout_seconds
        if waiting is not None and _timed_out(waiting, run.now, timeout):
            _plan_failed(run, waiting.reason, _timeout_message(waiting, timeout))
        elif waiting is not None and waiting.problem:
            run.conds.set(c.PLANNED, UNKNOWN, waiting.reason, waiting.message)
        else:
            run.conds.set(c.PLANNED, UNKNOWN, c.PLANNING, job=name)


def _plan_failed(run: _Run, reason: str, message: str) -> None:
    run.conds.set(c.PLANNED, FALSE, reason, message)
    run.fail(reason, message)


def _worker(run: _Run) -> None:
    job = run.obs.worker_job
    kueue = children.uses_kueue(run.spec)
    being_deleted = job is not None and bool(job.get("metadata", {}).get("deletionTimestamp"))
    if job is None or (being_deleted and kueue):
        recorded = run.kids.get("workerJob")
        if job is None and recorded and not (run.spec.suspend and kueue):
            run.fail(c.WORKER_JOB_DELETED.name, c.WORKER_JOB_DELETED.message(job=recorded, output=run.spec.output.uri))
        elif recorded:
            # Suspending a Kueue Job means deleting it (Kueue would admit it again); resuming makes a new one,
            # once the old one is gone.
            run.kids.pop("workerJob", None)
            run.kids.pop("workerPod", None)
        if run.spec.suspend:
            run.conds.clear(c.RUNNING, c.WORKER_STOPPED)
            run.conds.clear(c.QUEUED, c.WORKER_STOPPED)
        return
    run.kids["workerJob"] = _name(job)
    outcome, _ = job_outcome(job)
    if outcome == "Complete":
        _succeeded(run, job)
    elif outcome == "Failed":
        _failed(run, job)
    elif run.spec.suspend:
        run.conds.clear(c.RUNNING, c.WORKER_STOPPED)
        run.conds.clear(c.QUEUED, c.WORKER_STOPPED)
    elif job.get("spec", {}).get("suspend"):
        if kueue:
            run.conds.set(c.QUEUED, TRUE, c.WAITING_FOR_KUEUE, queue=run.spec.scheduling.queue_name)
        else:
            run.conds.set(c.QUEUED, TRUE, c.WAITING_FOR_POD)
    else:
        _active(run, job)


def _attempts(run: _Run, job: dict[str, Any]) -> int:
    """Worker pods made so far (the Job controller's counts; a disruption's pod is not counted)."""
    job_status = job.get("status", {})
    seen = sum(job_status.get(key) or 0 for key in ("failed", "succeeded", "active"))
    return max(run.status.get("attempts") or 0, seen)


def _active(run: _Run, job: dict[str, Any]) -> None:
    pods = _live(run.obs.worker_pods)
    running = [p for p in pods if _pod_phase(p) == "Running"]
    attempts = _attempts(run, job)
    limit = run.spec.backoff_limit + 1
    failed = [p for p in _by_creation(run.obs.worker_pods) if _pod_phase(p) == "Failed"]
    last_failure = pod_failure(failed[-1], children.CONTAINER_NAME, WorkerResult, "worker") if failed else None
    if attempts > (run.status.get("attempts") or 0) and attempts > 1 and last_failure is not None:
        run.events.append(Event("Warning", c.WORKER_RETRYING.name, f"attempt {attempts} of {limit} after: {last_failure[0]}: {last_failure[1]}"))
    if attempts:
        run.status["attempts"] = attempts

    if running:
        pod = running[-1]
        run.kids["workerPod"] = _name(pod)
        run.status.setdefault("startTime", pod.get("status", {}).get("startTime") or iso(run.now))
        fresh = clean_progress(run.obs.progress)
        if fresh is not None:
            run.status["progress"] = fresh
        progress = run.status.get("progress")
        reason = c.PUBLISHING if (progress or {}).get("stage") == PUBLISH else c.WORKER_RUNNING
        run.conds.set(c.RUNNING, TRUE, reason, detail=progress_detail(progress))
        run.conds.clear(c.QUEUED, c.STARTED, pod=_name(pod))
        return

    ended_well = [p for p in pods if _pod_phase(p) == "Succeeded"]
    if ended_well:
        # The pod is done and the Job controller marks the Job Complete a moment later: still Running, never
        # back to Queued in between (the phase must not go backwards).
        run.conds.set(c.RUNNING, TRUE, c.WORKER_FINISHED, pod=_name(ended_well[-1]))
        return

    if last_failure is not None:
        run.conds.set(c.RUNNING, FALSE, c.WORKER_RETRYING, attempt=len(failed), limit=limit, failure=f"{last_failure[0]}: {last_failure[1]}")
    else:
        run.conds.clear(c.RUNNING, c.WORKER_STOPPED)
    pending = [p for p in pods if _pod_phase(p) == "Pending"]
    if not pending and not run.obs.worker_pod_not_created:
        run.conds.set(c.QUEUED, TRUE, c.WAITING_FOR_POD)
        return
    if pending:
        run.kids["workerPod"] = _name(pending[-1])
        waiting = waiting_of(pending[-1], children.CONTAINER_NAME, "worker")
    else:
        waiting = not_created(job, run.obs.worker_pod_not_created or "", "worker")
    timeout = run.spec.pending_timeout_seconds
    if _timed_out(waiting, run.now, timeout):
        run.fail(waiting.reason, _timeout_message(waiting, timeout))
    else:
        run.conds.set(c.QUEUED, TRUE, waiting.reason, waiting.message)


def _succeeded(run: _Run, job: dict[str, Any]) -> None:
    done = [p for p in _by_creation(run.obs.worker_pods) if _pod_phase(p) == "Succeeded"]
    result = read_result(WorkerResult, (terminated(done[-1], children.CONTAINER_NAME) or {}).get("message")) if done else None
    if result is not None:
        run.status["result"] = job_result(result)
    run.status["attempts"] = _attempts(run, job)
    job_status = job.get("status", {})
    run.status.setdefault("startTime", job_status.get("startTime") or iso(run.now))
    run.status.setdefault("completionTime", job_status.get("completionTime") or iso(run.now))
    if run.status.get("progress"):
        run.status["progress"] = run.status["progress"] | {"stage": DONE, "percent": 100, "etaSeconds": 0}
    run.conds.set(c.SUCCEEDED, TRUE, c.JOB_SUCCEEDED, summary=result_summary(result, run.spec))
    run.conds.clear(c.RUNNING, c.COMPLETED)
    run.conds.clear(c.QUEUED, c.COMPLETED)


def _failed(run: _Run, job: dict[str, Any]) -> None:
    reason, message = job_failure(job, run.obs.worker_pods, children.CONTAINER_NAME, WorkerResult, "worker")
    failed = [p for p in _by_creation(run.obs.worker_pods) if _pod_phase(p) == "Failed"]
    result = read_result(WorkerResult, (terminated(failed[-1], children.CONTAINER_NAME) or {}).get("message")) if failed else None
    if result is not None:
        # A missed quality gate still has figures and a rejected_uri worth showing.
        run.status["result"] = job_result(result)
    run.status["attempts"] = _attempts(run, job)
    if reason == c.DEADLINE_EXCEEDED.name and (run.status.get("progress") or {}).get("stage"):
        message = c.DEADLINE_EXCEEDED.message(seconds=job.get("spec", {}).get("activeDeadlineSeconds"), where=f" and was stopped in stage {run.status['progress']['stage']}")
    run.fail(reason, message)


def _kstatus(conds: Conditions) -> None:
    """Reconciling/Stalled for kstatus-based tools (Flux, kpt, cli-utils)."""
    phase = conds.phase()
    if conds.is_true(c.FAILED):
        conds.set(c.RECONCILING, FALSE, conds.reason(c.FAILED) or "Failed", "the job failed")
        conds.set(c.STALLED, TRUE, conds.reason(c.FAILED) or "Failed", "the job failed; see the Failed condition")
    elif conds.is_true(c.SUCCEEDED):
        conds.set(c.RECONCILING, FALSE, "Succeeded", "the job succeeded")
        conds.set(c.STALLED, FALSE, "Succeeded", "")
    elif phase == api.Phase.SUSPENDED:
        conds.set(c.RECONCILING, FALSE, "Suspended", "spec.suspend is true")
        conds.set(c.STALLED, FALSE, "Suspended", "")
    else:
        conds.set(c.RECONCILING, TRUE, phase.value, f"the job is {phase.value.lower()}")
        conds.set(c.STALLED, FALSE, phase.value, "")


def _pruned(value: Any) -> Any:
    """Drop None and empty mappings: absence, not null, is how an unset field looks."""
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
    warning = "Warning" if reason in c.WARNING_REASONS else "Normal"
    if ctype == c.PLANNED:
        return Event("Warning" if status == FALSE else warning, reason, message)
    if ctype in (c.QUEUED, c.RUNNING) and status == TRUE:
        return Event(warning, reason, message)
    if ctype == c.SUSPENDED:
        return Event("Normal", reason, message)
    if ctype == c.SUCCEEDED and status == TRUE:
        return Event("Normal", reason, message)
    if ctype == c.FAILED and status == TRUE:
        return Event("Warning", reason, message)
    return None


def transition_events(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[Event]:
    """One Event per condition whose status or reason changed: every transition is told, replays are not."""
    events = []
    for cond in new:
        if cond["type"] in (c.RECONCILING, c.STALLED):
            continue
        before = c.get(old, cond["type"])
        if before is not None and before.get("status") == cond["status"] and _SAME_STORY.get(before.get("reason"), before.get("reason")) == _SAME_STORY.get(cond["reason"], cond["reason"]):
            continue
        if before is None and cond["type"] == c.SUSPENDED and cond["status"] == FALSE:
            continue
        event = _event_for(cond)
        if event is not None:
            events.append(event)
    return events
