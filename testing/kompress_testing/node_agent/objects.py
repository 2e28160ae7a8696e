"""Small pure functions over Pod and Node objects shared by the played kubelet: readers, pod conditions, Kubernetes quantities.

Owns: pure functions over API objects. Must not: call the API.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}
# The pod conditions the kubelet owns and rewrites (pkg/kubelet/types PodConditionsByKubelet).
KUBELET_CONDITIONS = frozenset({"PodScheduled", "Ready", "Initialized", "ContainersReady", "PodReadyToStartContainers"})
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: str | int | float) -> float:
    """'2Gi' -> 2147483648.0, '500m' -> 0.5, 4 -> 4.0."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, exponent, suffix = match.groups()
    return float(number + (exponent or "")) * _SUFFIX[suffix or ""]


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def deleting(obj: dict[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def terminal(pod: dict[str, Any]) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def uid(obj: dict[str, Any]) -> str:
    return obj["metadata"]["uid"]


def name(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


def condition(ctype: str, status: bool, reason: str | None = None, message: str | None = None, *, since: str) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": ctype, "status": "True" if status else "False", "lastTransitionTime": since}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def keep_transition_times(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in old}
    for cond in new:
        prior = before.get(cond["type"])
        if prior and prior.get("status") == cond["status"] and prior.get("lastTransitionTime"):
            cond["lastTransitionTime"] = prior["lastTransitionTime"]
    return new


def had_started(pod: dict[str, Any]) -> bool:
    """Whether the pod's status says one of its containers ran (running or terminated)."""
    states = [cs.get("state") or {} for cs in (pod.get("status") or {}).get("containerStatuses") or []]
    return any("running" in state or "terminated" in state for state in states)


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value
