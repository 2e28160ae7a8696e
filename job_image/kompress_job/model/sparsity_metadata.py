"""The sparsity a checkpoint's config.json records, so a reader can tell the checkpoint is pruned.

compressed-tensors 0.19 writes `quantization_config.sparsity_config: {}` whatever the model holds ("sparsity is
removed for now" in ModelCompressor.update_config; llm-compressor 0.14 no longer passes a sparsity config, and
its `get_model_compressor(sparsity_config=...)` only warns "no longer supported"). The 2:4 zeros are in the dense
weights, but nothing in config.json says so. This module fills it in with compressed-tensors' own
`SparsityCompressionConfig` (registered format `dense`: the zeros are stored, there is no sparse storage format
any more), from the resolved recipe: `sparsity_structure` ("2:4", or "unstructured"), `targets` (`re:` patterns
matching exactly the pruned modules), `ignore` (none: the targets are exact), `global_sparsity` (the share of the
model's parameters the recipe sets to zero).

    expected(resolved, total_parameters)   the sparsity_config dict, or None when nothing is pruned
    record(config_path, expected)          write it into config.json's quantization_config
    check(config, resolved)                what is wrong with a saved config.json's record (for verify)
Must not: read weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kompress_job.recipe.patterns import exact_patterns
from kompress_job.recipe.resolved import ResolvedRecipe


def _pruned(resolved: ResolvedRecipe) -> dict[str, str]:
    return {name: a.sparsity for name, a in resolved.assignment.items() if a.sparsity}


def _structure(sparsities: set[str]) -> str:
    """One structure for the checkpoint (compressed-tensors records one): n:m when every pruned module has it."""
    masks = {s for s in sparsities if ":" in s}
    return masks.pop() if len(masks) == 1 and masks == sparsities else "unstructured"


def _zero_share(sparsity: str) -> float:
    """'2:4' -> 0.5; '0.6 unstructured' -> 0.6 (recipe.custom's notation)."""
    if ":" in sparsity:
        n, m = (int(x) for x in sparsity.split(":"))
        return n / m
    return float(sparsity.split()[0])


def structure_and_targets(resolved: ResolvedRecipe) -> tuple[str, list[str]] | None:
    pruned = _pruned(resolved)
    if not pruned:
        return None
    return _structure(set(pruned.values())), exact_patterns(sorted(pruned), resolved.inventory.name_index)


def expected(resolved: ResolvedRecipe, total_parameters: int) -> dict[str, Any] | None:
    shape = structure_and_targets(resolved)
    if shape is None:
        return None
    from compressed_tensors.config import CompressionFormat, SparsityCompressionConfig

    structure, targets = shape
    parameters = {m.name: m.parameters for m in resolved.inventory.modules}
    zeros = sum(parameters.get(name, 0) * _zero_share(s) for name, s in _pruned(resolved).items())
    config = SparsityCompressionConfig.load_from_registry(
        CompressionFormat.dense.value,
        targets=targets,
        ignore=[],
        global_sparsity=round(zeros / total_parameters, 4) if total_parameters else 0.0,
        sparsity_structure=structure,
    )
    return config.model_dump()


def record(config_path: Path, sparsity: dict[str, Any] | None) -> bool:
    """Put `sparsity` into config.json's quantization_config (written as compressed-tensors writes it). False when
    there is nothing to record, or no quantization_config to hold it (a sparse-only recipe: transformers has no
    other place for it)."""
    if sparsity is None:
        return False
    config = json.loads(config_path.read_text())
    quantization = config.get("quantization_config")
    if not isinstance(quantization, dict):
        return False
    quantization["sparsity_config"] = sparsity
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return True


def check(config: dict[str, Any], resolved: ResolvedRecipe) -> list[str]:
    """Failures of a saved config.json's sparsity record against the recipe."""
    quantization = config.get("quantization_config")
    if not isinstance(quantization, dict):
        return []
    recorded = quantization.get("sparsity_config") or {}
    shape = structure_and_targets(resolved)
    if shape is None:
        return ["config.json records sparsity, but the recipe pruned nothing"] if recorded.get("targets") else []
    structure, targets = shape
    failures = []
    if recorded.get("sparsity_structure") != structure or recorded.get("targets") != targets:
        failures.append(f"config.json's sparsity_config does not record the {structure} sparsity of {len(_pruned(resolved))} pruned modules")
    if not 0 < float(recorded.get("global_sparsity") or 0) <= 1:
        failures.append("config.json's sparsity_config has no global_sparsity")
    return failures
