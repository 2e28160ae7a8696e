"""Decoding the Kubernetes protobuf request bodies that kubectl's typed commands send.

Why: `kubectl create namespace|secret|configmap|serviceaccount|role|...` and `kubectl auth can-i`
send `application/vnd.kubernetes.protobuf` bodies and do not fall back to JSON on 415 (Helm's release
Secrets are written the same way). Owns: the wire format (the `k8s\\x00` envelope around a
`runtime.Unknown`) and the field numbers of the few kinds those commands create (from
k8s.io/api/*/generated.proto). Must not: encode; the server always answers in JSON, which clients accept.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

MAGIC = b"k8s\x00"

Schema = dict[int, tuple[str, Any, bool]]  # field number -> (json name, kind or nested schema, repeated)

TIME: Schema = {1: ("seconds", "int", False), 2: ("nanos", "int", False)}
OWNER_REFERENCE: Schema = {1: ("kind", "string", False), 3: ("name", "string", False), 4: ("uid", "string", False),
                           5: ("apiVersion", "string", False), 6: ("controller", "bool", False),
                           7: ("blockOwnerDeletion", "bool", False)}
OBJECT_META: Schema = {
    1: ("name", "string", False), 2: ("generateName", "string", False), 3: ("namespace", "string", False),
    5: ("uid", "string", False), 6: ("resourceVersion", "string", False), 7: ("generation", "int", False),
    8: ("creationTimestamp", "time", False), 9: ("deletionTimestamp", "time", False),
    10: ("deletionGracePeriodSeconds", "int", False), 11: ("labels", "map", False), 12: ("annotations", "map", False),
    13: ("ownerReferences", OWNER_REFERENCE, True), 14: ("finalizers", "string", True),
}
LABEL_SELECTOR: Schema = {1: ("matchLabels", "map", False),
                          2: ("matchExpressions", {1: ("key", "string", False), 2: ("operator", "string", False),
                                                   3: ("values", "string", True)}, True)}
POLICY_RULE: Schema = {1: ("verbs", "string", True), 2: ("apiGroups", "string", True), 3: ("resources", "string", True),
                       4: ("resourceNames", "string", True), 5: ("nonResourceURLs", "string", True)}
SUBJECT: Schema = {1: ("kind", "string", False), 2: ("apiGroup", "string", False), 3: ("name", "string", False),
                   4: ("namespace", "string", False)}
ROLE_REF: Schema = {1: ("apiGroup", "string", False), 2: ("kind", "string", False), 3: ("name", "string", False)}
RESOURCE_ATTRIBUTES: Schema = {1: ("namespace", "string", False), 2: ("verb", "string", False), 3: ("group", "string", False),
                               4: ("version", "string", False), 5: ("resource", "string", False),
                               6: ("subresource", "string", False), 7: ("name", "string", False)}
NON_RESOURCE_ATTRIBUTES: Schema = {1: ("path", "string", False), 2: ("verb", "string", False)}
ACCESS_REVIEW_SPEC: Schema = {1: ("resourceAttributes", RESOURCE_ATTRIBUTES, False),
                              2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES, False),
                              3: ("user", "string", False), 4: ("groups", "string", True), 6: ("uid", "string", False)}

KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): {1: ("metadata", OBJECT_META, False), 2: ("spec", {1: ("finalizers", "string", True)}, False)},
    ("v1", "Secret"): {1: ("metadata", OBJECT_META, False), 2: ("data", "map_bytes", False), 3: ("type", "string", False),
                       4: ("stringData", "map", False), 5: ("immutable", "bool", False)},
    ("v1", "ConfigMap"): {1: ("metadata", OBJECT_META, False), 2: ("data", "map", False), 3: ("binaryData", "map_bytes", False),
                          4: ("immutable", "bool", False)},
    ("v1", "ServiceAccount"): {1: ("metadata", OBJECT_META, False),
                               3: ("imagePullSecrets", {1: ("name", "string", False)}, True),
                               4: ("automountServiceAccountToken", "bool", False)},
    ("rbac.authorization.k8s.io/v1", "Role"): {1: ("metadata", OBJECT_META, False), 2: ("rules", POLICY_RULE, True)},
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {1: ("metadata", OBJECT_META, False), 2: ("rules", POLICY_RULE, True),
                                                      3: ("aggregationRule", {1: ("clusterRoleSelectors", LABEL_SELECTOR, True)}, False)},
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): {1: ("metadata", OBJECT_META, False), 2: ("subjects", SUBJECT, True),
                                                      3: ("roleRef", ROLE_REF, False)},
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): {1: ("metadata", OBJECT_META, False), 2: ("subjects", SUBJECT, True),
                                                             3: ("roleRef", ROLE_REF, False)},
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {1: ("metadata", OBJECT_META, False), 2: ("spec", ACCESS_REVIEW_SPEC, False)},
    ("authorization.k8s.io/v1", "SubjectAccessReview"): {1: ("metadata", OBJECT_META, False), 2: ("spec", ACCESS_REVIEW_SPEC, False)},
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): {1: ("metadata", OBJECT_META, False),
                                                            2: ("spec", {1: ("namespace", "string", False)}, False)},
}
ENVELOPE: Schema = {1: ("typeMeta", {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}, False),
                    2: ("raw", "bytes", False), 3: ("contentEncoding", "string", False), 4: ("contentType", "string", False)}


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    fields, pos = [], 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _map_entry(data: bytes, as_bytes: bool) -> tuple[str, Any]:
    key, value = "", b""
    for number, _, raw in _fields(data):
        if number == 1:
            key = raw.decode()
        elif number == 2:
            value = raw
    return key, base64.b64encode(value).decode() if as_bytes else value.decode()


def _scalar(kind: str, wire: int, raw: Any) -> Any:
    if kind == "string":
        return raw.decode()
    if kind == "bytes":
        return raw
    if kind == "bool":
        return bool(raw)
    if kind == "int":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if kind == "time":
        seconds = next((v for n, _, v in _fields(raw) if n == 1), 0)
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if seconds else None
    raise ProtobufError(f"unknown kind {kind}")


def decode_message(schema: Schema, data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, raw in _fields(data):
        if number not in schema:
            continue
        name, kind, repeated = schema[number]
        if kind in ("map", "map_bytes"):
            key, value = _map_entry(raw, kind == "map_bytes")
            out.setdefault(name, {})[key] = value
            continue
        value = decode_message(kind, raw) if isinstance(kind, dict) else _scalar(kind, wire, raw)
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return _omit_empty(out)


def _omit_empty(obj: dict[str, Any]) -> dict[str, Any]:
    """Go's omitempty: proto2 encodes unset strings and zero numbers, JSON leaves them out."""
    return {k: v for k, v in obj.items() if v not in ("", None, 0, [], {})}  # False == 0: dropped too


def decode(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a `k8s\\x00`-prefixed protobuf body."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body")
    envelope = decode_message(ENVELOPE, body[len(MAGIC):])
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise ProtobufError(f"protobuf bodies of {api_version} {kind} are not understood by the emulated server; send JSON")
    obj = decode_message(schema, envelope.get("raw") or b"")
    return {"apiVersion": api_version, "kind": kind, **obj}
