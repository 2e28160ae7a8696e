"""Stage calibration: tokenized calibration samples (ctx.calibration) and held-out rows (ctx.holdout).

The tokenizer and chat template come from the fetched model (ctx.model_dir). See
kompress_job.model.calibration_data for sources, formats and how rows are picked.
Must not: load the model's weights.
"""

from __future__ import annotations

from kompress_job.model import calibration_data, modelio
from kompress_job.context import RunContext
from kompress_job.errors import KompressError


def load_tokenizer(ctx: RunContext):  # noqa: ANN201 - a transformers tokenizer
    if ctx.tokenizer is not None:
        return ctx.tokenizer
    if ctx.model_dir is None:
        raise KompressError("the calibration stage needs the fetched model's tokenizer, but fetch-model left no model_dir")
    return modelio.load_tokenizer(ctx.model_dir, trust_remote_code=ctx.job.spec.model.trust_remote_code)


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec
    tokenizer = load_tokenizer(ctx)
    ctx.tokenizer = tokenizer  # load-model keeps it: the samples and the model share one tokenizer
    has_template = bool(getattr(tokenizer, "chat_template", None))
    ctx.progress.message(f"reading {spec.calibration.uri}")
    loaded = calibration_data.load_rows(spec.calibration, ctx.workdir / "calibration", ctx.env, chat=has_template, revision=ctx.calibration_revision)
    ctx.calibration_revision = loaded.revision
    prepared = calibration_data.prepare(loaded.rows, spec.calibration, spec.evaluation, tokenizer, unreadable=loaded.unreadable)
    ctx.calibration = prepared.calibration
    ctx.holdout = prepared.holdout
    tokens = sum(len(ids) for ids in prepared.calibration["input_ids"])
    ctx.log.info(
        "calibration: %d samples (%d tokens), %d held-out rows, from %d rows read of %s",
        len(prepared.calibration),
        tokens,
        len(prepared.holdout),
        prepared.rows_seen,
        spec.calibration.uri,
    )
    if len(prepared.calibration) < spec.calibration.samples:
        ctx.log.warning("calibration: only %d of the %d samples asked for are usable", len(prepared.calibration), spec.calibration.samples)
    if prepared.skipped:
        ctx.log.info("calibration: rows skipped: %s", "; ".join(f"{n} {why}" for why, n in prepared.skipped.most_common()))
