"""Kubernetes API errors as the API server writes them: a `Status` body with code, reason and message.

Owns: the exact wording and shape of Status responses (NotFound, AlreadyExists, Conflict, Invalid,
Forbidden, BadRequest, Gone, ...) and of field errors (`spec.x: Invalid value: ...`), copied from
k8s.io/apimachinery (pkg/api/errors, pkg/util/validation/field) so clients parse them as they would
parse a real server's. Must not: decide *when* an error happens; callers do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# A sentinel for field errors that carry no value (Required, Forbidden, TooLong print no value).
OMIT = object()

# field.ErrorType -> (StatusCause.type i.e. the reason, the words ErrorBody() prints).
_FIELD_ERROR_TYPES = {
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "TypeInvalid": ("FieldValueTypeInvalid", "Invalid value"),
    "Required": ("FieldValueRequired", "Required value"),
    "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "TooLong": ("FieldValueTooLong", "Too long"),
    "TooMany": ("FieldValueTooMany", "Too many"),
    "NotFound": ("FieldValueNotFound", "Not found"),
}
_REASON_TO_TYPE = {reason: kind for kind, (reason, _) in _FIELD_ERROR_TYPES.items()}


class GoLiteral(str):
    """A value Go prints verbatim with %#v (e.g. `0x0` for a uint64 zero)."""


def go_value(value: Any) -> str:
    """A value as Go's field.Error prints it: strings quoted, simple types plain, the rest in Go syntax."""
    if isinstance(value, GoLiteral):
        return str(value)
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(str(k))}:{_go_any(v)}" for k, v in sorted(value.items()))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_any(v) for v in value) + "}"
    return json.dumps(value)


def _go_any(value: Any) -> str:
    return go_value(value) if not isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class FieldError:
    """One entry of a field.ErrorList: where, what kind, the offending value and the detail."""

    kind: str  # a key of _FIELD_ERROR_TYPES
    field: str  # e.g. "spec.model.uri"; "<nil>" for object-wide errors
    detail: str = ""
    value: Any = OMIT

    @property
    def reason(self) -> str:
        return _FIELD_ERROR_TYPES[self.kind][0]

    def body(self) -> str:
        """field.Error.ErrorBody(): what comes after the field path."""
        words = _FIELD_ERROR_TYPES[self.kind][1]
        if self.kind in ("Required", "Forbidden", "TooLong") or self.value is OMIT:
            text = words
        else:
            text = f"{words}: {go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.body(), "field": self.field}


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("Invalid", path, detail, value)


def required(path: str, detail: str = "") -> FieldError:
    return FieldError("Required", path, detail)


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError("Forbidden", path, detail)


def by_reason(reason: str, path: str, value: Any, detail: str) -> FieldError:
    """A field error from a CEL rule's `reason` (FieldValueInvalid by default)."""
    kind = _REASON_TO_TYPE.get(reason or "FieldValueInvalid", "Invalid")
    return FieldError(kind, path, detail, value)


def aggregate(errors: list[FieldError]) -> str:
    """utilerrors.Aggregate.Error(): one message, or all of them in brackets, duplicates dropped."""
    messages: list[str] = []
    for error in errors:
        text = str(error)
        if text not in messages:
            messages.append(text)
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"


class ApiError(Exception):
    """An error response: raised anywhere inside a request, rendered as a Status by the server."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def qualified(resource: str, group: str) -> str:
    """schema.GroupResource.String(): `compressionjobs.kompress.dev`, or `pods` for the core group."""
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    return details


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(resource, group)} "{name}" not found', _details(name, group, resource))


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(resource, group)} "{name}" already exists', _details(name, group, resource))


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(name, group, resource))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid_object(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """errors.NewInvalid: 422, `Kind.group "name" is invalid: <aggregate>`, one cause per field error."""
    qualified_kind = f"{kind}.{group}" if group else kind
    details = _details(name, group, kind)
    details["causes"] = [error.cause() for error in errors]
    message = f'{qualified_kind} "{name}" is invalid: {aggregate(errors)}' if errors else f'{qualified_kind} "{name}" is invalid'
    return ApiError(422, "Invalid", message, details)


def forbidden_request(resource: str, group: str, name: str, why: str) -> ApiError:
    if not resource:
        message = f"forbidden: {why}"
    elif not name:
        message = f"{qualified(resource, group)} is forbidden: {why}"
    else:
        message = f'{qualified(resource, group)} "{name}" is forbidden: {why}'
    return ApiError(403, "Forbidden", message, _details(name, group, resource))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unprocessable(message: str) -> ApiError:
    """NewGenericServerResponse(422): what a failed JSON-patch operation gets."""
    return ApiError(422, "Invalid", message, {})


def method_not_allowed(verb: str, resource: str, group: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource",
                    _details("", group, resource))


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    message = ("the body of the request was in an unknown format - accepted media types include: "
               + ", ".join(accepted))
    return ApiError(415, "UnsupportedMediaType", message, {"causes": [{"reason": "UnsupportedMediaType", "message": content_type}]})


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def endpoint_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


@dataclass
class Warnings:
    """`Warning: 299 - "..."` response headers (e.g. unknown fields under fieldValidation=Warn)."""

    messages: list[str] = field(default_factory=list)

    def header(self) -> dict[str, str]:
        if not self.messages:
            return {}
        return {"Warning": ", ".join(f'299 - {json.dumps(m)}' for m in self.messages)}
