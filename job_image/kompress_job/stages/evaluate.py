"""evaluate: the reloaded checkpoint (verify's ctx.model, loaded as users load it) against the baseline
record; the quality gate.

    1. compare on the same held-out rows (kompress_job.model.fidelity_comparison.compare): perplexity of both,
       the relative increase, mean KL divergence of next-token distributions, top-1 agreement, drift per layer
    2. outputs equal to the original's on every held-out token: the recipe changed nothing (targets that
       missed everything, a no-op modifier); VerificationFailed, never a success
    3. ctx.metrics (-> manifest, model card, termination message, CompressionJob status) and
       ctx.gate_failures, one line per missed limit with the figure and the limit; the publish stage then
       sends the checkpoint to `<uri>.rejected` and fails the job with QualityGateFailed
    4. fidelity.json (every figure, the method, per-layer drift) and fidelity.png (the drift per layer)
       beside the checkpoint, so they are published with it and linked from the model card

    5. spec.evaluation.tasks: the checkpoint scored with lm-eval by the backend that scored the original
       (kompress_job.model.task_scores), compared with the original's record per task and metric, and
       gate.maxTaskDrop checked; ctx.metrics.tasks holds them bounded, ctx.task_scores all of them

Without held-out rows fidelity cannot be measured: a job with a fidelity limit in its gate is then rejected
(the gate cannot be shown to pass), one without is published without those figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from kompress_api.v1alpha1 import EvaluationMetrics

from kompress_job.model import fidelity_comparison, task_scores
from kompress_job.context import RunContext
from kompress_job.errors import KompressError, VerificationFailed
from kompress_job.model.fidelity_plot import plot_drift
from kompress_job.outputs.model_card import PLOT, REPORT


def metrics_of(comparison: fidelity_comparison.Comparison) -> EvaluationMetrics:
    return EvaluationMetrics(
        samples=comparison.samples,
        tokens=comparison.tokens,
        perplexity_original=round(comparison.perplexity_original, 6),
        perplexity_compressed=round(comparison.perplexity_compressed, 6),
        perplexity_increase=round(comparison.perplexity_increase, 6),
        kl_divergence=round(comparison.kl_divergence, 6),
        top1_agreement=round(comparison.top1_agreement, 6),
    )


def run(ctx: RunContext) -> None:
    gate = ctx.job.spec.evaluation.gate
    if ctx.model is None and (ctx.baseline is not None or ctx.task_record is not None):
        raise KompressError("the evaluate stage needs the checkpoint reloaded by the verify stage, and there is none")
    metrics = _fidelity(ctx, gate)
    if ctx.task_record is not None:
        metrics = _tasks(ctx, metrics or EvaluationMetrics(), gate)
    if metrics is not None:
        if gate is not None:
            metrics.gate_passed = not ctx.gate_failures
        ctx.metrics = metrics
    for failure in ctx.gate_failures:
        ctx.log.error("quality gate: %s", failure, extra={"stage": "evaluate"})


def _fidelity(ctx: RunContext, gate) -> EvaluationMetrics | None:  # noqa: ANN001 - QualityGate | None
    if ctx.baseline is None:
        if gate is not None and any(v is not None for v in (gate.max_perplexity_increase, gate.max_kl_divergence, gate.min_top1_agreement)):
            ctx.gate_failures.append("no held-out rows to evaluate on, so the gate could not be checked (give spec.calibration more usable rows than spec.calibration.samples)")
        ctx.log.warning("evaluate: no fidelity figures (no baseline was recorded)", extra={"stage": "evaluate"})
        return None

    # 1. Compare.
    ctx.progress.message(f"comparing with the original on {ctx.baseline.samples} held-out samples")
    comparison = fidelity_comparison.compare(ctx.model, ctx.baseline, on_batch=lambda done, total: ctx.progress.set_steps(done, total, message=f"batch {done}/{total} of held-out samples"))

    # 2. A compression that changed nothing is a recipe that missed, not a success.
    if comparison.identical:
        raise VerificationFailed(
            f"the compressed model's outputs equal the original's, to float rounding, on all {comparison.tokens} held-out "
            f"tokens (largest difference {comparison.max_difference:.1e} nats): the recipe changed nothing. Check that its "
            "targets select the layers to compress and that its ignore list does not cover them."
        )

    # 3. Metrics and the gate.
    metrics = metrics_of(comparison)
    failures = fidelity_comparison.gate_failures(metrics, gate)
    ctx.gate_failures.extend(failures)
    ctx.log.info(
        "evaluate: perplexity %.4f -> %.4f (%+.2f%%), KL %.5f nats, top-1 agreement %.2f%% on %d tokens (top-%d tail mass %.2f%%)",
        comparison.perplexity_original,
        comparison.perplexity_compressed,
        100 * comparison.perplexity_increase,
        comparison.kl_divergence,
        100 * comparison.top1_agreement,
        comparison.tokens,
        comparison.top_k,
        100 * comparison.mean_tail_mass,
        extra={"stage": "evaluate"},
    )

    # 4. The report and the picture, published with the checkpoint.
    if ctx.checkpoint_dir is not None:
        folder = Path(ctx.checkpoint_dir)
        report = {"kompressFidelity": 1, **comparison.summary(), "gate": gate.wire() if gate else None, "gateFailures": failures}
        (folder / REPORT).write_text(json.dumps(report, indent=1) + "\n")
        plot_drift(comparison, folder / PLOT, title=f"{_model_name(ctx)}, {_recipe_name(ctx)}: drift from the original, layer by layer")
        # they are published with the checkpoint, so they count in its size as the manifest counts them
        ctx.checkpoint_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return metrics


def _tasks(ctx: RunContext, metrics: EvaluationMetrics, gate) -> EvaluationMetrics:  # noqa: ANN001 - QualityGate | None
    # 5. The checkpoint on the tasks the original was scored on, by the same backend.
    tasks = ctx.job.spec.evaluation.tasks
    ctx.progress.message(f"scoring the checkpoint on {len(tasks)} lm-eval task(s) ({ctx.task_backend} backend)")
    if ctx.task_backend == "vllm":
        record = task_scores.score_vllm(ctx.checkpoint_dir, tasks, ctx.task_folder, devices=ctx.devices, out=ctx.workdir / "evaluation/vllm-compressed.json")
    else:
        on_task = lambda i, n, name: ctx.progress.set_steps(i, n, message=f"lm-eval task {name} ({i + 1}/{n}) on the checkpoint")  # noqa: E731
        record = task_scores.score_hf(ctx.model, ctx.tokenizer, tasks, ctx.task_folder, on_task=on_task)
    original = task_scores.read_record(ctx.task_record)
    scores = task_scores.compare(original, record)
    max_drop = gate.max_task_drop if gate is not None else None
    ctx.gate_failures.extend(task_scores.gate_failures(scores, max_drop))
    ctx.task_scores = scores
    ctx.task_summary = {"backend": record["backend"], "secondsOriginal": original.get("seconds"), "secondsCompressed": record.get("seconds"), "samples": {t: e["samples"] for t, e in record["tasks"].items()}}
    bounded, omitted = task_scores.for_status(scores, max_drop)
    for s in scores:
        ctx.log.info("evaluate: lm-eval %s %s %s -> %s (%+.4f)", s.task, s.metric, s.original, s.compressed, s.difference or 0.0, extra={"stage": "evaluate"})
    return metrics.model_copy(update={"tasks": bounded, "task_scores_omitted": omitted or None, "task_backend": record["backend"]})


def _model_name(ctx: RunContext) -> str:
    return ctx.job.spec.model.uri.rstrip("/").rsplit("/", 1)[-1] or "model"


def _recipe_name(ctx: RunContext) -> str:
    recipe = ctx.job.spec.recipe
    return f"preset {recipe.preset.value}" if recipe.preset else "custom recipe"
