"""The Kopf handlers: thin glue from watch events to `reconciler.reconcile`.

    CompressionJob event (create, change, resume after a restart, replay) -> queue it for a reconcile
    Job or Pod event of ours (labels)                                     -> queue its owner
    every resync interval, each job where time may tell (resync_due.py)   -> reconcile, polling progress

A handler only names the job in the work queue (workqueue.py) and returns: one reconcile for any number of
events that came before its turn, and no event body kept while it waits.

Only watch-event handlers and indices are used, never Kopf's change handlers, daemons or timers:
those keep progress in annotations and (daemons, timers) add a finalizer, so a deletion would hang
while the operator is down. Here the status is the only memory, and children are found by name.
What is watched is only what must be: Jobs and pods carrying our managed-by label, selected by the API
server (not every pod of the cluster parsed here and filtered); each object is kept as a snapshot of the
fields we read (snapshots.py), never deep-copied whole.
Must not: hold logic beyond routing; everything else is in reconciler.py and the pure modules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import kopf
from kompress_api import v1alpha1 as api

from kompress_operator import child_names, snapshots
from kompress_operator.kube import connection_info
from kompress_operator.reconciler import reconcile
from kompress_operator.resync_due import resync_due
from kompress_operator.runtime import Runtime
from kompress_operator.supervisor import Supervised
from kompress_operator.workqueue import WorkQueue

log = logging.getLogger("kompress.operator")
OURS = {child_names.LABEL_MANAGED_BY: child_names.MANAGED_BY}
# The same filter, applied by the API server to the watches and listings of Jobs and pods.
OURS_SELECTOR = ",".join(f"{key}={value}" for key, value in OURS.items())
CHILD_RESOURCES = (("batch", "v1", "jobs"), ("", "v1", "pods"))
# Reconciles at once. Each waits for the API most of its time (a child's creation, the status write, its Events in
# turn), and the API client sends the most urgent request first whatever the number, so this only bounds memory:
# a reconcile waiting holds snapshots, not event bodies.
RECONCILE_WORKERS = 128
# How long Kopf keeps an object's idle worker, and with it that object's last event, whole. Its 5 s default held a
# burst's every pod and Job body for 5 s after its last event; a new worker costs less than that.
KOPF_IDLE_WORKER_S = 1.0


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf builds a "diff base" of every event's body (a deep copy of it) to detect changes for change handlers.
    This operator has none (see above), so there is nothing to build, store or compare."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


# --- the operator's life --------------------------------------------------------------------------


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    # Kopf's watches use the very credentials of our own client (in-cluster, else the kubeconfig).
    return connection_info(memo.runtime.kube.configuration)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, compressionjobs: kopf.Index, kompress_jobs: kopf.Index, kompress_pods: kopf.Index, **_: Any) -> None:
    # 1. We post our own Events (after a successful status write); Kopf's log-as-events would be noise.
    settings.posting.enabled = False
    # 2. No CRD/namespace scanning: the chart grants no such rights, and the CRD is installed first.
    settings.scanning.disabled = True
    # 3. Only our Jobs and pods, selected by the API server. (The handlers' `labels=` filter alone is applied here,
    #    after every pod and Job of the watched namespaces was sent, parsed and remembered by Kopf.)
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = OURS_SELECTOR
    # 4. Nothing to diff (no change handlers): no deep copy of every event for it.
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.queueing.idle_timeout = KOPF_IDLE_WORKER_S
    # 5. Resync: poll progress and check pending timeouts, where no watch event would come. Supervised: restarted
    #    if it fails, and the liveness probe fails if it keeps failing (see resync_alive).
    memo.resync = Supervised("resync", lambda: resync_forever(memo.runtime, compressionjobs, kompress_jobs, kompress_pods)).start()
    # 6. A reconcile reads the newest CompressionJob there once it holds the job's lock (runtime.Runtime.current).
    memo.runtime.cjobs = compressionjobs
    # 7. The reconciles the watch events ask for.
    memo.queue = WorkQueue(lambda key: reconcile_key(memo.runtime, key, compressionjobs, kompress_jobs, kompress_pods), workers=RECONCILE_WORKERS).start()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "resync", None) is not None:
        memo.resync.cancel()
    if getattr(memo, "queue", None) is not None:
        memo.queue.cancel()
    await memo.runtime.progress.close()


@kopf.on.probe(id="resync")
def resync_alive(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Part of /healthz: an operator whose resync is dead for good is not alive (the kubelet restarts it)."""
    resync = getattr(memo, "resync", None)
    if resync is not None and resync.failure:
        raise kopf.PermanentError(resync.failure)
    return {"restarts": resync.restarts if resync is not None else 0}


# --- what is known: indices fed by the watches ---------------------------------------------------


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def compressionjobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): snapshots.compression_job(body)}


@kopf.index("batch", "v1", "jobs", labels=OURS)
def kompress_jobs(labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]] | None:
    uid = labels.get(child_names.LABEL_OWNER_UID)
    return {uid: snapshots.job(body)} if uid else None


@kopf.index("", "v1", "pods", labels=OURS)
def kompress_pods(labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]] | None:
    uid = labels.get(child_names.LABEL_OWNER_UID)
    return {uid: snapshots.pod(body)} if uid else None


# --- what happens: reconcile on every event -------------------------------------------------------

Key = tuple[str, str, str]  # (namespace, name, uid) of a CompressionJob


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def compression_job_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body.metadata
    # 1. Gone: forget it (its children go with it through their ownerReferences).
    if type == "DELETED":
        memo.runtime.forget(meta.uid)
        return
    # 2. The echo of our own last status write: it holds nothing we did not compute, and whatever changed in the
    #    children since comes as their own events (a resync still looks at it).
    if memo.runtime.own_echo(snapshots.compression_job(body)):
        return
    # 3. Created, changed, listed after a restart, or replayed: the same reconcile in every case; first for a job that
    #    has no child yet.
    memo.queue.add((meta.namespace, meta.name, meta.uid), urgent=not (body.get("status") or {}).get("children"))


@kopf.on.event("batch", "v1", "jobs", labels=OURS)
async def child_job_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # 1. A Job we deleted is really gone now: its name may be used again.
    if type == "DELETED":
        memo.runtime.gone(body.metadata.uid)
    _queue_owner(memo.queue, body)


@kopf.on.event("", "v1", "pods", labels=OURS)
async def child_pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _queue_owner(memo.queue, body)


def _queue_owner(queue: WorkQueue, child: kopf.Body) -> None:
    # The owner: its name is an annotation, its uid a label (a label value can't hold a long name). Only the
    # CompressionJob that made it: a re-created one of the same name has a new uid (reconcile_key checks).
    name = child.metadata.annotations.get(child_names.ANNOTATION_OWNER_NAME)
    uid = child.metadata.labels.get(child_names.LABEL_OWNER_UID)
    if name and uid:
        queue.add((child.metadata.namespace, name, uid))


async def reconcile_key(rt: Runtime, key: Key, cjobs: kopf.Index, jobs: kopf.Index, pods: kopf.Index) -> None:
    """Reconcile the CompressionJob `key` names, as the index holds it now; nothing if it is gone or another."""
    namespace, name, uid = key
    cjob = next(iter(cjobs.get((namespace, name), ())), None)
    if cjob is None or cjob["metadata"].get("uid") != uid:
        return
    await reconcile(rt, cjob, jobs, pods)


async def resync_forever(rt: Runtime, cjobs: kopf.Index, jobs: kopf.Index, pods: kopf.Index) -> None:
    """Every resync interval, reconcile each CompressionJob where time may change the status (resync_due.py),
    polling its worker's progress."""
    limit = asyncio.Semaphore(32)

    async def one(cjob: dict[str, Any]) -> None:
        async with limit:
            try:
                await reconcile(rt, cjob, jobs, pods, poll=True)
            except Exception as err:  # noqa: BLE001 - logged, counted, retried next round
                log.warning("%s/%s: resync failed: %s", cjob["metadata"]["namespace"], cjob["metadata"]["name"], err)

    while True:
        await asyncio.sleep(rt.config.resync_interval_s)
        now = rt.clock()
        due = [cjob for store in list(cjobs.values()) for cjob in store if resync_due(cjob, jobs, pods, now, rt.config.resync_interval_s)]
        await asyncio.gather(*(one(cjob) for cjob in due))
