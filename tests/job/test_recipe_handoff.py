"""The recipe is resolved once per process and handed on: the worker's plan stage resolves it (on the meta device,
from config.json), and load-model, compress, save and verify use that resolution; the checkpoint verifies against it."""

from __future__ import annotations

import pytest
from _worker_helpers import make_ctx, make_job, run_stages, tiny_models  # noqa: F401 - fixture


@pytest.mark.slow
def test_the_plan_stages_resolution_is_the_one_every_later_stage_uses(tiny_models, tmp_path):
    ctx = make_ctx(make_job(tiny_models["glm4-moe"], preset="w4a16-w8a8"), tiny_models["glm4-moe"], tmp_path)
    run_stages(ctx, "plan")
    planned = ctx.plan.resolved
    assert planned is not None and ctx.recipe is planned
    run_stages(ctx, "load-model", "compress", "save", "verify")
    assert ctx.recipe is planned
    assert ctx.verification["ok"], ctx.verification["failures"]
    assert ctx.verification["by_group"] == {g.name: len(g.modules) for g in planned.groups}
