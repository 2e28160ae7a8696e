"""evaluate: the reloaded checkpoint (verify's ctx.model, loaded as users load it) against the baseline
record; the quality gate.

    1. compare on the same held-out rows (kompress_job.fidelity.compare): perplexity of both, the relative
       increase, mean KL divergence of next-token distributions, top-1 agreement, drift per layer
    2. outputs equal to the original's on every held-out token: the recipe changed nothing (targets that
       missed everything, a no-op modifier); VerificationFailed, never a success
    3. ctx.metrics (-> manifest, model card, termination message, CompressionJob status) and
       ctx.gate_failures, one line per missed limit with the figure and the limit; the publish stage then
       sends the checkpoint to `<uri>.rejected` and fails the job with QualityGateFailed
    4. fidelity.json (every figure, the method, per-layer drift) and fidelity.png (the drift per layer)
       beside the checkpoint, so they are published with it and linked from the model card

Without held-out rows nothing can be measured: a job with a gate is then rejected (the gate cannot be
shown to pass), one without is published with no metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

from kompress_api.v1alpha1 import EvaluationMetrics

from kompress_job import fidelity
from kompress_job.context import RunContext
from kompress_job.errors import KompressError, VerificationFailed
from kompress_job.fidelity_plot import plot_drift
from kompress_job.model_card import PLOT, REPORT


def metrics_of(comparison: fidelity.Comparison) -> EvaluationMetrics:
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
    if ctx.baseline is None:
        if gate is not None:
            ctx.gate_failures = ["no held-out rows to evaluate on, so the gate could not be checked (give spec.calibration more usable rows than spec.calibration.samples)"]
        ctx.log.warning("evaluate: nothing to compare (no baseline was recorded)", extra={"stage": "evaluate"})
        return
    if ctx.model is None:
        raise KompressError("the evaluate stage needs the checkpoint reloaded by the verify stage, and there is none")

    # 1. Compare.
    ctx.progress.message(f"comparing with the original on {ctx.baseline.samples} held-out samples")
    comparison = fidelity.compare(ctx.model, ctx.baseline, on_batch=lambda done, total: ctx.progress.set_steps(done, total, message=f"batch {done}/{total} of held-out samples"))

    # 2. A compression that changed nothing is a recipe that missed, not a success.
    if comparison.identical:
        raise VerificationFailed(
            f"the compressed model's outputs equal the original's, to float rounding, on all {comparison.tokens} held-out "
            f"tokens (largest difference {comparison.max_difference:.1e} nats): the recipe changed nothing. Check that its "
            "targets select the layers to compress and that its ignore list does not cover them."
        )

    # 3. Metrics and the gate.
    metrics = metrics_of(comparison)
    failures = fidelity.gate_failures(metrics, gate)
    if gate is not None:
        metrics.gate_passed = not failures
    ctx.metrics = metrics
    ctx.gate_failures = failures
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
    for failure in failures:
        ctx.log.error("quality gate: %s", failure, extra={"stage": "evaluate"})

    # 4. The report and the picture, published with the checkpoint.
    if ctx.checkpoint_dir is not None:
        folder = Path(ctx.checkpoint_dir)
        report = {"kompressFidelity": 1, **comparison.summary(), "gate": gate.wire() if gate else None, "gateFailures": failures}
        (folder / REPORT).write_text(json.dumps(report, indent=1) + "\n")
        plot_drift(comparison, folder / PLOT, title=f"{_model_name(ctx)}, {_recipe_name(ctx)}: drift from the original, layer by layer")
        # they are published with the checkpoint, so they count in its size as the manifest counts them
        ctx.checkpoint_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _model_name(ctx: RunContext) -> str:
    return ctx.job.spec.model.uri.rstrip("/").rsplit("/", 1)[-1] or "model"


def _recipe_name(ctx: RunContext) -> str:
    recipe = ctx.job.spec.recipe
    return f"preset {recipe.preset.value}" if recipe.preset else "custom recipe"
