"""The plan as a record: what a CompressionJob will do and cost, in the forms the rest of Kompress reads.

    GroupPlan              one module group: its scheme or sparsity, format, modules, parameters and bytes
    Plan                   the whole plan; its figures (bf16_bytes, compression_ratio, kept_parameters, errors,
                           warnings, exit) are derived from its fields
    Plan.headline()        one line for logs and the termination message
    Plan.summary()         the PlanSummary the operator stores in status.plan
    Plan.to_json()         everything, for `kompress plan --json`

Owns: the fields of a plan and their renderings (the text report is kompress_job.planning.report's).
Must not: compute anything from the model or the recipe (kompress_job.planning.plan.make_plan fills these), or
import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kompress_api.exit_codes import ExitCode
from kompress_api.v1alpha1 import PlanProblem, PlanSummary

from kompress_job.planning.checkpoint import CheckpointLayout
from kompress_job.planning.footprint import Footprint
from kompress_job.planning.kernels import ServingTarget
from kompress_job.planning.mtp import MtpPlan
from kompress_job.planning.problems import Problem, exit_for, ordered
from kompress_job.planning.quantities import gb
from kompress_job.recipe.resolved import ResolvedRecipe
from kompress_job.recipe.schemes import Scheme

if TYPE_CHECKING:
    from kompress_job.planning.cache import CacheView


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
    mtp: MtpPlan | None  # the multi-token-prediction layers config.json declares
    footprint: Footprint
    devices: int
    shm_bytes: int  # /dev/shm the worker gets: spec.resources.shm, else what DDP needs, else the default
    problems: list[Problem]
    servable: bool | None
    serving: str | None
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> modules, parameters, groups
    tensor_parallel: dict[str, Any] = field(default_factory=dict)  # serving.tensor_parallel_summary
    serving_target: ServingTarget | None = None  # spec.serving with its defaults
    serving_verdict: str = ""  # "servable by vLLM at TP 4 on hopper", or why not
    recipe_path: str | None = None  # "data-free" or "loaded" (kompress_job.model.data_free.choose_path)
    resolved: ResolvedRecipe | None = None  # None when the recipe was refused
    layout: CheckpointLayout | None = None  # every tensor the checkpoint will hold
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
        return exit_for(self.errors) if self.errors else ExitCode.OK

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    def headline(self) -> str:
        """One line for logs and the termination message."""
        if self.errors:
            return f"plan rejected: {len(self.errors)} error(s): " + " ".join(f"{p.code}: {p.message}" for p in self.errors)
        size = f"checkpoint ≈ {gb(self.estimated_checkpoint_bytes)} ({self.compression_ratio}x smaller than bf16)" if self.estimated_checkpoint_bytes else "no checkpoint estimate"
        f = self.footprint
        return f"{size}, host RAM {gb(f.host_memory_bytes)}, GPU {gb(f.gpu_memory_bytes)} per device, scratch {gb(f.disk_bytes)}, {len(self.warnings)} warning(s)"

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
            problems=[PlanProblem(**p.summary()) for p in ordered(self.problems)],
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
            "problems": [p.summary() for p in ordered(self.problems)],
        }
