"""Can vLLM serve the checkpoint this recipe writes? Checks on the resolved assignment, module by module.

Owns: what vLLM's compressed-tensors loader needs (../shared/notes/field.md, vLLM's source), as checks:

    Sparse24NotServable              2:4 sparsity: vLLM removed its 2:4 kernels, and compressed-tensors 0.19 stores
                                     the zeros densely, so the pruning buys neither size nor speed
    StaticInt8ExpertsNotLoadable     INT8 routed experts need channel-wise weights and dynamic per-token activations
                                     in vLLM's fused MoE; static input scales are refused at load
    MixedSchemesInExpert             vLLM fuses all experts of a layer into one kernel: their gate, up and down
                                     projections (every expert) must share one scheme
    FusedProjectionSchemeMismatch    vLLM fuses q/k/v into qkv_proj and gate/up into gate_up_proj: each set must
                                     share one scheme (16-bit included)
    KernelAlignment / TensorParallelMisalignment
                                     INT4/INT8 weight-only layers (W4A16) run on Marlin, which needs every GPU's
                                     input width to be a multiple of 128 (and of the group size) and output width a
                                     multiple of 64. Tensor parallelism splits widths: row-parallel layers (o_proj,
                                     down_proj) their input, column-parallel ones their output; experts their
                                     intermediate width. Checked for TP 1, 2, 4, 8; otherwise vLLM falls back to a
                                     slower kernel where one accepts the shape, or fails to load.

All are warnings: the job produces what was asked; the user learns what it can be served with.
Must not: resolve recipes or compute sizes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kompress_job.planning import problems
from kompress_job.planning.problems import Problem, examples
from kompress_job.recipe.inventory import ATTENTION_INPUT_NAMES, ATTENTION_OUTPUT_NAMES, DOWN_PROJ_NAMES, GATE_PROJ_NAMES, UP_PROJ_NAMES, Role
from kompress_job.recipe.resolved import ResolvedRecipe

TENSOR_PARALLEL = (1, 2, 4, 8)
MARLIN_MIN_K = 128  # vLLM marlin_utils GPTQ_MARLIN_MIN_THREAD_K
MARLIN_MIN_N = 64  # GPTQ_MARLIN_MIN_THREAD_N
# Codes after which vLLM cannot load the checkpoint at all (alignment only costs kernels or TP degrees).
NOT_LOADABLE = problems.NOT_LOADABLE_CODES


def _scheme_key(a: Any) -> str:
    return a.scheme.name if a.scheme is not None else "16-bit"


def check(resolved: ResolvedRecipe, per_tp: dict[int, list[tuple[Any, str]]] | None = None) -> list[Problem]:
    """Every vLLM serving problem of a resolved recipe (kompress_job.recipe.ResolvedRecipe); `per_tp`: misaligned(resolved)."""
    inv = resolved.inventory
    assignment = resolved.assignment
    modules = [m for m in inv.modules if m.is_linear]
    out: list[Problem] = []
    out += _sparse24(assignment)
    out += _static_int8_experts(modules, assignment)
    out += _mixed_experts(modules, assignment)
    out += _fused_projections(modules, assignment)
    out += _alignment(per_tp if per_tp is not None else misaligned(resolved))
    return out


def _sparse24(assignment: dict) -> list[Problem]:
    pruned = [n for n, a in assignment.items() if a.sparsity]
    if not pruned:
        return []
    return [
        problems.warning(
            problems.SPARSE24_NOT_SERVABLE,
            f"{len(pruned)} modules are pruned 2:4 ({examples(pruned, 2)}): vLLM removed its 2:4 sparse kernels "
            "(\"Sparse24 models are no longer supported\"), and compressed-tensors 0.19 has no sparse storage format, so the "
            "zeros are stored densely: the pruning makes the checkpoint neither smaller nor faster, and one-shot 2:4 costs accuracy.",
            "use preset w4a16-w8a8 (or w4a16) to serve with vLLM; keep 2:4 only to study it, with spec.evaluation.gate set",
        )
    ]


def _static_int8_experts(modules: list, assignment: dict) -> list[Problem]:
    bad = []
    for m in modules:
        a = assignment[m.name]
        if m.role is not Role.ROUTED_EXPERTS or a.scheme is None or a.scheme.weights.type != "int" or a.scheme.weights.bits != 8:
            continue
        acts = a.scheme.activations
        if acts is None:
            continue  # INT8 weight-only (W8A16) runs on Marlin MoE
        if not acts.dynamic or acts.strategy != "token" or a.scheme.weights.strategy != "channel":
            bad.append(m.name)
    if not bad:
        return []
    return [
        problems.warning(
            problems.STATIC_INT8_EXPERTS_NOT_LOADABLE,
            f"{len(bad)} routed-expert projections are INT8 W8A8 with static activation scales ({examples(bad, 2)}): vLLM's fused MoE "
            "needs channel-wise INT8 weights with dynamic per-token activations (\"For INT8 Fused MoE layers, we require channelwise, "
            "dynamic per token quantization. Found static input scales.\"): the checkpoint will not load in vLLM.",
            "use preset w4a16-w8a8 (INT8 experts with dynamic per-token activations), which vLLM loads (not on Blackwell)",
        )
    ]


def _mixed_experts(modules: list, assignment: dict) -> list[Problem]:
    per_layer: dict[Any, set[str]] = defaultdict(set)
    example: dict[Any, list[str]] = defaultdict(list)
    for m in modules:
        if m.role is Role.ROUTED_EXPERTS:
            key = _scheme_key(assignment[m.name])
            if key not in per_layer[m.layer]:
                example[m.layer].append(f"{m.leaf}: {key}")
            per_layer[m.layer].add(key)
    mixed = sorted((layer for layer, keys in per_layer.items() if len(keys) > 1), key=lambda x: (x is None, x))
    if not mixed:
        return []
    first = mixed[0]
    return [
        problems.warning(
            problems.MIXED_SCHEMES_IN_EXPERT,
            f"routed experts mix schemes in {len(mixed)} layer(s) (layer {first}: {', '.join(example[first])}): vLLM runs all experts of a "
            "layer as one fused kernel, so gate, up and down of every expert must share one scheme; the checkpoint will not load in vLLM.",
            "give gate_proj the scheme of up_proj and down_proj (the servable presets do), or keep the experts' three projections 16-bit together",
        )
    ]


def _fused_projections(modules: list, assignment: dict) -> list[Problem]:
    sets: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # (block, kind) -> leaf -> scheme
    for m in modules:
        if m.role is Role.ROUTED_EXPERTS:
            continue  # covered by MixedSchemesInExpert
        if m.role is Role.ATTENTION and m.leaf in ATTENTION_INPUT_NAMES:
            sets[(m.block, "q/k/v")][m.leaf] = _scheme_key(assignment[m.name])
        elif m.role in (Role.DENSE_MLP, Role.SHARED_EXPERTS) and (m.leaf in GATE_PROJ_NAMES or m.leaf in UP_PROJ_NAMES):
            sets[(m.block, "gate/up")][m.leaf] = _scheme_key(assignment[m.name])
    mismatched = [(block, kind, leaves) for (block, kind), leaves in sets.items() if len(set(leaves.values())) > 1]
    if not mismatched:
        return []
    block, kind, leaves = mismatched[0]
    blocks = [b for b, _, _ in mismatched]
    return [
        problems.warning(
            problems.FUSED_PROJECTION_MISMATCH,
            f"{len(mismatched)} fused projection set(s) mix schemes, e.g. {block} {kind}: "
            f"{', '.join(f'{leaf} {scheme}' for leaf, scheme in sorted(leaves.items()))} (in {examples(blocks, 2)}): vLLM loads q/k/v as one "
            "qkv_proj and gate/up as one gate_up_proj, whose shards must share one precision; the checkpoint will not load in vLLM.",
            "give the projections of each set one scheme (the servable presets treat gate_proj like up_proj)",
        )
    ]


def _marlin(a: Any) -> bool:
    """Integer weight-only quantization (W4A16, W8A16): what vLLM runs on Marlin (Machete on Hopper for dense layers);
    FP4 weight-only (NVFP4A16, MXFP4A16) too, below Blackwell."""
    s = a.scheme
    if s is None or s.activations is not None:
        return False
    return (s.weights.type == "int" and s.weights.strategy in ("group", "channel")) or s.weights.fp4


def _row_parallel(m: Any) -> bool:
    return m.leaf in DOWN_PROJ_NAMES or m.leaf in ATTENTION_OUTPUT_NAMES


def _misaligned(m: Any, a: Any, tp: int) -> str | None:
    """Why module m (under scheme a) does not fit Marlin at tensor-parallel degree tp, or None."""
    group = a.scheme.weights.group_size if a.scheme.weights.strategy in ("group", "tensor_group") else None
    k, n = m.in_features, m.out_features
    if _row_parallel(m):
        if k % tp:
            return f"input {k} does not split {tp} ways"
        k //= tp
    else:  # column-parallel (lm_head too: vLLM splits the vocabulary)
        if n % tp:
            return f"output {n} does not split {tp} ways"
        n //= tp
    if k % MARLIN_MIN_K:
        return f"input {k} per GPU is not a multiple of {MARLIN_MIN_K}"
    if group and k % group:
        return f"input {k} per GPU is not a multiple of the group size {group}"
    if n % MARLIN_MIN_N:
        return f"output {n} per GPU is not a multiple of {MARLIN_MIN_N}"
    return None


def misaligned(resolved: ResolvedRecipe) -> dict[int, list[tuple[Any, str]]]:
    """For each tensor-parallel degree: the weight-only quantized modules that do not fit Marlin, and why."""
    assignment = resolved.assignment
    modules = [m for m in resolved.inventory.modules if m.is_linear and _marlin(assignment[m.name])]
    out: dict[int, list[tuple[Any, str]]] = {}
    for tp in TENSOR_PARALLEL:
        verdict: dict[tuple, str | None] = {}  # 17,000 experts share a handful of shapes
        out[tp] = []
        for m in modules:
            a = assignment[m.name]
            key = (m.in_features, m.out_features, _row_parallel(m), a.scheme.weights.strategy, a.scheme.weights.group_size)
            if key not in verdict:
                verdict[key] = _misaligned(m, a, tp)
            if verdict[key]:
                out[tp].append((m, verdict[key]))
    return out


def tensor_parallel_summary(per_tp: dict[int, list[tuple[Any, str]]]) -> dict[str, Any]:
    """{"4": {"misaligned": n, "examples": ["name: why", ...one per role]}} for the plan's JSON."""
    out = {}
    for tp, items in per_tp.items():
        shown: dict[Any, str] = {}
        for m, why in items:
            shown.setdefault(m.role, f"{m.name}: {why}")
        out[str(tp)] = {"misaligned": len(items), "examples": list(shown.values())}
    return out


def _alignment(per_tp: dict[int, list[tuple[Any, str]]]) -> list[Problem]:
    out: list[Problem] = []
    at_one = per_tp[1]
    if at_one:
        names = [m.name for m, _ in at_one]
        first, why = at_one[0]
        out.append(
            problems.warning(
                problems.KERNEL_ALIGNMENT,
                f"{len(at_one)} weight-only quantized module(s) do not fit vLLM's Marlin kernel even on one GPU: {first.name} ({why})"
                f"{'; also ' + examples(names[1:], 2) if len(names) > 1 else ''}. vLLM then needs a slower kernel that accepts the shape, or fails to load it.",
                f"keep them 16-bit (spec.recipe.overrides.ignore: [{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}]); they are a small share of the model",
            )
        )
    worse = [tp for tp in TENSOR_PARALLEL if tp > 1 and len(per_tp[tp]) > len(at_one)]
    if not worse:
        return out
    known = {m.name for m, _ in at_one}
    new = {tp: [(m, why) for m, why in per_tp[tp] if m.name not in known] for tp in worse}
    shown = []
    for m, why in new[worse[0]]:  # one example per role, at the lowest degree that breaks
        if m.role not in {r for r, _ in shown}:
            shown.append((m.role, f"{m.name} ({why} at TP {worse[0]})"))
    counts = ", ".join(f"TP {tp}: {len(per_tp[tp])}" for tp in TENSOR_PARALLEL)
    aligned = [tp for tp in TENSOR_PARALLEL if tp not in worse]
    experts = any(m.role is Role.ROUTED_EXPERTS for tp in worse for m, _ in new[tp])
    out.append(
        problems.warning(
            problems.TENSOR_PARALLEL_MISALIGNMENT,
            "tensor parallelism splits layer widths across GPUs, and some splits no longer fit Marlin's alignment: misaligned modules "
            f"per degree {counts}; e.g. {'; '.join(text for _, text in shown)}.",
            f"serve with a tensor-parallel degree of {max(aligned)}"
            + (" or with expert parallelism (vLLM --enable-expert-parallel keeps each expert whole on one GPU)" if experts else "")
            + "; or give these modules a per-channel scheme or keep them 16-bit",
        )
    )
    return out


def servable(resolved: ResolvedRecipe, found: list[Problem]) -> bool | None:
    """Whether vLLM can load the checkpoint at all (alignment problems only limit kernels or TP degrees)."""
    if any(p.code in NOT_LOADABLE for p in found):
        return False
    # A preset knows; a custom recipe passed the known checks, but may use schemes vLLM lacks kernels for.
    return bool(resolved.servable) if resolved.source == "preset" else None
