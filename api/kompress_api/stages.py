"""The worker's stages, in order: the one table the worker's pipeline, its progress reporter, the operator and
the API's description of status.progress.stage read.

Owns: each stage's name (what progress reports and the operator shows), its weight (a rough share of a job's wall
time, which turns stage progress into an overall percent) and whether it runs only with evaluation (without it
there is no baseline to record or compare). kompress_api.worker_protocol re-exports it: import it from there.
Must not: import anything of the API (both the API model and the worker protocol import it), or know what a
stage does (kompress_job.pipeline does).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    weight: float
    evaluation_only: bool = False


PUBLISH = "publish"
# What progress reports once every stage has finished.
DONE = "done"

STAGES: tuple[Stage, ...] = (
    Stage("preflight", 0.5),
    Stage("plan", 0.5),
    Stage("fetch-model", 10),
    Stage("calibration", 1),
    Stage("load-model", 4),
    Stage("baseline", 3, evaluation_only=True),
    Stage("compress", 60),
    Stage("save", 4),
    Stage("verify", 4),
    Stage("evaluate", 3, evaluation_only=True),
    Stage(PUBLISH, 10),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def stage_names(*, evaluation: bool) -> list[str]:
    """The stages a job runs, in order: without evaluation, none of those that only evaluation needs."""
    return [stage.name for stage in STAGES if evaluation or not stage.evaluation_only]
