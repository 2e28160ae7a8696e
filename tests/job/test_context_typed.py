"""RunContext is fully typed: every field names a real type (no Any), and every name resolves to one."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from kompress_job.context import RunContext

pytestmark = pytest.mark.unit


def test_no_field_of_the_run_context_is_any():
    assert [f.name for f in dataclasses.fields(RunContext) if re.search(r"\bAny\b|\bobject\b", str(f.type))] == []


def test_every_field_type_of_the_run_context_resolves():
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kompress_job.io.cache.artifacts import Artifacts
    from kompress_job.io.cache.lock import InUse
    from kompress_job.model.fidelity import BaselineRecord
    from kompress_job.model.mtp.carry import CarryResult
    from kompress_job.model.task_scores import TaskRunSummary
    from kompress_job.model.verification import VerificationSummary
    from kompress_job.planning.plan import Plan
    from kompress_job.recipe.resolved import ResolvedRecipe

    names = {cls.__name__: cls for cls in (Dataset, PreTrainedModel, PreTrainedTokenizerBase, Artifacts, InUse, BaselineRecord, CarryResult, TaskRunSummary, VerificationSummary, Plan, ResolvedRecipe)}
    hints = typing.get_type_hints(RunContext, localns=names)
    assert set(hints) == {f.name for f in dataclasses.fields(RunContext)}
    assert hints["recipe"] == ResolvedRecipe | None and hints["model"] == PreTrainedModel | None
