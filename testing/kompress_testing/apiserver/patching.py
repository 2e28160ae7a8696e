"""The patch types of PATCH requests: JSON merge patch, JSON patch, strategic merge patch, apply patch.

Owns: applying each patch type to an object, and the errors a real server gives for a bad patch
(a failed JSON-patch `test` is 422, not 500). Must not: check resourceVersions, validate, or store.

Approximations (see README.md):
- Strategic merge patch knows the merge keys of the lists kubectl and controllers commonly touch
  (containers and env by name, ports by containerPort/port, volumes by name, volumeMounts by mountPath,
  ownerReferences by uid, conditions by type, finalizers as a set...) and honours the directives
  `$patch: replace|delete|merge`, `$setElementOrder/<list>`, `$retainKeys` and
  `$deleteFromPrimitiveList/<list>`. Other lists are replaced, as with a merge patch. A real server
  derives all of this from the Go types' `patchStrategy`/`patchMergeKey` tags.
- Server-side apply (`application/apply-patch+yaml`) is a merge patch with no field ownership:
  fields removed from a later apply configuration are not removed from the object, and no conflicts
  between field managers are reported.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer
import yaml

from kompress_testing.apiserver.errors import bad_request, unprocessable

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
CUSTOM_RESOURCE_PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
ALL_PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]

# patchMergeKey of list fields in the built-in Go types, by field name.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "subsets": "",  # atomic in practice
}
# Lists of scalars with patchStrategy=merge: union, not replacement.
MERGED_SCALAR_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902. A failed `test` or a missing path is 422 Unprocessable Entity, as on a real server."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        patch = jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise bad_request(str(exc)) from exc
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation: {json.dumps(operation)}")
    try:
        return patch.apply(target, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise unprocessable(f"testing value {_first_failing_test(target, operations)} failed: test failed") from exc
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException, jsonpatch.JsonPatchException) as exc:
        raise unprocessable(f"the server rejected our request due to an error in our request: {exc}") from exc


def _first_failing_test(target: dict[str, Any], operations: list[dict[str, Any]]) -> str:
    for operation in operations:
        if operation.get("op") == "test":
            try:
                if jsonpointer.resolve_pointer(target, operation["path"]) != operation.get("value"):
                    return operation["path"]
            except jsonpointer.JsonPointerException:
                return operation["path"]
    return "?"


def strategic_merge_patch(target: Any, patch: Any, field_name: str = "") -> Any:
    """An approximation of strategic merge patch for built-in kinds (see the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [item for item in result.get(name) or [] if item not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key, patch.get(f"$setElementOrder/{key}"))
        else:
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_key(field_name: str, items: list[Any]) -> str:
    if field_name == "ports":
        sample = next((item for item in items if isinstance(item, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field_name, "")


def _merge_list(current: Any, patch: list[Any], field_name: str, order: Any) -> list[Any]:
    current = list(current) if isinstance(current, list) else []
    if field_name in MERGED_SCALAR_LISTS:
        merged = current + [item for item in patch if item not in current]
        return _ordered(merged, order, None)
    key = _merge_key(field_name, patch + current)
    if not key or not all(isinstance(item, dict) for item in patch):
        return copy.deepcopy(patch)
    by_key = {item.get(key): index for index, item in enumerate(current) if isinstance(item, dict)}
    result = copy.deepcopy(current)
    deleted: set[Any] = set()
    for item in patch:
        identity = item.get(key)
        if item.get("$patch") == "delete":
            deleted.add(identity)
        elif identity in by_key:
            result[by_key[identity]] = strategic_merge_patch(result[by_key[identity]], item)
        else:
            by_key[identity] = len(result)
            result.append(copy.deepcopy(item))
    result = [item for item in result if not (isinstance(item, dict) and item.get(key) in deleted)]
    return _ordered(result, order, key)


def _ordered(items: list[Any], order: Any, key: str | None) -> list[Any]:
    """Honour `$setElementOrder/<list>`: listed items first, in that order; the rest keep their place."""
    if not isinstance(order, list):
        return items
    wanted = [entry.get(key) if key and isinstance(entry, dict) else entry for entry in order]

    def identity(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    ranked = [item for w in wanted for item in items if identity(item) == w]
    rest = [item for item in items if identity(item) not in wanted]
    return ranked + rest


def decode_body(content_type: str, body: bytes) -> Any:
    """The patch document: JSON for every type except server-side apply, which may be YAML."""
    try:
        if content_type == APPLY_PATCH:
            return yaml.safe_load(body.decode("utf-8"))
        return json.loads(body.decode("utf-8") or "null")
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"error decoding patch: {exc}") from exc


def apply(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """The patched object (a new dict; the target is left untouched)."""
    if content_type == JSON_PATCH:
        return json_patch(copy.deepcopy(target), patch)
    if not isinstance(patch, dict):
        raise bad_request("the patch must be a JSON object")
    if content_type == STRATEGIC_PATCH:
        return strategic_merge_patch(target, patch)
    return merge_patch(target, patch)
