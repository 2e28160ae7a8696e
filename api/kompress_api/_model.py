"""The base class every API type derives from, and the field helper that carries CRD metadata.

Owns: camelCase wire names, forbidding unknown fields, and the small vocabulary of CRD-only
facts (CEL rules, int-or-string, preserve-unknown-fields, mutability) that the CRD generator reads.
Must not: know about any particular field of the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Every API object: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it appears in Kubernetes: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def api_field(
    default: Any = ...,
    *,
    description: str,
    rules: list[tuple[str, str]] | None = None,
    mutable: bool = True,
    int_or_string: bool = False,
    preserve_unknown: bool = False,
    schema_default: Any = None,
    list_map_keys: list[str] | None = None,
    **constraints: Any,
) -> Any:
    """A pydantic Field with the extras the CRD generator understands.

    rules: CEL validations as (rule, message) pairs, evaluated on this field's value.
    mutable: False makes the generator add a CEL transition rule so the field can't change after create.
    int_or_string: the field is a Kubernetes quantity (`16`, `"16"`, `"256Gi"`).
    preserve_unknown: pass-through Kubernetes objects (tolerations, affinity) the API does not re-declare.
    schema_default: a default the API server applies (only where the default is universal).
    list_map_keys: the list is a map keyed by these fields (x-kubernetes-list-type: map).
    """
    extra: dict[str, Any] = {}
    if rules:
        extra["x-kompress-rules"] = rules
    if not mutable:
        extra["x-kompress-immutable"] = True
    if int_or_string:
        extra["x-kompress-int-or-string"] = True
    if preserve_unknown:
        extra["x-kompress-preserve-unknown"] = True
    if schema_default is not None:
        extra["x-kompress-default"] = schema_default
    if list_map_keys:
        extra["x-kompress-list-map-keys"] = list_map_keys
    return Field(default, description=description, json_schema_extra=extra or None, **constraints)
