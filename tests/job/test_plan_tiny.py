"""The plan against what the worker really writes: on the tiny models, for every preset, the checkpoint the
worker's load-model, compress and save stages leave is the one the plan predicted from config.json alone:
the same tensors (names, dtypes, shapes), a size within 2 %, and the same module groups."""

from __future__ import annotations

import json

import pytest
from _worker_helpers import RUNS, compressed, tiny_models  # noqa: F401 - fixtures

from kompress_job.planning.plan import make_plan, read_config

pytestmark = pytest.mark.slow


def written_tensors(folder) -> set[tuple[str, str, tuple[int, ...]]]:
    from safetensors import safe_open

    out = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                out.add((name, piece.get_dtype(), tuple(piece.get_shape())))
    return out


def weight_bytes(folder) -> int:
    """What the weights take: the *.safetensors files and their index (config, tokenizer and records are not weights)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json")


@pytest.mark.parametrize(("model", "preset"), RUNS, ids=[f"{m}-{p}" for m, p in RUNS])
def test_plan_predicts_the_checkpoint_the_worker_writes(compressed, tiny_models, model, preset):
    ctx, _ = compressed(model, preset)
    plan = make_plan(ctx.job, read_config(tiny_models[model]))
    written = weight_bytes(ctx.checkpoint_dir)
    assert abs(plan.estimated_checkpoint_bytes - written) <= 0.02 * written, (plan.estimated_checkpoint_bytes, written)
    assert {(t.name, t.dtype, t.shape) for t in plan.layout.tensors} == written_tensors(ctx.checkpoint_dir)
    # the planner resolved on the meta device exactly what the worker resolved on the loaded model
    assert plan.resolved.module_table() == ctx.recipe.module_table()
    record = json.loads((ctx.checkpoint_dir / "kompress-record.json").read_text())
    assert [g["name"] for g in record["recipe"]["groups"]] == [g.name for g in plan.groups]
    assert not plan.errors
