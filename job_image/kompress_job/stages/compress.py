"""compress: run llm-compressor with the resolved recipe, refuse what cannot be right.

    1. the recipe the plan stage resolved (ctx.recipe: groups, fallbacks, warnings, the exact llm-compressor
       recipe), logged
    2. one accelerator or none: oneshot in this process, on ctx.model
       several, and the recipe learns from data: llm-compressor's distributed oneshot under torchrun
       (kompress_job.model.distributed); the ranks also write the checkpoint, which the save stage completes.
       A data-free recipe (fp8-dynamic) has nothing to share out: it loads here and runs in process.
    3. check every module got its planned scheme (in process; the verify stage re-checks on disk)

On the data-free path (ctx.recipe_path, chosen by load-model) none of that: llm-compressor's model_free_ptq
rewrites the safetensors files one by one into the checkpoint folder, on the GPUs present or the CPU
(kompress_job.model.data_free), and the save stage completes the folder.
"""

from __future__ import annotations

import logging

from kompress_job.context import RunContext
from kompress_job.errors import CompressionMismatch
from kompress_job.model import data_free, distributed, modelio
from kompress_job.model.compression import planned_vs_applied, run_oneshot
from kompress_job.recipe import ResolvedRecipe


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec
    resolved = ctx.recipe
    if resolved is None:
        raise RuntimeError("the compress stage runs after the plan or load-model stage, which resolves the recipe")
    _log_plan(resolved, ctx.log)

    def report(done: int, total: int, message: str) -> None:
        ctx.progress.set_steps(done, total, message=message)

    if ctx.recipe_path == data_free.DATA_FREE:
        out = ctx.workdir / "checkpoint"
        shards = len(list(ctx.model_dir.glob("*.safetensors")))
        report(0, shards, f"data-free: quantizing {shards} safetensors file(s) one by one on {f'{ctx.devices} GPU(s)' if ctx.devices else 'the CPU'}")
        mtp = _mtp_layers(ctx)  # carried (or dropped) by the save stage: model_free_ptq must neither quantize nor write them
        data_free.apply(
            ctx.model_dir, out, resolved, devices=ctx.devices, workers=max(1, ctx.devices),
            extra_ignore=mtp.ignore_patterns if mtp else (), leave_out=mtp.holds if mtp else None,
        )
        report(shards, shards, f"{shards} safetensors file(s) quantized")
        ctx.checkpoint_dir = out
        return

    if ctx.devices > 1 and resolved.needs_calibration:
        plan = distributed.launch_plan(devices=ctx.devices, work=ctx.workdir / "distributed")
        distributed.write_request(
            plan.work,
            model_dir=ctx.model_dir,
            dtype=spec.model.dtype,
            trust_remote_code=spec.model.trust_remote_code,
            recipe=spec.recipe.wire(),
            max_seq_length=spec.calibration.max_sequence_length,
            modules=resolved.module_table(),
            calibration=ctx.calibration if resolved.needs_calibration else None,
        )
        ctx.progress.message(f"distributed oneshot on {ctx.devices} devices")
        ctx.checkpoint_dir = distributed.run(plan, report=report, log=lambda line: ctx.log.info("%s", line, extra={"stage": "compress"}))
        return

    if _on_meta(ctx.model):  # load-model only built the structure, expecting distributed ranks
        ctx.progress.message("loading the model (a data-free recipe runs in one process)")
        ctx.model = modelio.load_causal_lm(ctx.model_dir, dtype=spec.model.dtype, trust_remote_code=spec.model.trust_remote_code)
    run_oneshot(
        ctx.model,
        resolved,
        dataset=ctx.calibration,
        tokenizer=ctx.tokenizer,
        max_seq_length=spec.calibration.max_sequence_length,
        trust_remote_code=spec.model.trust_remote_code,
        report=report,
    )
    problems = planned_vs_applied(ctx.model, resolved)
    if problems:
        # The same model, recipe and library versions would do the same again: not worth a retry on GPUs.
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise CompressionMismatch("llm-compressor did not apply the planned schemes: " + "; ".join(problems[:10]) + more)


def _mtp_layers(ctx: RunContext):
    import json

    from kompress_job.model.mtp import layers

    declared = layers.declared(json.loads((ctx.model_dir / "config.json").read_text()))
    return declared if declared is not None and declared.known else None


def _on_meta(model) -> bool:
    return any(p.device.type == "meta" for p in model.parameters())


def _log_plan(resolved: ResolvedRecipe, log: logging.Logger) -> None:
    summary = resolved.summary()
    for group in summary["groups"]:
        log.info("group %s: %d modules, %s", group["name"], group["modules"], ", ".join(f"{k} {v}" for k, v in group["roles"].items()), extra={"stage": "compress"})
    for fallback in summary["fallbacks"]:
        log.warning("fallback: %s: %s -> %s (%s)", fallback["module"], fallback["requested"], fallback["applied"], fallback["reason"], extra={"stage": "compress"})
    for warning in summary["warnings"]:
        log.warning("%s", warning, extra={"stage": "compress"})
