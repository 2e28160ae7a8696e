"""The subset of Kubernetes JSONPath that printer columns use, evaluated like client-go's jsonpath.

Owns: parsing and evaluating `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[*]`, `.*`, `[?(@.type=="Ready")]` (with
==, !=, <, <=, >, >= against strings and numbers, and `[?(@.x)]` for presence), and printing a value
as client-go prints it (strings bare, other values as JSON). Missing keys yield no result, as with
`AllowMissingKeys(true)`. Must not: grow into a general JSONPath engine (no recursive descent `..`,
no unions, no ranges) without a column that needs it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<dot>\.(?P<name>[A-Za-z0-9_$-]+|\*))            # .name or .*
      | \[\s*(?P<quoted>'[^']*'|"[^"]*")\s*\]               # ['name.with.dots']
      | \[\s*(?P<index>-?\d+)\s*\]                          # [0]
      | \[\s*\*\s*\]                                        # [*]
      | \[\s*\?\(\s*@(?P<fpath>(?:\.[A-Za-z0-9_$-]+|\['[^']*'\])+)\s*
            (?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<operand>"[^"]*"|'[^']*'|-?\d+(?:\.\d+)?|true|false))?\s*\)\s*\]
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Step:
    kind: str  # key, index, all, filter
    key: str | int | None = None
    filter_path: tuple[str, ...] = ()
    op: str | None = None
    operand: Any = None


class JsonPathError(ValueError):
    pass


def _split_filter_path(text: str) -> tuple[str, ...]:
    return tuple(m.group(1) or m.group(2) for m in re.finditer(r"\.([A-Za-z0-9_$-]+)|\['([^']*)'\]", text))


def parse(expression: str) -> list[_Step]:
    """Parse `.status.conditions[?(@.type=="Succeeded")].status` (braces `{...}` are optional)."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[_Step] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise JsonPathError(f"unrecognized JSONPath {expression!r} at {text[pos:]!r}")
        if match.group("dot"):
            name = match.group("name")
            steps.append(_Step("all") if name == "*" else _Step("key", name))
        elif match.group("quoted"):
            steps.append(_Step("key", match.group("quoted")[1:-1]))
        elif match.group("index") is not None:
            steps.append(_Step("index", int(match.group("index"))))
        elif match.group("fpath"):
            operand = match.group("operand")
            if operand is not None:
                operand = operand[1:-1] if operand[0] in "\"'" else json.loads(operand)
            steps.append(_Step("filter", None, _split_filter_path(match.group("fpath")), match.group("op"), operand))
        else:
            steps.append(_Step("all"))
        pos = match.end()
    return steps


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _lookup(value: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _compare(left: Any, op: str, right: Any) -> bool:
    if op in ("==", "!="):
        # true == 1 in Python, not in JSONPath.
        equal = (isinstance(left, bool) == isinstance(right, bool)) and left == right
        return equal if op == "==" else not equal
    if not isinstance(left, (int, float)) or not isinstance(right, (int, float)):
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def find(expression: str | list[_Step], document: Any) -> list[Any]:
    """All values the expression selects, in document order; missing keys select nothing."""
    steps = parse(expression) if isinstance(expression, str) else expression
    current = [document]
    for step in steps:
        found: list[Any] = []
        for value in current:
            if step.kind == "key":
                if isinstance(value, dict) and step.key in value:
                    found.append(value[step.key])
            elif step.kind == "index":
                if isinstance(value, list) and -len(value) <= int(step.key) < len(value):  # type: ignore[arg-type]
                    found.append(value[int(step.key)])  # type: ignore[arg-type]
            elif step.kind == "all":
                found.extend(_children(value))
            else:
                for item in _children(value):
                    present, got = _lookup(item, step.filter_path)
                    if present and (step.op is None or _compare(got, step.op, step.operand)):
                        found.append(item)
        current = found
    return current


def text(value: Any) -> str:
    """How client-go's jsonpath prints one result: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))
