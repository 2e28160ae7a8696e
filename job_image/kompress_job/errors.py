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
    ├── ModelFileCorrupt               23  a weight file that cannot be read (header, size), or one the index names missing
    ├── CompressionMismatch            24  llm-compressor did not apply the planned schemes; DDP ranks resolved differently
    └── StorageUnreachable             30  network trouble: the only retriable one

Anything else escaping a stage is an internal error (exit 1, retriable by the Job's backoffLimit).
Messages are for users: say what is wrong and what to change, never a secret value.
"""

from __future__ import annotations

import re

from kompress_api.exit_codes import ExitCode

# pydantic appends a web link to every error; users need the field and the reason, not the link.
_PYDANTIC_LINK = re.compile(r"\s*For further information visit \S+")


def one_line(text: str) -> str:
    """`text` as one readable line: line breaks and runs of blanks become one space, pydantic's links go.

    Reasons end up in a Kubernetes condition, an Event and a one-line CLI message; the details a
    library printed over several lines stay readable joined (the log keeps the original exception)."""
    return " ".join(_PYDANTIC_LINK.sub("", text).split())


def describe(err: BaseException) -> str:
    """What a library's exception says, in one line: a pydantic ValidationError as `field: reason; ...`
    (its own text repeats input values over many lines), anything else as `Type: message`."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        problems = []
        for e in err.errors()[:10]:
            loc = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(msg if not loc or msg.startswith(loc) else f"{loc}: {msg}")
        more = f" (and {len(err.errors()) - 10} more)" if len(err.errors()) > 10 else ""
        return one_line(f"{err.title}: " + "; ".join(problems) + more)
    return one_line(f"{type(err).__name__}: {err}")


class KompressError(Exception):
    exit: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        message = one_line(message)
        super().__init__(message)
        self.message = message
        self.stage = stage

    @property
    def reason(self) -> str:
        return self.exit.reason


_BY_EXIT: dict[ExitCode, type[KompressError]] = {}


def _error(name: str, exit_code: ExitCode) -> type[KompressError]:
    cls = type(name, (KompressError,), {"exit": exit_code, "__doc__": exit_code.summary})
    _BY_EXIT[exit_code] = cls
    return cls


def error_for(exit_code: ExitCode, message: str) -> KompressError:
    """The error of `exit_code` with `message`: for a failure another process reported by its code
    (a distributed rank), or a refusal whose code a table chose (a plan's errors)."""
    cls = _BY_EXIT.get(exit_code)
    if cls is not None:
        return cls(message)
    err = KompressError(message)
    err.exit = exit_code
    return err


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
ModelFileCorrupt = _error("ModelFileCorrupt", ExitCode.MODEL_FILE_CORRUPT)
CompressionMismatch = _error("CompressionMismatch", ExitCode.COMPRESSION_MISMATCH)
StorageUnreachable = _error("StorageUnreachable", ExitCode.STORAGE_UNREACHABLE)
