"""baseline: the original model's figures on the held-out rows, recorded before compression changes it.

What is recorded (kompress_job.fidelity.record): per predicted token, the loss and the top-k next-token
log-probabilities with the mass of the rest; per decoder layer, a projection of its outputs. It goes to
ctx.workdir/evaluation/baseline (one file per batch), so the original can be released before the
compressed model is loaded: the two never share memory. ctx.baseline keeps the record's index.

One accelerator or none: ctx.model is the original in host memory; it is only read (hooks are removed,
any dispatch undone), so compression starts from exactly what was loaded. Several accelerators: ctx.model
is a meta-device structure (the DDP ranks load their own weights), so this stage loads the weights itself
and drops them before the ranks start.
Must not: modify ctx.model.
"""

from __future__ import annotations

import gc

from kompress_job import fidelity, modelio
from kompress_job.context import RunContext

RECORD_DIR = "evaluation/baseline"


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


def run(ctx: RunContext) -> None:
    rows = holdout_rows(ctx)
    if not rows:
        ctx.baseline = None
        ctx.log.warning("baseline: no held-out rows (the calibration data had too few usable rows); the model will not be evaluated", extra={"stage": "baseline"})
        return
    spec = ctx.job.spec.model
    model, loaded_here = ctx.model, False
    if model is None or _on_meta(model):
        ctx.progress.message("loading the original's weights for the baseline (the compression ranks load their own)")
        model = modelio.load_causal_lm(ctx.model_dir, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code)
        loaded_here = True
    ctx.progress.message(f"recording the original on {len(rows)} held-out samples")
    try:
        ctx.baseline = fidelity.record(
            model,
            rows,
            ctx.workdir / RECORD_DIR,
            pad_id=pad_id(ctx.tokenizer),
            on_batch=lambda done, total: ctx.progress.set_steps(done, total, message=f"batch {done}/{total} of held-out samples"),
        )
    finally:
        if loaded_here:
            del model
            gc.collect()
    record = ctx.baseline
    if record.tokens == 0:
        ctx.baseline = None
        ctx.log.warning("baseline: every held-out row is shorter than 2 tokens; the model will not be evaluated", extra={"stage": "baseline"})
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
