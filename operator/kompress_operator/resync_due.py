"""Which CompressionJobs the resync must look at: those where time alone may change what the status says.

Every watch event already brings a reconcile; the resync is for what no event announces. It used to reconcile
every unfinished job every interval: a thousand jobs waiting quietly for a node cost a hundred reconciles a second,
forever. A job is looked at when:

    its spec was not reconciled yet (observedGeneration behind: a reconcile failed, or its write did)
    a worker runs                               its progress is polled
    it waits on a problem (Unschedulable, an image, a Secret, FailedCreate) and its pending timeout may end
        before the next round                  (counted from its oldest child: never later than the true one)
    a child Job it recorded is not in the index the watch may lag; the reconciler asks the API
    a live, unsuspended child Job has no pod    the reason is in an Event, which no watch brings

Owns: that rule. Must not: call the API or decide a status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from kompress_api import v1alpha1 as api

from kompress_operator import child_names, conditions
from kompress_operator.child_state import job_active, parse_time

DEFAULT_PENDING_TIMEOUT_S = api.CompressionJobSpec.model_fields["pending_timeout_seconds"].default


def _timeout_may_end(cjob: dict[str, Any], kids: list[dict[str, Any]], now: datetime, interval_s: float) -> bool:
    births = [parse_time(kid["metadata"].get("creationTimestamp")) for kid in kids]
    known = [birth for birth in births if birth is not None]
    if not known or len(known) < len(births):
        return True
    timeout = (cjob.get("spec") or {}).get("pendingTimeoutSeconds") or DEFAULT_PENDING_TIMEOUT_S
    return now + timedelta(seconds=interval_s) >= min(known) + timedelta(seconds=timeout)


def resync_due(cjob: dict[str, Any], jobs: Mapping[str, Iterable[dict[str, Any]]], pods: Mapping[str, Iterable[dict[str, Any]]],
               now: datetime, interval_s: float) -> bool:
    meta, status = cjob["metadata"], cjob.get("status") or {}
    conds = status.get("conditions") or []
    if conditions.is_finished(conds):
        return False
    if status.get("observedGeneration") != meta.get("generation"):
        return True
    if conditions.is_true(conds, conditions.RUNNING):
        return True
    uid = meta["uid"]
    mine = [job for job in jobs.get(uid, ()) if child_names.is_owned_by(job, uid)]
    if any(conditions.reason_of(conds, ctype) in conditions.WAITING_PROBLEMS for ctype in (conditions.PLANNED, conditions.QUEUED)):
        if _timeout_may_end(cjob, [*mine, *pods.get(uid, ())], now, interval_s):
            return True
    names = {job["metadata"]["name"] for job in mine}
    recorded = status.get("children") or {}
    wanted = [recorded.get("workerJob"), None if conditions.is_planned(conds) else recorded.get("planJob")]
    if any(name and name not in names for name in wanted):
        return True
    with_pods = {ref.get("uid") for pod in pods.get(uid, ()) for ref in pod.get("metadata", {}).get("ownerReferences") or [] if ref.get("controller")}
    return any(job_active(job) and not job.get("spec", {}).get("suspend") and job["metadata"].get("uid") not in with_pods for job in mine)
