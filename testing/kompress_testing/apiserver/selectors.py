"""Label and field selectors, parsed and matched as the API server does.

Owns: the label selector grammar (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`) and
field selectors (`metadata.name=x`, `metadata.namespace!=y`, plus the few fields each built-in kind
supports, e.g. `status.phase` on pods, `involvedObject.name` on events). An unsupported field label is
refused with the server's own message. Must not: know about storage or HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kompress_testing.apiserver.errors import bad_request

# Fields each built-in resource supports in fieldSelector besides metadata.name and metadata.namespace
# (from the registries' GetAttrs/selectable field sets in kubernetes/pkg/registry).
BUILTIN_FIELDS: dict[str, set[str]] = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type"},
    "secrets": {"type"},
    "namespaces": {"status.phase"},
    "nodes": {"spec.unschedulable"},
    "jobs": {"status.successful"},
    "replicasets": {"status.replicas"},
    "replicationcontrollers": {"status.replicas"},
    "persistentvolumeclaims": {"spec.volumeName"},
}
UNIVERSAL_FIELDS = {"metadata.name", "metadata.namespace"}

_REQUIREMENT = re.compile(
    r"""\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*
        (?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)
          |\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
        )?\s*""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !exists
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # != and notin also match objects that lack the label, as in Kubernetes.
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `( ... )`."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_labels(selector: str | None) -> list[Requirement]:
    requirements: list[Requirement] = []
    for part in _split_top_level(selector or ""):
        match = _REQUIREMENT.fullmatch(part)
        if match is None:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
        key = match.group("key")
        if match.group("neg"):
            requirements.append(Requirement(key, "!exists"))
        elif match.group("op"):
            op = "!=" if match.group("op") == "!=" else "="
            requirements.append(Requirement(key, op, (match.group("value"),)))
        elif match.group("setop"):
            values = tuple(v.strip() for v in match.group("values").split(",") if v.strip())
            requirements.append(Requirement(key, match.group("setop"), values))
        else:
            requirements.append(Requirement(key, "exists"))
    return requirements


def parse_fields(selector: str | None, resource: str, custom: bool) -> list[Requirement]:
    supported = UNIVERSAL_FIELDS | (set() if custom else BUILTIN_FIELDS.get(resource, set()))
    requirements: list[Requirement] = []
    for part in _split_top_level(selector or ""):
        match = re.fullmatch(r"\s*([A-Za-z0-9._/-]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if match is None:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part.strip()}'")
        key, op, value = match.groups()
        if key not in supported:
            raise bad_request(f'field label not supported: {key}')
        requirements.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
    return requirements


def field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matcher(label_selector: str | None, field_selector: str | None, resource: str, custom: bool) -> Callable[[dict[str, Any]], bool]:
    """A predicate on objects; parsing errors surface immediately as 400 Bad Request."""
    labels = parse_labels(label_selector)
    fields = parse_fields(field_selector, resource, custom)

    def matches(obj: dict[str, Any]) -> bool:
        object_labels = (obj.get("metadata") or {}).get("labels") or {}
        if not all(r.matches(object_labels) for r in labels):
            return False
        for requirement in fields:
            actual = field_value(obj, requirement.key)
            if (actual == requirement.values[0]) != (requirement.op == "="):
                return False
        return True

    return matches
