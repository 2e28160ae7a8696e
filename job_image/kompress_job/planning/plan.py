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

The pieces live in kompress_job.planning (model, checkpoint, footprint, serving, problems); the text report
in kompress_job.planning.report. `kompress plan`, the planning pod and the worker's plan stage all call
make_plan, so a plan made on a laptop is the plan the cluster makes.
Must not: read weights, or import llm-compressor for a preset (custom recipes are parsed by it).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kompress_api.exit_codes import ExitCode
from kompress_api.v1alpha1 import CompressionJob, PlanProblem, PlanSummary, RecipePath, model_uri_scheme

from kompress_job import collector

from kompress_job.model import fidelity_cost, task_scores
from kompress_job.errors import InvalidRecipe, InvalidSpec, ModelNotFound, OverlappingGroups, TargetsMatchNothing, UnsupportedArchitecture, describe
from kompress_job.planning import checkpoint as ckpt
from kompress_job.planning import destination
from kompress_job.planning import footprint as fp
from kompress_job.planning import problems as P
from kompress_job.planning import kernels, serving
from kompress_job.planning import mtp as mtp_planning
from kompress_job.planning.model import config_dtype, dtype_bytes, load_dtype, meta_model, standard_names, ASSUMED_DTYPE
from kompress_job.planning.problems import Problem, examples
from kompress_job.recipe.resolved import ResolvedRecipe
from kompress_job.recipe.presets import Fallback
from kompress_job.recipe.schemes import Scheme

if TYPE_CHECKING:
    from torch import nn

    from kompress_job.planning.cache import CacheView

# A share of the parameters kept 16-bit above which the plan says so (lm_head and routers alone are ~1 %).
KEPT_SHARE_WARNING = 0.10

# Resolver refusals that are the recipe's fault: they become plan errors (with their own exit code) and the resolver's message.
_REFUSALS = {
    TargetsMatchNothing: (P.TARGETS_MATCH_NOTHING, "change or remove the entries named, so that each matches at least one module"),
    OverlappingGroups: (P.OVERLAPPING_GROUPS, "narrow the config groups' targets, or add the modules to one group's ignore"),
    InvalidRecipe: (P.INVALID_RECIPE, "fix spec.recipe.custom as the message says"),
    UnsupportedArchitecture: (P.PRESET_DOES_NOT_APPLY, "a model without routed experts takes preset w4a16 or fp8-dynamic (or set spec.recipe.overrides.experts); a model whose decoder layers hold no Linear layers (GPT-2 style Conv1D) is not supported"),
}


@dataclass
class GroupPlan:
    """One module group: modules that get the same treatment, and what they cost in the checkpoint."""

    name: str
    scheme: Scheme | None
    sparsity: str | None
    format: str
    modules: int
    parameters: int
    estimated_bytes: int
    roles: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.scheme is None and self.sparsity is None

    def scheme_summary(self) -> dict[str, Any] | None:
        s = self.scheme
        if s is None:
            return None
        acts = s.activations
        return {
            "name": s.name,
            "bits": s.weights.bits,
            "type": s.weights.type,
            "strategy": s.weights.strategy,
            "group_size": s.weights.group_size,
            "symmetric": s.weights.symmetric,
            "activations": None if acts is None else {"bits": acts.bits, "type": acts.type, "strategy": acts.strategy, "dynamic": acts.dynamic},
        }

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modules": self.modules,
            "parameters": self.parameters,
            "scheme": self.scheme_summary(),
            "sparsity": self.sparsity,
            "format": self.format,
            "estimated_bytes": self.estimated_bytes,
            "roles": dict(sorted(self.roles.items())),
        }


@dataclass
class Plan:
    job: str
    model_uri: str
    architecture: str
    model_type: str
    dtype: str  # the worker's load dtype; also the dtype of everything the checkpoint keeps unquantized
    source_dtype: str
    recipe: str  # "preset <name>" or "custom"
    total_parameters: int
    groups: list[GroupPlan]
    other_parameters: int  # embeddings, norms and buffers: no module group
    other_bytes: int
    file_overhead_bytes: int  # safetensors headers and index
    estimated_checkpoint_bytes: int | None
    checkpoint_tensors: int
    checkpoint_shards: int
    mtp: mtp_planning.MtpPlan | None  # the multi-token-prediction layers config.json declares
    footprint: fp.Footprint
    devices: int
    shm_bytes: int  # /dev/shm the worker gets: spec.resources.shm, else what DDP needs, else the default
    problems: list[Problem]
    servable: bool | None
    serving: str | None
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> modules, parameters, groups
    tensor_parallel: dict[str, Any] = field(default_factory=dict)  # serving.tensor_parallel_summary
    serving_target: kernels.ServingTarget | None = None  # spec.serving with its defaults
    serving_verdict: str = ""  # "servable by vLLM at TP 4 on hopper", or why not
    recipe_path: str | None = None  # "data-free" or "loaded" (kompress_job.model.data_free.choose_path)
    resolved: ResolvedRecipe | None = None  # None when the recipe was refused
    layout: ckpt.CheckpointLayout | None = None  # every tensor the checkpoint will hold
    cache: CacheView | None = None  # what the model cache holds of this model (None without a cache)

    # -- figures -------------------------------------------------------------------------------------------
    @property
    def bf16_bytes(self) -> int:
        """The model in bf16 (as loaded, plus the MTP layers when the checkpoint carries them): what compression
        ratios compare to."""
        carried = self.mtp.parameters if self.mtp is not None and self.mtp.checkpoint_tensors else 0
        return (self.total_parameters + carried) * 2

    @property
    def compression_ratio(self) -> float | None:
        if not self.estimated_checkpoint_bytes:
            return None
        return round(self.bf16_bytes / self.estimated_checkpoint_bytes, 3)

    @property
    def kept_parameters(self) -> int:
        return sum(g.parameters for g in self.groups if g.kept)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def exit(self) -> ExitCode:
        """The exit code this plan ends with: OK without errors, else its errors' own (planning.problems.exit_for)."""
        return P.exit_for(self.errors) if self.errors else ExitCode.OK

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    def headline(self) -> str:
        """One line for logs and the termination message."""
        if self.errors:
            return f"plan rejected: {len(self.errors)} error(s): " + " ".join(f"{p.code}: {p.message}" for p in self.errors)
        size = f"checkpoint ≈ {_gb(self.estimated_checkpoint_bytes)} ({self.compression_ratio}x smaller than bf16)" if self.estimated_checkpoint_bytes else "no checkpoint estimate"
        f = self.footprint
        return f"{size}, host RAM {_gb(f.host_memory_bytes)}, GPU {_gb(f.gpu_memory_bytes)} per device, scratch {_gb(f.disk_bytes)}, {len(self.warnings)} warning(s)"

    # -- records -------------------------------------------------------------------------------------------
    def summary(self) -> PlanSummary:
        f = self.footprint
        return PlanSummary(
            total_parameters=self.total_parameters,
            estimated_checkpoint_bytes=self.estimated_checkpoint_bytes,
            compression_ratio=self.compression_ratio,
            host_memory_bytes=f.host_memory_bytes,
            gpu_memory_bytes=f.gpu_memory_bytes or None,
            disk_bytes=f.disk_bytes,
            # Only when the run needs a size of its own (several GPUs share the model there); else the operator's default.
            shm_bytes=self.shm_bytes if f.shm_needed_bytes else None,
            servable=self.servable,
            cache=self.cache.status() if self.cache is not None else None,
            problems=[PlanProblem(**p.summary()) for p in P.ordered(self.problems)],
        )

    def to_json(self) -> dict[str, Any]:
        f = self.footprint
        return {
            "job": self.job,
            "model": {"uri": self.model_uri, "architecture": self.architecture, "model_type": self.model_type, "dtype": self.dtype, "source_dtype": self.source_dtype},
            "recipe": self.recipe,
            "total_parameters": self.total_parameters,
            "bf16_bytes": self.bf16_bytes,
            "estimated_checkpoint_bytes": self.estimated_checkpoint_bytes,
            "compression_ratio": self.compression_ratio,
            "host_memory_bytes": f.host_memory_bytes,
            "gpu_memory_bytes": f.gpu_memory_bytes,
            "disk_bytes": f.disk_bytes,
            "shm_bytes": self.shm_bytes,
            "devices": self.devices,
            "servable": self.servable,
            "serving": self.serving,
            "serving_target": self.serving_target.summary() if self.serving_target else None,
            "serving_verdict": self.serving_verdict,
            "recipe_path": self.recipe_path,
            "groups": [g.summary() for g in self.groups],
            "roles": self.roles,
            "kept_16bit_parameters": self.kept_parameters,
            "other_tensors": {"parameters": self.other_parameters, "estimated_bytes": self.other_bytes, "what": "embeddings, norms and buffers (biases are in their module's group)"},
            "file_overhead_bytes": self.file_overhead_bytes,
            "checkpoint_tensors": self.checkpoint_tensors,
            "checkpoint_shards": self.checkpoint_shards,
            "mtp": self.mtp.summary() if self.mtp else None,
            "tensor_parallel": self.tensor_parallel,
            "cache": self.cache.summary() if self.cache is not None else None,
            "footprint": f.summary(),
            "problems": [p.summary() for p in P.ordered(self.problems)],
        }


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e9:.1f} GB"


# ---------------------------------------------------------------------------------------------------------------
# Making a plan
# ---------------------------------------------------------------------------------------------------------------


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
    from kompress_job.recipe import resolve

    # 1. The model as the worker will load it, on the meta device.
    spec = job.spec
    config = dict(config)
    dtype = load_dtype(spec.model.dtype, config)
    source_dtype = config_dtype(config) or ASSUMED_DTYPE
    devices = spec.resources.gpus if devices is None else devices
    model = meta_model(config, dtype, trust_remote_code=spec.model.trust_remote_code)
    config = standard_names(config, model)
    total = sum(p.numel() for p in model.parameters())
    problems: list[Problem] = []

    # 2. The recipe, resolved as the worker resolves it; its refusals become errors.
    resolved: ResolvedRecipe | None = None
    target = kernels.target_of(job)
    try:
        resolved = resolve(spec.recipe, model, parallelism=target.parallelism)
    except tuple(_REFUSALS) as err:  # type: ignore[misc]
        code, fix = next(v for k, v in _REFUSALS.items() if isinstance(err, k))
        problems.append(P.error(code, err.message, fix))
    path = _recipe_path(spec.recipe.path, resolved, problems)

    # 3. Every tensor of the checkpoint, by group (the MTP layers in a shard of their own when kept).
    mtp = mtp_planning.plan_mtp(config, spec.recipe.mtp, weight_names, _last_decoder_layer(model, resolved), source_dtype, dtype)
    groups: list[GroupPlan] = []
    other_parameters = other_bytes = overhead = tensors = 0
    shards = 1
    estimated = lay = None
    if resolved is not None:
        lay = ckpt.layout(model, resolved, ckpt.safetensors_dtype(dtype))
        if mtp is not None:
            lay.add_shard(mtp.checkpoint_tensors, mtp_planning.GROUP)
        by_group = lay.bytes_by_group()
        for g in resolved.groups:
            groups.append(GroupPlan(g.name, g.scheme, g.sparsity, lay.formats.get(g.name, "dense"), len(g.modules), g.parameters, by_group.get(g.name, 0), dict(g.roles)))
        other_bytes = by_group.get(ckpt.OTHER, 0)
        other_parameters = total - sum(g.parameters for g in groups)
        estimated = lay.file_bytes()
        overhead = estimated - lay.tensor_bytes
        tensors, shards = len(lay.tensors), lay.shards()

    # 4. Memory, disk and time; then every problem.
    workload = _workload(job, config, resolved, total, dtype, source_dtype, estimated, mtp, devices, path)
    if job.spec.resources.shm is None and workload.distributed:
        # Unset /dev/shm is sized like unset memory and scratch: to what the run needs. With several GPUs that is
        # the whole model (the ranks share it there), so nothing is offloaded to disk and re-read for every layer.
        workload = replace(workload, shm_bytes=workload.model_bytes + fp.SHM_RESERVE)
    foot = fp.footprint(workload)

    per_tp = serving.misaligned(resolved) if resolved is not None else {}
    if resolved is not None:
        problems += _fallback_problems(resolved)
        problems += [P.warning(P.RECIPE_NOTE, w) for w in resolved.warnings]
        problems += serving.check(resolved, per_tp)
        problems += kernels.check(resolved, target)
        problems += _kept_share(groups, total, dtype)
        problems += _nothing_compressed(resolved)
    problems += mtp_planning.problems(mtp, source_dtype)
    problems += _resource_problems(job, workload, foot)
    problems += destination.output_overlaps_model(spec)
    if workload.task_cost is not None and workload.task_cost.unknown:
        problems.append(P.warning(P.TASK_SIZE_UNKNOWN, f"the plan cannot tell what lm-eval task(s) {', '.join(workload.task_cost.unknown)} add: their size is known only once the worker reads them; the time estimate leaves them out", "set spec.evaluation.tasks[].limit to bound (and count) them"))

    return Plan(
        job=job.metadata.name or "",
        model_uri=spec.model.uri,
        architecture=type(model).__name__,
        model_type=str(config.get("model_type", "")),
        dtype=dtype,
        source_dtype=source_dtype,
        recipe=f"preset {spec.recipe.preset.value}" if spec.recipe.preset else "custom",
        total_parameters=total,
        groups=groups,
        other_parameters=other_parameters,
        other_bytes=other_bytes,
        file_overhead_bytes=overhead,
        estimated_checkpoint_bytes=estimated,
        checkpoint_tensors=tensors,
        checkpoint_shards=shards,
        mtp=mtp,
        footprint=foot,
        devices=devices,
        shm_bytes=workload.shm_bytes,
        problems=P.ordered(problems),
        servable=(servable := serving.servable(resolved, problems) if resolved is not None else None),
        serving_target=target,
        serving_verdict=kernels.verdict(servable, target, problems, len(per_tp.get(target.tensor_parallel, []))),
        serving=resolved.serving if resolved is not None else None,
        roles=resolved.role_table() if resolved is not None else {},
        tensor_parallel=serving.tensor_parallel_summary(per_tp),
        recipe_path=path,
        resolved=resolved,
        layout=lay,
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


def _workload(
    job: CompressionJob,
    config: Mapping[str, Any],
    resolved: ResolvedRecipe | None,
    total: int,
    dtype: str,
    source_dtype: str,
    estimated: int | None,
    mtp: mtp_planning.MtpPlan | None,
    devices: int,
    path: str | None,
) -> fp.Workload:
    spec = job.spec
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
    evaluation_cost = fidelity_cost.estimate(config, evaluation.samples, evaluation_length, dtype_bytes=dtype_bytes(dtype)) if evaluation.enabled else None
    return fp.Workload(
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
        task_cost=task_scores.estimate(config, evaluation.tasks) if evaluation.enabled and evaluation.tasks else None,
        shm_bytes=parse_quantity(spec.resources.shm) if spec.resources.shm is not None else fp.DEFAULT_SHM,
    )


# ---------------------------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------------------------


def _recipe_path(path: RecipePath, resolved: ResolvedRecipe | None, problems: list[Problem]) -> str | None:
    """The path the worker will take (kompress_job.model.data_free.choose_path); a data-free path the recipe cannot take
    is an error here, before any GPU is asked for."""
    from kompress_job.model import data_free

    if resolved is None:
        return None
    try:
        return data_free.choose_path(path, resolved)
    except InvalidSpec as err:
        problems.append(P.error(P.INVALID_RECIPE, err.message, "set spec.recipe.path to auto or loaded"))
        return None


def _fallback_problems(resolved: ResolvedRecipe) -> list[Problem]:
    grouped: dict[tuple[str, str, str], list[Fallback]] = defaultdict(list)
    for f in resolved.fallbacks:
        grouped[(f.requested, f.applied, f.reason)].append(f)
    out = []
    for (requested, applied, reason), items in grouped.items():
        names = [f.module for f in items]
        out.append(
            P.warning(
                P.GROUP_SIZE_FALLBACK,
                f"{examples(names, 2)}: {reason}; {requested} falls back to {applied}",
                f"nothing to do for compression (recorded in kompress-record.json); to keep them 16-bit instead: "
                f"spec.recipe.overrides.ignore: [{', '.join(names[:2])}{', ...' if len(names) > 2 else ''}]",
            )
        )
    return out


def _kept_share(groups: list[GroupPlan], total: int, dtype: str) -> list[Problem]:
    kept = [g for g in groups if g.kept]
    kept_params = sum(g.parameters for g in kept)
    if not total or kept_params / total <= KEPT_SHARE_WARNING:
        return []
    roles = defaultdict(int)
    for g in kept:
        for role, n in g.roles.items():
            roles[role] += n
    what = ", ".join(f"{role} ({n} modules)" for role, n in sorted(roles.items(), key=lambda kv: -kv[1])[:3])
    size = sum(g.estimated_bytes for g in kept)
    return [
        P.warning(
            P.LARGE_SHARE_KEPT_16BIT,
            f"{kept_params / 1e9:.2f} B parameters ({100 * kept_params / total:.0f} %) stay {dtype}: {size / 1e9:.1f} GB of the checkpoint. "
            f"Kept: {what}.",
            "if this is not intended, use a preset that quantizes them (w4a16-w8a8 gives gate_proj the scheme of up_proj)",
        )
    ]


def _nothing_compressed(resolved: ResolvedRecipe) -> list[Problem]:
    if any(a.scheme is not None or a.sparsity for a in resolved.assignment.values()):
        return []
    return [P.warning(P.NOTHING_COMPRESSED, "the recipe quantizes and prunes no module: the checkpoint will be the model as it is", "check the recipe's targets")]


def _resource_problems(job: CompressionJob, w: fp.Workload, f: fp.Footprint) -> list[Problem]:
    res = job.spec.resources
    out = []
    if res.memory is not None:
        limit = parse_quantity(res.memory)
        holds_model = not (w.data_free and not w.evaluation_samples)  # the streamed data-free run never holds it
        if holds_model and limit < w.model_bytes:
            out.append(
                P.error(
                    P.HOST_MEMORY_TOO_SMALL,
                    f"spec.resources.memory {res.memory} is less than the model itself ({_gb(w.model_bytes)} in host RAM: llm-compressor holds the whole model there)",
                    f"set spec.resources.memory to at least {_gi(f.host_memory_bytes)}, or leave it unset to use the plan's figure",
                )
            )
        elif limit < f.host_memory_bytes:
            out.append(
                P.warning(
                    P.HOST_MEMORY_BELOW_ESTIMATE,
                    f"spec.resources.memory {res.memory} is below the plan's host RAM estimate {_gb(f.host_memory_bytes)} (peak phase: "
                    f"{max(f.host_phases, key=f.host_phases.get)}): the worker may be OOMKilled hours in",
                    f"set spec.resources.memory to {_gi(f.host_memory_bytes)}, or leave it unset",
                )
            )
    if res.scratch is not None:
        limit = parse_quantity(res.scratch)
        needed = w.download_bytes + w.checkpoint_bytes
        if limit < needed:
            out.append(
                P.error(
                    P.SCRATCH_TOO_SMALL,
                    f"spec.resources.scratch {res.scratch} cannot hold the download and the checkpoint ({_gb(w.download_bytes)} + {_gb(w.checkpoint_bytes)})",
                    f"set spec.resources.scratch to at least {_gi(f.disk_bytes)}, or leave it unset",
                )
            )
        elif limit < f.disk_bytes:
            out.append(P.warning(P.SCRATCH_BELOW_ESTIMATE, f"spec.resources.scratch {res.scratch} is below the plan's estimate {_gb(f.disk_bytes)}", f"set spec.resources.scratch to {_gi(f.disk_bytes)}"))
    if w.distributed and f.offload_bytes > 0:
        configured = f"spec.resources.shm {res.shm}" if res.shm is not None else f"the default /dev/shm ({_gi(fp.DEFAULT_SHM)})"
        roomy = fp.footprint(replace(w, shm_bytes=f.shm_needed_bytes))
        out.append(
            P.warning(
                P.SHM_TOO_SMALL,
                f"with {w.devices} GPUs llm-compressor's distributed run keeps the model in /dev/shm, shared by the ranks; {configured} holds "
                f"only part of it, so {_gb(f.offload_bytes)} of weights go to scratch disk and are read back for every layer (slow; counted in the disk figure)",
                f"set spec.resources.shm to {_gi(f.shm_needed_bytes)}; /dev/shm is memory, so host RAM becomes {_gi(roomy.host_memory_bytes)} "
                f"(set spec.resources.memory to that) and scratch {_gi(roomy.disk_bytes)}",
            )
        )
    if w.devices == 0 and w.parameters > 2 * 10**9:
        out.append(
            P.warning(
                P.NO_GPU,
                f"spec.resources.gpus is 0: {w.parameters / 1e9:.1f} B parameters would be compressed on CPUs, which takes days or more",
                "set spec.resources.gpus (one GPU works; several run llm-compressor's distributed oneshot)",
            )
        )
    return out


def _gi(n: int) -> str:
    return f"{math.ceil(n / 2**30)}Gi"


_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][+-]?[0-9]+)?)([KMGTPE]i|[kMGTPE]|m)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(value: int | str) -> int:
    """A Kubernetes quantity (`256Gi`, `500G`, `1e12`, 1024) in bytes."""
    if isinstance(value, int):
        return value
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


# ---------------------------------------------------------------------------------------------------------------
# Getting config.json
# ---------------------------------------------------------------------------------------------------------------


def read_config(path: Path | str) -> dict[str, Any]:
    """A config.json (or a folder holding one) as a dict; ModelNotFound (exit 11) when it is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text()
    except OSError as err:
        raise ModelNotFound(f"cannot read the model's config {path}: {err.strerror or err}") from None
    try:
        config = json.loads(text)
    except ValueError as err:
        raise ModelNotFound(f"{path} is not JSON: {err}") from None
    if not isinstance(config, dict):
        raise ModelNotFound(f"{path} is not a model config (a JSON object)")
    return config


def fetch_weight_names(job: CompressionJob, env: Mapping[str, str], dest: Path, *, revision: str | None = None) -> list[str] | None:
    """The source checkpoint's tensor names from its safetensors index (None when it has none), for make_plan."""
    from kompress_job.io import sources

    try:
        return sources.fetch_weight_names(job.spec.model, dest, env, revision=revision)
    except ValueError:  # an index that is not one: planned as if unseen; the worker reads the files themselves
        return None


def local_weight_names(config_path: Path | str) -> list[str] | None:
    """The tensor names of the checkpoint beside a local config.json (its index or its headers), if any."""
    from kompress_job.io.safetensors_files import weight_names

    path = Path(config_path)
    return weight_names(path if path.is_dir() else path.parent)


def fetch_config(job: CompressionJob, env: Mapping[str, str], dest: Path, *, revision: str | None = None) -> tuple[dict[str, Any], str | None]:
    """config.json from spec.model.uri (Hub, S3 or a volume), with the job's credentials from `env`; nothing else is
    downloaded. Returns the config and the Hub revision it came from (None elsewhere)."""
    from kompress_job.io import sources

    dest.mkdir(parents=True, exist_ok=True)
    fetched = sources.fetch_config(job.spec.model, dest, env, revision=revision)
    return read_config(fetched.path), fetched.resolved_revision
