"""What the stages share: the job, the scratch folder, the progress reporter, and each stage's result.

Owns: one typed record passed through the pipeline. Each stage reads what earlier stages left and
fills its own fields; nothing else is global.
Must not: do I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import CompressionJob, EvaluationMetrics

from kompress_job.progress import ProgressReporter


@dataclass
class RunContext:
    job: CompressionJob
    workdir: Path
    progress: ProgressReporter
    # Where credentials come from (os.environ in a pod). Read by the I/O stages only, never logged.
    env: Mapping[str, str]
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kompress"))
    # Number of accelerators to use; 0 runs on the CPU.
    devices: int = 0

    # preflight
    output_checked: bool = False
    # plan: kompress_job.planning.plan's Plan
    plan: Any = None
    # fetch-model
    model_dir: Path | None = None
    resolved_revision: str | None = None
    source_bytes: int | None = None
    # the model cache's in-use mark of the entry (cache.lock.InUse), held until the worker ends
    cache_use: Any = None
    # what this run derives and keeps in the model cache (io.cache.artifacts.Artifacts: calibration samples, the
    # baseline record), with its in-use marks; None without a cache (made by the first stage that asks)
    artifacts: Any = None
    # calibration: tokenized datasets.Dataset for calibration, and held-out rows for evaluation; the commit of a
    # Hub dataset (pinned by preflight)
    calibration_revision: str | None = None
    calibration: Any = None
    holdout: Any = None
    # load-model (a meta-device model when distributed ranks load the weights; verify replaces it with the
    # checkpoint reloaded as users load it, for the evaluate stage)
    model: Any = None
    tokenizer: Any = None
    # baseline: the original model's figures on the held-out rows, kept so both models never share memory;
    # with spec.evaluation.tasks, the lm-eval backend, the task folder and the original's scores on disk
    baseline: Any = None
    task_backend: str | None = None
    task_folder: Path | None = None
    task_record: Path | None = None
    # compress: the resolved recipe (kompress_job.recipe.ResolvedRecipe: groups, modifiers, summary())
    recipe: Any = None
    # load-model: how the recipe is applied, "data-free" (file by file, the model never built) or "loaded"
    # (kompress_job.model.data_free.choose_path)
    recipe_path: str | None = None
    # save
    checkpoint_dir: Path | None = None
    checkpoint_bytes: int | None = None
    # kompress_job.model.mtp.carry.CarryResult: the multi-token-prediction layers kept or dropped (None: the model has none)
    mtp: Any = None
    # verify: kompress_job.model.verification.VerificationReport.summary(), a JSON-able dict
    verification: Any = None
    # evaluate
    metrics: EvaluationMetrics | None = None
    # every task score (kompress_api TaskScore) and both records' timing, for the manifest and the model card
    task_scores: list[Any] = field(default_factory=list)
    task_summary: dict[str, Any] | None = None
    gate_failures: list[str] = field(default_factory=list)
    # publish
    output_uri: str | None = None
    manifest_uri: str | None = None
    rejected_uri: str | None = None

    timings: dict[str, float] = field(default_factory=dict)
