"""Evaluation on the data-free path without the whole model in host memory: the original (for the baseline) and the
reloaded checkpoint (for verify and evaluate) keep most of their weights on scratch disk, and each module's are read
back for its own forward (compressed-tensors' offloading, the same that llm-compressor's sequential pipeline uses).

    offloads_original(path)              whether the baseline loads the original this way: on the data-free path
    offloads_checkpoint(path, resolved)  whether verify reloads the checkpoint this way: on the data-free path, unless
                                         it holds FP4 weights (compressed-tensors 0.19 cannot reload those offloaded:
                                         "Cannot copy out of meta tensor"), which are reloaded whole
    host_budget(model_dir)               the bytes of weights kept in host memory: the source's largest safetensors file,
                                         which the data-free conversion holds anyway, so the job's peak does not grow
    load(folder, offload_folder, ...)    the model so loaded (kompress_job.model.modelio.load_causal_lm, host_budget)

The outputs are those of the model loaded whole (tests compare the baseline records byte for byte); the cost is
reading the weights from disk once per batch, and scratch space for what compressed-tensors writes there (the
planner counts it).
Owns: when evaluation streams from disk, and its budget. Must not: run a forward pass (the fidelity modules do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kompress_job.model import modelio
from kompress_job.model.data_free import DATA_FREE
from kompress_job.recipe.resolved import ResolvedRecipe

ORIGINAL_FOLDER = "offload/original"
CHECKPOINT_FOLDER = "offload/checkpoint"


def offloads_original(path: str | None) -> bool:
    return path == DATA_FREE


def offloads_checkpoint(path: str | None, resolved: ResolvedRecipe | None) -> bool:
    return path == DATA_FREE and not (resolved is not None and holds_fp4(resolved))


def holds_fp4(resolved: ResolvedRecipe) -> bool:
    return any(a.scheme is not None and a.scheme.weights is not None and a.scheme.weights.fp4 for a in resolved.assignment.values())


def host_budget(model_dir: Path | str) -> int:
    files = list(Path(model_dir).glob("*.safetensors"))
    return max((f.stat().st_size for f in files), default=0)


def load(folder: Path | str, offload_folder: Path, *, budget: int, dtype: str = "auto", trust_remote_code: bool = False) -> Any:
    offload_folder.mkdir(parents=True, exist_ok=True)
    return modelio.load_causal_lm(folder, dtype=dtype, trust_remote_code=trust_remote_code, offloaded=True, offload_folder=offload_folder, host_budget=budget)
