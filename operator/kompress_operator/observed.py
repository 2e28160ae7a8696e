"""The values the operator's layers hand each other: what was observed (in), the status and Events (out).

    reconciler.observe -> Observed -> status.compute_status -> StatusUpdate(status, events)
                                   -> actions.next_actions

A leaf: it imports only the API model, so the pure modules, the API client and the reconciler can all
name these types without importing each other (kube.py posts an Event without knowing status.py).
Owns: carrying the typed CompressionJob (`Observed.job`), so the spec is never re-parsed below the reconciler.
Must not: compute anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kompress_api import v1alpha1 as api


@dataclass(frozen=True)
class Observed:
    """Everything the status and the next actions are made from, read by the caller."""

    # The CompressionJob as the API server sent it: metadata (resourceVersion, deletionTimestamp) and the stored status.
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
    # `cjob`'s metadata and spec, typed (the stored status is status.py's to read from `cjob`): given by the
    # reconciler (parsed once per generation, runtime.py), else parsed here. Raises pydantic's ValidationError for
    # a spec the model refuses. A `replace(obs, cjob=...)` of another generation parses that one.
    job: api.CompressionJob = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        meta = self.cjob.get("metadata") or {}
        given = self.job
        if given is None or (given.metadata.uid, given.metadata.generation) != (meta.get("uid"), meta.get("generation")):
            object.__setattr__(self, "job", api.parse({key: value for key, value in self.cjob.items() if key != "status"}))

    @property
    def spec(self) -> api.CompressionJobSpec:
        return self.job.spec


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the CompressionJob, after its status was written."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StatusUpdate:
    """The status to write (wire form, camelCase: what the merge patch is made from) and the Events that tell it."""

    status: dict[str, Any]
    events: list[Event]
    changed: bool
