"""The few behaviours of built-in kinds' registry strategies that clients of this project notice.

Owns: Secret (`stringData` folded into base64 `data`, `type` defaulted to Opaque and immutable), Job
(the selector and the `controller-uid`/`job-name` labels the server adds, API defaults for
backoffLimit, completions, parallelism, completionMode, suspend; restartPolicy must be Never or
OnFailure; `spec.selector` and `spec.template` immutable), Pod (status phase Pending on create; graceful
deletion of a pod a kubelet runs), events.k8s.io/v1 Events as a second shape of core/v1 Events.
Must not: grow into a copy of kube-apiserver's registries;
add a behaviour only when a test of ours depends on it.
"""

from __future__ import annotations

import base64
from typing import Any

from kompress_testing.apiserver.errors import FieldError, invalid


def drop_nulls(value: Any) -> Any:
    """What decoding into a Go struct does to JSON nulls in a built-in object: they disappear."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def prepare_create(group: str, plural: str, obj: dict[str, Any]) -> list[FieldError]:
    """Defaults and checks of a new object; returns field errors (422)."""
    if (group, plural) == ("", "secrets"):
        _fold_string_data(obj)
        obj.setdefault("type", "Opaque")
    elif (group, plural) == ("batch", "jobs"):
        _default_job(obj)
        policy = obj["spec"]["template"]["spec"].get("restartPolicy")
        if policy not in ("Never", "OnFailure"):
            return [FieldError("Required", "spec.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"')] if policy is None \
                else [FieldError("NotSupported", "spec.template.spec.restartPolicy", 'supported values: "OnFailure", "Never"', policy)]
    elif (group, plural) == ("", "pods"):
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    return []


def prepare_update(group: str, plural: str, obj: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    if (group, plural) == ("", "secrets"):
        _fold_string_data(obj)
        obj.setdefault("type", old.get("type", "Opaque"))
        if old.get("type") != obj.get("type"):
            return [invalid("type", obj.get("type"), "field is immutable")]
    elif (group, plural) == ("batch", "jobs"):
        _default_job(obj, uid=old["metadata"]["uid"])
        problems = []
        for field in ("selector", "template"):
            if (obj.get("spec") or {}).get(field) != (old.get("spec") or {}).get(field):
                problems.append(invalid(f"spec.{field}", (obj.get("spec") or {}).get(field), "field is immutable"))
        return problems
    return []


def pod_grace_period(pod: dict[str, Any], options: dict[str, Any]) -> int:
    """Seconds a deleted pod keeps existing (with deletionTimestamp) for its kubelet to stop it.

    As kube-apiserver's pod strategy: a pod no kubelet runs (unscheduled) or one already finished is
    deleted at once; otherwise DeleteOptions.gracePeriodSeconds (negative: unset), else the pod's
    terminationGracePeriodSeconds (30). The kubelet removes it with a second DELETE of grace 0.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    requested = options.get("gracePeriodSeconds")
    if requested is not None and int(requested) >= 0:
        return int(requested)
    return int(spec.get("terminationGracePeriodSeconds", 30))


def _fold_string_data(obj: dict[str, Any]) -> None:
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _default_job(obj: dict[str, Any], uid: str | None = None) -> None:
    spec = obj.setdefault("spec", {})
    uid = uid or obj["metadata"]["uid"]
    name = obj["metadata"].get("name", "")
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completions", 1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if "selector" not in spec:
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec.setdefault("template", {})
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    for key, value in (("batch.kubernetes.io/controller-uid", uid), ("batch.kubernetes.io/job-name", name),
                       ("controller-uid", uid), ("job-name", name)):
        labels.setdefault(key, value)
    template.setdefault("spec", {})


# events.k8s.io/v1 Events are a view of core/v1 Events (one storage, two shapes), as on a real server.
_EVENT_FIELDS = [("involvedObject", "regarding"), ("message", "note"), ("reportingComponent", "reportingController"),
                 ("source", "deprecatedSource"), ("firstTimestamp", "deprecatedFirstTimestamp"),
                 ("lastTimestamp", "deprecatedLastTimestamp"), ("count", "deprecatedCount")]
_EVENT_SHARED = ["metadata", "eventTime", "series", "reportingInstance", "action", "reason", "related", "type"]


def core_event_to_v1(obj: dict[str, Any]) -> dict[str, Any]:
    out = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    out.update({k: obj[k] for k in _EVENT_SHARED if k in obj})
    out.update({new: obj[old] for old, new in _EVENT_FIELDS if old in obj})
    return out


def v1_event_to_core(obj: dict[str, Any]) -> dict[str, Any]:
    out = {"apiVersion": "v1", "kind": "Event"}
    out.update({k: obj[k] for k in _EVENT_SHARED if k in obj})
    out.update({old: obj[new] for old, new in _EVENT_FIELDS if new in obj})
    return out
