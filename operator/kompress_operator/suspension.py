"""How spec.suspend reaches the worker Job: one strategy per job, used by the builder, the actions and the status.

    BySpec    the worker Job's own spec.suspend follows the CompressionJob's (flipped in place)
    ByKueue   spec.scheduling.queueName: Kueue admits a Job by un-suspending it, and admits a suspended Job it
              manages again, so the Job is created suspended, stopped by deleting it, and made anew on resume

Why one place: each of these facts used to be an `if kueue` in three modules, and they must agree (a Job the
actions delete on suspend is one the status must not call "deleted by someone else").
Owns: that choice and what follows from it. Must not: build manifests, call the API, or set conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from kompress_api import v1alpha1 as api

from kompress_operator import conditions
from kompress_operator.child_state import deleting


class Change(Enum):
    """What the worker Job needs for spec.suspend to hold."""

    SUSPEND = "suspend"
    RESUME = "resume"
    DELETE = "delete"


@dataclass(frozen=True)
class BySpec:
    def created_suspended(self, spec: api.CompressionJobSpec) -> bool:
        return spec.suspend

    def change(self, job: dict[str, Any], spec: api.CompressionJobSpec) -> Change | None:
        if bool(job.get("spec", {}).get("suspend")) == spec.suspend:
            return None
        return Change.SUSPEND if spec.suspend else Change.RESUME

    def gone(self, job: dict[str, Any] | None) -> bool:
        """No worker Job to report on: a Job being deleted here is still one (it ends as the user asked)."""
        return job is None

    def deletes_when_suspended(self, spec: api.CompressionJobSpec) -> bool:
        """Whether a missing worker Job is the operator's own doing (so not `WorkerJobDeleted`)."""
        return False

    def waiting(self) -> tuple[conditions.Reason, dict[str, Any]]:
        """Why a suspended-but-wanted worker Job waits."""
        return conditions.WAITING_FOR_POD, {}


@dataclass(frozen=True)
class ByKueue:
    queue: str

    def created_suspended(self, spec: api.CompressionJobSpec) -> bool:
        # Created running, it could start before Kueue sees it.
        return True

    def change(self, job: dict[str, Any], spec: api.CompressionJobSpec) -> Change | None:
        return Change.DELETE if spec.suspend else None

    def gone(self, job: dict[str, Any] | None) -> bool:
        # A Job being deleted was deleted by the suspension: resuming makes a new one once it is gone.
        return job is None or deleting(job)

    def deletes_when_suspended(self, spec: api.CompressionJobSpec) -> bool:
        return spec.suspend

    def waiting(self) -> tuple[conditions.Reason, dict[str, Any]]:
        return conditions.WAITING_FOR_KUEUE, {"queue": self.queue}


Suspension = BySpec | ByKueue


def of(spec: api.CompressionJobSpec) -> Suspension:
    queue = spec.scheduling.queue_name if spec.scheduling is not None else None
    return ByKueue(queue) if queue else BySpec()
