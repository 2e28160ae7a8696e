"""The plan: what a CompressionJob will do and cost, from the model's config.json alone, before any GPU.

    make_plan(job, config)            config.json (parsed) -> Plan: the recipe resolved exactly as the worker will
                                      resolve it (on the meta device), every group with its scheme, size and
                                      parameters, the checkpoint's size, memory, disk, time, problems with fixes
    read_config(path)                 a local config.json (or the folder holding one), or ModelNotFound
    fetch_weight_names(job, env, dest) the source's tensor names from its safetensors index (which MTP layers it
                                      holds); local_weight_names(path) for a config.json on disk
    fetch_config(job, env, dest)      config.json from spec.model.uri with the job's credentials (nothing else is
                                      downloaded), and the Hub revision it came from
    Plan.summary()                    the PlanSummary the operator stores in status.plan
    Plan.to_json()                    everything, for `kompress plan --json`

This module is the front door (every name above is importable from here) and owns the assembly: the meta model,
the resolved recipe, the checkpoint's contents, the workload the footprint sizes, then the Plan. The pieces live
beside it in kompress_job.planning: the record in plan_types, the checks in checks, config.json in config_source,
quantities in quantities, and model, checkpoint, footprint, serving, kernels, mtp, problems; the text report in
kompress_job.planning.report. `kompress plan`, the planning pod and the worker's plan stage all call make_plan,
so a plan made on a laptop is the plan the cluster makes.
Must not: read weights, or import llm-compressor for a preset (custom recipes are parsed by it), or import torch
at module level (the worker's stages import this module before any stage runs).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kompress_api.v1alpha1 import CompressionJob, CompressionJobSpec, model_uri_scheme

from kompress_job import collector

from kompress_job.model import disk_offload, fidelity_cost, task_scores
from kompress_job.errors import UnsupportedArchitecture, describe
from kompress_job.planning import checkpoint, checks, footprint, kernels, problems, serving
from kompress_job.planning import mtp as mtp_planning
from kompress_job.planning.checks import KEPT_SHARE_WARNING
from kompress_job.planning.config_source import fetch_config, fetch_weight_names, local_weight_names, read_config
from kompress_job.planning.model import config_dtype, dtype_bytes, load_dtype, meta_model, standard_names, ASSUMED_DTYPE
from kompress_job.planning.plan_types import GroupPlan, Plan
from kompress_job.planning.problems import Problem
from kompress_job.planning.quantities import parse_quantity
from kompress_job.recipe.resolved import ResolvedRecipe

if TYPE_CHECKING:
    from torch import nn

# Importable from here as before the split (tests, `kompress plan`, the cache view and the plan stage use them).
__all__ = [
    "KEPT_SHARE_WARNING",
    "GroupPlan",
    "Plan",
    "fetch_config",
    "fetch_weight_names",
    "local_weight_names",
    "make_plan",
    "parse_quantity",
    "read_config",
]


def make_plan(job: CompressionJob, config: Mapping[str, Any], *, devices: int | None = None, weight_names: list[str] | None = None) -> Plan:
    """Plan `job` for the model `config` (a parsed config.json). Raises UnsupportedArchitecture when transformers
    cannot build the model from it; everything about the recipe is reported as problems instead.
    `devices`: the accelerators the run will use (default spec.resources.gpus). `weight_names`: every tensor
    name of the source checkpoint (its safetensors index), which says whether it holds its MTP layers; None: unknown."""
    with collector.paused():  # ~1M short-lived objects and no cycles: see kompress_job.collector
        try:
            return _make_plan(job, config, devices, weight_names)
        except (KeyError, TypeError) as err:
            # A config.json transformers can build but whose figures the plan cannot read (a field missing, or
            # null): the model's, not a transient failure, so never a retry (and never a traceback for `kompress plan`).
            what = config.get("architectures") or config.get("model_type") or "this model"
            raise UnsupportedArchitecture(f"Kompress cannot plan {what} from its config.json: {describe(err)}") from None


def _make_plan(job: CompressionJob, config: Mapping[str, Any], devices: int | None, weight_names: list[str] | None) -> Plan:
    spec = job.spec
    devices = spec.resources.gpus if devices is None else devices
    meta = _load_meta_model(spec, config)
    target = kernels.target_of(job)
    resolved, found = _resolve_recipe(spec, meta.model, target)
    path = checks.recipe_path(spec.recipe.path, resolved, found)
    mtp = mtp_planning.plan_mtp(meta.config, spec.recipe.mtp, weight_names, _last_decoder_layer(meta.model, resolved), meta.source_dtype, meta.dtype)
    contents = _checkpoint_contents(meta, resolved, mtp)
    workload = _with_shm_sized(job, _workload(job, meta, resolved, contents.estimated_bytes, mtp, devices, path))
    foot = footprint.footprint(workload)
    per_tp = serving.misaligned(resolved) if resolved is not None else {}
    if resolved is not None:
        found += checks.recipe_problems(resolved, contents.groups, meta.total_parameters, meta.dtype, target, per_tp)
    found += checks.run_problems(job, mtp, meta.source_dtype, workload, foot)
    servable = serving.servable(resolved, found) if resolved is not None else None
    return Plan(
        job=job.metadata.name or "",
        model_uri=spec.model.uri,
        architecture=type(meta.model).__name__,
        model_type=str(meta.config.get("model_type", "")),
        dtype=meta.dtype,
        source_dtype=meta.source_dtype,
        recipe=f"preset {spec.recipe.preset.value}" if spec.recipe.preset else "custom",
        total_parameters=meta.total_parameters,
        groups=contents.groups,
        other_parameters=contents.other_parameters,
        other_bytes=contents.other_bytes,
        file_overhead_bytes=contents.file_overhead_bytes,
        estimated_checkpoint_bytes=contents.estimated_bytes,
        checkpoint_tensors=contents.tensors,
        checkpoint_shards=contents.shards,
        mtp=mtp,
        footprint=foot,
        devices=devices,
        shm_bytes=workload.shm_bytes,
        problems=problems.ordered(found),
        servable=servable,
        serving_target=target,
        serving_verdict=kernels.verdict(servable, target, found, len(per_tp.get(target.tensor_parallel, []))),
        serving=resolved.serving if resolved is not None else None,
        roles=resolved.role_table() if resolved is not None else {},
        tensor_parallel=serving.tensor_parallel_summary(per_tp),
        recipe_path=path,
        resolved=resolved,
        layout=contents.layout,
    )


@dataclass
class _MetaModel:
    """The model as the worker will load it, on the meta device, and the config.json it was built from."""

    model: nn.Module
    config: dict[str, Any]  # with the standard names (kompress_job.planning.model.standard_names)
    dtype: str  # the worker's load dtype
    source_dtype: str  # the checkpoint's own, as config.json states it (else ASSUMED_DTYPE)
    total_parameters: int


def _load_meta_model(spec: CompressionJobSpec, config: Mapping[str, Any]) -> _MetaModel:
    config = dict(config)
    dtype = load_dtype(spec.model.dtype, config)
    source_dtype = config_dtype(config) or ASSUMED_DTYPE
    model = meta_model(config, dtype, trust_remote_code=spec.model.trust_remote_code)
    config = standard_names(config, model)
    return _MetaModel(model, config, dtype, source_dtype, sum(p.numel() for p in model.parameters()))


def _resolve_recipe(spec: CompressionJobSpec, model: nn.Module, target: kernels.ServingTarget) -> tuple[ResolvedRecipe | None, list[Problem]]:
    """The recipe, resolved as the worker resolves it; a refusal that is the recipe's fault is an error of the plan."""
    from kompress_job.recipe import resolve

    try:
        return resolve(spec.recipe, model, parallelism=target.parallelism), []
    except checks.REFUSED as err:
        return None, [checks.refusal(err)]


@dataclass
class _CheckpointContents:
    """Every tensor of the checkpoint, by group; all zero (one shard, no estimate) when the recipe was refused."""

    groups: list[GroupPlan] = field(default_factory=list)
    other_parameters: int = 0  # embeddings, norms and buffers: no module group
    other_bytes: int = 0
    file_overhead_bytes: int = 0
    estimated_bytes: int | None = None
    tensors: int = 0
    shards: int = 1
    layout: checkpoint.CheckpointLayout | None = None


def _checkpoint_contents(meta: _MetaModel, resolved: ResolvedRecipe | None, mtp: mtp_planning.MtpPlan | None) -> _CheckpointContents:
    if resolved is None:
        return _CheckpointContents()
    layout = checkpoint.layout(meta.model, resolved, checkpoint.safetensors_dtype(meta.dtype))
    if mtp is not None:
        layout.add_shard(mtp.checkpoint_tensors, mtp_planning.GROUP)  # the MTP layers, kept, in a shard of their own
    by_group = layout.bytes_by_group()
    groups = [
        GroupPlan(g.name, g.scheme, g.sparsity, layout.formats.get(g.name, "dense"), len(g.modules), g.parameters, by_group.get(g.name, 0), dict(g.roles))
        for g in resolved.groups
    ]
    estimated = layout.file_bytes()
    return _CheckpointContents(
        groups=groups,
        other_parameters=meta.total_parameters - sum(g.parameters for g in groups),
        other_bytes=by_group.get(checkpoint.OTHER, 0),
        file_overhead_bytes=estimated - layout.tensor_bytes,
        estimated_bytes=estimated,
        tensors=len(layout.tensors),
        shards=layout.shards(),
        layout=layout,
    )


def _last_decoder_layer(model: nn.Module, resolved: ResolvedRecipe | None) -> nn.Module | None:
    if resolved is not None and resolved.inventory.layers:
        return model.get_submodule(resolved.inventory.layers[-1].name)
    layers = getattr(getattr(model, "model", None), "layers", None)  # the recipe was refused: transformers' usual place
    return layers[-1] if layers is not None and len(layers) else None


def _layer_cost(resolved: ResolvedRecipe, dtype: str) -> tuple[int, int, int]:
    """(weights, Hessians, widest activation) of the decoder layer with the most weights + Hessians."""
    kinds = resolved.modifier_kinds
    weights: dict[int, int] = defaultdict(int)
    hessians: dict[int, int] = defaultdict(int)
    widest: dict[int, int] = defaultdict(int)
    for m in resolved.inventory.modules:
        if m.layer is None:
            continue
        a = resolved.assignment[m.name]
        weights[m.layer] += m.parameters * dtype_bytes(dtype)
        if ("SparseGPTModifier" in kinds and a.sparsity) or ("GPTQModifier" in kinds and a.scheme is not None):
            hessians[m.layer] += m.in_features * m.in_features * 4
        widest[m.layer] = max(widest[m.layer], m.in_features, m.out_features)
    if not weights:
        return 0, 0, 0
    layer = max(weights, key=lambda i: weights[i] + hessians[i])
    return weights[layer], hessians[layer], widest[layer]


def _workload(job: CompressionJob, meta: _MetaModel, resolved: ResolvedRecipe | None, estimated: int | None, mtp: mtp_planning.MtpPlan | None, devices: int, path: str | None) -> footprint.Workload:
    """What the run will do, in the terms the footprint sizes it by (kompress_job.planning.footprint.Workload)."""
    spec = job.spec
    config, total, dtype, source_dtype = meta.config, meta.total_parameters, meta.dtype, meta.source_dtype
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    model_bytes = total * dtype_bytes(dtype)
    download = 0
    if model_uri_scheme(spec.model.uri) != "file":  # a volume is used in place
        download = total * dtype_bytes(source_dtype) + (mtp.download_bytes if mtp else 0)
    layer_bytes, hessian_bytes, widest = _layer_cost(resolved, dtype) if resolved is not None else (0, 0, int(text.get("hidden_size") or 0))
    evaluation = spec.evaluation
    calibrating = bool(resolved.needs_calibration) if resolved is not None else True
    evaluation_length = evaluation.sequence_length(spec.calibration.max_sequence_length)
    # The evaluation stages' own model of their cost (the batches they will really run), from config.json alone.
    # On the data-free path both models are disk-offloaded (kompress_job.model.disk_offload): weights come from scratch disk.
    bandwidth = {"weight_bandwidth": footprint.DISK_BYTES_PER_SECOND} if path == "data-free" else {}
    evaluation_cost = fidelity_cost.estimate(config, evaluation.samples, evaluation_length, dtype_bytes=dtype_bytes(dtype), **bandwidth) if evaluation.enabled else None
    return footprint.Workload(
        model_bytes=model_bytes,
        parameters=total,
        download_bytes=download,
        checkpoint_bytes=estimated if estimated is not None else model_bytes,
        hidden_size=int(text.get("hidden_size") or 0),
        vocab_size=int(text.get("vocab_size") or 0),
        layer_bytes=layer_bytes,
        layer_hessian_bytes=hessian_bytes,
        widest=widest,
        dtype_bytes=dtype_bytes(dtype),
        devices=devices,
        calibration_samples=spec.calibration.samples,
        calibration_length=spec.calibration.max_sequence_length,
        needs_calibration=calibrating,
        passes=resolved.passes if resolved is not None else [],
        awq=resolved is not None and "AWQModifier" in resolved.modifier_kinds,
        moe=resolved is not None and resolved.inventory.is_moe,
        evaluation_samples=evaluation.samples if evaluation.enabled else 0,
        evaluation_length=evaluation_length,
        evaluation_cost=evaluation_cost,
        data_free=path == "data-free",
        reloads_whole=path == "data-free" and not disk_offload.offloads_checkpoint(path, resolved),
        task_cost=task_scores.estimate(config, evaluation.tasks) if evaluation.enabled and evaluation.tasks else None,
        shm_bytes=parse_quantity(spec.resources.shm) if spec.resources.shm is not None else footprint.DEFAULT_SHM,
    )


def _with_shm_sized(job: CompressionJob, workload: footprint.Workload) -> footprint.Workload:
    if job.spec.resources.shm is None and workload.distributed:
        # Unset /dev/shm is sized like unset memory and scratch: to what the run needs. With several GPUs that is
        # the whole model (the ranks share it there), so nothing is offloaded to disk and re-read for every layer.
        return replace(workload, shm_bytes=workload.model_bytes + footprint.SHM_RESERVE)
    return workload
