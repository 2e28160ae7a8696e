"""The worker's lifecycle: plain stages, in order, over one progress reporter.

    preflight    parse the job, check the destination (exists? credentials?) before any work
    plan         config.json only: resolve the recipe, refuse on errors (kompress_job.planning.plan)
    fetch-model  Hub / S3 / volume -> scratch, resumable, verified
    calibration  data -> tokenized calibration rows + held-out evaluation rows
    load-model   weights into host RAM (llm-compressor onloads one layer at a time)
    baseline     the original's loss and next-token distributions on held-out rows
    compress     llm-compressor oneshot with the resolved recipe (DDP over >1 GPU)
    save         compressed-tensors checkpoint, tokenizer, readable recipe, group record
    verify       reload as users do; every module has what the recipe said
    evaluate     compare with the baseline; apply the quality gate
    publish      upload with checksums, manifest last (or to the rejected prefix)

Each stage module exposes `run(ctx) -> None` and fills its fields of RunContext; FUNCTIONS lists them, in the
order of the stage table (kompress_api.stages). No stage module imports torch or llm-compressor until its
stage runs, so importing the pipeline costs nothing (and `kompress plan`, which never imports it, never pays
for llm-compressor either).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kompress_api.exit_codes import ExitCode
from kompress_api.v1alpha1 import CompressionJob, MtpResult
from kompress_api.worker_protocol import STAGE_NAMES, WorkerResult, stage_names

from kompress_job.context import RunContext
from kompress_job.errors import KompressError, describe
from kompress_job.stages import baseline, calibration, compress, evaluate, fetch_model, load_model, plan, preflight, publish, save, verify

StageFunction = Callable[[RunContext], None]

# The stages in order, from the one table the operator and the progress reporter read too (kompress_api.stages).
STAGES: list[str] = list(STAGE_NAMES)

# What each stage of the table runs (tests/api/test_stage_table.py: exactly the table's stages, in its order).
FUNCTIONS: dict[str, StageFunction] = {
    "preflight": preflight.run,
    "plan": plan.run,
    "fetch-model": fetch_model.run,
    "calibration": calibration.run,
    "load-model": load_model.run,
    "baseline": baseline.run,
    "compress": compress.run,
    "save": save.run,
    "verify": verify.run,
    "evaluate": evaluate.run,
    "publish": publish.run,
}


def stage_function(name: str) -> StageFunction:
    """The function of stage `name` (the default `resolve` of run: harnesses pass their own for stand-ins)."""
    return FUNCTIONS[name]


def stages_for(job: CompressionJob) -> list[str]:
    """The stages `job` runs: without evaluation there is no baseline to record or compare."""
    return stage_names(evaluation=job.spec.evaluation.enabled)


def run(ctx: RunContext, resolve: Callable[[str], StageFunction] = stage_function) -> WorkerResult:
    """Run every stage; turn the outcome into the result the operator reads.

    `resolve` maps a stage name to its function (tests pass stand-ins for stages they don't exercise).
    """
    current = None
    try:
        for name in ctx.progress.stages:
            current = name
            started = time.monotonic()
            with ctx.progress.stage(name):
                ctx.log.info("stage %s: start", name, extra={"stage": name})
                resolve(name)(ctx)
            ctx.timings[name] = round(time.monotonic() - started, 3)
            ctx.log.info("stage %s: done in %.1fs", name, ctx.timings[name], extra={"stage": name})
    except KompressError as err:
        err.stage = err.stage or current
        ctx.log.error("stage %s failed: %s: %s", err.stage, err.reason, err.message, extra={"stage": err.stage})
        return result_of(ctx, err.exit, err.message, stage=err.stage)
    except Exception as err:  # noqa: BLE001 - anything unexpected is an internal, retriable failure
        ctx.log.exception("stage %s failed unexpectedly", current, extra={"stage": current})
        return result_of(ctx, ExitCode.INTERNAL, describe(err), stage=current)
    ctx.progress.finish()
    exact = ctx.destination is not None and ctx.destination.kind not in ("s3", "file")  # a commit or a digest says more than the URI
    reference = ctx.destination.reference if exact else ctx.output_uri
    return result_of(ctx, ExitCode.OK, f"published to {reference}")


def result_of(ctx: RunContext, exit_code: ExitCode, message: str, *, stage: str | None = None) -> WorkerResult:
    bf16_bytes = ctx.plan.bf16_bytes if ctx.plan is not None else None
    ratio = round(bf16_bytes / ctx.checkpoint_bytes, 3) if bf16_bytes and ctx.checkpoint_bytes else None
    return WorkerResult(
        ok=exit_code is ExitCode.OK,
        exit_code=exit_code.code,
        reason=exit_code.reason,
        message=message,
        stage=stage,
        output_uri=ctx.output_uri,
        destination=ctx.destination,
        manifest_uri=ctx.manifest_uri,
        rejected_uri=ctx.rejected_uri,
        resolved_revision=ctx.resolved_revision,
        checkpoint_bytes=ctx.checkpoint_bytes,
        original_bytes=ctx.source_bytes,
        compression_ratio=ratio,
        metrics=ctx.metrics,
        mtp=MtpResult(handling=ctx.mtp.handling, layers=ctx.mtp.layers, tensors=ctx.mtp.tensors, bytes=ctx.mtp.bytes) if ctx.mtp is not None else None,
    )
