"""Stage calibration: tokenized calibration samples (ctx.calibration) and held-out rows (ctx.holdout).

The tokenizer and chat template come from the fetched model (ctx.model_dir). See
kompress_job.model.calibration_data for sources, formats and how rows are picked.
With a model cache, the prepared samples are kept there (kompress_job.io.cache.artifacts), keyed by the data
source and its exact version (Hub commit, S3 ETag, file size and mtime, the built-in set's package version), the
model version whose tokenizer rendered them, and every setting that picks or cuts rows: a retry, or another preset
on the same model and data, reads them back and neither downloads nor tokenizes the data again.
Must not: load the model's weights.
"""

from __future__ import annotations

from pathlib import Path

from kompress_api.worker_protocol import ENV_HF_ENDPOINT

from kompress_job.io.cache import artifacts
from kompress_job.io.cache.metrics import STATS
from kompress_job.model import calibration_data, modelio
from kompress_job.context import RunContext
from kompress_job.errors import KompressError

KIND = "calibration"


def load_tokenizer(ctx: RunContext):  # noqa: ANN201 - a transformers tokenizer
    if ctx.tokenizer is not None:
        return ctx.tokenizer
    if ctx.model_dir is None:
        raise KompressError("the calibration stage needs the fetched model's tokenizer, but fetch-model left no model_dir")
    return modelio.load_tokenizer(ctx.model_dir, trust_remote_code=ctx.job.spec.model.trust_remote_code)


def cached_artifacts(ctx: RunContext) -> artifacts.Artifacts | None:
    """The job's artifacts in the model cache (made once per run), or None without a cache."""
    if ctx.artifacts is None:
        ctx.artifacts = artifacts.for_job(ctx.job, ctx.env)
    return ctx.artifacts


def model_identity(ctx: RunContext, store: artifacts.Artifacts) -> str | None:
    """The model version as the cache names it: its entry's path (endpoint, repository or bucket and prefix, commit
    or ETag digest). None when the model was not fetched through this cache (nothing derived from it is cached)."""
    if ctx.model_dir is None or not ctx.resolved_revision:
        return None
    try:
        return str(Path(ctx.model_dir).resolve().relative_to(store.cache.root.resolve()))
    except ValueError:
        return None


def cache_key(ctx: RunContext, store: artifacts.Artifacts, *, chat: bool) -> str | None:
    spec = ctx.job.spec
    cal, evaluation = spec.calibration, spec.evaluation
    model = model_identity(ctx, store)
    if model is None:
        return None
    version = calibration_data.source_version(cal, ctx.env, ctx.calibration_revision)
    if version is None:
        return None
    return artifacts.artifact_key(KIND, {
        "format": calibration_data.PREPARED_FORMAT,
        "source": {
            "uri": cal.uri,
            "version": version,
            "endpoint": _endpoint(cal, ctx.env),
            "split": cal.split,
            "column": cal.column,
            "format": cal.format,
        },
        "model": model,
        "chat": chat,
        "samples": cal.samples,
        "maxSequenceLength": cal.max_sequence_length,
        "seed": cal.seed,
        "evaluation": {"enabled": evaluation.enabled, "samples": evaluation.samples, "maxSequenceLength": evaluation.max_sequence_length},
    })


def _endpoint(cal, env) -> str | None:  # noqa: ANN001
    if cal.uri.startswith("s3://"):
        return cal.s3.endpoint if cal.s3 else None
    if cal.uri.startswith("hf://"):
        return (cal.hugging_face.endpoint if cal.hugging_face else None) or env.get(ENV_HF_ENDPOINT)
    return None


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec
    tokenizer = load_tokenizer(ctx)
    ctx.tokenizer = tokenizer  # load-model keeps it: the samples and the model share one tokenizer
    has_template = bool(getattr(tokenizer, "chat_template", None))
    store = cached_artifacts(ctx)
    key = cache_key(ctx, store, chat=has_template) if store is not None else None
    found = store.lookup(KIND, key) if key is not None else None
    if found is not None:
        prepared, revision = calibration_data.load_prepared(found)
        ctx.calibration_revision = revision or ctx.calibration_revision
        STATS.record_artifact(KIND, hit=True)
        ctx.log.info("calibration: the samples prepared from %s for this model were in the model cache (%s): not read again", spec.calibration.uri, found)
    else:
        ctx.progress.message(f"reading {spec.calibration.uri}")
        loaded = calibration_data.load_rows(spec.calibration, ctx.workdir / "calibration", ctx.env, chat=has_template, revision=ctx.calibration_revision)
        ctx.calibration_revision = loaded.revision
        prepared = calibration_data.prepare(loaded.rows, spec.calibration, spec.evaluation, tokenizer, unreadable=loaded.unreadable)
        if key is not None:
            stored = store.store(KIND, key, lambda folder: calibration_data.save_prepared(prepared, folder, revision=ctx.calibration_revision),
                                 describe={"uri": spec.calibration.uri, "model": spec.model.uri})
            STATS.record_artifact(KIND, hit=False, on_volume=store.cache.used_bytes())
            if stored is None:
                ctx.log.warning("calibration: the model cache did not take the prepared samples (volume full or not writable); a retry reads the data again")
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
