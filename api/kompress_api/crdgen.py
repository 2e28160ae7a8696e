"""Generate the CompressionJob CustomResourceDefinition from the typed model.

Owns: the translation of pydantic fields into a structural OpenAPI v3 schema (no $ref, no
anyOf except int-or-string), CEL rules, defaults, printer columns. `make crds` writes its output to
crds/ and to the chart; a test fails when the committed files differ from what this produces.
Must not: hold any fact about a field that the model itself does not carry.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo

from kompress_api import v1alpha1 as api
from kompress_api._model import QUANTITY_RE

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "summary of the conditions"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.progress.stage", "description": "the worker's current stage"},
    {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.percent", "description": "overall percent done"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri", "description": "the model being compressed"},
    {"name": "Output", "type": "string", "jsonPath": ".spec.output.uri", "description": "where the checkpoint is published"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Preset", "type": "string", "jsonPath": ".spec.recipe.preset", "priority": 1},
    {"name": "GPUs", "type": "integer", "jsonPath": ".spec.resources.gpus", "priority": 1},
    {"name": "Succeeded", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Succeeded")].status', "priority": 1},
    {"name": "Published", "type": "string", "jsonPath": ".status.result.destination.reference", "description": "what was published, exactly (oci: the image by digest)", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Failed")].reason', "priority": 1},
]


def _strip_optional(annotation: Any) -> Any:
    """Optional[X] -> X. Absence, not null, is how an unset field looks in Kubernetes."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return Union[tuple(args)]  # noqa: UP007 - a real Union object is needed here
    return annotation


def _type_schema(annotation: Any) -> dict[str, Any]:
    annotation = _strip_optional(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        schema = _type_schema(base)
        _apply_constraints(schema, metadata)
        return schema
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return object_schema(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"type": "string", "enum": [m.value for m in annotation]}
    if origin is Literal:
        return {"type": "string", "enum": list(get_args(annotation))}
    if origin in (list, typing.List):  # noqa: UP006
        (item,) = get_args(annotation)
        return {"type": "array", "items": _type_schema(item)}
    if origin in (dict, typing.Dict):  # noqa: UP006
        _, value = get_args(annotation)
        if value is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": _type_schema(value)}
    if origin in (Union, types.UnionType) and set(get_args(annotation)) == {int, str}:
        return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer", "format": "int64"}
    if annotation is float:
        return {"type": "number"}
    if annotation is str:
        return {"type": "string"}
    raise TypeError(f"no CRD schema for {annotation!r}")


def _apply_constraints(schema: dict[str, Any], metadata: list[Any]) -> None:
    sizes = {"array": ("minItems", "maxItems"), "object": ("minProperties", "maxProperties")}
    min_key, max_key = sizes.get(schema.get("type", ""), ("minLength", "maxLength"))
    for meta in metadata:
        if isinstance(meta, annotated_types.Ge):
            schema["minimum"] = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            schema["minimum"] = meta.gt
            schema["exclusiveMinimum"] = True
        elif isinstance(meta, annotated_types.Le):
            schema["maximum"] = meta.le
        elif isinstance(meta, annotated_types.MinLen):
            schema[min_key] = meta.min_length
        elif isinstance(meta, annotated_types.MaxLen):
            schema[max_key] = meta.max_length
        elif isinstance(meta, StringConstraints):
            if meta.min_length is not None:
                schema["minLength"] = meta.min_length
            if meta.max_length is not None:
                schema["maxLength"] = meta.max_length
            if meta.pattern is not None:
                schema["pattern"] = meta.pattern
        elif getattr(meta, "pattern", None) is not None:
            schema["pattern"] = meta.pattern


def _field_schema(name: str, info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    schema = _type_schema(info.annotation)
    if extra.get("x-kompress-int-or-string"):
        schema = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True, "pattern": QUANTITY_RE, "minimum": 0}
    if extra.get("x-kompress-preserve-unknown"):
        if schema.get("type") == "array":
            schema["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        else:
            schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    _apply_constraints(schema, info.metadata)
    # Every field says what it is, so `kubectl explain` teaches; the field name leads, as in Kubernetes' own docs.
    schema["description"] = f"{name}: {info.description}"
    if "x-kompress-default" in extra:
        schema["default"] = extra["x-kompress-default"]
    if rules := extra.get("x-kompress-rules"):
        schema["x-kubernetes-validations"] = [{"rule": rule, "message": message} for rule, message in rules]
    if keys := extra.get("x-kompress-list-map-keys"):
        schema["x-kubernetes-list-type"] = "map"
        schema["x-kubernetes-list-map-keys"] = keys
    return schema


def _is_required(info: FieldInfo) -> bool:
    return info.is_required()


def immutability_rules(model: type[BaseModel]) -> list[dict[str, str]]:
    """Transition rules that keep every field marked immutable from changing after creation."""
    rules = []
    for py_name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if not extra.get("x-kompress-immutable"):
            continue
        name = info.alias or py_name
        has_default = "x-kompress-default" in extra
        if _is_required(info) or has_default:
            rule = f"self.{name} == oldSelf.{name}"
        else:
            rule = f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})"
        rules.append({"rule": rule, "message": f"spec.{name} is immutable: create a new CompressionJob to change it (only spec.suspend may change)"})
    return rules


def object_schema(model: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for py_name, info in model.model_fields.items():
        name = info.alias or py_name
        properties[name] = _field_schema(name, info)
        if _is_required(info):
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    if required:
        schema["required"] = required
    rules = [{"rule": r, "message": m} for r, m in getattr(model, "cel_rules", [])]
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def crd() -> dict[str, Any]:
    spec_schema = object_schema(api.CompressionJobSpec)
    spec_schema.setdefault("x-kubernetes-validations", []).extend(immutability_rules(api.CompressionJobSpec))
    status_schema = object_schema(api.CompressionJobStatus)
    root = {
        "type": "object",
        "description": " ".join((api.CompressionJob.__doc__ or "").split()),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "apiVersion: kompress.dev/v1alpha1."},
            "kind": {"type": "string", "description": "kind: CompressionJob."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}", "labels": {"app.kubernetes.io/part-of": "kompress"}},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["kompress"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = "# Generated by `make crds` from api/kompress_api/v1alpha1.py. Do not edit by hand.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=1000)


def main() -> None:
    import sys

    for path in sys.argv[1:]:
        with open(path, "w", encoding="utf-8") as out:
            out.write(render())
    if len(sys.argv) == 1:
        sys.stdout.write(render())


if __name__ == "__main__":
    main()
