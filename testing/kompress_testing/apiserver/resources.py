"""What the emulated server serves: resource types, their discovery documents, CRD registration.

Owns: the table of resource types (built-ins from KMock's bundled discovery data, minus what a plain
kube-apiserver does not serve; custom resources from CustomResourceDefinitions), the facts each type
carries that change server behaviour (scope, subresources, generation tracking, default deletion
propagation, schema, printer columns), and the discovery documents (`/api`, `/api/v1`, `/apis`,
`/apis/<group>`, `/apis/<group>/<version>`) built from that table. Must not: store objects or speak HTTP.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import kmock

from kompress_testing.crdschema import CrdSchema

# In KMock's bundle (taken from a k3s cluster) but not in a plain kube-apiserver.
NOT_IN_KUBE_APISERVER = {"gateway.networking.k8s.io", "metrics.k8s.io"}

# Built-ins whose registry strategy keeps metadata.generation (bumped on spec changes).
BUILTINS_WITH_GENERATION = {
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("batch", "jobs"), ("batch", "cronjobs"), ("", "pods"), ("", "replicationcontrollers"),
    ("policy", "poddisruptionbudgets"), ("autoscaling", "horizontalpodautoscalers"),
    ("networking.k8s.io", "networkpolicies"), ("networking.k8s.io", "ingresses"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
}
# DefaultGarbageCollectionPolicy: batch/v1 Jobs orphan their pods unless told otherwise (kubectl sends
# propagationPolicy=Background; API clients that send nothing get Orphan).
ORPHAN_BY_DEFAULT = {("batch", "jobs"), ("", "replicationcontrollers")}

CRUD_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"]}
PREFERRED_VERSIONS = {"autoscaling": "v2"}


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    verbs: list[str] = field(default_factory=lambda: list(CRUD_VERBS))
    shortnames: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    subresources: list[str] = field(default_factory=list)
    custom: bool = False
    schema: CrdSchema | None = None
    printer_columns: list[dict[str, Any]] | None = None
    crd_name: str | None = None
    # Where objects live: two versions of one resource, or events.k8s.io/v1 events and core v1 events,
    # share storage as on a real server.
    storage_group: str | None = None
    storage_plural: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> tuple[str, str]:
        return (self.storage_group if self.storage_group is not None else self.group, self.storage_plural or self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def tracks_generation(self) -> bool:
        return self.custom or (self.group, self.plural) in BUILTINS_WITH_GENERATION

    @property
    def default_propagation(self) -> str:
        return "Orphan" if (self.group, self.plural) in ORPHAN_BY_DEFAULT else "Background"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def discovery_entries(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": sorted(self.verbs),
        }
        if self.shortnames:
            entry["shortNames"] = list(self.shortnames)
        if self.categories:
            entry["categories"] = list(self.categories)
        entry["storageVersionHash"] = hashlib.sha256(f"{self.group}/{self.version}/{self.kind}".encode()).hexdigest()[:12]
        entries = [entry]
        for sub in sorted(self.subresources):
            entries.append({
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": "Scale" if sub == "scale" else self.kind,
                "verbs": SUBRESOURCE_VERBS.get(sub, ["get"] if sub in ("log", "proxy") else ["create"]),
                **({"group": "autoscaling", "version": "v1"} if sub == "scale" else {}),
            })
        return entries


class Registry:
    """The resource types the server serves, by group/version/plural and by group/kind."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self.generation = 0  # bumped whenever discovery changes (the OpenAPI hash uses it)

    @classmethod
    def builtin(cls) -> Registry:
        registry = cls()
        bundle = kmock.ResourcesArray()
        bundle.load_bundled()
        for resource in bundle:
            if resource.group in NOT_IN_KUBE_APISERVER:
                continue
            info = bundle[resource]
            rtype = ResourceType(
                group=resource.group, version=resource.version, plural=resource.plural,
                kind=info.kind or resource.plural.capitalize(), singular=info.singular or resource.plural,
                namespaced=bool(info.namespaced), verbs=sorted(info.verbs) or list(CRUD_VERBS),
                shortnames=sorted(info.shortnames), categories=sorted(info.categories),
                subresources=sorted(info.subresources),
            )
            if (resource.group, resource.plural) == ("events.k8s.io", "events"):
                rtype.storage_group, rtype.storage_plural = "", "events"
            registry.add(rtype)
        return registry

    def add(self, rtype: ResourceType) -> None:
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self.generation += 1

    def remove_crd(self, crd_name: str) -> list[ResourceType]:
        gone = [t for t in self._types.values() if t.crd_name == crd_name]
        for rtype in gone:
            del self._types[(rtype.group, rtype.version, rtype.plural)]
        self.generation += 1
        return gone

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        return next((t for t in self._types.values() if t.group == group and t.version == version and t.kind == kind), None)

    def versions_of(self, group: str, plural: str) -> list[ResourceType]:
        return [t for t in self._types.values() if t.group == group and t.plural == plural]

    def storage_version(self, storage: tuple[str, str]) -> str:
        """The version objects of a storage are kept in: the group's preferred one that serves it."""
        group, plural = storage
        serving = {t.version for t in self._types.values() if t.group == group and t.plural == plural}
        return next((v for v in self.groups().get(group, []) if v in serving), "")

    def groups(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for rtype in self._types.values():
            versions = found.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
        for group, versions in found.items():
            versions.sort(key=_version_priority)
            preferred = PREFERRED_VERSIONS.get(group)
            if preferred in versions:
                versions.remove(preferred)
                versions.insert(0, preferred)
        return found

    # -----------------------------------------------------------------------------------------
    # Discovery documents
    # -----------------------------------------------------------------------------------------

    def api_versions(self, address: str) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}

    def api_group_list(self) -> dict[str, Any]:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._group_doc(g, v) for g, v in sorted(self.groups().items(), key=_group_order) if g]}

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.groups().get(group)
        if not group or not versions:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        types = sorted((t for t in self._types.values() if t.group == group and t.version == version), key=lambda t: t.plural)
        if not types:
            return None
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
                "resources": [entry for t in types for entry in t.discovery_entries()]}

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: GA before beta before alpha, higher numbers first."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0))


def _group_order(item: tuple[str, list[str]]) -> tuple[int, str]:
    group = item[0]
    return (0 if group.endswith(".k8s.io") or "." not in group else 1, group)


# ---------------------------------------------------------------------------------------------
# CustomResourceDefinition -> resource types
# ---------------------------------------------------------------------------------------------


def crd_problems(crd: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(field, value, detail) for the CRD mistakes a real server refuses that are cheap to spot."""
    problems: list[tuple[str, Any, str]] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural = spec.get("group", ""), names.get("plural", "")
    name = (crd.get("metadata") or {}).get("name", "")
    if not group:
        problems.append(("spec.group", "", "Required value"))
    if not plural:
        problems.append(("spec.names.plural", "", "Required value"))
    if not names.get("kind"):
        problems.append(("spec.names.kind", "", "Required value"))
    if group and plural and name != f"{plural}.{group}":
        problems.append(("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(("spec.scope", spec.get("scope"), 'supported values: "Cluster", "Namespaced"'))
    versions = spec.get("versions") or []
    if not versions:
        problems.append(("spec.versions", None, "must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        problems.append(("spec.versions", None, "must have exactly one version marked as storage version"))
    for i, version in enumerate(versions):
        schema = ((version.get("schema") or {}).get("openAPIV3Schema"))
        if not isinstance(schema, dict):
            problems.append((f"spec.versions[{i}].schema.openAPIV3Schema", None, "schemas are required"))
            continue
        for problem in CrdSchema(schema).rule_errors():
            problems.append((f"spec.versions[{i}].schema.{problem.split(':', 1)[0]}", None, problem.split(": ", 1)[1]))
    return problems


def crd_resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd["spec"]
    names = spec["names"]
    types = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = sorted((version.get("subresources") or {}).keys())
        types.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
            singular=names.get("singular") or names["kind"].lower(), namespaced=spec.get("scope") == "Namespaced",
            shortnames=list(names.get("shortNames") or []), categories=list(names.get("categories") or []),
            subresources=subresources, custom=True,
            schema=CrdSchema(version["schema"]["openAPIV3Schema"]),
            printer_columns=version.get("additionalPrinterColumns"),
            crd_name=crd["metadata"]["name"], storage_group=spec["group"], storage_plural=names["plural"],
        ))
    # Every version shares the storage of (group, plural): conversion between versions is the identity
    # (a real server runs the CRD's conversion strategy, `None` or a webhook).
    return types


def crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    """The status the apiextensions controllers write once a CRD's names are accepted."""
    now = crd["metadata"]["creationTimestamp"]
    names = crd["spec"]["names"]
    accepted = {k: v for k, v in names.items()}
    accepted.setdefault("singular", names["kind"].lower())
    accepted.setdefault("listKind", f"{names['kind']}List")
    return {
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
    }


def schema_hash(document: Any) -> str:
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:64].upper()
