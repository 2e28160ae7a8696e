"""OpenAPI v3 documents (`/openapi/v3`, `/openapi/v3/apis/<group>/<version>`) as far as kubectl uses them.

Owns: the index of group-versions with content hashes, and per group-version a document whose paths
carry `x-kubernetes-group-version-kind` and the `fieldValidation` parameter (kubectl 1.32 checks that
parameter before it lets the server validate; without it `kubectl apply` needs `--validate=false`),
and whose `components.schemas` hold each CRD's openAPIV3Schema (what `kubectl explain` renders).
Must not: serve OpenAPI v2 (kubectl falls back to it only when v3 is missing; v2 is protobuf).

Approximation: built-in kinds get a bare object schema (kubectl explain shows no fields for them), and
their PATCH does not advertise strategic merge patch, so `kubectl apply` computes strategic merge
patches for them from its compiled-in types, which is what it does against servers without OpenAPI v3.
"""

from __future__ import annotations

import copy
from typing import Any

from kompress_testing.apiserver.resources import Registry, ResourceType, schema_hash

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = {
    "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace. Cannot be updated."},
        "generateName": {"type": "string", "description": "GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."},
        "namespace": {"type": "string", "description": "Namespace defines the space within which each name must be unique."},
        "uid": {"type": "string", "description": "UID is the unique in time and space value for this object. Populated by the system. Read-only."},
        "resourceVersion": {"type": "string", "description": "An opaque value that represents the internal version of this object. Populated by the system. Read-only."},
        "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state. Populated by the system. Read-only."},
        "creationTimestamp": {"type": "string", "format": "date-time", "description": "CreationTimestamp is a timestamp representing the server time when this object was created."},
        "deletionTimestamp": {"type": "string", "format": "date-time", "description": "DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize (scope and select) objects."},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map stored with a resource that may be set by external tools."},
        "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
        "ownerReferences": {"type": "array", "items": {"type": "object"}, "description": "List of objects depended by this object."},
    },
}
LIST_META = {"description": "ListMeta describes metadata that synthetic resources must have.", "type": "object",
             "properties": {"resourceVersion": {"type": "string"}, "continue": {"type": "string"}}}


def _path_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(rtype: ResourceType, kind: str | None = None) -> str:
    kind = kind or rtype.kind
    if rtype.custom:
        return ".".join(reversed(rtype.group.split("."))) + f".{rtype.version}.{kind}"
    group = rtype.group.split(".")[0] if rtype.group else "core"
    return f"io.k8s.api.{group}.{rtype.version}.{kind}"


def _gvk(rtype: ResourceType, kind: str | None = None) -> dict[str, str]:
    return {"group": rtype.group, "version": rtype.version, "kind": kind or rtype.kind}


def _operation(rtype: ResourceType, action: str, body: bool) -> dict[str, Any]:
    parameters = [{"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                  {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
    if body:
        parameters.append({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
                           "description": "instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict"})
    operation: dict[str, Any] = {
        "operationId": f"{action}{rtype.kind}",
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{_schema_name(rtype)}"}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rtype),
    }
    if action == "patch":
        types = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        operation["requestBody"] = {"content": {t: {"schema": {"type": "object"}} for t in types}}
    elif body:
        operation["requestBody"] = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{_schema_name(rtype)}"}}}}
    return operation


def _resource_schema(rtype: ResourceType) -> dict[str, Any]:
    if rtype.schema is None:
        schema: dict[str, Any] = {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"allOf": [{"$ref": f"#/components/schemas/{META}.ObjectMeta"}], "default": {}}}}
    else:
        schema = copy.deepcopy(rtype.schema.schema)
        schema.setdefault("properties", {})
        schema["properties"]["metadata"] = {
            "allOf": [{"$ref": f"#/components/schemas/{META}.ObjectMeta"}],
            "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}
        for key, text in (("apiVersion", "APIVersion defines the versioned schema of this representation of an object."),
                          ("kind", "Kind is a string value representing the REST resource this object represents.")):
            schema["properties"].setdefault(key, {"type": "string"}).setdefault("description", text)
    schema["x-kubernetes-group-version-kind"] = [_gvk(rtype)]
    return schema


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in registry.all() if t.group == group and t.version == version]
    if not types:
        return None
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {f"{META}.ObjectMeta": OBJECT_META, f"{META}.ListMeta": LIST_META}
    for rtype in sorted(types, key=lambda t: t.plural):
        base = f"{prefix}/namespaces/{{namespace}}/{rtype.plural}" if rtype.namespaced else f"{prefix}/{rtype.plural}"
        paths[base] = {"get": _operation(rtype, "list", False), "post": _operation(rtype, "post", True),
                       "delete": _operation(rtype, "deletecollection", False)}
        paths[f"{base}/{{name}}"] = {"get": _operation(rtype, "get", False), "put": _operation(rtype, "put", True),
                                     "patch": _operation(rtype, "patch", True), "delete": _operation(rtype, "delete", False)}
        for sub in rtype.subresources:
            if sub in ("status", "scale"):
                paths[f"{base}/{{name}}/{sub}"] = {"get": _operation(rtype, "get", False), "put": _operation(rtype, "put", True),
                                                  "patch": _operation(rtype, "patch", True)}
        schemas[_schema_name(rtype)] = _resource_schema(rtype)
        schemas[_schema_name(rtype, rtype.list_kind)] = {
            "type": "object", "required": ["items"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{_schema_name(rtype)}"}},
                           "metadata": {"allOf": [{"$ref": f"#/components/schemas/{META}.ListMeta"}]}},
            "x-kubernetes-group-version-kind": [_gvk(rtype, rtype.list_kind)]}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": schemas}}


def index(registry: Registry) -> dict[str, Any]:
    """`/openapi/v3`: every group-version with a URL whose hash changes when its document does."""
    paths: dict[str, Any] = {}
    for group, versions in registry.groups().items():
        for version in versions:
            document = group_version_document(registry, group, version)
            key = _path_key(group, version)
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={schema_hash(document)}"}
    return {"paths": paths}
