"""save: the compressed checkpoint in ctx.workdir/checkpoint, complete enough to load and to audit.

    *.safetensors, config.json    compressed-tensors format (llm-compressor's save_pretrained wrapper), with
                                  the sparsity it no longer records (kompress_job.model.sparsity_metadata)
    tokenizer files, chat template
    recipe.yaml                   the llm-compressor recipe that ran, readable back with
                                  llmcompressor's Recipe.create_instance (upstream's own recipe.yaml
                                  carries a !!python/object/apply:torch.device tag that neither
                                  yaml.safe_load nor Recipe.create_instance can read; it is replaced)
    kompress-record.json          which module group got what: the resolved summary and every module's group
    the MTP layers                spec.recipe.mtp keep: copied byte for byte from the source into a shard of their
                                  own, in the index and quantization_config.ignore (kompress_job.model.mtp.carry)
    the model's own *.py files    when it needs trust_remote_code

Fills ctx.checkpoint_dir, ctx.checkpoint_bytes and ctx.mtp. With several devices the distributed ranks already
wrote the weights (ctx.checkpoint_dir is set); this stage adds the rest.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from kompress_job.model import sparsity_metadata
from kompress_job.context import RunContext

RECORD = "kompress-record.json"
RECIPE = "recipe.yaml"
# Files of the source model a checkpoint needs besides weights, config and tokenizer.
_CARRY_SUFFIXES = (".py", ".tiktoken", ".jinja")


def run(ctx: RunContext) -> None:
    out = ctx.checkpoint_dir or (ctx.workdir / "checkpoint")
    if ctx.checkpoint_dir is None:
        if out.exists():  # a retried pod: never mix shards of two attempts
            shutil.rmtree(out)
        ctx.progress.message("writing compressed safetensors")
        ctx.model.save_pretrained(str(out), save_compressed=True)
    total = sum(p.numel() for p in ctx.model.parameters())  # on the meta device too (distributed ranks saved)
    sparsity = sparsity_metadata.expected(ctx.recipe, total)
    if sparsity is not None and not sparsity_metadata.record(out / "config.json", sparsity):
        ctx.log.warning("the checkpoint is pruned but has no quantization_config to record it in", extra={"stage": "save"})
    ctx.tokenizer.save_pretrained(str(out))
    _carry_mtp(ctx, out)
    _carry_model_files(ctx.model_dir, out)
    (out / RECIPE).write_text(ctx.recipe.recipe_yaml())
    (out / RECORD).write_text(json.dumps(record(ctx), indent=1, sort_keys=False))
    ctx.checkpoint_dir = out
    ctx.checkpoint_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def _carry_mtp(ctx: RunContext, out: Path) -> None:
    from kompress_job.model.mtp import carry, layers

    source = Path(ctx.model_dir) if ctx.model_dir is not None else None
    if source is None or not (source / "config.json").is_file():
        return
    handling = ctx.job.spec.recipe.mtp
    declared = layers.declared(json.loads((source / "config.json").read_text()))
    if declared is not None and not declared.known:
        ctx.log.warning("save: config.json declares %d MTP layer(s) of model_type %s, whose layout Kompress does not know: not carried", declared.count, declared.model_type)
        declared = None
    if declared is not None and handling == carry.KEEP:
        ctx.progress.message("copying the multi-token-prediction layers unchanged")
    ctx.mtp = carry.apply(source, out, declared, handling)
    if ctx.mtp is not None:
        ctx.log.info("save: MTP layers %s: %d tensors, %.3f GB (%s)", handling, ctx.mtp.tensors, ctx.mtp.bytes / 1e9, declared.where(), extra={"stage": "save"})


def record(ctx: RunContext) -> dict[str, Any]:
    resolved = ctx.recipe
    return {
        "kompress_record": 1,
        "recipe": resolved.summary(),
        "modules": resolved.module_table(),
        "path": ctx.recipe_path,
        "versions": {name: _version(name) for name in ("kompress-job", "llmcompressor", "compressed-tensors", "transformers", "torch")},
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _carry_model_files(source: Path | None, out: Path) -> None:
    if source is None:
        return
    for path in Path(source).iterdir():
        if path.is_file() and path.suffix in _CARRY_SUFFIXES and not (out / path.name).exists():
            shutil.copy2(path, out / path.name)
