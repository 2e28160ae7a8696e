"""verify: load the saved checkpoint back the way users will and check it against the resolved recipe
(kompress_job.model.verification says what is checked), and the source's multi-token-prediction tensors: all there
and byte-identical when kept, none when dropped (kompress_job.model.mtp.carry.check). Any mismatch fails the job with VerificationFailed:
a checkpoint that is not what the recipe said is never published.

On the data-free path without evaluation nothing needs the model in memory, so nothing loads it: the files are
checked tensor by tensor and config.json against the plan (verification.verify_streamed; no forward pass).
Otherwise the compressed in-memory model is released first (a second copy of a 100 B model does not fit), and the
reloaded one is left in ctx.model for the evaluation stage; on the data-free path it is reloaded with its weights
left on scratch disk (kompress_job.model.disk_offload), except FP4 checkpoints, which compressed-tensors can only
reload whole. Fills ctx.verification (JSON-able dict).
"""

from __future__ import annotations

import gc

from pathlib import Path

from kompress_job.model import data_free, disk_offload, modelio
from kompress_job.context import RunContext
from kompress_job.errors import VerificationFailed
from kompress_job.model.verification import failure_message, verify_checkpoint, verify_streamed


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec.model
    ctx.model = None
    gc.collect()
    if ctx.recipe_path == data_free.DATA_FREE and not ctx.job.spec.evaluation.enabled:
        ctx.progress.message("checking the files tensor by tensor (data-free path: the model is never loaded)")
        report, model = verify_streamed(ctx.checkpoint_dir, ctx.recipe), None
    else:
        ctx.progress.message("reloading the checkpoint as users load it")

        def load(folder):
            if disk_offload.offloads_checkpoint(ctx.recipe_path, ctx.recipe):
                budget = disk_offload.host_budget(ctx.model_dir)
                return disk_offload.load(folder, ctx.workdir / disk_offload.CHECKPOINT_FOLDER, budget=budget, trust_remote_code=spec.trust_remote_code)
            return modelio.load_causal_lm(folder, dtype="auto", trust_remote_code=spec.trust_remote_code)

        report, model = verify_checkpoint(ctx.checkpoint_dir, ctx.recipe, load=load, tokenizer=ctx.tokenizer)
    _check_mtp(ctx, report)
    ctx.verification = report.summary()
    for failure in report.failures[:50]:
        ctx.log.error("verify: %s", failure, extra={"stage": "verify"})
    if not report.ok:
        raise VerificationFailed(failure_message(report))
    ctx.model = model


def _check_mtp(ctx: RunContext, report) -> None:  # noqa: ANN001
    """Every MTP tensor of the source in the checkpoint, byte-identical and ignored by quantization (keep), or none (drop)."""
    import json

    from kompress_job.model.mtp import carry, layers

    if ctx.mtp is None or ctx.model_dir is None:
        return
    declared = layers.declared(json.loads((Path(ctx.model_dir) / "config.json").read_text()))
    report.failures += carry.check(Path(ctx.model_dir), Path(ctx.checkpoint_dir), declared, ctx.mtp.handling)
    report.mtp_tensors_checked = ctx.mtp.tensors
