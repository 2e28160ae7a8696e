"""Conditions of a CompressionJob: types, reasons, one setter, predicates, and the derived phase.

Owns: the vocabulary (condition types; reasons paired with their message templates), the one
function that changes a condition (`Conditions.put`, kueue's SetFinishedCondition / jobset's updateCondition:
the clock and the generation come in, lastTransitionTime moves only when the status moves, it says whether
anything changed; on the typed api.Condition), and `phase()`, the only place a phase
is made: from conditions, never stored on its own.
Must not: read a clock, call the API, or decide what happened (status.py does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union

from kompress_api.v1alpha1 import Condition, Phase

# Condition types, in the order `kubectl describe` shows them.
PLANNED = "Planned"  # Unknown while the planning pod runs; True with a plan; False when planning failed
QUEUED = "Queued"  # True while the worker waits: for Kueue, the scheduler, the image, a retry
RUNNING = "Running"  # True while a worker pod runs
SUSPENDED = "Suspended"  # True while spec.suspend keeps the worker stopped
SUCCEEDED = "Succeeded"  # True once the checkpoint is published: terminal
FAILED = "Failed"  # True once the job cannot succeed: terminal; the reason says why
RECONCILING = "Reconciling"  # kstatus: True while the job is in progress
STALLED = "Stalled"  # kstatus: True once it failed and needs a person
ORDER = [PLANNED, QUEUED, RUNNING, SUSPENDED, SUCCEEDED, FAILED, RECONCILING, STALLED]

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
# metav1.Condition allows 32768; a message that long helps nobody on a terminal.
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class Reason:
    """A CamelCase reason and the message template that goes with it (jobset's constants.go)."""

    name: str
    template: str = ""

    def message(self, **values: Any) -> str:
        return self.template.format(**values)


# Planning
PLANNING = Reason("Planning", "planning from the model's config.json in Job {job}: no GPU is asked for until the plan is made")
PLAN_SUCCEEDED = Reason("PlanSucceeded", "{summary}")
PLAN_REJECTED = Reason("PlanRejected", "the plan found {count} error(s); nothing ran and no GPU was asked for. {errors}")
PLAN_FAILED = Reason("PlanFailed", "the planning pod failed: {detail}")
# Waiting for the worker
WAITING_FOR_KUEUE = Reason("WaitingForKueueAdmission", "waiting for Kueue to admit the Job in queue {queue}")
WAITING_FOR_POD = Reason("WaitingForPod", "waiting for the Job controller to start the worker pod")
POD_PENDING = Reason("PodPending", "the pod {pod} is {state}")
UNSCHEDULABLE = Reason("Unschedulable", "the pod {pod} cannot be scheduled: {detail}")
STARTED = Reason("Started", "the worker pod {pod} started")
# Running
WORKER_RUNNING = Reason("WorkerRunning", "{detail}")
PUBLISHING = Reason("Publishing", "{detail}")
WORKER_RETRYING = Reason("WorkerRetrying", "attempt {attempt} of {limit} failed ({failure}); retrying")
COMPLETED = Reason("Completed", "the worker finished")
WORKER_FINISHED = Reason("WorkerFinished", "the worker pod {pod} exited successfully; waiting for its Job to complete")
WORKER_STOPPED = Reason("WorkerStopped", "the worker is not running")
# Suspension
SUSPENDED_BY_SPEC = Reason("SuspendedBySpec", "spec.suspend is true: the worker is stopped, or will not start; set it to false to run")
RESUMED = Reason("Resumed", "spec.suspend is false: the worker may run")
# The end
JOB_SUCCEEDED = Reason("Succeeded", "{summary}")
OOM_KILLED = Reason("OOMKilled", "the {who} ran out of memory (limit {limit}); {fix}")
OOM_FIX = {
    "worker": "raise spec.resources.memory (the default comes from the plan's host RAM estimate)",
    "planning pod": "raise the operator's planning pod memory (KOMPRESS_PLAN_MEMORY)",
}
DEADLINE_EXCEEDED = Reason("DeadlineExceeded", "the worker ran longer than spec.activeDeadlineSeconds ({seconds}s){where}; raise it, or ask for more GPUs")
BACKOFF_LIMIT_EXCEEDED = Reason("BackoffLimitExceeded", "the {who} failed {failed} time(s), {limit_source} is {limit}: {detail}")
# A waiting problem that outlasted spec.pendingTimeoutSeconds fails the job with the problem's own reason.
PENDING_TIMEOUT_MESSAGE = "{detail}, for more than spec.pendingTimeoutSeconds ({seconds}s); {fix}"
WORKER_JOB_DELETED = Reason(
    "WorkerJobDeleted",
    "the worker Job {job} was deleted before its end was seen, so its result is unknown; check {output}, then re-create this CompressionJob to run again",
)
INVALID_SPEC = Reason("InvalidSpec", "the spec is invalid: {detail}")
CHILD_NAME_TAKEN = Reason("ChildNameTaken", "{detail}")
NO_CACHE_CLAIM = Reason("NoCacheClaim", "{detail}")
# The API server refused to create a child (a spec it cannot hold, an admission policy, missing rights): retrying
# the same request gets the same answer, so the job fails once with the server's words.
CHILD_REFUSED = Reason("ChildRefused", "the API server refused to create the {role} Job {job} (HTTP {status}): {detail}")
# Where the worker waits for something a person must fix; shown while pending, a failure after spec.pendingTimeoutSeconds.
WAITING_PROBLEMS = {
    "Unschedulable": "ask for fewer GPUs or less memory, fix nodeSelector/tolerations/affinity, or add nodes",
    "ImagePullBackOff": "check spec.image (or the operator's default image) and spec.scheduling.imagePullSecrets",
    "ErrImagePull": "check spec.image (or the operator's default image) and spec.scheduling.imagePullSecrets",
    "InvalidImageName": "fix spec.image",
    "CreateContainerConfigError": "create the Secrets the job names (spec.*.s3.credentialsSecret, spec.*.huggingFace.tokenSecret) in its namespace",
    "CreateContainerError": "check the image and the pod's events (kubectl describe pod)",
    # Not a container state: the Job controller's Event when it cannot create the pod at all.
    "FailedCreate": "create what the message names (spec.scheduling.serviceAccountName, priorityClassName, runtimeClassName) or lift the quota",
}
FAILED_CREATE = "FailedCreate"
# Waiting reasons that will never clear by themselves: fail at once rather than after the timeout.
HOPELESS_WAITING = {"InvalidImageName"}

# Reasons shown as Warning Events.
WARNING_REASONS = {PLAN_REJECTED.name, PLAN_FAILED.name, UNSCHEDULABLE.name, WORKER_RETRYING.name, *WAITING_PROBLEMS}


def truncate(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Reading: wire dicts (an object as the API sent it) and typed api.Condition alike
# ---------------------------------------------------------------------------------------------

AnyCondition = Union[dict[str, Any], Condition]


def _type_status_reason(cond: AnyCondition) -> tuple[str | None, str | None, str | None]:
    if isinstance(cond, Condition):
        return cond.type, cond.status, cond.reason
    return cond.get("type"), cond.get("status"), cond.get("reason")


def get(conditions: Iterable[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == ctype), None)


def _find(conditions: Iterable[AnyCondition], ctype: str) -> tuple[str | None, str | None] | None:
    for cond in conditions:
        found, status, reason = _type_status_reason(cond)
        if found == ctype:
            return status, reason
    return None


def status_of(conditions: Iterable[AnyCondition], ctype: str) -> str | None:
    found = _find(conditions, ctype)
    return None if found is None else found[0]


def is_true(conditions: Iterable[AnyCondition], ctype: str) -> bool:
    return status_of(conditions, ctype) == TRUE


def reason_of(conditions: Iterable[AnyCondition], ctype: str) -> str | None:
    found = _find(conditions, ctype)
    return None if found is None else found[1]


def is_finished(conditions: Iterable[AnyCondition]) -> bool:
    """Succeeded or Failed: terminal, nothing changes afterwards."""
    conditions = list(conditions)
    return is_true(conditions, SUCCEEDED) or is_true(conditions, FAILED)


def is_planned(conditions: Iterable[AnyCondition]) -> bool:
    return is_true(conditions, PLANNED)


def phase(conditions: Iterable[AnyCondition]) -> Phase:
    """The one-word summary. Terminal conditions win, then suspension, then how far the job got."""
    conditions = list(conditions)
    if is_true(conditions, FAILED):
        return Phase.FAILED
    if is_true(conditions, SUCCEEDED):
        return Phase.SUCCEEDED
    if is_true(conditions, SUSPENDED):
        return Phase.SUSPENDED
    if is_true(conditions, RUNNING):
        # A worker that exited well has published; until its Job completes the phase stays Publishing, not back to Running.
        return Phase.PUBLISHING if reason_of(conditions, RUNNING) in (PUBLISHING.name, WORKER_FINISHED.name) else Phase.RUNNING
    if is_true(conditions, QUEUED):
        return Phase.QUEUED
    if status_of(conditions, PLANNED) == UNKNOWN:
        return Phase.PLANNING
    return Phase.PENDING


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _order(cond: Condition) -> int:
    return ORDER.index(cond.type) if cond.type in ORDER else len(ORDER)


class Conditions:
    """The typed conditions of one status, with the clock and generation bound once per reconcile."""

    def __init__(self, conditions: list[Condition], *, now: str, generation: int | None) -> None:
        self.items = conditions
        self.now = now
        self.generation = generation

    def put(self, ctype: str, status: str, reason: str, message: str) -> bool:
        """Set one condition in place; True if anything about it changed.

        lastTransitionTime moves only when `status` does: a new reason or message is news, not a transition.
        """
        if status not in (TRUE, FALSE, UNKNOWN):
            raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
        at = next((i for i, cond in enumerate(self.items) if cond.type == ctype), None)
        current = None if at is None else self.items[at]
        since = current.last_transition_time if current is not None and current.status == status else self.now
        # Constructed without validation: every value is checked above or is the operator's own.
        wanted = Condition.model_construct(type=ctype, status=status, reason=reason, message=truncate(message), last_transition_time=since, observed_generation=self.generation)
        if current == wanted:
            return False
        if at is None:
            self.items.append(wanted)
            self.items.sort(key=_order)
        else:
            self.items[at] = wanted
        return True

    def set(self, ctype: str, status: str, reason: Reason | str, message: str | None = None, **values: Any) -> bool:
        name = reason.name if isinstance(reason, Reason) else reason
        if message is None:
            message = reason.message(**values) if isinstance(reason, Reason) else ""
        return self.put(ctype, status, name, message)

    def clear(self, ctype: str, reason: Reason | str, message: str | None = None, **values: Any) -> bool:
        """Set False, but only if the condition exists."""
        if _find(self.items, ctype) is None:
            return False
        return self.set(ctype, FALSE, reason, message, **values)

    def is_true(self, ctype: str) -> bool:
        return is_true(self.items, ctype)

    def status(self, ctype: str) -> str | None:
        return status_of(self.items, ctype)

    def reason(self, ctype: str) -> str | None:
        return reason_of(self.items, ctype)

    def finished(self) -> bool:
        return is_finished(self.items)

    def phase(self) -> Phase:
        return phase(self.items)
