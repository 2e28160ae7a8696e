"""The worker's exit codes: one table shared by the worker, the CLI and the operator.

Owns: each failure's code, its condition reason, and whether retrying could help. The operator turns
the non-retriable codes into the Job's podFailurePolicy (fail at once, don't burn GPU hours on bad
input) and the reason into the CompressionJob's Failed condition.
Must not: know how a failure is detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class _Exit:
    code: int
    reason: str
    retriable: bool
    summary: str


class ExitCode(Enum):
    OK = _Exit(0, "Succeeded", False, "the job finished")
    INTERNAL = _Exit(1, "WorkerError", True, "an unexpected error in the worker")
    USAGE = _Exit(2, "InvalidArguments", False, "the command line was wrong")
    INVALID_SPEC = _Exit(10, "InvalidSpec", False, "the CompressionJob spec is invalid")
    MODEL_NOT_FOUND = _Exit(11, "ModelNotFound", False, "the model could not be found at spec.model.uri")
    UNSUPPORTED_ARCHITECTURE = _Exit(12, "UnsupportedArchitecture", False, "the preset does not apply to this model's architecture")
    NO_CALIBRATION_SAMPLES = _Exit(13, "NoCalibrationSamples", False, "the calibration data yielded no usable samples")
    TARGETS_MATCH_NOTHING = _Exit(14, "TargetsMatchNothing", False, "recipe targets or ignore entries match no module")
    OVERLAPPING_GROUPS = _Exit(15, "OverlappingGroups", False, "a module is in more than one config group")
    OUTPUT_EXISTS = _Exit(16, "OutputExists", False, "a finished model already exists at spec.output.uri")
    QUALITY_GATE_FAILED = _Exit(17, "QualityGateFailed", False, "the compressed model missed the quality gate")
    VERIFICATION_FAILED = _Exit(18, "VerificationFailed", False, "the saved checkpoint does not match the recipe")
    ACCESS_DENIED = _Exit(19, "AccessDenied", False, "credentials were refused or the bucket does not exist")
    PLAN_REJECTED = _Exit(20, "PlanRejected", False, "the plan found errors; nothing ran")
    INVALID_RECIPE = _Exit(21, "InvalidRecipe", False, "the recipe could not be read")
    CALIBRATION_NOT_FOUND = _Exit(22, "CalibrationNotFound", False, "the calibration data could not be found")
    MODEL_FILE_CORRUPT = _Exit(23, "ModelFileCorrupt", False, "a weight file of the model is corrupt, truncated or missing")
    COMPRESSION_MISMATCH = _Exit(24, "CompressionMismatch", False, "llm-compressor did not do what the resolved recipe said")
    STORAGE_UNREACHABLE = _Exit(30, "StorageUnreachable", True, "an object store or the Hub could not be reached")
    # The shell's 128 + SIGTERM: not a failure of the job, so a retry may well finish it.
    TERMINATED = _Exit(143, "Terminated", True, "stopped by SIGTERM (pod deleted, job suspended or node drained)")

    @property
    def code(self) -> int:
        return self.value.code

    @property
    def reason(self) -> str:
        return self.value.reason

    @property
    def retriable(self) -> bool:
        return self.value.retriable

    @property
    def summary(self) -> str:
        return self.value.summary

    @classmethod
    def from_code(cls, code: int) -> "ExitCode | None":
        for member in cls:
            if member.code == code:
                return member
        return None


def non_retriable_codes() -> list[int]:
    """Exit codes after which a retry would fail the same way (bad input, gate, verification)."""
    return sorted(m.code for m in ExitCode if not m.retriable and m.code != 0)
