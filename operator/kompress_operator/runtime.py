"""What every handler shares, and the little the operator remembers between reconciles, each kept bounded.

    config, kube, progress, metrics, clock    the settings and the clients
    cjobs      the watch-fed index of CompressionJobs (Kopf's; set at start-up): a reconcile reads the newest version
               there once it holds the lock, not the one it was called with (another may have written meanwhile)
    locks      uid -> lock: reconciles of one CompressionJob never overlap
    written    uid -> (the resourceVersion our last status write replaced, a snapshot of what it returned), until
               that write's own watch event comes back (then the index holds it)
    deleted    Job uid -> owner uid: Jobs we deleted whose DELETED event has not come yet
    specs      uid -> (generation, the typed spec): parsed once per generation, not per event

Every map is keyed by a live CompressionJob (or one of its Jobs) and dropped with it (`forget`, on its DELETED
event); `written` holds only writes whose echo is still on its way. Nothing is kept across a
restart: the first listing shows what is really there.
Owns: those memories and their bounds. Must not: call the API or decide anything.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kompress_api import v1alpha1 as api

from kompress_operator import snapshots
from kompress_operator.child_state import iso
from kompress_operator.config import OperatorConfig
from kompress_operator.kube import Kube
from kompress_operator.metrics import Metrics
from kompress_operator.progress_client import ProgressClient


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    progress: ProgressClient
    metrics: Metrics
    clock: Callable[[], datetime] = utcnow
    cjobs: Mapping[tuple[str, str], Iterable[dict[str, Any]]] | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # A watch event may still carry the version our write replaced; reconciling from it would only meet a 409.
    written: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # Until a deleted Job's DELETED event comes, the watch-fed index (and a GET) may still show it as if alive (a
    # background deletion leaves no deletionTimestamp to see): it is seen as being deleted, and never adopted again
    # (a Kueue job suspended and resumed at once would otherwise take the old Job back, then read its late DELETED
    # event as someone else deleting the worker). Keyed by the Job, with its owner so `forget` drops the owner's.
    deleted_jobs: dict[str, str] = field(default_factory=dict)
    # The spec changes only with the generation (it is immutable but for suspend, which bumps it too).
    specs: dict[str, tuple[int, api.CompressionJobSpec]] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    # --- Jobs we deleted ---

    def deleted(self, job: dict[str, Any], owner_uid: str) -> None:
        if job["metadata"].get("uid"):
            self.deleted_jobs[job["metadata"]["uid"]] = owner_uid

    def gone(self, job_uid: str | None) -> None:
        """The Job's DELETED event came: its name may be used again."""
        self.deleted_jobs.pop(job_uid or "", None)

    def as_seen(self, job: dict[str, Any] | None) -> dict[str, Any] | None:
        """`job`, marked as being deleted if this operator deleted it."""
        if job is None or job["metadata"].get("uid") not in self.deleted_jobs or job["metadata"].get("deletionTimestamp"):
            return job
        marked = copy.deepcopy(job)
        marked["metadata"]["deletionTimestamp"] = iso(self.clock())
        return marked

    # --- our own status writes ---

    def wrote(self, cjob: dict[str, Any], returned: dict[str, Any]) -> None:
        if cjob["metadata"].get("resourceVersion") and returned:
            self.written[cjob["metadata"]["uid"]] = (cjob["metadata"]["resourceVersion"], snapshots.compression_job(returned))

    def current(self, cjob: dict[str, Any]) -> dict[str, Any]:
        """The newest version known of `cjob`: the index's (never older than an event already handled: Kopf
        updates it before the handlers run), or our own last write's if the watch has not brought that yet."""
        if self.cjobs is not None:
            meta = cjob["metadata"]
            held = next(iter(self.cjobs.get((meta["namespace"], meta["name"]), ())), None)
            if held is not None and held["metadata"].get("uid") == meta["uid"]:
                cjob = held
        return self.freshest(cjob)

    def freshest(self, cjob: dict[str, Any]) -> dict[str, Any]:
        """The object our last write returned, if `cjob` is the very version that write replaced."""
        uid, version = cjob["metadata"]["uid"], cjob["metadata"].get("resourceVersion")
        entry = self.written.get(uid)
        if entry is None:
            return cjob
        replaced, newer = entry
        if version == replaced:
            return newer
        if version != newer["metadata"].get("resourceVersion"):
            del self.written[uid]  # a version after our write's: the watch, and so the index, have caught up
        return cjob

    def own_echo(self, cjob: dict[str, Any]) -> bool:
        """Whether `cjob` is the very object our last status write returned (its watch event, come back)."""
        uid, version = cjob["metadata"]["uid"], cjob["metadata"].get("resourceVersion")
        entry = self.written.get(uid)
        if entry is None or version is None or version != entry[1]["metadata"].get("resourceVersion"):
            return False
        del self.written[uid]  # the index now holds this version itself
        return True

    # --- the typed object ---

    def typed(self, cjob: dict[str, Any]) -> api.CompressionJob:
        """`cjob`'s metadata and spec, typed (its status is status.py's to read from `cjob`). The spec is parsed
        once per generation; raises pydantic's ValidationError for a spec the model refuses."""
        meta = cjob["metadata"]
        uid, generation = meta["uid"], meta.get("generation")
        cached = self.specs.get(uid)
        if cached is not None and generation is not None and cached[0] == generation:
            return api.CompressionJob(metadata=api.ObjectMeta.model_validate(meta), spec=cached[1])
        job = api.parse({key: value for key, value in cjob.items() if key != "status"})
        if generation is not None:
            self.specs[uid] = (generation, job.spec)
        return job

    def forget(self, uid: str) -> None:
        """A CompressionJob is gone: drop all that was kept for it."""
        self.locks.pop(uid, None)
        self.written.pop(uid, None)
        self.specs.pop(uid, None)
        for job_uid in [job for job, owner in self.deleted_jobs.items() if owner == uid]:
            del self.deleted_jobs[job_uid]
        self.metrics.forget(uid)
