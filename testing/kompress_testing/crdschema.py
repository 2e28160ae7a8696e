"""A CustomResourceDefinition's openAPIV3Schema applied to objects the way kube-apiserver applies it.

Owns: for one structural schema, the admission pipeline of apiextensions-apiserver, in its order:
1. pruning of unknown fields (reported, so `fieldValidation=Strict` can refuse them),
2. dropping non-nullable nulls that have no default,
3. defaulting (`default`, nested object defaults included),
4. structural validation (type, nullable, enum, minimum/maximum, exclusive bounds, multipleOf,
   minLength/maxLength, pattern, minItems/maxItems, minProperties/maxProperties, required,
   allOf/anyOf/oneOf/not, `x-kubernetes-int-or-string`, `x-kubernetes-list-type: map|set` uniqueness),
5. CEL `x-kubernetes-validations` (with `oldSelf` on update; transition rules skipped on create and
   where no old value correlates), skipped as Kubernetes skips them when step 4 found a type, required,
   enum or size error.
Errors are Kubernetes field errors with Kubernetes' wording, e.g.
`spec.resources.gpus: Invalid value: -1: spec.resources.gpus in body should be greater than or equal to 0`.
Must not: know HTTP, storage, or the Kompress API beyond `kompress_schema()`, a convenience that loads it.

Known differences from a real server (see apiserver/README.md): `format` is not checked; CEL has the
standard library plus lowerAscii/upperAscii/trim/split/join/find/findAll/indexOf/lastIndexOf/isSorted/sum,
not Kubernetes' quantity/url/ip/semver libraries; no CEL cost limits; no validation ratcheting
(an update must make the whole object valid, even fields it did not touch).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import celpy
import re2
from celpy import celtypes

from kompress_testing.apiserver.errors import FieldError, by_reason, forbidden, invalid, required

OBJECT_META_FIELDS = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
}
_BLOCKING = {"NotSupported", "Required", "TooLong", "TooMany", "TypeInvalid"}
_NOT_CHECKED = invalid("<nil>", None, "some validation rules were not checked because the object was invalid; "
                       "correct the existing errors to complete validation")


# ---------------------------------------------------------------------------------------------
# Paths: field.Path as Kubernetes prints it (spec.list[0].name, spec.map[key])
# ---------------------------------------------------------------------------------------------


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _index(path: str, index: int | str) -> str:
    return f"{path}[{index}]"


# ---------------------------------------------------------------------------------------------
# 1-3. Pruning, nulls, defaulting
# ---------------------------------------------------------------------------------------------


def _allows_unknown(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _prune(value: Any, schema: dict[str, Any] | None, path: str, unknown: list[str], root: bool = False) -> None:
    if schema is None:
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        embedded = schema.get("x-kubernetes-embedded-resource")
        for key in list(value):
            if root and key in ("apiVersion", "kind"):
                continue
            if root and key == "metadata":
                _prune_metadata(value, unknown)
                continue
            if embedded and key in ("apiVersion", "kind", "metadata"):
                continue
            if key in properties:
                _prune(value[key], properties[key], _child(path, key), unknown)
            elif isinstance(additional, dict):
                _prune(value[key], additional, _index(path, key), unknown)
            elif additional is True or _allows_unknown(schema):
                continue
            else:
                unknown.append(_child(path, key))
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _prune(item, schema["items"], _index(path, i), unknown)


def _prune_metadata(obj: dict[str, Any], unknown: list[str]) -> None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return
    for key in list(metadata):
        if key not in OBJECT_META_FIELDS:
            unknown.append(f"metadata.{key}")
            del metadata[key]


def _drop_nulls(value: Any, schema: dict[str, Any] | None) -> None:
    """PruneNonNullableNullsWithoutDefaults."""
    if isinstance(value, dict):
        for key in list(value):
            sub = _property_schema(schema, key)
            if value[key] is None and sub is not None and not sub.get("nullable") and "default" not in sub:
                del value[key]
            else:
                _drop_nulls(value[key], sub)
    elif isinstance(value, list):
        items = schema.get("items") if schema else None
        for item in value:
            _drop_nulls(item, items)


def _property_schema(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not schema:
        return None
    properties = schema.get("properties") or {}
    if key in properties:
        return properties[key]
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def _default(value: Any, schema: dict[str, Any] | None) -> None:
    if not schema:
        return
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if "default" in sub and (key not in value or (value[key] is None and not sub.get("nullable"))):
                value[key] = copy.deepcopy(sub["default"])
        for key in value:
            _default(value[key], _property_schema(schema, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])


# ---------------------------------------------------------------------------------------------
# 4. Structural validation
# ---------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(value: Any, wanted: str) -> bool:
    actual = _type_name(value)
    return actual == wanted or (wanted == "number" and actual == "integer")


def _number(value: Any) -> str:
    """A bound as Go prints it with %v (2 not 2.0)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    where = path or "<nil>"
    if value is None:
        if schema.get("nullable") or (not schema.get("type") and not schema.get("x-kubernetes-int-or-string")):
            return
        wanted = "integer|string" if schema.get("x-kubernetes-int-or-string") else schema["type"]
        errors.append(FieldError("TypeInvalid", where, f'{where} in body must be of type {wanted}: "null"', "null"))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if _type_name(value) not in ("integer", "string"):
            actual = _type_name(value)
            errors.append(FieldError("TypeInvalid", where, f'{where} in body must be of type integer|string: "{actual}"', actual))
            return
    elif schema.get("type") and not _has_type(value, schema["type"]):
        actual = _type_name(value)
        errors.append(FieldError("TypeInvalid", where, f'{where} in body must be of type {schema["type"]}: "{actual}"', actual))
        return

    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v if isinstance(v, str) else json.dumps(v)) for v in schema["enum"])
        errors.append(FieldError("NotSupported", where, f"supported values: {allowed}", value))

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, schema, where, errors)
    elif isinstance(value, str):
        _check_string(value, schema, where, errors)
    elif isinstance(value, list):
        _check_array(value, schema, path, errors)
    elif isinstance(value, dict):
        _check_object(value, schema, path, errors)

    if not schema.get("x-kubernetes-int-or-string"):
        _check_combinators(value, schema, path, errors)


def _check_number(value: float, schema: dict[str, Any], where: str, errors: list[FieldError]) -> None:
    if "maximum" in schema:
        bound = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= bound:
            errors.append(invalid(where, value, f"{where} in body should be less than {_number(bound)}"))
        elif value > bound:
            errors.append(invalid(where, value, f"{where} in body should be less than or equal to {_number(bound)}"))
    if "minimum" in schema:
        bound = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= bound:
            errors.append(invalid(where, value, f"{where} in body should be greater than {_number(bound)}"))
        elif value < bound:
            errors.append(invalid(where, value, f"{where} in body should be greater than or equal to {_number(bound)}"))
    if schema.get("multipleOf") and not math.isclose(math.remainder(value, schema["multipleOf"]), 0, abs_tol=1e-9):
        errors.append(invalid(where, value, f"{where} in body should be a multiple of {_number(schema['multipleOf'])}"))


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    # The API server checks `pattern` with Go's regexp (RE2): `$` is the end of the text, not "before a final newline".
    return re2.compile(pattern)


def _check_string(value: str, schema: dict[str, Any], where: str, errors: list[FieldError]) -> None:
    length = len(value)
    if "maxLength" in schema and length > schema["maxLength"]:
        errors.append(FieldError("TooLong", where, f"may not be more than {schema['maxLength']} bytes", value))
    if "minLength" in schema and length < schema["minLength"]:
        errors.append(invalid(where, value, f"{where} in body should be at least {schema['minLength']} chars long"))
    if "pattern" in schema and not _regex(schema["pattern"]).search(value):
        errors.append(invalid(where, value, f"{where} in body should match '{schema['pattern']}'"))


def _list_key(item: Any, keys: list[str]) -> Any:
    return tuple(json.dumps(item.get(k), sort_keys=True) for k in keys) if isinstance(item, dict) else None


def _check_array(value: list[Any], schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    where = path or "<nil>"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(FieldError("TooMany", where, f"must have at most {schema['maxItems']} items", len(value)))
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(invalid(where, len(value), f"{where} in body should have at least {schema['minItems']} items"))
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _check(item, items, _index(path, i), errors)
    list_type = schema.get("x-kubernetes-list-type")
    seen: set[Any] = set()
    for i, item in enumerate(value):
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            identity = _list_key(item, keys)
            shown = {k: item.get(k) for k in keys} if isinstance(item, dict) else item
        elif list_type == "set":
            identity, shown = json.dumps(item, sort_keys=True), item
        else:
            continue
        if identity in seen:
            errors.append(FieldError("Duplicate", _index(path, i), "", shown))
        seen.add(identity)


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    where = path or "<nil>"
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(required(_child(path, name)))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(FieldError("TooMany", where, f"must have at most {schema['maxProperties']} items", len(value)))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(invalid(where, len(value), f"{where} in body should have at least {schema['minProperties']} properties"))
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], _child(path, key), errors)
        elif isinstance(additional, dict):
            _check(item, additional, _index(path, key), errors)


def _passes(value: Any, schema: dict[str, Any]) -> bool:
    found: list[FieldError] = []
    _check(value, schema, "", found)
    return not found


def _check_combinators(value: Any, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    where = path or "<nil>"
    for sub in schema.get("allOf") or []:
        _check(value, sub, path, errors)
    if schema.get("anyOf") and not any(_passes(value, sub) for sub in schema["anyOf"]):
        errors.append(invalid(where, value, f"{where} in body must validate at least one schema (anyOf)"))
    if schema.get("oneOf") and sum(_passes(value, sub) for sub in schema["oneOf"]) != 1:
        errors.append(invalid(where, value, f"{where} in body must validate one and only one schema (oneOf)"))
    if isinstance(schema.get("not"), dict) and _passes(value, schema["not"]):
        errors.append(invalid(where, value, f"{where} in body should not validate the schema"))


# ---------------------------------------------------------------------------------------------
# 5. CEL x-kubernetes-validations
# ---------------------------------------------------------------------------------------------


def _cel_str(value: Any) -> str:
    return str(value)


# A few of Kubernetes' CEL string and list extensions (k8s.io/apiserver/pkg/cel/library).
CEL_FUNCTIONS: dict[str, Any] = {
    "lowerAscii": lambda s: celtypes.StringType(_cel_str(s).lower()),
    "upperAscii": lambda s: celtypes.StringType(_cel_str(s).upper()),
    "trim": lambda s: celtypes.StringType(_cel_str(s).strip()),
    "split": lambda s, sep: celtypes.ListType([celtypes.StringType(p) for p in _cel_str(s).split(_cel_str(sep))]),
    "join": lambda items, sep="": celtypes.StringType(_cel_str(sep).join(_cel_str(i) for i in items)),
    "find": lambda s, pattern: celtypes.StringType((m.group(0) if (m := re.search(_cel_str(pattern), _cel_str(s))) else "")),
    "findAll": lambda s, pattern: celtypes.ListType([celtypes.StringType(m.group(0)) for m in re.finditer(_cel_str(pattern), _cel_str(s))]),
    "indexOf": lambda s, sub: celtypes.IntType(_cel_str(s).find(_cel_str(sub))),
    "lastIndexOf": lambda s, sub: celtypes.IntType(_cel_str(s).rfind(_cel_str(sub))),
    "isSorted": lambda items: celtypes.BoolType(list(items) == sorted(items)),
    "sum": lambda items: functools.reduce(lambda a, b: a + b, items, celtypes.IntType(0)),
}

_ENVIRONMENT = celpy.Environment()


@functools.lru_cache(maxsize=1024)
def compile_rule(rule: str) -> celpy.Runner:
    """A compiled CEL program (cached: compiling costs far more than evaluating)."""
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(rule), functions=CEL_FUNCTIONS)


def is_transition_rule(rule: str) -> bool:
    return re.search(r"\boldSelf\b", rule) is not None


def _relative(path: str, field_path: str) -> str:
    """A rule's fieldPath (`.model.uri`, `['a.b']`) below the node the rule is on."""
    parts = re.findall(r"\.([A-Za-z0-9_$-]+)|\['([^']*)'\]|\[(\d+)\]", field_path)
    for name, quoted, index in parts:
        path = _index(path, index) if index else _child(path, name or quoted)
    return path


def _eval_error(exc: Exception) -> str:
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    match = re.match(r"no such member in mapping: '(.*)'", text)
    return f"no such key: {match.group(1)}" if match else text


def _run_rules(value: Any, old: Any, has_old: bool, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    schema_type = schema.get("type", "")
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule["rule"]
        transition = is_transition_rule(text)
        if transition and not has_old:
            continue
        where = _relative(path, rule["fieldPath"]) if rule.get("fieldPath") else (path or "<nil>")
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        name = (rule.get("message") or "").strip() or text.strip()
        try:
            result = compile_rule(text).evaluate(activation)
        except Exception as exc:  # noqa: BLE001 - a CEL runtime error is a validation error, as in Kubernetes
            errors.append(invalid(where, schema_type, f"{_eval_error(exc)} evaluating rule: {name}"))
            continue
        if isinstance(result, Exception):
            errors.append(invalid(where, schema_type, f"{_eval_error(result)} evaluating rule: {name}"))
            continue
        if result is True or (isinstance(result, celtypes.BoolType) and bool(result)):
            continue
        message = (rule.get("message") or "").strip() or f"failed rule: {text.strip()}"
        if rule.get("messageExpression"):
            try:
                computed = compile_rule(rule["messageExpression"]).evaluate(activation)
                if isinstance(computed, str) and computed.strip():
                    message = str(computed).strip()
            except Exception:  # noqa: BLE001 - Kubernetes falls back to message on a failed messageExpression
                pass
        errors.append(by_reason(rule.get("reason", ""), where, schema_type, message))


def _validate_cel(value: Any, old: Any, has_old: bool, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    if value is None:
        return
    _run_rules(value, old, has_old, schema, path, errors)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        old_map = old if has_old and isinstance(old, dict) else {}
        for key, item in value.items():
            sub = properties.get(key) or (additional if isinstance(additional, dict) else None)
            if sub is not None:
                child_path = _child(path, key) if key in properties else _index(path, key)
                _validate_cel(item, old_map.get(key), key in old_map, sub, child_path, errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        list_type = schema.get("x-kubernetes-list-type")
        old_items: dict[Any, Any] = {}
        if has_old and isinstance(old, list):
            if list_type == "map":
                keys = schema.get("x-kubernetes-list-map-keys") or []
                old_items = {_list_key(item, keys): item for item in old}
            elif list_type == "set":
                old_items = {json.dumps(item, sort_keys=True): item for item in old}
        for i, item in enumerate(value):
            if list_type == "map":
                identity = _list_key(item, schema.get("x-kubernetes-list-map-keys") or [])
            elif list_type == "set":
                identity = json.dumps(item, sort_keys=True)
            else:
                identity = object()  # atomic lists: no correlation, so no transition rules inside
            _validate_cel(item, old_items.get(identity), identity in old_items, items, _index(path, i), errors)


# ---------------------------------------------------------------------------------------------
# The schema object
# ---------------------------------------------------------------------------------------------


@dataclass
class Admission:
    """What the API server makes of a submitted custom resource."""

    object: dict[str, Any]
    errors: list[FieldError] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)

    def strict_message(self) -> str:
        return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in self.unknown_fields)


class CrdSchema:
    """One version's openAPIV3Schema with the API server's pruning, defaulting and validation."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    @classmethod
    def from_crd(cls, crd: dict[str, Any], version: str | None = None) -> CrdSchema:
        versions = crd["spec"]["versions"]
        chosen = next((v for v in versions if v["name"] == version), None) if version else \
            next((v for v in versions if v.get("storage")), versions[0])
        if chosen is None:
            raise KeyError(f"version {version} is not in the CRD")
        return cls(chosen["schema"]["openAPIV3Schema"])

    def rule_errors(self) -> list[str]:
        """CEL rules that do not compile (a real server refuses such a CRD)."""
        problems: list[str] = []

        def walk(schema: dict[str, Any], path: str) -> None:
            for i, rule in enumerate(schema.get("x-kubernetes-validations") or []):
                for key in ("rule", "messageExpression"):
                    if rule.get(key):
                        try:
                            compile_rule(rule[key])
                        except Exception as exc:  # noqa: BLE001
                            problems.append(f"{path}.x-kubernetes-validations[{i}].{key}: compilation failed: {exc}")
            for name, sub in (schema.get("properties") or {}).items():
                walk(sub, f"{path}.properties[{name}]")
            for key in ("items", "additionalProperties"):
                if isinstance(schema.get(key), dict):
                    walk(schema[key], f"{path}.{key}")

        walk(self.schema, "openAPIV3Schema")
        return problems

    def prune(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A copy without the fields the schema does not declare, and those fields' paths."""
        pruned = copy.deepcopy(obj)
        unknown: list[str] = []
        _prune(pruned, self.schema, "", unknown, root=True)
        return pruned, sorted(unknown)

    def apply_defaults(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy with every applicable `default`; non-nullable nulls dropped or defaulted first."""
        defaulted = copy.deepcopy(obj)
        _drop_nulls(defaulted, self.schema)
        _default(defaulted, self.schema)
        return defaulted

    def validate_structure(self, obj: dict[str, Any]) -> list[FieldError]:
        errors: list[FieldError] = []
        body = {k: v for k, v in obj.items() if k != "metadata"}
        schema = dict(self.schema)
        schema["properties"] = {k: v for k, v in (schema.get("properties") or {}).items() if k != "metadata"}
        _check(body, schema, "", errors)
        return errors

    def validate(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[FieldError]:
        """Structural errors, then CEL errors (unless a blocking structural error stops them)."""
        errors = self.validate_structure(obj)
        if any(e.kind in _BLOCKING for e in errors):
            return errors + [_NOT_CHECKED]
        _validate_cel(obj, old, old is not None, self.schema, "", errors)
        return errors

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> Admission:
        """Prune, default and validate, as the API server does on create (old=None) and update."""
        pruned, unknown = self.prune(obj)
        defaulted = self.apply_defaults(pruned)
        return Admission(defaulted, self.validate(defaulted, old), unknown)


# ---------------------------------------------------------------------------------------------
# Conveniences bound to the Kompress CRD (generated from kompress_api, which a test keeps equal to crds/)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def kompress_schema() -> CrdSchema:
    from kompress_api import crdgen

    return CrdSchema.from_crd(crdgen.crd())


def prune(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    return kompress_schema().prune(obj)


def apply_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    return kompress_schema().apply_defaults(obj)


def validate(obj: dict[str, Any], old: dict[str, Any] | None = None, strict: bool = True) -> list[FieldError]:
    """Errors the API server would report for this CompressionJob (after pruning and defaulting).

    strict (kubectl's default, fieldValidation=Strict): fields the schema does not declare are errors
    too (the server answers 400 `strict decoding error: unknown field "spec.x"`); otherwise they are
    silently pruned, as with fieldValidation=Ignore.
    """
    admission = kompress_schema().admit(obj, old)
    unknown = [forbidden(path, f'unknown field "{path}"') for path in admission.unknown_fields] if strict else []
    return unknown + admission.errors


def admit(obj: dict[str, Any], old: dict[str, Any] | None = None) -> Admission:
    return kompress_schema().admit(obj, old)
