"""Every way the worker refuses or fails, each tied to an exit code and a condition reason.

    KompressError                      exit code from kompress_api.exit_codes
    ├── InvalidSpec                    10  the CompressionJob itself is wrong
    ├── ModelNotFound                  11  nothing at spec.model.uri (or no config.json there)
    ├── UnsupportedArchitecture        12  a preset can't be applied to this model
    ├── NoCalibrationSamples           13  data with zero usable rows (e.g. messages, no chat template)
    ├── TargetsMatchNothing            14  recipe targets/ignore entries that hit no module
    ├── OverlappingGroups              15  a module in two config groups
    ├── OutputExists                   16  a finished model (manifest) is already at the destination
    ├── QualityGateFailed              17  evaluation missed spec.evaluation.gate
    ├── VerificationFailed             18  the saved checkpoint is not what the recipe said
    ├── AccessDenied                   19  credentials refused, bucket missing
    ├── PlanRejected                   20  the plan found errors
    ├── InvalidRecipe                  21  a custom recipe that does not parse
    ├── CalibrationNotFound            22  nothing at spec.calibration.uri
    └── StorageUnreachable             30  network trouble: the only retriable one

Anything else escaping a stage is an internal error (exit 1, retriable by the Job's backoffLimit).
Messages are for users: say what is wrong and what to change, never a secret value.
"""

from __future__ import annotations

from kompress_api.exit_codes import ExitCode


class KompressError(Exception):
    exit: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage

    @property
    def reason(self) -> str:
        return self.exit.reason


def _error(name: str, exit_code: ExitCode) -> type[KompressError]:
    return type(name, (KompressError,), {"exit": exit_code, "__doc__": exit_code.summary})


InvalidSpec = _error("InvalidSpec", ExitCode.INVALID_SPEC)
ModelNotFound = _error("ModelNotFound", ExitCode.MODEL_NOT_FOUND)
UnsupportedArchitecture = _error("UnsupportedArchitecture", ExitCode.UNSUPPORTED_ARCHITECTURE)
NoCalibrationSamples = _error("NoCalibrationSamples", ExitCode.NO_CALIBRATION_SAMPLES)
TargetsMatchNothing = _error("TargetsMatchNothing", ExitCode.TARGETS_MATCH_NOTHING)
OverlappingGroups = _error("OverlappingGroups", ExitCode.OVERLAPPING_GROUPS)
OutputExists = _error("OutputExists", ExitCode.OUTPUT_EXISTS)
QualityGateFailed = _error("QualityGateFailed", ExitCode.QUALITY_GATE_FAILED)
VerificationFailed = _error("VerificationFailed", ExitCode.VERIFICATION_FAILED)
AccessDenied = _error("AccessDenied", ExitCode.ACCESS_DENIED)
PlanRejected = _error("PlanRejected", ExitCode.PLAN_REJECTED)
InvalidRecipe = _error("InvalidRecipe", ExitCode.INVALID_RECIPE)
CalibrationNotFound = _error("CalibrationNotFound", ExitCode.CALIBRATION_NOT_FOUND)
StorageUnreachable = _error("StorageUnreachable", ExitCode.STORAGE_UNREACHABLE)
