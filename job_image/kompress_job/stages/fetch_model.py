"""Stage fetch-model: the model's weights, config and tokenizer into scratch or the model cache (or used in place
on a volume).

Resumable: a re-run keeps complete, verified files and continues partial ones. With a model cache mounted
($KOMPRESS_CACHE_DIR, kompress_job.io.cache) the files go to the cache entry of this exact model version, shared
with every other job, and the entry stays marked in use until the worker ends. Fills ctx.model_dir,
ctx.resolved_revision (Hub commit, S3 ETag digest) and ctx.source_bytes.
Must not: load the model.
"""

from __future__ import annotations

from kompress_api.v1alpha1 import model_uri_scheme

from kompress_job.io import sources
from kompress_job.io.cache.fetch import cache_for, fetch_cached
from kompress_job.context import RunContext


def run(ctx: RunContext) -> None:
    source = ctx.job.spec.model
    if model_uri_scheme(source.uri) == "hf" and ctx.resolved_revision:
        # The commit preflight (or the plan) resolved: the weights must be the ones that were planned for.
        source = source.model_copy(update={"revision": ctx.resolved_revision})
    ctx.progress.message(f"fetching {source.uri}")
    cache = cache_for(ctx.job, ctx.env)
    if cache is not None:
        def waiting(holder: str | None) -> None:
            ctx.progress.message(f"waiting for {holder or 'another job'} to finish fetching {source.uri} into the model cache")
            ctx.log.info("model cache: %s is being fetched by %s; waiting, then reading what it verified", source.uri, holder or "another job")

        through = fetch_cached(source, cache, ctx.env, on_bytes=ctx.progress.transfer, on_wait=waiting)
        ctx.cache_use = through.use
        fetched = through.fetched
        ctx.log.info("model cache: %d of %d bytes were cached (%d of %d files), entry %s", through.before.cached, through.before.total, through.before.files_cached, through.before.files, fetched.model_dir)
    else:
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
