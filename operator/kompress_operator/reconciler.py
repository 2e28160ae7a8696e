"""One reconcile of one CompressionJob: observe, compute the status, act on children, write once.

    observe   the children from the watch-fed indices (asking the API only where an index may lag:
              a child we recorded but the index lacks, a finished Job whose pods it lacks)
    compute   status.compute_status (pure)
    act       actions.next_actions (pure) -> create / suspend / delete, each idempotent
    write     one /status merge patch with the resourceVersion as precondition, only if changed;
              then the Events, only after the write succeeded (jobset's updateJobSetStatus)

Reconciles of one CompressionJob never overlap (a lock per uid), and a 409 on the status write
means "read again and recompute", so stale or replayed watch events change nothing.
Owns: that sequence and the runtime it needs. Must not: build manifests or decide a status.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from kompress_api import v1alpha1 as api
from pydantic import ValidationError

from kompress_operator import actions, child_names, conditions, pod_access
from kompress_operator.child_state import iso, job_outcome, parse_time, terminated
from kompress_operator.kube import ApiError, Conflict, NotOurs
from kompress_operator.observed import Observed, StatusUpdate
from kompress_operator.runtime import Runtime
from kompress_operator.status import compute_status, failed_status, invalid_spec_status

log = logging.getLogger("kompress.operator")

Index = Mapping[str, Iterable[dict[str, Any]]]


class ChildRefused(Exception):
    """The API server refused a child the operator tried to create (see kube.REFUSED)."""

    def __init__(self, role: str, job: str, err: ApiError) -> None:
        self.message = conditions.truncate(conditions.CHILD_REFUSED.message(role=role, job=job, status=err.status, detail=err.reason))
        super().__init__(self.message)


async def reconcile(rt: Runtime, cjob: dict[str, Any], jobs: Index, pods: Index, *, poll: bool = False) -> None:
    """Bring one CompressionJob's children and status up to date. Safe to call any number of times."""
    meta = cjob["metadata"]
    async with rt.lock(meta["uid"]):
        cjob = rt.current(cjob)
        rt.metrics.reconciles.inc()
        try:
            await _reconcile_once(rt, cjob, jobs, pods, poll)
        except Conflict:
            # Our copy was stale: the object changed after the version we computed from. That newer version
            # comes to us as a watch event (or at the next resync) and is reconciled then; no extra read (and
            # no `get` right) is needed. Children created meanwhile are found by name, never duplicated.
            log.debug("%s/%s: status write conflicted; the newer version will be reconciled", meta["namespace"], meta["name"])
        except Exception:
            rt.metrics.reconcile_errors.inc()
            raise


async def _reconcile_once(rt: Runtime, cjob: dict[str, Any], jobs: Index, pods: Index, poll: bool) -> None:
    if cjob["metadata"].get("deletionTimestamp"):
        return  # the garbage collector removes the children; the output is never touched
    now = rt.clock()
    try:
        # The one typed CompressionJob of this reconcile (its spec parsed once per generation): Observed carries
        # it to the status and the actions.
        job = rt.typed(cjob)
    except ValidationError as err:
        await _write(rt, cjob, invalid_spec_status(cjob, _validation_message(err), now))
        return
    obs = await observe(rt, cjob, job, jobs, pods, poll=poll)
    update = compute_status(obs, now)
    conds = update.status.get("conditions") or []
    if obs.plan_job is None and obs.worker_job is None and not conditions.is_finished(conds) and not conditions.is_planned(conds):
        # Before any child: a job that asks for a cache this operator cannot give fails, naming the field, rather
        # than silently downloading into scratch (the CRD cannot know whether the chart installed a cache).
        refusal = pod_access.cache_refusal(job.spec, rt.config)
        if refusal is not None:
            await _write(rt, cjob, failed_status(cjob, conditions.NO_CACHE_CLAIM.name, refusal, now))
            return
    todo = actions.next_actions(obs, update.status, rt.config)
    try:
        for action in todo:
            obs = await _apply(rt, obs, action, now)
    except NotOurs as err:
        # Not transient: someone else's Job holds the name; say so rather than retry forever.
        await _write(rt, cjob, failed_status(cjob, conditions.CHILD_NAME_TAKEN.name, str(err), now))
        return
    except ChildRefused as err:
        # Not transient either: the same create would be refused at every resync. Failed once, one Event.
        log.warning("%s/%s: %s", cjob["metadata"]["namespace"], cjob["metadata"]["name"], err.message)
        await _write(rt, cjob, failed_status(cjob, conditions.CHILD_REFUSED.name, err.message, now))
        return
    if todo:
        update = compute_status(obs, now)
    await _write(rt, cjob, update)


async def observe(rt: Runtime, cjob: dict[str, Any], job: api.CompressionJob, jobs: Index, pods: Index, *, poll: bool) -> Observed:
    """`cjob`'s children as the indices (or, where they may lag, the API) show them; `job` is `cjob` parsed."""
    meta = cjob["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    status = cjob.get("status") or {}
    finished = conditions.is_finished(status.get("conditions") or [])
    kids = status.get("children") or {}
    # Labels can be copied; the controller ownerReference is what makes a Job ours.
    by_name = {job["metadata"]["name"]: rt.as_seen(job) for job in jobs.get(uid, ()) if child_names.is_owned_by(job, uid)}
    plan_name, worker_name = (child_names.child_name(name, uid, role) for role in (child_names.ROLE_PLAN, child_names.ROLE_WORKER))
    plan_job, worker_job = by_name.get(plan_name), by_name.get(worker_name)

    # An index is fed by a watch and may not hold our own creation yet: ask before concluding it's gone.
    if not finished and worker_job is None and kids.get("workerJob"):
        worker_job = rt.as_seen(_ours(await rt.kube.get_job(namespace, worker_name), uid))
    if not finished and plan_job is None and kids.get("planJob") and not conditions.is_planned(status.get("conditions") or []):
        plan_job = rt.as_seen(_ours(await rt.kube.get_job(namespace, plan_name), uid))

    pod_list = list(pods.get(uid, ()))
    plan_pods = await _pods_of(rt, plan_job, pod_list, uid, child_names.ROLE_PLAN, child_names.PLAN_CONTAINER_NAME, finished)
    worker_pods = await _pods_of(rt, worker_job, pod_list, uid, child_names.ROLE_WORKER, child_names.CONTAINER_NAME, finished)

    plan_not_created = await _pod_not_created(rt, plan_job, plan_pods, finished)
    worker_not_created = await _pod_not_created(rt, worker_job, worker_pods, finished)

    progress = None
    if poll and worker_job is not None and not finished:
        running = [p for p in worker_pods if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        if running:
            progress = await rt.progress.poll(running[-1])
    return Observed(cjob, plan_job, plan_pods, worker_job, worker_pods, progress,
                    plan_pod_not_created=plan_not_created, worker_pod_not_created=worker_not_created, job=job)


async def _pod_not_created(rt: Runtime, job: dict[str, Any] | None, pods: list[dict[str, Any]], finished: bool) -> str | None:
    """The FailedCreate Event of a running, unsuspended Job the Job controller could not make a pod for: the one case
    where the reason is in an Event. Asked only when the Job controller says so: it has synced the Job (startTime)
    and counts no active pod, and none is seen. (It counts a pod it created in status.active at once, so a Job just
    created, or one whose pod the pod watch has not brought yet, costs no listing of Events.)"""
    if job is None or finished or pods or job.get("spec", {}).get("suspend") or job_outcome(job)[0] is not None:
        return None
    if job["metadata"].get("deletionTimestamp") or not job["metadata"].get("uid"):
        return None
    status = job.get("status") or {}
    if not status.get("startTime") or status.get("active"):
        return None
    return await rt.kube.pod_creation_failure(job)


async def _pods_of(rt: Runtime, job: dict[str, Any] | None, pods: list[dict[str, Any]], uid: str, role: str, container: str, finished: bool) -> list[dict[str, Any]]:
    if job is None:
        return []
    job_uid = job["metadata"].get("uid")
    mine = [p for p in pods if child_names.is_owned_by(p, job_uid)]
    # A finished Job's result is in its last pod's termination message; the pod watch may lag the Job watch.
    if not finished and job_outcome(job)[0] is not None and not any(terminated(p, container) for p in mine):
        listed = await rt.kube.list_pods(job["metadata"]["namespace"], {child_names.LABEL_OWNER_UID: uid, child_names.LABEL_ROLE: role})
        mine = [p for p in listed if child_names.is_owned_by(p, job_uid)]
    return mine


def _ours(job: dict[str, Any] | None, uid: str) -> dict[str, Any] | None:
    return job if job is not None and child_names.is_owned_by(job, uid) else None


async def _apply(rt: Runtime, obs: Observed, action: actions.Action, now: datetime) -> Observed:
    meta = obs.cjob["metadata"]
    namespace = meta["namespace"]
    if isinstance(action, actions.Create):
        try:
            job, created = await rt.kube.create_job(action.manifest, meta["uid"])
        except ApiError as err:
            if err.refused:
                raise ChildRefused(action.role, action.manifest["metadata"]["name"], err) from err
            raise
        if job["metadata"].get("uid") in rt.deleted_jobs:
            # The name is still held by the Job we deleted: create again once its DELETED event has come.
            log.info("%s/%s: %s Job %s is still being deleted; it is created again once it is gone",
                     namespace, meta["name"], action.role, job["metadata"]["name"])
            return obs
        if created:
            log.info("%s/%s: created %s Job %s", namespace, meta["name"], action.role, job["metadata"]["name"])
            if action.role == child_names.ROLE_PLAN and (born := parse_time(meta.get("creationTimestamp"))):
                rt.metrics.time_to_first_child.observe(max(0.0, (now - born).total_seconds()))
        return replace(obs, **{"plan_job" if action.role == child_names.ROLE_PLAN else "worker_job": job})
    if isinstance(action, actions.SetSuspend):
        job = await rt.kube.set_job_suspend(namespace, action.job, action.suspend)
        log.info("%s/%s: %s Job %s", namespace, meta["name"], "suspended" if action.suspend else "resumed", action.job)
        return replace(obs, worker_job=job)
    if isinstance(action, actions.Delete):
        role = "worker_job" if obs.worker_job is not None and obs.worker_job["metadata"]["name"] == action.job else "plan_job"
        if (doomed := getattr(obs, role)) is not None:
            rt.deleted(doomed, meta["uid"])
        await rt.kube.delete_job(namespace, action.job)
        log.info("%s/%s: deleted Job %s: %s", namespace, meta["name"], action.job, action.why)
        # Deletion takes effect later; until then the Job is one being deleted, not one that vanished.
        job = copy.deepcopy(getattr(obs, role))
        job["metadata"]["deletionTimestamp"] = iso(now)
        return replace(obs, **{role: job})
    raise TypeError(f"unknown action {action!r}")


async def _write(rt: Runtime, cjob: dict[str, Any], update: StatusUpdate) -> None:
    meta = cjob["metadata"]
    if update.changed:
        written = await rt.kube.write_status(cjob, update.status)
        rt.metrics.status_writes.inc()
        rt.wrote(cjob, written)
    rt.metrics.record_phase(meta["uid"], update.status.get("phase"))
    if update.changed and (cache := (update.status.get("plan") or {}).get("cache")) and "plan" not in (cjob.get("status") or {}):
        rt.metrics.record_cache(meta["namespace"], cache)
    # After the write, in order.
    for event in update.events:
        try:
            await rt.kube.post_event(cjob, event)
        except Exception as err:  # noqa: BLE001 - an Event lost is not worth a failed reconcile
            log.warning("%s/%s: could not post Event %s: %s", meta["namespace"], meta["name"], event.reason, err)


def _validation_message(err: ValidationError) -> str:
    parts = []
    for item in err.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    return "; ".join(parts)
