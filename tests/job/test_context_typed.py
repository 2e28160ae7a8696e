"""RunContext is fully typed: every field names a real type (no Any), and every name resolves to one."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import typing

import pytest

from kompress_job import context
from kompress_job.context import RunContext

pytestmark = pytest.mark.unit


def test_no_field_of_the_run_context_is_any():
    assert [f.name for f in dataclasses.fields(RunContext) if re.search(r"\bAny\b|\bobject\b", str(f.type))] == []


def test_every_field_type_of_the_run_context_resolves():
    # the names context.py imports for the type checker only (heavy ones: torch's model, datasets' rows), imported here
    tree = ast.parse(inspect.getsource(context))
    [block] = [node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"]
    names: dict[str, object] = {}
    exec(compile(ast.Module(body=block.body, type_ignores=[]), context.__file__, "exec"), names)  # noqa: S102 - the module's own imports
    hints = typing.get_type_hints(RunContext, localns=names)
    assert set(hints) == {f.name for f in dataclasses.fields(RunContext)}
    assert hints["recipe"] == names["ResolvedRecipe"] | None and hints["model"] == names["PreTrainedModel"] | None
