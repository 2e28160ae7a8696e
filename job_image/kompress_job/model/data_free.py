"""The data-free path: a recipe whose schemes need no calibration, applied to the safetensors files one by one
with llm-compressor 0.14's `model_free_ptq`, never building the model.

    uses_data_free(recipe_spec, resolved)   which path a job takes (spec.recipe.path, else: data-free when it can)
    quantization_config(resolved, extra)    the compressed-tensors QuantizationConfig (as a dict) that does what the
                                            resolver planned: its config groups with their exact targets, and an
                                            ignore list of every module the plan keeps 16-bit
    apply(source, out, resolved, ...)       run model_free_ptq's steps (convert): each shard is read, its
                                            targeted 2-D weights quantized and compressed, and written; fused sets
                                            (q/k/v, gate/up) that share an FP4 global scale are read together even
                                            across shards

Host memory is bounded by the largest shard (plus its quantized copy) times the worker threads, not by the
model. Targets are the resolver's exact module regexes; tensors the model definition does not know but the
targets' patterns would match (a multi-token-prediction layer transformers drops) are kept out with
`extra_ignore` and taken out of the written files with `leave_out` (the compress stage passes the MTP layers,
which the save stage then carries or drops: kompress_job.model.mtp.carry).
Must not: import llm-compressor at module import, or build a model.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import RecipePath

from kompress_job.errors import InvalidSpec
from kompress_job.io.safetensors_files import read_header
from kompress_job.recipe.patterns import exact_patterns
from kompress_job.recipe.resolved import QUANTIZATION_MODIFIER, ResolvedRecipe

DATA_FREE = "data-free"
LOADED = "loaded"


def data_free_reason(resolved: ResolvedRecipe) -> str | None:
    """Why this recipe cannot run data-free (None when it can)."""
    if resolved.needs_calibration:
        return "it learns from calibration data (SparseGPT, AWQ, or calibrated activation scales)"
    others = resolved.modifier_kinds - {QUANTIZATION_MODIFIER}
    if others:
        return f"model_free_ptq applies quantization schemes only, and this recipe also runs {', '.join(sorted(others))}"
    if any(a.sparsity for a in resolved.assignment.values()):
        return "it prunes, which needs the loaded model"
    if not any(a.scheme is not None for a in resolved.assignment.values()):
        return "it quantizes nothing"
    return None


def choose_path(path: RecipePath, resolved: ResolvedRecipe) -> str:
    """The path a job takes: `auto` is data-free whenever the recipe allows it; an explicit data-free for a recipe
    that needs the model is refused (InvalidSpec, before any weights are read)."""
    reason = data_free_reason(resolved)
    if path is RecipePath.LOADED:
        return LOADED
    if path is RecipePath.DATA_FREE:
        if reason is not None:
            raise InvalidSpec(f"spec.recipe.path is data-free, but this recipe cannot run without the model: {reason}. Use path auto or loaded.")
        return DATA_FREE
    return LOADED if reason is not None else DATA_FREE


def ignore_list(resolved: ResolvedRecipe, extra_ignore: Iterable[str] = ()) -> list[str]:
    """Every 2-D weight module the plan keeps 16-bit (router, lm_head, whatever overrides.ignore named), as exact
    patterns, plus `extra_ignore` entries; norms are skipped by model_free_ptq itself. config.json carries the
    list, as llm-compressor's own save does, so vLLM knows these layers are not quantized."""
    kept = resolved.kept_modules
    return (exact_patterns(kept, resolved.inventory.name_index) if kept else []) + list(extra_ignore)


def quantization_config(resolved: ResolvedRecipe, extra_ignore: Iterable[str] = ()) -> dict[str, Any]:
    """compressed-tensors QuantizationConfig fields for model_free_ptq, from the resolved recipe's one
    QuantizationModifier (the same config groups the loaded path's oneshot gets)."""
    modifiers = [args for kind, args in resolved.recipe_modifiers() if kind == QUANTIZATION_MODIFIER]
    if len(modifiers) != 1:
        raise ValueError(f"a data-free recipe has one QuantizationModifier, this one has {len(modifiers)}")
    return {"config_groups": modifiers[0]["config_groups"], "ignore": ignore_list(resolved, extra_ignore)}


def apply(
    source: Path, out: Path, resolved: ResolvedRecipe, *, devices: int, workers: int = 1, extra_ignore: Iterable[str] = (), leave_out: Callable[[str], bool] | None = None
) -> None:
    """Write the compressed checkpoint of the model in `source` to `out`, shard by shard (model_free_ptq copies the
    config, tokenizer and other files, then rewrites config.json's quantization_config)."""
    from compressed_tensors.quantization import QuantizationConfig

    config = QuantizationConfig.model_validate(quantization_config(resolved, extra_ignore))
    import torch

    present = torch.cuda.device_count() if devices else 0
    device: list[str] | str = [f"cuda:{i}" for i in range(min(devices, present))] or "cpu"
    if out.exists():  # a retried pod: never mix shards of two attempts
        shutil.rmtree(out)
    convert(source, out, config, device=device, workers=max(1, workers))
    _drop_source_extras(out)
    _as_oneshot_writes(out / "config.json")
    if leave_out is not None:
        _leave_out(out, leave_out)


# llm-compressor's own estimate of a shard's peak memory when it cannot measure one: its tensors' bytes times this.
_MEMORY_PER_INPUT_BYTE = 2.5


def convert(source: Path, out: Path, config: Any, *, device: list[str] | str, workers: int) -> None:
    """model_free_ptq's steps, in its own functions, less two costs it has no use for here (same bytes written;
    tests/job/test_data_free.py compares the two):
    - its rehearsal of every shard on the meta device, which only estimates each shard's GPU memory for its
      scheduler (about 40 % of its wall time on a MoE with many small expert tensors): the estimate it falls back
      to without one, 2.5x the shard's tensors, is used instead;
    - the random initialisation of the throwaway nn.Linear it builds around each weight before copying the weight
      in (a quarter of the rest): transformers' no_init_weights, made for exactly this, skips it."""
    from compressed_tensors.entrypoints.convert import exec_jobs_dynamic
    from compressed_tensors.utils.safetensors_load import get_checkpoint_files, update_safetensors_index
    from llmcompressor.entrypoints import model_free
    from llmcompressor.entrypoints.model_free.save_utils import update_config
    from llmcompressor.entrypoints.model_free.validate import validate_config, validate_safetensors_index
    from transformers.initialization import no_init_weights

    files = get_checkpoint_files(str(source))
    config = validate_config(config, None, None)
    devices = model_free._resolve_devices(device)
    validate_safetensors_index(files, config)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():  # the config and tokenizer files, as model_free_ptq copies them
        if not name.endswith("safetensors"):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / name)
    jobs = model_free._build_jobs(files, str(out), config, None)
    estimates = [int(_MEMORY_PER_INPUT_BYTE * _tensor_bytes(weight_map)) for _, weight_map, _, _ in jobs]
    shards = [(lambda dev, fn=fn, wm=wm, path=path, convs=convs: fn(wm, path, convs, dev)) for fn, wm, path, convs in jobs]
    with no_init_weights():
        results = exec_jobs_dynamic(jobs=shards, devices=devices, max_workers=workers, memory_estimates=estimates, desc="Quantizing")
    weight_map = {name: file for _, written in results for name, file in written.items()}
    update_config(str(out), config, None)
    update_safetensors_index(str(out), sum(size for size, _ in results), weight_map)


def _tensor_bytes(weight_map: dict[str, list[str] | None]) -> int:
    """The bytes of the tensors a shard's job reads (all of a file's when its list is empty), from the headers."""
    total = 0
    for path, names in weight_map.items():
        header = read_header(Path(path))
        header.pop("__metadata__", None)
        for name in names or header:
            start, end = header[name]["data_offsets"]
            total += end - start
    return total


# What a checkpoint folder keeps of the files model_free_ptq copies from the source; the save stage adds the
# tokenizer, the recipe and Kompress's record, as on the loaded path. The rest (the source's README, datasets,
# *.bin/*.pth weights it cannot process, which it copies unquantized) is not part of the compressed model.
_KEEP_NAMES = {"config.json", "generation_config.json", "model.safetensors.index.json"}
_KEEP_SUFFIXES = (".safetensors", ".py", ".tiktoken", ".jinja")


def _as_oneshot_writes(config_path: Path) -> None:
    """quantization_config as llm-compressor's save writes it: with its (empty) sparsity_config, which
    model_free_ptq leaves out; readers (vLLM, kompress_job.model.sparsity_metadata) then see one layout."""
    import json

    config = json.loads(config_path.read_text())
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict) and "sparsity_config" not in quantization:
        quantization["sparsity_config"] = {}
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def _leave_out(out: Path, unwanted: Callable[[str], bool]) -> None:
    """Take tensors out of the written shards, one shard in memory at a time: model_free_ptq writes every tensor of
    every source file, and the save stage carries the MTP layers itself (byte for byte, in a shard of their own)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    index_path = out / "model.safetensors.index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else None
    for path in sorted(out.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            if not any(unwanted(n) for n in names):
                continue
            kept = {n: handle.get_tensor(n) for n in names if not unwanted(n)}
        save_file(kept, str(path), metadata={"format": "pt"})
        if index is not None:
            index["weight_map"] = {n: f for n, f in index["weight_map"].items() if not unwanted(n)}
    if index is not None:
        index["metadata"]["total_size"] = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True))


def _drop_source_extras(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file() and path.name not in _KEEP_NAMES and not path.name.endswith(_KEEP_SUFFIXES):
            path.unlink()
