"""load-model: the model to compress, from ctx.model_dir, in the dtype the spec asks for.

One accelerator or none: the whole model is loaded into host memory here (llm-compressor onloads one
layer at a time to the GPU), MoE experts as per-expert Linear layers. Several accelerators: only the
structure is built, on the meta device (the resolver needs no weights); each DDP rank of the compress
stage loads the weights itself (kompress_job.distributed), so the parent never holds a copy.
Fills ctx.model and ctx.tokenizer.
"""

from __future__ import annotations

from kompress_job import modelio
from kompress_job.context import RunContext


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec.model
    folder = modelio.check_model_dir(ctx.model_dir)
    if ctx.tokenizer is None:
        ctx.tokenizer = modelio.load_tokenizer(folder, trust_remote_code=spec.trust_remote_code)
    if ctx.devices > 1:
        ctx.progress.message(f"building the model's structure (weights are loaded by each of {ctx.devices} ranks)")
        ctx.model = modelio.meta_model(folder, trust_remote_code=spec.trust_remote_code)
        return
    ctx.progress.message(f"loading {folder.name} ({spec.dtype})")
    ctx.model = modelio.load_causal_lm(folder, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code)
