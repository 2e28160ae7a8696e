"""The scheduler's one decision on a one-node cluster: does this pod fit the node, and if not, why.

Owns: resource quantities, a pod's requests (requests, else limits, as the API server defaults them),
fit against the node's allocatable minus what its other unfinished pods request, nodeSelector, and
the scheduler's words for a pod that doesn't fit ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.").
Must not: call the API. Taints, affinity and preemption are not modelled (the node has no taints).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: str | int | float) -> float:
    """'2Gi' -> 2147483648.0, '500m' -> 0.5, 4 -> 4.0."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {value!r}")
    number, exponent, suffix = match.groups()
    return float(number + (exponent or "")) * _SUFFIX[suffix or ""]


def pod_requests(pod: Mapping[str, Any]) -> dict[str, float]:
    """The sum of the containers' requests; a resource with only a limit requests its limit."""
    total: dict[str, float] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        requests = dict(resources.get("limits") or {})
        requests.update(resources.get("requests") or {})
        for name, value in requests.items():
            total[name] = total.get(name, 0.0) + parse_quantity(value)
    return total


def unfinished(pod: Mapping[str, Any]) -> bool:
    return ((pod.get("status") or {}).get("phase") or "Pending") not in ("Succeeded", "Failed")


def fit_problems(pod: Mapping[str, Any], node: Mapping[str, Any], others: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why `pod` can't go on `node` given the `others` already bound there; empty if it fits."""
    problems = []
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        problems.append("node(s) didn't match Pod's node affinity/selector")
    allocatable = {k: parse_quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
    used: dict[str, float] = {}
    count = 0
    for other in others:
        if unfinished(other):
            count += 1
            for name, value in pod_requests(other).items():
                used[name] = used.get(name, 0.0) + value
    if "pods" in allocatable and count + 1 > allocatable["pods"]:
        problems.append("Too many pods")
    for name, wanted in sorted(pod_requests(pod).items()):
        if wanted <= 0:
            continue
        if wanted + used.get(name, 0.0) > allocatable.get(name, 0.0) + 1e-9:
            problems.append(f"Insufficient {name}")
    return problems


def unschedulable_message(problems: list[str]) -> str:
    """kube-scheduler's summary for a one-node cluster."""
    return f"0/1 nodes are available: {', '.join('1 ' + p for p in problems)}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
