"""Server-side printing: objects as `meta.k8s.io/v1` Tables, which is what `kubectl get` prints.

Owns: negotiating the Table media type from an Accept header, the columns of a resource type (a CRD's
additionalPrinterColumns after the Name column, as apiextensions-apiserver's tableconvertor does;
Name and Age for built-ins and for CRDs without columns), cell values (string columns printed by
JSONPath, integers/numbers/booleans typed, `date` columns turned into an age like `5m3s` by the
server), and the `includeObject` policy for rows. Must not: know about storage or HTTP.

Approximation: built-in kinds get Name and Age only (a real server has a printer per kind, e.g.
pods show READY/STATUS/RESTARTS).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kompress_testing.apiserver import jsonpath
from kompress_testing.apiserver.resources import ResourceType

NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace. Is required when creating resources, although some "
                              "resources may allow a client to request the generation of an appropriate name automatically. "
                              "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
                              "updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
              "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}


def wants_table(accept: str | None) -> bool:
    """True when the first acceptable media type the client lists is a meta.k8s.io Table."""
    for clause in (accept or "").split(","):
        params = dict(p.strip().split("=", 1) for p in clause.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return True
    return False


def table_version(accept: str | None) -> str:
    for clause in (accept or "").split(","):
        params = dict(p.strip().split("=", 1) for p in clause.split(";")[1:] if "=" in p)
        if params.get("as") == "Table":
            return params.get("v", "v1")
    return "v1"


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 60 * 2:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if rest == 0 else f"{hours // 24 // 365}y{rest}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def columns(rtype: ResourceType) -> list[dict[str, Any]]:
    custom = rtype.printer_columns if rtype.custom and rtype.printer_columns else [AGE_COLUMN]
    return [NAME_COLUMN] + [dict(c) for c in custom]


def _cell(column: dict[str, Any], obj: dict[str, Any], now: dt.datetime) -> Any:
    found = jsonpath.find(column["jsonPath"], obj)
    if not found:
        return None
    value = found[0]
    kind = column.get("type")
    if kind == "string":
        return jsonpath.text(value)
    if value is None:
        return None
    if kind == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        try:
            return human_duration((now - parse_time(value)).total_seconds())
        except ValueError:
            return "<invalid>"
    return None


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def row(rtype: ResourceType, obj: dict[str, Any], include: str = "Metadata", now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.timezone.utc)
    cells = [obj.get("metadata", {}).get("name", "")] + [_cell(c, obj, now) for c in columns(rtype)[1:]]
    result: dict[str, Any] = {"cells": cells}
    row_object = _row_object(obj, include)
    if row_object is not None:
        result["object"] = row_object
    return result


def table(rtype: ResourceType, objs: list[dict[str, Any]], resource_version: str, include: str = "Metadata",
          headers: bool = True, version: str = "v1", continue_token: str | None = None) -> dict[str, Any]:
    now = dt.datetime.now(dt.timezone.utc)
    result: dict[str, Any] = {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}",
                              "metadata": {"resourceVersion": resource_version}}
    if continue_token:
        result["metadata"]["continue"] = continue_token
    if headers:
        result["columnDefinitions"] = [
            {"name": c["name"], "type": c["type"], "format": c.get("format", ""),
             "description": c.get("description") or f"Custom resource definition column (in JSONPath format): {c.get('jsonPath')}",
             "priority": c.get("priority", 0)}
            for c in columns(rtype)
        ]
    result["rows"] = [row(rtype, obj, include, now) for obj in objs]
    return result
