"""What the stages share: the job, the scratch folder, the progress reporter, and each stage's result.

Owns: one typed record passed through the pipeline. Each stage reads what earlier stages left and
fills its own fields; nothing else is global. The heavy types (torch's model, datasets' rows) are named for
the reader and the type checker only: importing this module imports none of them.
Must not: do I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kompress_api.v1alpha1 import CompressionJob, EvaluationMetrics, PublishedDestination, TaskScore

from kompress_job.progress import ProgressReporter

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kompress_job.io.cache.artifacts import Artifacts
    from kompress_job.io.cache.lock import InUse
    from kompress_job.model.fidelity_record import BaselineRecord
    from kompress_job.model.mtp.carry import CarryResult
    from kompress_job.model.task_scores import TaskRunSummary
    from kompress_job.model.verification import VerificationSummary
    from kompress_job.planning.plan import Plan
    from kompress_job.recipe.resolved import ResolvedRecipe

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
    # plan: the plan, and its resolution of the recipe, which every later stage uses (resolved once per process)
    plan: Plan | None = None
    recipe: ResolvedRecipe | None = None
    # fetch-model
    model_dir: Path | None = None
    resolved_revision: str | None = None
    source_bytes: int | None = None
    # the model cache's in-use mark of the entry, held until the worker ends
    cache_use: InUse | None = None
    # what this run derives and keeps in the model cache (calibration samples, the baseline record), with its in-use
    # marks; None without a cache (made by the first stage that asks)
    artifacts: Artifacts | None = None
    # calibration: tokenized rows for calibration, and held-out rows for evaluation; the commit of a Hub dataset
    # (pinned by preflight)
    calibration_revision: str | None = None
    calibration: Dataset | None = None
    holdout: Dataset | None = None
    # load-model (a meta-device model when distributed ranks load the weights; verify replaces it with the
    # checkpoint reloaded as users load it, for the evaluate stage)
    model: PreTrainedModel | None = None
    tokenizer: PreTrainedTokenizerBase | None = None
    # load-model: how the recipe is applied, "data-free" (file by file, the model never built) or "loaded"
    # (kompress_job.model.data_free.choose_path)
    recipe_path: str | None = None
    # baseline: the original model's figures on the held-out rows, kept so both models never share memory;
    # with spec.evaluation.tasks, the lm-eval backend, the task folder and the original's scores on disk
    baseline: BaselineRecord | None = None
    task_backend: str | None = None
    task_folder: Path | None = None
    task_record: Path | None = None
    # save
    checkpoint_dir: Path | None = None
    checkpoint_bytes: int | None = None
    # the multi-token-prediction layers kept or dropped (None: the model has none)
    mtp: CarryResult | None = None
    # verify: what was checked, as JSON (VerificationReport.summary())
    verification: VerificationSummary | None = None
    # evaluate
    metrics: EvaluationMetrics | None = None
    # every task score and both records' timing, for the manifest and the model card
    task_scores: list[TaskScore] = field(default_factory=list)
    task_summary: TaskRunSummary | None = None
    gate_failures: list[str] = field(default_factory=list)
    # publish
    output_uri: str | None = None
    manifest_uri: str | None = None
    # the kind and the exact reference (an hf:// output's commit, an OCI image by digest)
    destination: PublishedDestination | None = None
    rejected_uri: str | None = None

    timings: dict[str, float] = field(default_factory=dict)
