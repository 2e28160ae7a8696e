"""What the operator keeps of each object its watches deliver: only the fields it reads.

The indices hold every CompressionJob, child Job and pod for as long as they exist, and each watch event used to be
deep-copied whole into them: managedFields, the pod template with the job document in its env, the kubectl
last-applied annotation (the spec again). These snapshots keep the fields the reconciler, status.py and
child_state.py read, sharing the event's own spec and status (Kopf parses a fresh dict for every event and never
changes it afterwards, and nothing here changes what it is given), so an event costs no deep copy and an object
held costs a few hundred bytes of its own. tests/operator/test_snapshots.py checks that a status computed from the
snapshots equals one computed from the whole objects.
Owns: which fields are kept, and why. Must not: read anything but the object it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# Read by the reconciler (resourceVersion: the write's precondition and the echo check; deletionTimestamp;
# creationTimestamp: the time-to-first-child metric), the API model (name, namespace, uid, generation, labels,
# annotations) and the children (owner references and names).
_CJOB_META = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp", "labels", "annotations")
# Names and ownership (is_owned_by), age (a pod waiting since its creation), being deleted, the labels the indices key on.
_CHILD_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "ownerReferences", "labels", "annotations")
# Of a Job's spec: whether it is suspended, and what its failure messages quote (deadline, backoff limit).
_JOB_SPEC = ("suspend", "backoffLimit", "activeDeadlineSeconds")
# Of a pod's containers: the name (which container's state), the memory limit (an OOMKilled message), the progress port.
_CONTAINER = ("name", "resources", "ports")


def _pick(source: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    source = source or {}
    return {key: source[key] for key in keys if key in source}


def _metadata(body: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    meta = _pick(body.get("metadata"), keys)
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return meta


def compression_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """A CompressionJob: its metadata without managedFields, its spec and status as sent."""
    kept: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": _metadata(body, _CJOB_META)}
    for key in ("spec", "status"):
        if body.get(key) is not None:
            kept[key] = body[key]
    return kept


def job(body: Mapping[str, Any]) -> dict[str, Any]:
    """A child Job: identity and ownership, suspend and its limits, its whole status (small: counts and conditions)."""
    kept: dict[str, Any] = {"metadata": _metadata(body, _CHILD_META), "spec": _pick(body.get("spec"), _JOB_SPEC)}
    if body.get("status") is not None:
        kept["status"] = body["status"]
    return kept


def pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """A child pod: identity and ownership, its containers' names, limits and ports, its whole status (phase,
    conditions, container states with the termination message, IP, start time)."""
    containers = [_pick(c, _CONTAINER) for c in (body.get("spec") or {}).get("containers") or []]
    kept: dict[str, Any] = {"metadata": _metadata(body, _CHILD_META), "spec": {"containers": containers}}
    if body.get("status") is not None:
        kept["status"] = body["status"]
    return kept
