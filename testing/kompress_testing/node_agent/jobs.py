"""The Job controller (batch/v1, as kube-controller-manager 1.32 runs it) and the TTL-after-finished controller.

Owns, for each Job: its pods (`<job>-<5 random>` from the template, with the `batch.kubernetes.io/job-tracking`
finalizer and a controller ownerReference), counting finished pods exactly once (status.uncountedTerminatedPods,
then the finalizer's removal, then the counters), `suspend` (active pods deleted, Suspended condition;
resuming resets startTime), `backoffLimit` with the pod failure back-off (10 s doubling, at most 6 min),
`podFailurePolicy` (onExitCodes and onPodConditions: FailJob, Ignore, Count), `podReplacementPolicy`
(a replacement waits for the failed pod to be gone when it is Failed or a podFailurePolicy is set),
`activeDeadlineSeconds`, the interim conditions of 1.31+ (FailureTarget / SuccessCriteriaMet, then
Failed / Complete once no pod is terminating), `startTime`, `completionTime`, `active`, `ready`,
`terminating`, Events, and deleting finished Jobs after `ttlSecondsAfterFinished`.
Decisions are pure functions of (Job, its pods, now); `JobController.sync` applies them through the API.
Not modelled: Indexed completion mode, successPolicy, backoffLimitPerIndex, parallelism above 1 beyond
creating that many pods, managedBy, pod adoption by label selector (pods are matched by ownerReference).

Kubernetes' sources: pkg/controller/job/job_controller.go, pod_failure_policy.go, backoff_utils.go.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kompress_testing.node_agent.api import Api, ApiError, path

log = logging.getLogger("kompress.node_agent.jobs")

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
# pkg/controller/job: DefaultJobPodFailureBackOff, MaxJobPodFailureBackOff.
DEFAULT_BACKOFF = timedelta(seconds=10)
MAX_BACKOFF = timedelta(minutes=6)

BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")


# ---------------------------------------------------------------------------------------------
# Reading Jobs and Pods
# ---------------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)


def is_true(obj: dict[str, Any], ctype: str) -> bool:
    cond = condition(obj, ctype)
    return bool(cond and cond.get("status") == "True")


def job_finished(job: dict[str, Any]) -> bool:
    return is_true(job, "Complete") or is_true(job, "Failed")


def suspended(job: dict[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def deleting(obj: dict[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def terminal(pod: dict[str, Any]) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def active(pod: dict[str, Any]) -> bool:
    """controller.FilterActivePods: not finished and not being deleted."""
    return not terminal(pod) and not deleting(pod)


def terminating(pod: dict[str, Any]) -> bool:
    return not terminal(pod) and deleting(pod)


def ready(pod: dict[str, Any]) -> bool:
    return is_true(pod, "Ready")


def uid(obj: dict[str, Any]) -> str:
    return obj["metadata"]["uid"]


def name(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


def has_tracking_finalizer(pod: dict[str, Any]) -> bool:
    return TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or [])


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job" and ref.get("apiVersion") == "batch/v1":
            return ref.get("uid")
    return None


def only_replace_failed(job: dict[str, Any]) -> bool:
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or bool(spec.get("podFailurePolicy"))


def pod_failed(pod: dict[str, Any], job: dict[str, Any]) -> bool:
    """isPodFailed: Failed; or, unless only failed pods are replaced, deleted before it succeeded."""
    if phase(pod) == "Failed":
        return True
    if only_replace_failed(job):
        return False
    return deleting(pod) and phase(pod) != "Succeeded"


def _terminated_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [s for s in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
            if (s.get("state") or {}).get("terminated")]


def match_pod_failure_policy(job: dict[str, Any], pod: dict[str, Any]) -> tuple[str | None, bool, str | None]:
    """(FailJob message or None, whether the failure counts towards backoffLimit, the matched action)."""
    policy = (job.get("spec") or {}).get("podFailurePolicy")
    if not policy:
        return None, True, None
    namespace = pod["metadata"].get("namespace")
    for index, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes"):
            req = rule["onExitCodes"]
            for status in _terminated_statuses(pod):
                code = status["state"]["terminated"].get("exitCode", 0)
                if code == 0 or (req.get("containerName") and req["containerName"] != status.get("name")):
                    continue
                values = req.get("values") or []
                if (req.get("operator") == "In" and code in values) or (req.get("operator") == "NotIn" and code not in values):
                    if action == "FailJob":
                        return (f"Container {status.get('name')} for pod {namespace}/{name(pod)} failed with exit code {code} "
                                f"matching FailJob rule at index {index}"), True, action
                    return None, action != "Ignore", action
        elif rule.get("onPodConditions"):
            for cond in (pod.get("status") or {}).get("conditions") or []:
                for pattern in rule["onPodConditions"]:
                    if cond.get("type") == pattern.get("type") and cond.get("status") == pattern.get("status", "True"):
                        if action == "FailJob":
                            return (f"Pod {namespace}/{name(pod)} has condition {cond['type']} matching FailJob rule at index {index}"), True, action
                        return None, action != "Ignore", action
    return None, True, None


def finish_time(pod: dict[str, Any]) -> datetime | None:
    times = [parse_time(s["state"]["terminated"].get("finishedAt")) for s in _terminated_statuses(pod)]
    times = [t for t in times if t]
    return max(times) if times else parse_time((pod.get("metadata") or {}).get("deletionTimestamp"))


@dataclass(frozen=True)
class Backoff:
    """backoff_utils.go's record: failures since the last success and when the latest happened (kept in memory, as there)."""

    failures: int = 0
    last_failure: datetime | None = None

    def after(self, succeeded: Sequence[dict[str, Any]], failed: Sequence[dict[str, Any]]) -> Backoff:
        record = self
        if succeeded:
            record = Backoff()
        for pod in failed:
            when = finish_time(pod)
            latest = max(t for t in (record.last_failure, when) if t) if (record.last_failure or when) else None
            record = Backoff(record.failures + 1, latest)
        return record

    def remaining(self, now: datetime, base: timedelta) -> timedelta:
        """base * 2^(failures - 1) after the last failure, at most 6 minutes."""
        if not self.failures or self.last_failure is None or base <= timedelta(0):
            return timedelta(0)
        delay = min(base * (2 ** (self.failures - 1)), MAX_BACKOFF)
        return max(timedelta(0), self.last_failure + delay - now)


def new_condition(ctype: str, status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastProbeTime": iso(now), "lastTransitionTime": iso(now)}


def ensure_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str, now: datetime) -> bool:
    """ensureJobConditionStatus: add or update; returns whether anything changed."""
    for cond in conditions:
        if cond.get("type") == ctype:
            if (cond.get("status"), cond.get("reason"), cond.get("message")) == (status, reason, message):
                return False
            cond.update(new_condition(ctype, status, reason, message, now))
            return True
    if status == "False" and ctype == "Suspended":
        return False  # a Job never suspended has no Suspended condition to clear
    conditions.append(new_condition(ctype, status, reason, message, now))
    return True


# ---------------------------------------------------------------------------------------------
# One sync of one Job: a plan of writes, computed without the API
# ---------------------------------------------------------------------------------------------


@dataclass
class JobSync:
    status: dict[str, Any]
    create: int = 0
    delete: list[dict[str, Any]] = field(default_factory=list)  # pods to delete, finalizer kept
    delete_untracked: list[dict[str, Any]] = field(default_factory=list)  # pods to delete, finalizer removed first
    remove_finalizer: list[dict[str, Any]] = field(default_factory=list)
    finished: dict[str, Any] | None = None  # the terminal condition to add once the finalizers are gone
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: timedelta | None = None
    backoff: Backoff = field(default_factory=Backoff)


def plan_sync(job: dict[str, Any], pods: Sequence[dict[str, Any]], now: datetime, backoff: Backoff = Backoff(),
              backoff_base: timedelta = DEFAULT_BACKOFF) -> JobSync:
    """syncJob for a NonIndexed Job that is not finished: what to write, create and delete."""
    spec = job.get("spec") or {}
    status = copy.deepcopy(job.get("status") or {})
    conditions = status.setdefault("conditions", [])
    uncounted = status.setdefault("uncountedTerminatedPods", {})
    uncounted_succeeded = list(uncounted.get("succeeded") or [])
    uncounted_failed = list(uncounted.get("failed") or [])
    sync = JobSync(status=status)

    tracked = [p for p in pods if has_tracking_finalizer(p)]
    new_succeeded = [p for p in tracked if phase(p) == "Succeeded" and uid(p) not in uncounted_succeeded]
    new_failed = [p for p in tracked if pod_failed(p, job) and uid(p) not in uncounted_failed]
    counted_new_failed = sum(1 for p in new_failed if match_pod_failure_policy(job, p)[1])
    succeeded = int(status.get("succeeded") or 0) + len(new_succeeded) + len(uncounted_succeeded)
    failed = int(status.get("failed") or 0) + counted_new_failed + len(uncounted_failed)
    sync.backoff = backoff.after(new_succeeded, new_failed)
    active_pods = [p for p in pods if active(p)]
    n_active = len(active_pods)
    n_terminating = sum(1 for p in pods if terminating(p))

    if not status.get("startTime") and not suspended(job):
        status["startTime"] = iso(now)

    # What ends the Job, most decisive first (syncJob's order).
    finished: dict[str, Any] | None = None
    if is_true(job, "SuccessCriteriaMet"):
        target = condition(job, "SuccessCriteriaMet") or {}
        finished = new_condition("Complete", "True", target.get("reason", ""), target.get("message", ""), now)
    elif is_true(job, "FailureTarget"):
        target = condition(job, "FailureTarget") or {}
        finished = new_condition("Failed", "True", target.get("reason", ""), target.get("message", ""), now)
    else:
        for pod in pods:
            if pod_failed(pod, job):
                message = match_pod_failure_policy(job, pod)[0]
                if message:
                    finished = new_condition("FailureTarget", "True", "PodFailurePolicy", message, now)
                    break
    if finished is None:
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(status.get("startTime"))
        if failed > int(spec.get("backoffLimit", 6)):
            finished = new_condition("FailureTarget", "True", *BACKOFF_LIMIT_EXCEEDED, now)
        elif deadline is not None and started and not suspended(job) and now - started >= timedelta(seconds=int(deadline)):
            finished = new_condition("FailureTarget", "True", *DEADLINE_EXCEEDED, now)
        elif deadline is not None and started and not suspended(job):
            sync.requeue_after = started + timedelta(seconds=int(deadline)) - now

    if finished is not None and finished["type"] in ("FailureTarget", "Failed"):
        # The Job failed: its running pods go (their finalizers stay, so they are counted as failed).
        sync.delete = active_pods
        n_terminating += n_active
        n_active = 0
    else:
        if suspended(job):
            sync.delete_untracked = active_pods
            n_terminating += n_active
            n_active = 0
            if ensure_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended", now):
                sync.events.append(("Normal", "Suspended", "Job suspended"))
        else:
            if ensure_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed", now):
                sync.events.append(("Normal", "Resumed", "Job resumed"))
                # activeDeadlineSeconds counts time continuously active: resuming restarts the clock.
                status["startTime"] = iso(now)
            completions = spec.get("completions")
            want = int(spec.get("parallelism", 1))
            if completions is not None:
                want = max(0, min(want, int(completions) - succeeded))
            elif succeeded > 0:
                want = n_active
            waiting_for = n_terminating if only_replace_failed(job) else 0
            missing = want - waiting_for - n_active
            if missing > 0:
                remaining = sync.backoff.remaining(now, backoff_base)
                if remaining > timedelta(0):
                    sync.requeue_after = min(remaining, sync.requeue_after or remaining)
                else:
                    sync.create = missing
                    n_active += missing
        done = succeeded >= int(spec["completions"]) if spec.get("completions") is not None else succeeded > 0
        if finished is None and done and n_active == 0:
            finished = new_condition("SuccessCriteriaMet", "True", *COMPLETIONS_REACHED, now)

    # Count finished pods exactly once: into uncounted first, counters after the finalizer is gone.
    for pod in tracked:
        failing_job = finished is not None and finished["type"] in ("FailureTarget", "Failed")
        if not (finished is not None or phase(pod) == "Succeeded" or pod_failed(pod, job)):
            continue
        if phase(pod) == "Succeeded":
            if uid(pod) not in uncounted_succeeded:
                uncounted_succeeded.append(uid(pod))
        elif pod_failed(pod, job) or failing_job:
            if uid(pod) not in uncounted_failed and match_pod_failure_policy(job, pod)[1]:
                uncounted_failed.append(uid(pod))
        sync.remove_finalizer.append(pod)
    uncounted["succeeded"], uncounted["failed"] = uncounted_succeeded, uncounted_failed

    if finished is not None and finished["type"] in ("FailureTarget", "SuccessCriteriaMet"):
        if condition(job, finished["type"]) is None:
            conditions.append(finished)
        terminal_type = "Failed" if finished["type"] == "FailureTarget" else "Complete"
        finished = new_condition(terminal_type, "True", finished["reason"], finished["message"], now)
    sync.finished = finished
    status["active"] = n_active
    status["ready"] = sum(1 for p in active_pods if ready(p)) if n_active else 0
    status["terminating"] = n_terminating
    return sync


def finalize(status: dict[str, Any], finished: dict[str, Any] | None, removed_uids: set[str], pods: Sequence[dict[str, Any]]) -> bool:
    """Move uncounted pods whose finalizer is gone into the counters; add the terminal condition when
    nothing is left uncounted or terminating (enactJobFinished). Returns whether the Job finished."""
    uncounted = status["uncountedTerminatedPods"]
    for key in ("succeeded", "failed"):
        done = [u for u in uncounted[key] if u in removed_uids]
        status[key] = int(status.get(key) or 0) + len(done)
        uncounted[key] = [u for u in uncounted[key] if u not in removed_uids]
    if finished is None or uncounted["succeeded"] or uncounted["failed"]:
        return False
    if any(terminating(p) for p in pods) or status.get("terminating"):
        return False
    status["conditions"].append(finished)
    if finished["type"] == "Complete":
        status["completionTime"] = finished["lastTransitionTime"]
    return True


def wire_status(status: dict[str, Any]) -> dict[str, Any]:
    """As Go serializes a JobStatus: empty lists omitted (uncountedTerminatedPods stays, as `{}`)."""
    out = copy.deepcopy(status)
    uncounted = out.get("uncountedTerminatedPods") or {}
    out["uncountedTerminatedPods"] = {k: v for k, v in uncounted.items() if v}
    if not out.get("conditions"):
        out.pop("conditions", None)
    return out


def ttl_expiry(job: dict[str, Any]) -> datetime | None:
    """When the TTL-after-finished controller deletes this finished Job, if it has a TTL."""
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    if ttl is None or not job_finished(job):
        return None
    cond = condition(job, "Complete") if is_true(job, "Complete") else condition(job, "Failed")
    finished_at = parse_time((job.get("status") or {}).get("completionTime")) or parse_time((cond or {}).get("lastTransitionTime"))
    return finished_at + timedelta(seconds=int(ttl)) if finished_at else None


def pod_from_template(job: dict[str, Any]) -> dict[str, Any]:
    """What the Job controller POSTs: the template's metadata and spec, generateName `<job>-`, owner, finalizer."""
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    meta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{name(job)}-",
            "namespace": job["metadata"]["namespace"],
            "labels": meta.get("labels") or {},
            **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name(job), "uid": uid(job),
                                 "controller": True, "blockOwnerDeletion": True}],
            "finalizers": [TRACKING_FINALIZER],
        },
        "spec": template.get("spec") or {},
    }


# ---------------------------------------------------------------------------------------------
# Applying it
# ---------------------------------------------------------------------------------------------


class JobController:
    def __init__(self, api: Api, events: Any, backoff_base: timedelta = DEFAULT_BACKOFF) -> None:
        self.api = api
        self.events = events
        self.backoff_base = backoff_base
        self.backoffs: dict[str, Backoff] = {}

    async def sync_all(self, jobs: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]], now: datetime) -> datetime | None:
        """One pass over every Job; returns when the earliest timer (deadline, back-off, TTL) is due."""
        by_owner: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            owner = controller_uid(pod)
            if owner:
                by_owner.setdefault(owner, []).append(pod)
        wake: list[datetime] = []
        live_jobs = {uid(j): j for j in jobs}
        for job in jobs:
            try:
                due = await self.sync_job(job, by_owner.get(uid(job), []), now)
            except ApiError as err:
                # 409 and friends: the next pass sees fresh objects and tries again.
                log.debug("job %s/%s: %s", job["metadata"]["namespace"], name(job), err)
                due = now + timedelta(seconds=1)
            if due:
                wake.append(due)
        await self._release_orphans(pods, live_jobs)
        return min(wake) if wake else None

    async def sync_job(self, job: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> datetime | None:
        ns = job["metadata"]["namespace"]
        if job_finished(job):
            # The finished Job's last pods are released (their counts were taken), then the TTL applies.
            for pod in pods:
                if has_tracking_finalizer(pod):
                    await self._remove_finalizer(pod)
            expiry = ttl_expiry(job)
            if expiry is not None and not deleting(job):
                if now >= expiry:
                    await self.api.delete(path("batch/v1", "jobs", ns, name(job)), propagationPolicy="Foreground",
                                          preconditions={"uid": uid(job)})
                    return None
                return expiry
            return None
        if deleting(job):
            return None
        sync = plan_sync(job, pods, now, self.backoffs.get(uid(job), Backoff()), self.backoff_base)
        if wire_status(sync.status) != (job.get("status") or {}):
            job = await self._write_status(job, sync.status)
        for pod in sync.delete_untracked:
            await self._remove_finalizer(pod)
        for pod in sync.delete + sync.delete_untracked:
            await self.api.delete(path("v1", "pods", ns, name(pod)))
            await self.events.emit(job, "Normal", "SuccessfulDelete", f"Deleted pod: {name(pod)}", "job-controller")
        removed = set()
        for pod in sync.remove_finalizer:
            if await self._remove_finalizer(pod):
                removed.add(uid(pod))
        for _ in range(sync.create):
            created = await self.api.create(path("v1", "pods", ns), pod_from_template(job))
            await self.events.emit(job, "Normal", "SuccessfulCreate", f"Created pod: {name(created)}", "job-controller")
        status = copy.deepcopy(sync.status)
        finished_now = finalize(status, sync.finished, removed, pods)
        if wire_status(status) != wire_status(sync.status):
            job = await self._write_status(job, status)
        self.backoffs[uid(job)] = sync.backoff
        for etype, reason, message in sync.events:
            await self.events.emit(job, etype, reason, message, "job-controller")
        if finished_now and sync.finished is not None:
            if sync.finished["type"] == "Complete":
                await self.events.emit(job, "Normal", "Completed", "Job completed", "job-controller")
            else:
                await self.events.emit(job, "Warning", sync.finished["reason"], sync.finished["message"], "job-controller")
            return ttl_expiry(job)
        return now + sync.requeue_after if sync.requeue_after else None

    async def _write_status(self, job: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Replace the Job's status, only if nobody wrote the Job since we read it."""
        ns = job["metadata"]["namespace"]
        return await self.api.json_patch(path("batch/v1", "jobs", ns, name(job), "status"), [
            {"op": "test", "path": "/metadata/resourceVersion", "value": job["metadata"]["resourceVersion"]},
            {"op": "add", "path": "/status", "value": wire_status(status)},
        ])

    async def _remove_finalizer(self, pod: dict[str, Any]) -> bool:
        finalizers = pod["metadata"].get("finalizers") or []
        if TRACKING_FINALIZER not in finalizers:
            return True
        url = path("v1", "pods", pod["metadata"]["namespace"], name(pod))
        try:
            await self.api.merge_patch(url, {"metadata": {"finalizers": [f for f in finalizers if f != TRACKING_FINALIZER] or None,
                                                          "resourceVersion": pod["metadata"]["resourceVersion"]}})
        except ApiError as err:
            if err.code == 404:
                return True
            if err.code == 409:
                return False
            raise
        return True

    async def _release_orphans(self, pods: Sequence[dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> None:
        """syncOrphanPod: a tracked pod whose Job is gone keeps no finalizer (else it could never be deleted)."""
        for pod in pods:
            owner = controller_uid(pod)
            if has_tracking_finalizer(pod) and (owner is None or owner not in jobs):
                await self._remove_finalizer(pod)
