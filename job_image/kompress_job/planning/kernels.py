"""Where the checkpoint will be served (spec.serving) and whether vLLM has a kernel for each scheme there.

    target_of(job, devices)     the serving target: GPU architecture, tensor-parallel degree, expert parallelism,
                                and where each default came from
    check(resolved, target)     a problem for each scheme vLLM cannot run on that GPU (W4A4 FP4 below Blackwell,
                                INT8 W8A8 experts on Blackwell) and a note for each it runs through a fallback
                                kernel (FP8 on Ampere, FP4 weights below Blackwell: weight-only Marlin)
    verdict(...)                one line: "servable by vLLM at TP 4 on hopper (expert parallel)", or why not

Kernels per scheme and generation (vLLM's compressed-tensors schemes; ../shared/notes/field.md):

    INT4/INT8 weight-only (W4A16, W8A16)   Marlin (Machete on Hopper), compute capability >= 8.0: every generation
    INT8 W8A8                              CUTLASS on Ampere, Ada, Hopper; the fused-MoE INT8 path not on Blackwell
    FP8 (channel, block)                   CUTLASS / DeepGEMM on Ada, Hopper, Blackwell; Ampere: FP8 Marlin, weight-only
    FP4 weight-only (NVFP4A16, MXFP4A16)   Blackwell natively; Ampere, Ada, Hopper through FP4 Marlin
    FP4 weights and activations (NVFP4)    FP4 tensor cores: Blackwell only

Must not: resolve recipes (the caller passes a resolved one) or compute sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kompress_api.v1alpha1 import CompressionJob, GpuArchitecture

from kompress_job.planning import problems
from kompress_job.planning.problems import Problem, examples
from kompress_job.recipe.inventory import Role
from kompress_job.recipe.presets import Parallelism
from kompress_job.recipe.resolved import ResolvedRecipe

DEFAULT_GPU = GpuArchitecture.HOPPER
ORDER = [GpuArchitecture.AMPERE, GpuArchitecture.ADA, GpuArchitecture.HOPPER, GpuArchitecture.BLACKWELL]
# NVIDIA GPU feature discovery labels (nvidia.com/gpu.family; nvidia.com/gpu.product names the card).
_FAMILY = {"ampere": GpuArchitecture.AMPERE, "ada-lovelace": GpuArchitecture.ADA, "ada": GpuArchitecture.ADA, "hopper": GpuArchitecture.HOPPER, "blackwell": GpuArchitecture.BLACKWELL}
_PRODUCT = [("GB200", GpuArchitecture.BLACKWELL), ("B200", GpuArchitecture.BLACKWELL), ("B100", GpuArchitecture.BLACKWELL), ("RTX-PRO-6000", GpuArchitecture.BLACKWELL),
            ("H100", GpuArchitecture.HOPPER), ("H200", GpuArchitecture.HOPPER), ("H800", GpuArchitecture.HOPPER), ("GH200", GpuArchitecture.HOPPER),
            ("L40", GpuArchitecture.ADA), ("L4", GpuArchitecture.ADA), ("RTX-4090", GpuArchitecture.ADA),
            ("A100", GpuArchitecture.AMPERE), ("A10", GpuArchitecture.AMPERE), ("A30", GpuArchitecture.AMPERE), ("A40", GpuArchitecture.AMPERE), ("RTX-3090", GpuArchitecture.AMPERE)]


@dataclass(frozen=True)
class ServingTarget:
    gpu: GpuArchitecture
    tensor_parallel: int
    expert_parallel: bool
    basis: str  # where the defaults came from

    @property
    def parallelism(self) -> Parallelism:
        return Parallelism(self.tensor_parallel, self.expert_parallel)

    def describe(self) -> str:
        return f"TP {self.tensor_parallel} on {self.gpu.value}" + (" with expert parallelism" if self.expert_parallel else "")

    def summary(self) -> dict[str, Any]:
        return {"gpu": self.gpu.value, "tensor_parallel": self.tensor_parallel, "expert_parallel": self.expert_parallel, "basis": self.basis}


def target_of(job: CompressionJob, devices: int | None = None) -> ServingTarget:
    """spec.serving with its defaults: the GPU the job's nodes have (their GPU feature discovery label), else
    Hopper; as many tensor-parallel GPUs as the job asks for; no expert parallelism."""
    serving = job.spec.serving
    basis = []
    gpu = serving.gpu if serving is not None else None
    if gpu is None:
        gpu, where = _gpu_from_nodes(job)
        basis.append(f"gpu {gpu.value}: {where}")
    tp = serving.tensor_parallel if serving is not None else None
    if tp is None:
        tp = max(1, job.spec.resources.gpus if devices is None else devices)
        basis.append(f"tensor parallel {tp}: the job's GPUs")
    return ServingTarget(gpu, tp, bool(serving and serving.expert_parallel), "; ".join(basis) or "spec.serving")


def _gpu_from_nodes(job: CompressionJob) -> tuple[GpuArchitecture, str]:
    selector = (job.spec.scheduling.node_selector if job.spec.scheduling else None) or {}
    family = selector.get("nvidia.com/gpu.family")
    if family and family.lower() in _FAMILY:
        return _FAMILY[family.lower()], f"spec.scheduling.nodeSelector nvidia.com/gpu.family={family}"
    product = selector.get("nvidia.com/gpu.product", "")
    for token, arch in _PRODUCT:
        if token.lower() in product.lower():
            return arch, f"spec.scheduling.nodeSelector nvidia.com/gpu.product={product}"
    return DEFAULT_GPU, "the default (set spec.serving.gpu, or a nodeSelector on nvidia.com/gpu.family)"


def _at_least(gpu: GpuArchitecture, floor: GpuArchitecture) -> bool:
    return ORDER.index(gpu) >= ORDER.index(floor)


def kernel(scheme: Any, gpu: GpuArchitecture, expert: bool) -> tuple[bool, str]:
    """(vLLM runs it on this GPU, which kernel or why not) for one scheme."""
    w, a = scheme.weights, scheme.activations
    if w.type == "int":
        if a is None:
            return True, "Marlin W4A16/W8A16"
        if expert and gpu is GpuArchitecture.BLACKWELL:
            return False, "vLLM's INT8 W8A8 fused MoE does not run on Blackwell"
        return True, "CUTLASS INT8 W8A8"
    if w.bits == 8:
        if _at_least(gpu, GpuArchitecture.ADA):
            return True, "FP8 W8A8 (CUTLASS/DeepGEMM" + (", block-scaled)" if w.strategy == "block" else ")")
        return True, "FP8 Marlin, weight-only (Ampere has no FP8 tensor cores: activations stay 16-bit)"
    if a is None:
        return True, "FP4 tensor cores" if gpu is GpuArchitecture.BLACKWELL else "FP4 Marlin, weight-only"
    if gpu is GpuArchitecture.BLACKWELL:
        return True, "FP4 W4A4 tensor cores"
    return False, f"W4A4 FP4 is not served on {gpu.value}: vLLM runs FP4 activations only on Blackwell's FP4 tensor cores"


def check(resolved: ResolvedRecipe, target: ServingTarget) -> list[Problem]:
    """Schemes with no vLLM kernel on the target GPU (warnings: the job still makes what was asked)."""
    seen: dict[tuple[str, bool], tuple[bool, str, list[str]]] = {}
    for m in resolved.inventory.modules:
        a = resolved.assignment[m.name]
        if not m.is_linear or a.scheme is None:
            continue
        expert = m.role is Role.ROUTED_EXPERTS
        key = (a.scheme.name, expert)
        if key not in seen:
            seen[key] = (*kernel(a.scheme, target.gpu, expert), [])
        seen[key][2].append(m.name)
    out = []
    for (scheme, _), (ok, why, names) in seen.items():
        if ok:
            continue
        out.append(
            problems.warning(
                problems.NO_KERNEL_ON_TARGET,
                f"{len(names)} module(s) in {scheme} ({examples(names, 2)}): {why}; the checkpoint will not load in vLLM on {target.gpu.value}.",
                _alternative(scheme, target),
            )
        )
    return out


def _alternative(scheme: str, target: ServingTarget) -> str:
    if scheme == "nvfp4":
        return f"use preset nvfp4a16 (the same FP4 weights, 16-bit activations: FP4 Marlin on {target.gpu.value}) or fp8-block; or serve on blackwell (spec.serving.gpu)"
    if scheme.startswith("w8a8-int8"):
        return "use preset w4a16 or fp8-dynamic on Blackwell"
    return "choose a preset whose schemes the target GPU runs (docs/presets.md)"


def verdict(servable: bool | None, target: ServingTarget, found: list[Problem], misaligned_at_target: int = 0) -> str:
    """`misaligned_at_target`: weight-only modules that do not fit Marlin at the target's TP degree (serving.misaligned)."""
    if servable and misaligned_at_target and target.gpu is not GpuArchitecture.BLACKWELL:
        return f"servable by vLLM at {target.describe()}, but {misaligned_at_target} module(s) do not fit Marlin there (TensorParallelMisalignment: a slower kernel, or a smaller TP)"
    if servable:
        return f"servable by vLLM at {target.describe()}"
    if servable is None:
        return f"vLLM at {target.describe()}: unknown for a custom recipe"
    blocking = [p.code for p in found if p.code in problems.NOT_LOADABLE_CODES]
    return f"NOT servable by vLLM at {target.describe()}" + (f" ({', '.join(sorted(set(blocking)))})" if blocking else "")
