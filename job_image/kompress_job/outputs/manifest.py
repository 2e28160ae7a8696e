"""The manifest `kompress.json`: what a published prefix holds and how it was made, and the one way to read it.

Owns: its layout (format 2): source model and exact revision, preset and effective recipe,
per-group module counts, calibration actually used, the multi-token-prediction layers kept or dropped, library versions,
every file with its size and SHA-256, evaluation metrics, lm-eval task scores and gate outcome, stage timings, and (when
signed) `signature`: the signature file's name, method and public key hash (outputs/signing.record). Every key is
camelCase, at every depth (format 1 had the recipe summary's snake_case ones), except the keys of the maps keyed by a
name (NAME_KEYED: a config group, a package, a stage, a task, a module role), which are data. A prefix without this
file is never a finished model; it is written last (stages/publish.py). And `read`: a manifest of format 1 or 2 as
one typed view (`Manifest`), which every reader goes through; any other format is refused by name (ManifestError).
Must not: do I/O beyond reading installed package versions, or hold any secret (only the spec's
references and public facts go in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, NotRequired, TypedDict

from kompress_api.v1alpha1 import CompressionJob

KIND = "KompressManifest"
FORMAT = 2
READS = (1, 2)  # the formats `read` accepts
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
    """The manifest document (format 2). `files` are {path, size, sha256[, s3Checksum]} of everything published but itself;
    `recipe` the resolved recipe's summary (recipe_summary, in its own snake_case: camelCased here);
    `tasks` the lm-eval scores ({backend, ..., scores: [TaskScore wire]}: all of them, unlike metrics.tasks)."""
    created = (created_at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc: dict[str, Any] = {
        "kind": KIND,
        "format": FORMAT,
        "status": status,
        "createdAt": created,
        "job": {k: v for k, v in {"name": job.metadata.name, "namespace": job.metadata.namespace, "uid": job.metadata.uid}.items() if v},
        "source": _source(job, resolved_revision, source_bytes),
        "recipe": _recipe(job, recipe),
        "groups": group_module_counts(recipe),
        "calibration": _calibration(job, calibration_used),
        "evaluation": _evaluation(job, metrics, gate_failures, tasks),
        "checkpointBytes": sum(f["size"] for f in files),
        # The multi-token-prediction layers (kompress_job.model.mtp.carry.CarryResult.summary()): kept or dropped.
        "mtp": mtp,
        "files": sorted(files, key=lambda f: f["path"]),
        "libraries": libraries,
        "timings": dict(timings),
    }
    return camel_keys(doc)


def _source(job: CompressionJob, resolved_revision: str | None, source_bytes: int | None) -> dict[str, Any]:
    model = job.spec.model
    return {"uri": model.uri, "revision": model.revision, "resolvedRevision": resolved_revision, "bytes": source_bytes, "dtype": model.dtype}


def _recipe(job: CompressionJob, effective: dict[str, Any] | None) -> dict[str, Any]:
    spec = job.spec.recipe
    return {
        "preset": spec.preset.value if spec.preset else None,
        "overrides": spec.overrides.wire() if spec.overrides else None,
        "custom": spec.custom,
        "effective": effective,
    }


def _calibration(job: CompressionJob, used: dict[str, Any] | None) -> dict[str, Any]:
    """What the spec asked for, then what the calibration stage used (samples, heldOut, resolvedRevision)."""
    spec = job.spec.calibration
    return {
        "uri": spec.uri,
        "revision": spec.revision,
        "split": spec.split,
        "column": spec.column,
        "format": spec.format,
        "seed": spec.seed,
        "maxSequenceLength": spec.max_sequence_length,
        "requestedSamples": spec.samples,
        **(used or {}),
    }


def _evaluation(job: CompressionJob, metrics: dict[str, Any] | None, gate_failures: list[str], tasks: dict[str, Any] | None) -> dict[str, Any]:
    gate = job.spec.evaluation.gate
    return {
        "metrics": metrics,
        "gate": gate.wire() if gate else None,
        "gatePassed": (not gate_failures) if gate else None,
        "gateFailures": list(gate_failures),
        "tasks": tasks,
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Keys: camelCase, but a name keying a map is data
# ---------------------------------------------------------------------------------------------

# The maps whose keys are names, not fields: a config group, a package, a stage (fetch-model), an lm-eval task, a
# module role (dense_mlp). Their keys stay as they are in every format. "*" is any list item or map entry.
NAME_KEYED: frozenset[tuple[str, ...]] = frozenset({
    ("groups",),
    ("libraries",),
    ("timings",),
    ("evaluation", "tasks", "samples"),
    ("recipe", "effective", "roles"),
    ("recipe", "effective", "roles", "*", "groups"),
    ("recipe", "effective", "groups", "*", "roles"),
})


def camel(key: str) -> str:
    """`kept_16bit` -> `kept16bit`, `of_parameters` -> `ofParameters`; a camelCase key as it is."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_keys(value: Any, path: tuple[str, ...] = ()) -> Any:
    """`value` (a manifest, or its part at `path`) with every field key camelCase; the keys of NAME_KEYED maps as they are."""
    if isinstance(value, dict):
        if path in NAME_KEYED:
            return {key: camel_keys(item, (*path, "*")) for key, item in value.items()}
        return {camel(key): camel_keys(item, (*path, camel(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [camel_keys(item, (*path, "*")) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# Reading: formats 1 and 2, one view
# ---------------------------------------------------------------------------------------------


class ManifestError(ValueError):
    """Not a manifest this reader can read; the message says why (its kind, a format it does not know, a bad part)."""


class FileEntry(TypedDict):
    path: str
    size: int
    sha256: str
    s3Checksum: NotRequired[str]  # S3's own checksum of the object, where the destination is S3
    ociLayer: NotRequired[str]  # the layer's digest, in an OCI image


class Source(TypedDict):
    uri: str | None
    revision: str | None
    resolvedRevision: str | None
    bytes: int | None
    dtype: str | None


class Kept16bit(TypedDict):
    modules: int
    parameters: int
    ofParameters: int


class EffectiveRecipe(TypedDict):
    """kompress_job.recipe's ResolvedRecipe.summary(), camelCase; None (or empty) for what a summary lacks."""

    source: str | None
    preset: str | None
    architecture: str | None
    modelType: str | None
    experts: int | None
    roles: dict[str, dict[str, Any]]  # role -> {modules, groups: {group: modules}}
    groups: list[dict[str, Any]]  # {name, scheme, weights, activations, sparsity, modules, parameters, roles, targets}
    kept16bit: Kept16bit | None
    fallbacks: list[dict[str, Any]]
    warnings: list[str]
    needsCalibration: bool | None
    servable: bool | None
    serving: str | None


class RecipeRecord(TypedDict):
    preset: str | None
    overrides: dict[str, Any] | None  # spec.recipe.overrides, wire form
    custom: str | None
    effective: EffectiveRecipe | None


class CalibrationRecord(TypedDict):
    uri: str | None
    revision: str | None
    split: str | None
    column: str | None
    format: str | None
    seed: int | None
    maxSequenceLength: int | None
    requestedSamples: int | None
    samples: int | None  # used
    heldOut: int | None
    resolvedRevision: str | None


class TasksRecord(TypedDict):
    backend: str | None
    secondsOriginal: float | None
    secondsCompressed: float | None
    samples: dict[str, int]  # task -> samples
    scores: list[dict[str, Any]]  # TaskScore wire, every one


class EvaluationRecord(TypedDict):
    metrics: dict[str, Any] | None  # EvaluationMetrics wire
    gate: dict[str, Any] | None  # QualityGate wire
    gatePassed: bool | None
    gateFailures: list[str]
    tasks: TasksRecord | None


class MtpRecord(TypedDict):
    handling: str | None
    layers: int | None
    tensors: int | None
    bytes: int | None
    shard: str | None


class SignatureRecord(TypedDict):
    path: str
    format: str | None
    library: str | None
    method: str | None
    covers: str | None
    publicKeySha256: str | None
    certificateSubject: str | None


class Manifest(TypedDict):
    """A manifest as every reader sees it (`read`): format 2's layout, whatever the format written (`format`)."""

    kind: str
    format: int  # as written
    status: str | None
    createdAt: str | None
    job: dict[str, str]  # name, namespace, uid (those known)
    source: Source
    recipe: RecipeRecord
    groups: dict[str, int]  # group -> modules
    calibration: CalibrationRecord
    evaluation: EvaluationRecord
    checkpointBytes: int | None
    mtp: MtpRecord | None
    files: list[FileEntry]
    libraries: dict[str, str]
    timings: dict[str, float]
    signature: SignatureRecord | None


def read(doc: Any) -> Manifest:
    """The view of manifest `doc` (parsed JSON) of format 1 or 2. Every field of the view's records is there (None
    when the document lacks it, an empty list or map for a collection); what else a part holds is kept. ManifestError
    when `doc` is not a manifest, is of another format, or its files are not a list of {path, size, sha256}."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ManifestError(f"not a Kompress manifest (kind {doc.get('kind') if isinstance(doc, dict) else None!r})")
    written = doc.get("format")
    if type(written) is not int or written not in READS:  # (True == 1, but is no format)
        raise ManifestError(f"a Kompress manifest of format {written!r}, which this reader does not know (it reads formats "
                            f"{', '.join(map(str, READS))}; a newer Kompress wrote it?)")
    if written == 1:
        doc = camel_keys(doc)  # format 1 differs from 2 only in its keys' case
    view: dict[str, Any] = _fill(Manifest, doc, "the manifest")
    view.update(
        job=dict(_part(doc, "job")),
        source=_fill(Source, doc.get("source"), "source"),
        recipe=_recipe_record(doc.get("recipe")),
        groups=dict(_part(doc, "groups")),
        calibration=_fill(CalibrationRecord, doc.get("calibration"), "calibration"),
        evaluation=_evaluation_record(doc.get("evaluation")),
        mtp=_fill(MtpRecord, doc["mtp"], "mtp") if doc.get("mtp") else None,
        files=_files(doc.get("files")),
        libraries=dict(_part(doc, "libraries")),
        timings=dict(_part(doc, "timings")),
        signature=_signature(doc.get("signature")),
    )
    return view  # type: ignore[return-value]


def _part(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise ManifestError(f"{key} is not an object")
    return value


def _fill(record: type, part: Any, where: str) -> dict[str, Any]:
    """`part` with every field of `record` (a TypedDict) there: None where it lacks one."""
    if part is None:
        part = {}
    if not isinstance(part, dict):
        raise ManifestError(f"{where} is not an object")
    return {**dict.fromkeys(record.__annotations__), **part}


def _recipe_record(part: Any) -> dict[str, Any]:
    recipe = _fill(RecipeRecord, part, "recipe")
    effective = recipe["effective"]
    if effective is not None:
        effective = _fill(EffectiveRecipe, effective, "recipe.effective")
        effective.update(
            roles=dict(effective["roles"] or {}),
            groups=[g for g in effective["groups"] or [] if isinstance(g, dict) and "name" in g],
            fallbacks=list(effective["fallbacks"] or []),
            warnings=list(effective["warnings"] or []),
            kept16bit=_kept(effective["kept16bit"]),
            servable=effective["servable"] if isinstance(effective["servable"], bool) else None,
        )
        recipe["effective"] = effective
    return recipe


def _kept(part: Any) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        return None
    return {key: value if isinstance(value := part.get(key), int) else 0 for key in Kept16bit.__annotations__}


def _evaluation_record(part: Any) -> dict[str, Any]:
    evaluation = _fill(EvaluationRecord, part, "evaluation")
    evaluation["gateFailures"] = list(evaluation["gateFailures"] or [])
    if evaluation["tasks"] is not None:
        tasks = _fill(TasksRecord, evaluation["tasks"], "evaluation.tasks")
        evaluation["tasks"] = {**tasks, "samples": dict(tasks["samples"] or {}), "scores": list(tasks["scores"] or [])}
    return evaluation


def _files(part: Any) -> list[dict[str, Any]]:
    if not isinstance(part, list):
        raise ManifestError("files is not a list")
    for i, entry in enumerate(part):
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool)):
            raise ManifestError(f"files[{i}] is not a {{path, size, sha256}}")
    return [dict(entry) for entry in part]


def _signature(part: Any) -> dict[str, Any] | None:
    if not part:
        return None
    signature = _fill(SignatureRecord, part, "signature")
    if not isinstance(signature["path"], str):
        raise ManifestError("signature.path is not a file name")
    return signature
