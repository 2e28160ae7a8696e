"""Stage fetch-model: the model's weights, config and tokenizer into scratch (or used in place on a volume).

Resumable: a re-run keeps complete, verified files and continues partial ones. Fills ctx.model_dir,
ctx.resolved_revision (Hub commit, S3 ETag digest) and ctx.source_bytes.
Must not: load the model.
"""

from __future__ import annotations

from kompress_api.v1alpha1 import model_uri_scheme

from kompress_job import sources
from kompress_job.context import RunContext


def run(ctx: RunContext) -> None:
    source = ctx.job.spec.model
    if model_uri_scheme(source.uri) == "hf" and ctx.resolved_revision:
        # The commit preflight (or the plan) resolved: the weights must be the ones that were planned for.
        source = source.model_copy(update={"revision": ctx.resolved_revision})
    ctx.progress.message(f"fetching {source.uri}")
    fetched = sources.fetch_model(source, ctx.workdir / "model", ctx.env, on_bytes=ctx.progress.transfer)
    ctx.model_dir = fetched.model_dir
    ctx.resolved_revision = fetched.resolved_revision or ctx.resolved_revision
    ctx.source_bytes = fetched.bytes
    in_place = model_uri_scheme(source.uri) == "file"
    reused = f", {fetched.reused_bytes / 1e9:.2f} GB of it kept from an earlier attempt" if fetched.reused_bytes and not in_place else ""
    ctx.log.info(
        "model %s: %d files, %.2f GB%s, revision %s",
        source.uri,
        len(fetched.files),
        fetched.bytes / 1e9,
        reused,
        ctx.resolved_revision or "(a local folder has none)",
    )
