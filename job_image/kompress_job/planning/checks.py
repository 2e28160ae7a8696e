"""The plan's own checks: what it finds wrong with a job before any GPU is asked for, each a Problem with its fix.

    REFUSED / refusal(err)          the resolver's refusals that are the recipe's fault, and the error each becomes
    recipe_path(path, resolved)     the path the worker will take (data-free or loaded); one it cannot take is an error
    recipe_problems(resolved, ...)  what the resolved recipe does to the model: group-size fallbacks, the resolver's
                                    notes, serving and kernels (kompress_job.planning.serving / kernels), a large
                                    share kept 16-bit, nothing compressed
    run_problems(job, ...)          what the run meets: MTP layers, spec.resources against the footprint, an output
                                    that overlaps the model, lm-eval tasks of unknown size

Owns: the checks that need the whole plan (the recipe, the checkpoint's groups and the footprint together), and
the order problems are found in (planning.problems.ordered sorts them for the record).
Must not: build the model, resolve the recipe or size anything (kompress_job.planning.plan does), or raise for a
problem: every finding is a Problem.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kompress_api.v1alpha1 import CompressionJob, RecipePath

from kompress_job.errors import InvalidRecipe, InvalidSpec, OverlappingGroups, TargetsMatchNothing, UnsupportedArchitecture
from kompress_job.planning import destination, footprint, kernels, problems, serving
from kompress_job.planning import mtp as mtp_planning
from kompress_job.planning.problems import Problem, examples
from kompress_job.planning.quantities import gb, gi, parse_quantity
from kompress_job.recipe.presets import Fallback
from kompress_job.recipe.resolved import ResolvedRecipe

if TYPE_CHECKING:
    from kompress_job.planning.plan_types import GroupPlan

# A share of the parameters kept 16-bit above which the plan says so (lm_head and routers alone are ~1 %).
KEPT_SHARE_WARNING = 0.10

# Resolver refusals that are the recipe's fault: they become plan errors (with their own exit code) and the resolver's message.
REFUSALS = {
    TargetsMatchNothing: (problems.TARGETS_MATCH_NOTHING, "change or remove the entries named, so that each matches at least one module"),
    OverlappingGroups: (problems.OVERLAPPING_GROUPS, "narrow the config groups' targets, or add the modules to one group's ignore"),
    InvalidRecipe: (problems.INVALID_RECIPE, "fix spec.recipe.custom as the message says"),
    UnsupportedArchitecture: (problems.PRESET_DOES_NOT_APPLY, "a model without routed experts takes preset w4a16 or fp8-dynamic (or set spec.recipe.overrides.experts); a model whose decoder layers hold no Linear layers (GPT-2 style Conv1D) is not supported"),
}

REFUSED = tuple(REFUSALS)


def refusal(err: TargetsMatchNothing | OverlappingGroups | InvalidRecipe | UnsupportedArchitecture) -> Problem:
    """The plan error for a refusal of the resolver (one of REFUSED): its code and fix, and the resolver's message."""
    code, fix = next(v for k, v in REFUSALS.items() if isinstance(err, k))
    return problems.error(code, err.message, fix)


def recipe_path(path: RecipePath, resolved: ResolvedRecipe | None, found: list[Problem]) -> str | None:
    """The path the worker will take (kompress_job.model.data_free.choose_path); a data-free path the recipe cannot take
    is an error here, before any GPU is asked for."""
    from kompress_job.model import data_free

    if resolved is None:
        return None
    try:
        return data_free.choose_path(path, resolved)
    except InvalidSpec as err:
        found.append(problems.error(problems.INVALID_RECIPE, err.message, "set spec.recipe.path to auto or loaded"))
        return None


def _fallback_problems(resolved: ResolvedRecipe) -> list[Problem]:
    grouped: dict[tuple[str, str, str], list[Fallback]] = defaultdict(list)
    for f in resolved.fallbacks:
        grouped[(f.requested, f.applied, f.reason)].append(f)
    out = []
    for (requested, applied, reason), items in grouped.items():
        names = [f.module for f in items]
        out.append(
            problems.warning(
                problems.GROUP_SIZE_FALLBACK,
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
        problems.warning(
            problems.LARGE_SHARE_KEPT_16BIT,
            f"{kept_params / 1e9:.2f} B parameters ({100 * kept_params / total:.0f} %) stay {dtype}: {size / 1e9:.1f} GB of the checkpoint. "
            f"Kept: {what}.",
            "if this is not intended, use a preset that quantizes them (w4a16-w8a8 gives gate_proj the scheme of up_proj)",
        )
    ]


def _nothing_compressed(resolved: ResolvedRecipe) -> list[Problem]:
    if any(a.scheme is not None or a.sparsity for a in resolved.assignment.values()):
        return []
    return [problems.warning(problems.NOTHING_COMPRESSED, "the recipe quantizes and prunes no module: the checkpoint will be the model as it is", "check the recipe's targets")]


def _resource_problems(job: CompressionJob, w: footprint.Workload, f: footprint.Footprint) -> list[Problem]:
    res = job.spec.resources
    out = []
    if res.memory is not None:
        limit = parse_quantity(res.memory)
        holds_model = not (w.data_free and not w.evaluation_samples)  # the streamed data-free run never holds it
        if holds_model and limit < w.model_bytes:
            out.append(
                problems.error(
                    problems.HOST_MEMORY_TOO_SMALL,
                    f"spec.resources.memory {res.memory} is less than the model itself ({gb(w.model_bytes)} in host RAM: llm-compressor holds the whole model there)",
                    f"set spec.resources.memory to at least {gi(f.host_memory_bytes)}, or leave it unset to use the plan's figure",
                )
            )
        elif limit < f.host_memory_bytes:
            out.append(
                problems.warning(
                    problems.HOST_MEMORY_BELOW_ESTIMATE,
                    f"spec.resources.memory {res.memory} is below the plan's host RAM estimate {gb(f.host_memory_bytes)} (peak phase: "
                    f"{max(f.host_phases, key=f.host_phases.get)}): the worker may be OOMKilled hours in",
                    f"set spec.resources.memory to {gi(f.host_memory_bytes)}, or leave it unset",
                )
            )
    if res.scratch is not None:
        limit = parse_quantity(res.scratch)
        needed = w.download_bytes + w.checkpoint_bytes
        if limit < needed:
            out.append(
                problems.error(
                    problems.SCRATCH_TOO_SMALL,
                    f"spec.resources.scratch {res.scratch} cannot hold the download and the checkpoint ({gb(w.download_bytes)} + {gb(w.checkpoint_bytes)})",
                    f"set spec.resources.scratch to at least {gi(f.disk_bytes)}, or leave it unset",
                )
            )
        elif limit < f.disk_bytes:
            out.append(problems.warning(problems.SCRATCH_BELOW_ESTIMATE, f"spec.resources.scratch {res.scratch} is below the plan's estimate {gb(f.disk_bytes)}", f"set spec.resources.scratch to {gi(f.disk_bytes)}"))
    if w.distributed and f.offload_bytes > 0:
        configured = f"spec.resources.shm {res.shm}" if res.shm is not None else f"the default /dev/shm ({gi(footprint.DEFAULT_SHM)})"
        roomy = footprint.footprint(replace(w, shm_bytes=f.shm_needed_bytes))
        out.append(
            problems.warning(
                problems.SHM_TOO_SMALL,
                f"with {w.devices} GPUs llm-compressor's distributed run keeps the model in /dev/shm, shared by the ranks; {configured} holds "
                f"only part of it, so {gb(f.offload_bytes)} of weights go to scratch disk and are read back for every layer (slow; counted in the disk figure)",
                f"set spec.resources.shm to {gi(f.shm_needed_bytes)}; /dev/shm is memory, so host RAM becomes {gi(roomy.host_memory_bytes)} "
                f"(set spec.resources.memory to that) and scratch {gi(roomy.disk_bytes)}",
            )
        )
    if w.devices == 0 and w.parameters > 2 * 10**9:
        out.append(
            problems.warning(
                problems.NO_GPU,
                f"spec.resources.gpus is 0: {w.parameters / 1e9:.1f} B parameters would be compressed on CPUs, which takes days or more",
                "set spec.resources.gpus (one GPU works; several run llm-compressor's distributed oneshot)",
            )
        )
    return out


def recipe_problems(resolved: ResolvedRecipe, groups: list[GroupPlan], total: int, dtype: str, target: kernels.ServingTarget, per_tp: dict[int, list[tuple[Any, str]]]) -> list[Problem]:
    """What the resolved recipe does to this model that the user should know: fallbacks, the resolver's notes,
    what vLLM and its kernels make of it, a large share kept 16-bit, nothing compressed at all."""
    found = _fallback_problems(resolved)
    found += [problems.warning(problems.RECIPE_NOTE, w) for w in resolved.warnings]
    found += serving.check(resolved, per_tp)
    found += kernels.check(resolved, target)
    found += _kept_share(groups, total, dtype)
    found += _nothing_compressed(resolved)
    return found


def run_problems(job: CompressionJob, mtp: mtp_planning.MtpPlan | None, source_dtype: str, workload: footprint.Workload, foot: footprint.Footprint) -> list[Problem]:
    """What the run itself will meet, recipe or not: the MTP layers, spec.resources against the footprint, an output
    that overlaps the model, lm-eval tasks the plan cannot size."""
    found = mtp_planning.check(mtp, source_dtype)
    found += _resource_problems(job, workload, foot)
    found += destination.output_overlaps_model(job.spec)
    found += _unknown_task_sizes(workload)
    return found

def _unknown_task_sizes(w: footprint.Workload) -> list[Problem]:
    if w.task_cost is None or not w.task_cost.unknown:
        return []
    return [problems.warning(problems.TASK_SIZE_UNKNOWN, f"the plan cannot tell what lm-eval task(s) {', '.join(w.task_cost.unknown)} add: their size is known only once the worker reads them; the time estimate leaves them out", "set spec.evaluation.tasks[].limit to bound (and count) them")]
