"""baseline: the original model's figures on the held-out rows, recorded before compression changes it.

What is recorded (kompress_job.model.fidelity_record.record): per predicted token, the loss and the top-k next-token
log-probabilities with the mass of the rest; per decoder layer, a projection of its outputs. It goes to
ctx.workdir/evaluation/baseline (one file per batch), so the original can be released before the
compressed model is loaded: the two never share memory. ctx.baseline keeps the record's index.

On the data-free path ctx.model has no weights, and the original is loaded with its weights left on scratch disk,
read back module by module (kompress_job.model.disk_offload): host memory stays bounded by the largest source file.
Otherwise, with one accelerator or none: ctx.model is the original in host memory; it is only read (hooks are removed,
any dispatch undone), so compression starts from exactly what was loaded. Several accelerators: ctx.model
is a meta-device structure (the DDP ranks load their own weights), so this stage loads the weights itself
and drops them before the ranks start.
With spec.evaluation.tasks, the original is also scored on them with lm-eval (kompress_job.model.task_scores), on the
same loaded weights, and the scores are written to ctx.workdir/evaluation/tasks-original.json (ctx.task_record) for
the evaluate stage; the backend is chosen here (ctx.task_backend) so both models are scored by the same one.
With a model cache, the record is kept there too (kompress_job.io.cache.artifacts), keyed by the model version, its
dtype, the held-out rows' token ids, the record's settings and format, torch's and transformers' versions and the kind
of device: a retry, or another preset on the same model and data, reads it back and runs no forward pass for it
(nor loads the weights for it, when no lm-eval task needs them).
Must not: modify ctx.model.
"""

from __future__ import annotations

import gc
import shutil

from kompress_job.io.cache import artifacts
from kompress_job.io.cache.metrics import STATS
from kompress_job.model import disk_offload, fidelity_passes, fidelity_record, modelio, task_scores
from kompress_job.context import RunContext
from kompress_job.stages.calibration import cached_artifacts, model_identity

RECORD_DIR = "evaluation/baseline"
KIND = "baseline"


def holdout_rows(ctx: RunContext) -> list[list[int]]:
    if ctx.holdout is None or len(ctx.holdout) == 0:
        return []
    return [list(ids) for ids in ctx.holdout["input_ids"]]


def pad_id(tokenizer) -> int:  # noqa: ANN001 - a transformers tokenizer
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def _on_meta(model) -> bool:  # noqa: ANN001
    return any(p.device.type == "meta" for p in model.parameters())


def cache_key(ctx: RunContext, store: artifacts.Artifacts, rows: list[list[int]]) -> str | None:
    import torch
    import transformers

    from kompress_job.model.cpu_workarounds import has_accelerator

    model = model_identity(ctx, store)
    if model is None:
        return None
    spec = ctx.job.spec.model
    return artifacts.artifact_key(KIND, {
        "format": fidelity_record.RECORD_FORMAT,
        "model": model,
        "dtype": spec.dtype,
        "trustRemoteCode": spec.trust_remote_code,
        "rows": fidelity_record.rows_digest(rows),
        "padId": pad_id(ctx.tokenizer),
        "topK": fidelity_record.TOP_K,
        "sketch": [fidelity_passes.SKETCH_DIM, fidelity_passes.SKETCH_SEED, fidelity_passes.DRIFT_TOKENS],
        "software": {"torch": torch.__version__, "transformers": transformers.__version__},
        "device": torch.accelerator.current_accelerator().type if has_accelerator() else "cpu",
    })


def _cached_record(ctx: RunContext, rows: list[list[int]]) -> tuple[artifacts.Artifacts | None, str | None, fidelity_record.BaselineRecord | None]:
    store = cached_artifacts(ctx)
    key = cache_key(ctx, store, rows) if store is not None else None
    found = store.lookup(KIND, key) if key is not None else None
    if found is None:
        return store, key, None
    try:
        return store, key, fidelity_record.load_record(found, rows)
    except ValueError as err:
        ctx.log.warning("baseline: the record in the model cache cannot be used (%s); recording it again", err, extra={"stage": "baseline"})
        return store, None, None


def run(ctx: RunContext) -> None:
    rows = holdout_rows(ctx)
    tasks = ctx.job.spec.evaluation.tasks
    ctx.baseline = None
    if not rows:
        ctx.log.warning("baseline: no held-out rows (the calibration data had too few usable rows); fidelity will not be measured", extra={"stage": "baseline"})
    if tasks:
        _prepare_tasks(ctx)
    if not rows and not tasks:
        return
    store, key, reused = _cached_record(ctx, rows) if rows else (None, None, None)
    if reused is not None:
        ctx.baseline = reused
        STATS.record_artifact(KIND, hit=True)
        ctx.log.info("baseline: the original's record on these %d held-out samples was in the model cache (%s): no forward pass", len(rows), reused.folder, extra={"stage": "baseline"})
    if reused is None or tasks:
        _with_original(ctx, rows if reused is None else [], tasks)
    if reused is None and key is not None and ctx.baseline is not None:
        recorded = ctx.baseline.folder
        stored = store.store(KIND, key, lambda tmp: shutil.copytree(recorded, tmp, dirs_exist_ok=True), describe={"model": ctx.job.spec.model.uri, "samples": len(rows)})
        STATS.record_artifact(KIND, hit=False, on_volume=store.cache.used_bytes())
        if stored is None:
            ctx.log.warning("baseline: the model cache did not take the record (volume full or not writable); a retry records it again", extra={"stage": "baseline"})
    if ctx.baseline is not None:
        _log_record(ctx)


def _with_original(ctx: RunContext, rows: list[list[int]], tasks: list) -> None:
    """Record the original on `rows` and score it on `tasks`, with its weights loaded here when ctx.model has none."""
    spec = ctx.job.spec.model
    model, loaded_here = ctx.model, False
    if model is None or _on_meta(model):
        if disk_offload.offloads_original(ctx.recipe_path):
            ctx.progress.message("loading the original for the baseline, its weights left on disk and read back module by module (data-free path)")
            model = disk_offload.load(ctx.model_dir, ctx.workdir / disk_offload.ORIGINAL_FOLDER, budget=disk_offload.host_budget(ctx.model_dir), dtype=spec.dtype, trust_remote_code=spec.trust_remote_code)
        else:
            ctx.progress.message("loading the original's weights for the baseline (the compression ranks load their own)")
            model = modelio.load_causal_lm(ctx.model_dir, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code)
        loaded_here = True
    try:
        if rows:
            ctx.progress.message(f"recording the original on {len(rows)} held-out samples")
            ctx.baseline = fidelity_record.record(
                model,
                rows,
                ctx.workdir / RECORD_DIR,
                pad_id=pad_id(ctx.tokenizer),
                on_batch=lambda done, total: ctx.progress.set_steps(done, total, message=f"batch {done}/{total} of held-out samples"),
            )
        if tasks:
            _score_original(ctx, model)
    finally:
        if loaded_here:
            del model
            gc.collect()
            shutil.rmtree(ctx.workdir / disk_offload.ORIGINAL_FOLDER, ignore_errors=True)


def _prepare_tasks(ctx: RunContext) -> None:
    evaluation = ctx.job.spec.evaluation
    servable = ctx.plan.servable if ctx.plan is not None else None
    ctx.task_backend = task_scores.choose_backend(evaluation.task_backend, devices=ctx.devices, servable=servable, has_vllm=task_scores.vllm_installed())
    ctx.task_folder = task_scores.task_folder(evaluation.task_source, ctx.workdir, dict(ctx.env))


def _score_original(ctx: RunContext, model) -> None:  # noqa: ANN001 - a transformers model
    tasks = ctx.job.spec.evaluation.tasks
    ctx.progress.message(f"scoring the original on {len(tasks)} lm-eval task(s) ({ctx.task_backend} backend)")
    if ctx.task_backend == "vllm":
        record = task_scores.score_vllm(ctx.model_dir, tasks, ctx.task_folder, devices=ctx.devices, out=ctx.workdir / "evaluation/vllm-original.json", trust_remote_code=ctx.job.spec.model.trust_remote_code)
    else:
        on_task = lambda i, n, name: ctx.progress.set_steps(i, n, message=f"lm-eval task {name} ({i + 1}/{n}) on the original")  # noqa: E731
        record = task_scores.score_hf(model, ctx.tokenizer, tasks, ctx.task_folder, on_task=on_task)
    ctx.task_record = ctx.workdir / task_scores.ORIGINAL_RECORD
    task_scores.write_record(record, ctx.task_record)
    for task, entry in record["tasks"].items():
        figures = ", ".join(f"{m} {v['value']:.4f}" for m, v in entry["metrics"].items() if v["value"] is not None)
        ctx.log.info("baseline: lm-eval %s on %s samples: %s", task, entry["samples"], figures, extra={"stage": "baseline"})


def _log_record(ctx: RunContext) -> None:
    record = ctx.baseline
    if record.tokens == 0:
        ctx.baseline = None
        ctx.log.warning("baseline: every held-out row is shorter than 2 tokens; fidelity will not be measured", extra={"stage": "baseline"})
        return
    ctx.log.info(
        "baseline: %d samples, %d predicted tokens, top-%d distributions and %d layer taps recorded (%.1f MB) in %.1fs",
        record.samples,
        record.tokens,
        record.top_k,
        len(record.taps),
        record.bytes / 1e6,
        record.seconds or 0.0,
        extra={"stage": "baseline"},
    )
