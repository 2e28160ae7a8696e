"""What a plan can find wrong, each with a stable code, a severity and a fix.

Severity follows one rule: **error** when the job cannot do what was asked (a target that matches nothing,
a module in two groups, a recipe llm-compressor will refuse, a memory limit below the model itself), so
no GPU is asked for; **warning** when the job will run and produce what was asked, but the user should know
something about it (a fallback taken, a layer dropped, a checkpoint vLLM cannot serve). The founding preset
is what users asked for: it must stay runnable, so "not servable" is a warning, never an error.

Must not: decide anything about a model (the checks live in the modules that own their facts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from kompress_api.exit_codes import ExitCode

ERROR = "error"
WARNING = "warning"

# Errors: nothing runs.
TARGETS_MATCH_NOTHING = "TargetsMatchNothing"
OVERLAPPING_GROUPS = "OverlappingGroups"
INVALID_RECIPE = "InvalidRecipe"
PRESET_DOES_NOT_APPLY = "PresetDoesNotApply"
HOST_MEMORY_TOO_SMALL = "HostMemoryTooSmall"
SCRATCH_TOO_SMALL = "ScratchTooSmall"
OUTPUT_OVERLAPS_MODEL = "OutputOverlapsModel"
MTP_QUANTIZE_UNSUPPORTED = "MtpQuantizeUnsupported"
CACHE_TOO_SMALL = "CacheTooSmall"  # the model cache volume cannot hold what is missing of the model
# Warnings: it runs; know this.
GROUP_SIZE_FALLBACK = "GroupSizeFallback"
SPARSE24_NOT_SERVABLE = "Sparse24NotServable"
STATIC_INT8_EXPERTS_NOT_LOADABLE = "StaticInt8ExpertsNotLoadable"
MIXED_SCHEMES_IN_EXPERT = "MixedSchemesInExpert"
FUSED_PROJECTION_MISMATCH = "FusedProjectionSchemeMismatch"
KERNEL_ALIGNMENT = "KernelAlignment"
TENSOR_PARALLEL_MISALIGNMENT = "TensorParallelMisalignment"
MTP_LAYER_DROPPED = "MtpLayerDropped"
MTP_LAYER_MISSING = "MtpLayerMissing"
MTP_LAYER_UNVERIFIED = "MtpLayerUnverified"
MTP_LAYOUT_UNKNOWN = "MtpLayoutUnknown"
LARGE_SHARE_KEPT_16BIT = "LargeShareKept16Bit"
SHM_TOO_SMALL = "ShmTooSmallForDistributed"
HOST_MEMORY_BELOW_ESTIMATE = "HostMemoryBelowEstimate"
SCRATCH_BELOW_ESTIMATE = "ScratchBelowEstimate"
NO_GPU = "NoGpu"
NOTHING_COMPRESSED = "NothingCompressed"
RECIPE_NOTE = "RecipeNote"
NO_KERNEL_ON_TARGET = "NoKernelOnTargetGpu"

# Warnings after which vLLM cannot load the checkpoint at all (alignment only costs kernels or TP degrees).
NOT_LOADABLE_CODES = frozenset({STATIC_INT8_EXPERTS_NOT_LOADABLE, MIXED_SCHEMES_IN_EXPERT, FUSED_PROJECTION_MISMATCH, SPARSE24_NOT_SERVABLE, NO_KERNEL_ON_TARGET})
TASK_SIZE_UNKNOWN = "TaskSizeUnknown"


# The errors that are one of the worker's own refusals keep its exit code, so `kompress plan`, the planning pod
# and the worker's plan stage end with the code kompress_api.exit_codes documents for them; any other error
# (memory, scratch), or errors of several kinds, is PlanRejected (20).
_EXIT_OF = {
    TARGETS_MATCH_NOTHING: ExitCode.TARGETS_MATCH_NOTHING,
    OVERLAPPING_GROUPS: ExitCode.OVERLAPPING_GROUPS,
    INVALID_RECIPE: ExitCode.INVALID_RECIPE,
    PRESET_DOES_NOT_APPLY: ExitCode.UNSUPPORTED_ARCHITECTURE,
}


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning"]
    code: str
    message: str
    fix: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def summary(self) -> dict[str, str]:
        return asdict(self)


def error(code: str, message: str, fix: str = "") -> Problem:
    return Problem(ERROR, code, message, fix)


def warning(code: str, message: str, fix: str = "") -> Problem:
    return Problem(WARNING, code, message, fix)


def exit_for(errors: list[Problem]) -> ExitCode:
    """The exit code of a plan with these errors: their own when they are all of one kind that has one."""
    codes = {_EXIT_OF.get(p.code, ExitCode.PLAN_REJECTED) for p in errors}
    return codes.pop() if len(codes) == 1 else ExitCode.PLAN_REJECTED


def ordered(problems: list[Problem]) -> list[Problem]:
    """Errors first (a termination message that must be shortened keeps them), otherwise in the order found."""
    return sorted(problems, key=lambda p: not p.is_error)


def examples(names: list[str], limit: int = 3) -> str:
    """'a, b, c and 12 more' for messages that must stay short."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
