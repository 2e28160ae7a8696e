"""The manifest `kompress.json`: what a published prefix holds and how it was made.

Owns: its layout (format 1): source model and exact revision, preset and effective recipe,
per-group module counts, calibration actually used, the multi-token-prediction layers kept or dropped, library versions,
every file with its size and SHA-256, evaluation metrics, lm-eval task scores and gate outcome, stage timings, and (when
signed) `signature`: the signature file's name, method and public key hash (outputs/signing.record). A prefix without this file is
never a finished model; it is written last (stages/publish.py).
Must not: do I/O beyond reading installed package versions, or hold any secret (only the spec's
references and public facts go in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from kompress_api.v1alpha1 import CompressionJob

FORMAT = 1
LIBRARIES = [
    "kompress-job",
    "kompress-api",
    "llmcompressor",
    "compressed-tensors",
    "transformers",
    "torch",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "safetensors",
    "lm_eval",
]


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def recipe_summary(recipe: Any) -> dict[str, Any] | None:
    """The resolved recipe's own summary (`ctx.recipe.summary()`), as JSON-able data."""
    if recipe is None:
        return None
    summary = recipe.summary() if hasattr(recipe, "summary") else recipe
    return json.loads(json.dumps(summary, default=str))


def group_module_counts(summary: dict[str, Any] | None) -> dict[str, int] | None:
    """Modules per config group, from a recipe summary's `groups` (a list of {name, modules} or a mapping)."""
    if not summary:
        return None
    groups = summary.get("groups")
    if groups is None:
        return None

    def count(value: Any) -> int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)):
            return len(value)
        if isinstance(value, dict):
            for key in ("module_count", "modules", "count"):
                if key in value:
                    return count(value[key])
        return None

    if isinstance(groups, dict):
        pairs = groups.items()
    else:
        pairs = ((g.get("name", f"group_{i}"), g) for i, g in enumerate(groups) if isinstance(g, dict))
    counts = {str(name): n for name, value in pairs if (n := count(value)) is not None}
    return counts or None


def build_manifest(
    job: CompressionJob,
    *,
    status: str,
    resolved_revision: str | None,
    source_bytes: int | None,
    files: list[dict[str, Any]],
    recipe: dict[str, Any] | None,
    calibration_used: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
    gate_failures: list[str],
    tasks: dict[str, Any] | None = None,
    timings: dict[str, float],
    libraries: dict[str, str],
    mtp: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The manifest document. `files` are {path, size, sha256[, s3Checksum]} of everything published but itself;
    `tasks` the lm-eval scores ({backend, ..., scores: [TaskScore wire]}: all of them, unlike metrics.tasks)."""
    spec = job.spec
    created = (created_at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    checkpoint_bytes = sum(f["size"] for f in files)
    doc: dict[str, Any] = {
        "kind": "KompressManifest",
        "format": FORMAT,
        "status": status,
        "createdAt": created,
        "job": {k: v for k, v in {"name": job.metadata.name, "namespace": job.metadata.namespace, "uid": job.metadata.uid}.items() if v},
        "source": {
            "uri": spec.model.uri,
            "revision": spec.model.revision,
            "resolvedRevision": resolved_revision,
            "bytes": source_bytes,
            "dtype": spec.model.dtype,
        },
        "recipe": {
            "preset": spec.recipe.preset.value if spec.recipe.preset else None,
            "overrides": spec.recipe.overrides.wire() if spec.recipe.overrides else None,
            "custom": spec.recipe.custom,
            "effective": recipe,
        },
        "groups": group_module_counts(recipe),
        "calibration": {
            "uri": spec.calibration.uri,
            "revision": spec.calibration.revision,
            "split": spec.calibration.split,
            "column": spec.calibration.column,
            "format": spec.calibration.format,
            "seed": spec.calibration.seed,
            "maxSequenceLength": spec.calibration.max_sequence_length,
            "requestedSamples": spec.calibration.samples,
            **(calibration_used or {}),
        },
        "evaluation": {
            "metrics": metrics,
            "gate": spec.evaluation.gate.wire() if spec.evaluation.gate else None,
            "gatePassed": (not gate_failures) if spec.evaluation.gate else None,
            "gateFailures": list(gate_failures),
            "tasks": tasks,
        },
        "checkpointBytes": checkpoint_bytes,
        # The multi-token-prediction layers (kompress_job.model.mtp.carry.CarryResult.summary()): kept or dropped.
        "mtp": mtp,
        "files": sorted(files, key=lambda f: f["path"]),
        "libraries": libraries,
        "timings": dict(timings),
    }
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
