"""load-model: the model to compress, from ctx.model_dir, in the dtype the spec asks for.

The data-free path (kompress_job.model.data_free: spec.recipe.path, auto for a recipe that learns nothing) builds only
the structure on the meta device, for the resolver: the compress stage rewrites the safetensors files one by one.
Otherwise, one accelerator or none: the whole model is loaded into host memory here (llm-compressor onloads one
layer at a time to the GPU), MoE experts as per-expert Linear layers. Several accelerators: only the
structure is built, on the meta device (the resolver needs no weights); each DDP rank of the compress
stage loads the weights itself (kompress_job.model.distributed), so the parent never holds a copy.
The recipe is the plan stage's resolution (ctx.recipe); only when no plan stage ran (a harness that starts here) is
it resolved here, on the structure, before any weight is read.
Fills ctx.model, ctx.tokenizer, ctx.recipe_path (and ctx.recipe when no plan stage ran).
"""

from __future__ import annotations

from kompress_job.model import data_free, modelio
from kompress_job.context import RunContext
from kompress_job.planning import kernels
from kompress_job.recipe import resolve


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec.model
    folder = modelio.check_model_dir(ctx.model_dir)
    if ctx.tokenizer is None:
        ctx.tokenizer = modelio.load_tokenizer(folder, trust_remote_code=spec.trust_remote_code)
    structure = modelio.meta_model(folder, trust_remote_code=spec.trust_remote_code)
    if ctx.recipe is None:
        ctx.recipe = resolve(ctx.job.spec.recipe, structure, parallelism=kernels.target_of(ctx.job).parallelism)
    ctx.recipe_path = data_free.choose_path(ctx.job.spec.recipe.path, ctx.recipe)
    ctx.log.info("recipe path: %s", ctx.recipe_path, extra={"stage": "load-model"})
    if ctx.recipe_path == data_free.DATA_FREE:
        ctx.progress.message("data-free recipe: the model's structure only (the weights are rewritten file by file)")
        ctx.model = structure
        return
    if ctx.devices > 1:
        ctx.progress.message(f"building the model's structure (weights are loaded by each of {ctx.devices} ranks)")
        ctx.model = structure
        return
    ctx.progress.message(f"loading {folder.name} ({spec.dtype})")
    ctx.model = modelio.load_causal_lm(folder, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code)
