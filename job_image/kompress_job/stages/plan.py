"""plan: the same plan the planning pod made, made again inside the worker before the big download.

config.json and the safetensors index (at the revision preflight resolved, so plan and weights agree; from the model
cache when they are there, planning.cache.plan_inputs), the recipe resolved on the meta device. Errors refuse the job here with every error and its fix, and the plan's exit code
(Plan.exit: their own when they are all of one kind, e.g. TargetsMatchNothing 14, else PlanRejected 20); warnings go to
the log. Fills ctx.plan (kompress_job.planning.plan.Plan: its bf16_bytes give the result's compression ratio),
ctx.recipe (the plan's resolution, which the later stages use: the recipe is resolved once) and
ctx.resolved_revision when the Hub named one.
"""

from __future__ import annotations

from kompress_job import collector
from kompress_job.planning import cache as cache_plan
from kompress_job.context import RunContext
from kompress_job.errors import error_for
from kompress_job.planning.plan import make_plan


# What the later stages import anyway: imported once, here, without the collector rescanning it (collector).
LIBRARIES = ("torch", "transformers", "llmcompressor")


def run(ctx: RunContext) -> None:
    ctx.progress.message("fetching config.json")
    view = cache_plan.assess(ctx.job, ctx.env, revision=ctx.resolved_revision)
    config, names, revision = cache_plan.plan_inputs(ctx.job, ctx.env, ctx.workdir / "plan", view, revision=ctx.resolved_revision)
    ctx.resolved_revision = ctx.resolved_revision or revision
    ctx.progress.message("planning from config.json")
    plan = cache_plan.apply(make_plan(ctx.job, config, devices=ctx.devices, weight_names=names), view)
    ctx.plan = plan
    ctx.recipe = plan.resolved  # None only when refused, and then this stage raises below
    ctx.log.info("plan: %s", plan.headline(), extra={"stage": "plan"})
    if plan.cache is not None:
        ctx.log.info("plan: model %s", plan.cache.line(), extra={"stage": "plan"})
    for problem in plan.warnings:
        ctx.log.warning("plan: %s: %s (fix: %s)", problem.code, problem.message, problem.fix or "-", extra={"stage": "plan"})
    if plan.errors:
        raise error_for(plan.exit, " ".join(f"{p.code}: {p.message} Fix: {p.fix}" for p in plan.errors))
    ctx.progress.message("loading libraries")
    collector.import_and_freeze(*LIBRARIES)
