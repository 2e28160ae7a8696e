"""The base class every API type derives from, and the field helper that carries CRD metadata.

Owns: camelCase wire names, forbidding unknown fields, and the small vocabulary of CRD-only
facts (CEL rules, int-or-string, preserve-unknown-fields, mutability) that the CRD generator reads.
The model enforces what of that vocabulary it can without an old object, so a manifest the API
server refuses is refused locally too: field rules of the forms `self.matches('RE')` and
`self.startsWith('P')`, negated or not (with the rule's own message; regexes matched as RE2 matches
them), the non-negative quantity pattern of int-or-string fields, and JSON booleans only (pydantic
would otherwise turn "yes" into True). Other CEL rules are mirrored by the model that declares them.
Must not: know about any particular field of the API.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

# A Kubernetes resource.Quantity (`16`, `256Gi`, `500m`, `1e3`) that is not negative: every quantity of the
# API is a size or a count, and a negative one only fails later, in the planner or in the Job's validation.
QUANTITY_RE = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
# Field rules the model mirrors: `self.matches(RE)`, `self.startsWith(P)`, either negated, RE/P a CEL string
# literal ('...') or raw string literal (r'...').
_SIMPLE_RULE = re.compile(r"^(!?)self\.(matches|startsWith)\((r?)'((?:[^'\\]|\\.)*)'\)$", re.DOTALL)
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def re2_search(pattern: str, value: str) -> bool:
    """`pattern` found in `value` as RE2 (the API server's CEL and OpenAPI patterns) finds it.

    Python's `$` also matches before a trailing newline, RE2's only at the very end: "ok\\n" would pass
    here and be refused there. The patterns of this API use `$` only as the end anchor.
    """
    return re.search(_UNESCAPED_DOLLAR.sub(r"\\Z", pattern), value) is not None


def _literal(text: str, raw: bool) -> str:
    # A CEL string literal's escapes (a doubled backslash, an escaped quote) are undone; a raw literal is taken as written.
    return text if raw else re.sub(r"\\(.)", r"\1", text)


class _FieldCheck(NamedTuple):
    """What the two field validators must do for one field; None where there is nothing to do."""

    boolean: bool
    rules: tuple[tuple[str, str], ...]
    quantity: bool


# Per model class, per field: what to check. The validators run for every field of every object the operator
# parses (the status included, on every reconcile), so they look this up instead of reading the field's
# metadata each time (pydantic's `model_fields` is a property: reading it per field was most of a parse).
_CHECKS: dict[type[BaseModel], dict[str, _FieldCheck | None]] = {}


def _checks(model: type[BaseModel]) -> dict[str, _FieldCheck | None]:
    checks = _CHECKS.get(model)
    if checks is None:
        checks = _CHECKS[model] = {name: _field_check(info) for name, info in model.__pydantic_fields__.items()}
    return checks


def _field_check(info: FieldInfo) -> _FieldCheck | None:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    check = _FieldCheck(
        boolean=info.annotation in (bool, bool | None),
        rules=tuple(tuple(rule) for rule in extra.get("x-kompress-rules", [])),
        quantity=bool(extra.get("x-kompress-int-or-string")),
    )
    return check if check.boolean or check.rules or check.quantity else None


class ApiModel(BaseModel):
    """Every API object: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _json_booleans_only(cls, value: Any, info: ValidationInfo) -> Any:
        check = _checks(cls).get(info.field_name or "")
        if check is not None and check.boolean and value is not None and not isinstance(value, bool):
            raise ValueError(f"must be a boolean (true or false), not {value!r}")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _crd_field_rules(cls, value: Any, info: ValidationInfo) -> Any:
        check = _checks(cls).get(info.field_name or "")
        if check is None:
            return value
        if isinstance(value, str):
            for rule, message in check.rules:
                match = _SIMPLE_RULE.match(rule)
                if match is None:
                    continue  # other CEL rules are enforced by the API server only
                negated, kind, raw, text = match.groups()
                argument = _literal(text, bool(raw))
                found = re2_search(argument, value) if kind == "matches" else value.startswith(argument)
                if found == bool(negated):
                    raise ValueError(message)
            if check.quantity and not re2_search(QUANTITY_RE, value):
                raise ValueError(f"{value!r} is not a non-negative Kubernetes quantity (e.g. 16, 256Gi, 500m)")
        if isinstance(value, int) and not isinstance(value, bool) and check.quantity and value < 0:
            raise ValueError(f"{value} is negative: a quantity here is a size or a count (e.g. 16, 256Gi, 500m)")
        return value

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
