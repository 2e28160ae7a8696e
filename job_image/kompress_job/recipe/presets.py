"""The named recipes (spec.recipe.preset): which module roles get what, and the llm-compressor recipe that
does it. Each preset is one PresetRule (rule_for): the scheme of each role, and what the preset is (servable by
vLLM or not, the model card's line and Hub tags), said here only. docs/presets.md's table of the presets is
rendered from the rules (kompress_job.recipe.presets_doc, `make docs`; a test fails when it drifts).

The gating projection of every MLP and expert (gate_proj): the founding preset keeps it 16-bit, as its recipe
said; the others treat it like its MLP, because vLLM fuses gate and up into one layer that must share one scheme.

W4A16 is INT4 symmetric, group 128 (spec.recipe.overrides.groupSize), with the documented fallback for
input widths the group size does not divide. The two expert presets need a Mixture-of-Experts model.
The FP8 and FP4 schemes are compressed-tensors 0.19's presets (FP8_DYNAMIC, FP8_BLOCK, NVFP4A16, MXFP4A16,
NVFP4) field for field (recipe.schemes). FP4 group sizes are fixed by the format (16 for NV, 32 for MX): a
layer whose input width they do not divide stays 16-bit (recorded as a fallback), and groupSize does not
apply. fp8-dynamic, fp8-block, nvfp4a16 and mxfp4a16 need no calibration data; nvfp4 calibrates the global
scale of every layer's activations (every expert, moe_calibrate_all_experts).

Owns: what each preset is (PresetRule), preset -> per-module assignment (pure), and the recipe dict
(llm-compressor's YAML form) that carries it out. Must not: import llm-compressor (the planner resolves presets without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from kompress_api.v1alpha1 import Preset, RecipeOverrides

from kompress_job.errors import UnsupportedArchitecture
from kompress_job.recipe.awq import derive_mappings
from kompress_job.recipe.inventory import ATTENTION_INPUT_NAMES, ATTENTION_OUTPUT_NAMES, DOWN_PROJ_NAMES, GATE_PROJ_NAMES, MLP_ROLES, UP_PROJ_NAMES, ModuleInventory, Role, WeightModule
from kompress_job.recipe.patterns import exact_patterns
from kompress_job.recipe.schemes import FP8_BLOCK, FP8_DYNAMIC, MXFP4A16, NVFP4, NVFP4A16, W8A8_DYNAMIC, W8A8_STATIC, Scheme, w4a16

DEFAULT_GROUP_SIZE = 128
FALLBACK_GROUP_SIZES = (64, 32)
SPARSE_24 = "2:4"


@dataclass(frozen=True)
class Assignment:
    """What a preset does to one module. scheme None and sparsity None: kept 16-bit, untouched."""

    scheme: Scheme | None
    sparsity: str | None

    @property
    def group(self) -> str:
        base = self.scheme.name if self.scheme is not None else "16bit"
        return f"{base}+sparse{self.sparsity}" if self.sparsity else base


@dataclass(frozen=True)
class Fallback:
    module: str
    in_features: int
    requested: str
    applied: str
    reason: str

    def summary(self) -> dict[str, Any]:
        return {"module": self.module, "in_features": self.in_features, "requested": self.requested, "applied": self.applied, "reason": self.reason}


@dataclass(frozen=True)
class Parallelism:
    """How vLLM will split the model (spec.serving): what FP8 blocks must stay whole across. Block-scaled layers
    are split by tensor parallelism (column-parallel ones by rows, o_proj/down_proj by columns), routed experts
    too unless expert parallelism keeps each whole; vLLM refuses a per-GPU shard that is not whole blocks."""

    tensor: int = 1
    experts: bool = False


@dataclass(frozen=True)
class PresetRule:
    """What a preset does and what it is. Does: the assignment of each role (`gate_proj` None: 16-bit; "as-mlp": as
    the MLP it belongs to). Is: the facts the plan, the model card and docs/presets.md state about it (_ABOUT), here
    only."""

    roles: dict[Role, Scheme | None]
    gate_proj: Scheme | None | str
    sparsity: str | None
    awq: bool
    needs_moe: bool
    servable: bool
    serving: str  # the plan's vLLM line: what serves it, or why nothing does
    vllm: str  # docs/presets.md's vLLM column, in a few words
    description: str  # the model card's one line: what was done
    tags: tuple[str, ...]  # the model card's Hub tags for the formats it writes

    @property
    def gate_proj_as_mlp(self) -> bool:
        return self.gate_proj == _AS_MLP


class _About(NamedTuple):
    servable: bool
    serving: str
    vllm: str
    description: str
    tags: tuple[str, ...]


_KEEP = None
_AS_MLP = "as-mlp"


def rule_for(preset: Preset, group_size: int) -> PresetRule:
    about = _ABOUT.get(preset)
    if about is None:
        raise ValueError(f"unknown preset {preset}")
    facts = about._asdict()
    int4 = w4a16(group_size)
    if preset is Preset.SPARSE24_W4A16_W8A8:
        roles = {Role.ATTENTION: int4, Role.DENSE_MLP: int4, Role.SHARED_EXPERTS: W8A8_STATIC, Role.ROUTED_EXPERTS: W8A8_STATIC}
        return PresetRule(roles=roles, gate_proj=_KEEP, sparsity=SPARSE_24, awq=True, needs_moe=True, **facts)
    if preset is Preset.W4A16_W8A8:
        roles = {Role.ATTENTION: int4, Role.DENSE_MLP: int4, Role.SHARED_EXPERTS: W8A8_DYNAMIC, Role.ROUTED_EXPERTS: W8A8_DYNAMIC}
        return PresetRule(roles=roles, gate_proj=_AS_MLP, sparsity=None, awq=True, needs_moe=True, **facts)
    # One scheme on every attention, MLP and expert Linear (w4a16 with AWQ; the others are compressed-tensors' presets).
    scheme = int4 if preset is Preset.W4A16 else _UNIFORM[preset]
    roles = {role: scheme for role in (Role.ATTENTION, Role.DENSE_MLP, Role.SHARED_EXPERTS, Role.ROUTED_EXPERTS)}
    return PresetRule(roles=roles, gate_proj=_AS_MLP, sparsity=None, awq=preset is Preset.W4A16, needs_moe=False, **facts)


_UNIFORM: dict[Preset, Scheme] = {Preset.FP8_DYNAMIC: FP8_DYNAMIC, Preset.FP8_BLOCK: FP8_BLOCK, Preset.NVFP4A16: NVFP4A16, Preset.MXFP4A16: MXFP4A16, Preset.NVFP4: NVFP4}

# What each preset is, said once: the plan, the model card (kompress_job.outputs.model_card) and docs/presets.md
# (kompress_job.recipe.presets_doc) read it from the rule.
_ABOUT: dict[Preset, _About] = {
    Preset.SPARSE24_W4A16_W8A8: _About(
        servable=False,
        serving="not servable by vLLM today: its 2:4 sparse kernels were removed, and its fused MoE needs dynamic per-token activations for INT8 experts (these have static scales)",
        vllm="no",
        description="SparseGPT 2:4 sparsity, AWQ smoothing, INT4 weights (W4A16) on attention and dense MLP, INT8 W8A8 (static activations) on experts; router, gate_proj and lm_head kept in 16-bit",
        tags=("int4", "int8", "w4a16", "w8a8", "sparse", "2:4"),
    ),
    Preset.W4A16_W8A8: _About(
        servable=True,
        serving="vLLM: INT4 W4A16 (Marlin, compute capability >= 8.0) and INT8 W8A8 channel/per-token experts (fused MoE; not on Blackwell)",
        vllm="yes",
        description="INT4 weights (W4A16, AWQ) on attention and dense MLP, INT8 W8A8 (channel-wise weights, dynamic per-token activations) on experts",
        tags=("int4", "int8", "w4a16", "w8a8"),
    ),
    Preset.W4A16: _About(
        servable=True,
        serving="vLLM: INT4 W4A16 (Marlin, dense and fused MoE; compute capability >= 8.0)",
        vllm="yes",
        description="INT4 weights (W4A16) everywhere a group size fits; router and lm_head kept in 16-bit",
        tags=("int4", "w4a16"),
    ),
    Preset.FP8_DYNAMIC: _About(
        servable=True,
        serving="vLLM: FP8 W8A8 on compute capability >= 8.9 (Ada, Hopper, Blackwell); Ampere runs it as W8A16",
        vllm="yes, FP8 GPUs",
        description="FP8 weights and dynamic per-token FP8 activations; no calibration data needed",
        tags=("fp8",),
    ),
    Preset.FP8_BLOCK: _About(
        servable=True,
        serving="vLLM: FP8 block-scaled W8A8 (CUTLASS/DeepGEMM, dense and fused MoE) on compute capability >= 8.9 (Ada, Hopper, Blackwell); Ampere runs it weight-only through Marlin",
        vllm="yes, FP8 GPUs",
        description="FP8 weights with one scale per 128x128 block, FP8 activations scaled per group of 128 at run time; no calibration data needed",
        tags=("fp8",),
    ),
    Preset.NVFP4A16: _About(
        servable=True,
        serving="vLLM: NVFP4 weight-only; Blackwell natively, Ampere/Ada/Hopper through the FP4 Marlin kernel (dense and fused MoE)",
        vllm="yes (Marlin below Blackwell)",
        description="FP4 weights (NVFP4: groups of 16 with FP8 scales) everywhere the format's group fits, 16-bit activations; no calibration data needed",
        tags=("fp4", "nvfp4"),
    ),
    Preset.MXFP4A16: _About(
        servable=True,
        serving="vLLM: MXFP4 weight-only through the FP4 Marlin kernel on Ampere/Ada/Hopper, natively on Blackwell",
        vllm="yes (Marlin below Blackwell)",
        description="FP4 weights (MXFP4: groups of 32 with power-of-two scales) everywhere the format's group fits, 16-bit activations; no calibration data needed",
        tags=("fp4", "mxfp4"),
    ),
    Preset.NVFP4: _About(
        servable=True,
        serving="vLLM: NVFP4 W4A4 only on Blackwell (compute capability >= 10.0: FP4 tensor cores); older GPUs cannot run FP4 activations",
        vllm="Blackwell only",
        description="FP4 weights and activations (NVFP4 W4A4: groups of 16 with FP8 scales), the activations' global scales calibrated on every layer and expert",
        tags=("fp4", "nvfp4"),
    ),
}


def rule_named(preset: str | None) -> PresetRule | None:
    """The rule of a preset by its name (its facts; the default group size), None for no or an unknown name."""
    try:
        return rule_for(Preset(preset), DEFAULT_GROUP_SIZE) if preset else None
    except ValueError:
        return None


def group_size_fallback(in_features: int, group_size: int) -> int | None:
    """The group size a 4-bit layer of this input width gets: the requested one if it divides the width,
    else the largest of 64 and 32 (below the requested size) that does, else None (per-channel)."""
    if in_features % group_size == 0:
        return group_size
    for candidate in FALLBACK_GROUP_SIZES:
        if candidate < group_size and in_features % candidate == 0:
            return candidate
    return None


def assign(
    preset: Preset, inventory: ModuleInventory, overrides: RecipeOverrides | None, ignored: set[str], parallelism: Parallelism = Parallelism()
) -> tuple[dict[str, Assignment], list[Fallback], PresetRule]:
    """Per-module assignment of a preset. Pure: no model, no llm-compressor."""
    group_size = (overrides.group_size if overrides and overrides.group_size else None) or DEFAULT_GROUP_SIZE
    rule = rule_for(preset, group_size)
    if rule.needs_moe and not inventory.is_moe:
        raise UnsupportedArchitecture(
            f"preset {preset.value} quantizes Mixture-of-Experts experts, but {inventory.architecture} has no routed experts "
            f"(none detected from its structure). Use preset w4a16 or fp8-dynamic, or set spec.recipe.overrides.experts "
            f"to a regex of the expert modules."
        )
    if not any(m.is_linear and m.role in rule.roles for m in inventory.modules):
        raise UnsupportedArchitecture(f"preset {preset.value}: {inventory.architecture} has no attention or MLP Linear layers inside recognisable decoder layers")

    out: dict[str, Assignment] = {}
    fallbacks: list[Fallback] = []
    for m in inventory.modules:
        scheme = _scheme_for(rule, m)
        if m.name in ignored or not m.is_linear:
            scheme = None
        sparsity = rule.sparsity if scheme is not None else None
        if scheme is not None and scheme.weights.fp4 and m.in_features % (scheme.weights.group_size or 1):
            # The group size is the format's (NVFP4 16, MXFP4 32): there is nothing to fall back to but 16-bit.
            fallbacks.append(
                Fallback(m.name, m.in_features, requested=scheme.name, applied="16-bit", reason=f"input width {m.in_features} is not a multiple of {scheme.name}'s group of {scheme.weights.group_size}")
            )
            scheme = sparsity = None
        elif scheme is not None and scheme.weights.block_structure and _off_block(m, scheme.weights.block_structure, parallelism):
            # compressed-tensors needs whole blocks, and vLLM whole blocks on every GPU: FP8 with a scale per output
            # channel and per-token activations is the same format family, served by the same GPUs.
            fallbacks.append(Fallback(m.name, m.in_features, requested=scheme.name, applied=FP8_DYNAMIC.name, reason=_off_block(m, scheme.weights.block_structure, parallelism)))
            scheme = FP8_DYNAMIC
        elif scheme is not None and scheme.weights.strategy == "group":
            applied = group_size_fallback(m.in_features, scheme.weights.group_size or group_size)
            if applied != scheme.weights.group_size:
                new = scheme.with_group_size(applied)
                fallbacks.append(
                    Fallback(
                        m.name,
                        m.in_features,
                        requested=f"group {scheme.weights.group_size}",
                        applied=f"group {applied}" if applied else "channel",
                        reason=f"input width {m.in_features} is not a multiple of {scheme.weights.group_size}",
                    )
                )
                scheme = new
        if sparsity == SPARSE_24 and m.in_features % 4 != 0:
            fallbacks.append(Fallback(m.name, m.in_features, requested="sparse 2:4", applied="dense", reason=f"input width {m.in_features} is not a multiple of 4"))
            sparsity = None
        out[m.name] = Assignment(scheme, sparsity)
    fallbacks += _fuse_block_fallbacks(inventory, out)
    return out, fallbacks, rule


def _fuse_block_fallbacks(inventory: ModuleInventory, out: dict[str, Assignment]) -> list[Fallback]:
    """vLLM loads q/k/v (and gate/up) as one fused layer of one scheme: when one of a set fell back from FP8
    blocks to FP8 channels, the whole set does (e.g. 64-wide k/v heads beside a 128-row q)."""
    sets: dict[tuple[str, str], list[WeightModule]] = {}
    for m in inventory.modules:
        kind = fused_kind(m)
        if kind is not None:
            sets.setdefault((m.block, kind), []).append(m)
    fallbacks = []
    for members in sets.values():
        schemes = {out[m.name].scheme for m in members}
        if FP8_DYNAMIC in schemes and any(s is not None and s.weights.block_structure for s in schemes):
            for m in members:
                scheme = out[m.name].scheme
                if scheme is not None and scheme.weights.block_structure:
                    fallbacks.append(Fallback(m.name, m.in_features, requested=scheme.name, applied=FP8_DYNAMIC.name, reason="a projection it is fused with in vLLM is not made of whole blocks"))
                    out[m.name] = Assignment(FP8_DYNAMIC, None)
    return fallbacks


def fused_kind(m: WeightModule) -> str | None:
    """Which projection set vLLM fuses this module into ("q/k/v" or "gate/up"), or None."""
    if m.role is Role.ATTENTION and m.leaf in ATTENTION_INPUT_NAMES:
        return "q/k/v"
    if m.role in MLP_ROLES and (m.leaf in GATE_PROJ_NAMES or m.leaf in UP_PROJ_NAMES):
        return "gate/up"
    return None


def _off_block(m: WeightModule, block: tuple[int, int], parallelism: Parallelism) -> str | None:
    """Why m's weight, or its share on one GPU, is not made of whole blocks (None when it is)."""
    rows, cols = block
    if m.out_features % rows or m.in_features % cols:
        return f"shape {m.out_features}x{m.in_features} is not made of whole {rows}x{cols} blocks"
    split = parallelism.tensor if not (m.role is Role.ROUTED_EXPERTS and parallelism.experts) else 1
    if split > 1:
        dim, size, block_side = ("input", m.in_features, cols) if row_parallel(m) else ("output", m.out_features, rows)
        if size % (split * block_side):
            why = f"its {dim} {size} split over tensor parallel {split} is {size / split:g} per GPU, not whole {block_side}-wide blocks"
            if m.role is Role.ROUTED_EXPERTS:
                why += " (spec.serving.expertParallel: true keeps every expert whole, in blocks)"
            return why
    return None


def row_parallel(m: WeightModule) -> bool:
    """vLLM splits o_proj and down_proj by their input (row-parallel), every other Linear by its output."""
    return m.leaf in DOWN_PROJ_NAMES or m.leaf in ATTENTION_OUTPUT_NAMES


def _scheme_for(rule: PresetRule, m: WeightModule) -> Scheme | None:
    if m.role not in rule.roles:
        return None
    if m.is_gate_proj and rule.gate_proj is not _AS_MLP:
        return rule.gate_proj  # type: ignore[return-value]
    return rule.roles[m.role]


def build_recipe(preset: Preset, inventory: ModuleInventory, assignment: dict[str, Assignment], rule: PresetRule) -> tuple[dict[str, Any], list[str]]:
    """The llm-compressor recipe (its YAML form, as a dict) that carries out an assignment, and warnings.

    Targets are exact: regexes compiled from the assigned module names and checked against the model's
    module list, so no tutorial-style string can silently match nothing or too much.
    """
    warnings: list[str] = []
    universe = inventory.name_index
    stage: dict[str, Any] = {}

    pruned = [name for name, a in assignment.items() if a.sparsity == SPARSE_24]
    if pruned:
        # SparseGPT prunes the Linear layers its targets select. Targets here are those exact layers,
        # so no ignore list is needed (its ignore entries are matched against names with a trailing
        # dot when targets select Linear layers directly: see recipe.custom).
        stage["sparsity_modifiers"] = {
            "SparseGPTModifier": {"sparsity": 0.5, "mask_structure": SPARSE_24, "targets": exact_patterns(pruned, universe)}
        }

    schemes: dict[str, tuple[Scheme, list[str]]] = {}
    for name, a in assignment.items():
        if a.scheme is not None:
            schemes.setdefault(a.scheme.name, (a.scheme, []))[1].append(name)
    if rule.awq:
        four_bit = {n for _, (s, names) in schemes.items() if s.weights.bits == 4 and s.weights.type == "int" for n in names}
        mappings, awq_warnings = derive_mappings(inventory, four_bit)
        warnings.extend(awq_warnings)
        if mappings:
            stage["smoothing_modifiers"] = {"AWQModifier": {"mappings": mappings}}
    if schemes:
        config_groups = {
            scheme_name: scheme.to_ct(exact_patterns(names, universe)) for scheme_name, (scheme, names) in sorted(schemes.items())
        }
        stage["quantization_modifiers"] = {"QuantizationModifier": {"config_groups": config_groups}}
    return {"kompress_stage": stage}, warnings
