"""How a CompressionJob checks its result, kompress.dev/v1alpha1: spec.evaluation.

Owns: Evaluation (fidelity on held-out samples, its length's default), the lm-eval tasks (EvaluationTask)
and where their definitions come from (TaskSource), the quality gate (QualityGate): fields, docs, bounds,
defaults, CEL rules and their local mirror. The scores themselves are status (v1alpha1_status).
kompress_api.v1alpha1 re-exports them: import them from there.
Must not: score anything (the worker's evaluation stage does).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from kompress_api._model import ApiModel, api_field
from kompress_api.podspec import DNS_SUBDOMAIN_RE
from kompress_api.v1alpha1_access import S3Access, VolumeRef

TASK_SOURCE_URI_RE = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+|/.+)$"
# lm-eval registry names: letters, digits, _ - . and : (e.g. mmlu_abstract_algebra, arc_easy, leaderboard_bbh).
TASK_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
# Where the operator mounts a spec.evaluation.taskSource.configMap in the worker.
TASK_CONFIG_MAP_MOUNT = "/kompress/tasks"


class QualityGate(ApiModel):
    """Limits a compressed model must meet to be published. Unset limits are not checked."""

    max_perplexity_increase: float | None = api_field(None, description="largest relative perplexity increase, e.g. 0.1 for +10%.", ge=0)
    max_kl_divergence: float | None = api_field(None, description="largest mean KL divergence (nats) between the original's and the compressed model's next-token distributions.", ge=0)
    min_top1_agreement: float | None = api_field(None, description="smallest share of positions where both models predict the same next token, 0 to 1.", ge=0, le=1)
    max_task_drop: float | None = api_field(
        None,
        description=(
            "largest drop allowed in any metric of spec.evaluation.tasks, absolute, in the metric's own units (0.02: two "
            "points of accuracy); a drop is a fall in a metric where higher is better, a rise where lower is."
        ),
        ge=0,
    )


class EvaluationTask(ApiModel):
    """One lm-evaluation-harness task (or group), scored on the original before compression and on the checkpoint after."""

    name: str = api_field(
        description="the task's name in lm-eval's registry (arc_easy, gsm8k, mmlu, hellaswag...) or in spec.evaluation.taskSource's YAML.",
        rules=[(f"self.matches('{TASK_NAME_RE}')", "spec.evaluation.tasks[].name must be an lm-eval task name (letters, digits, _ - . :)")],
        max_length=128,
    )
    num_fewshot: int | None = api_field(None, description="few-shot examples in each prompt. Default: the task's own.", ge=0, le=64)
    limit: int | None = api_field(None, description="score only the first N documents of the task (faster; the figures are then not comparable with published full-task scores). Default: all.", ge=1, le=1000000)


class TaskSource(ApiModel):
    """lm-eval task YAML and the local data files it reads, provided by the cluster (no Hub access needed)."""

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        (
            "(has(self.configMap) ? 1 : 0) + (has(self.volume) ? 1 : 0) + (has(self.uri) ? 1 : 0) == 1",
            "spec.evaluation.taskSource needs exactly one of configMap, volume or uri",
        ),
        ("!has(self.s3) || (has(self.uri) && self.uri.startsWith('s3://'))", "spec.evaluation.taskSource.s3 applies to an s3:// uri only"),
    ]

    config_map: str | None = api_field(
        None,
        description=f"a ConfigMap in the job's namespace whose keys are the files (task YAML, JSONL data), mounted read-only at {TASK_CONFIG_MAP_MOUNT}.",
        pattern=DNS_SUBDOMAIN_RE,
        max_length=253,
    )
    volume: VolumeRef | None = api_field(None, description="a PersistentVolumeClaim holding the task folder, mounted read-only at its mountPath.")
    uri: str | None = api_field(
        None,
        description="s3://BUCKET/PREFIX (downloaded before the baseline), or file:///PATH or /PATH (a folder the worker can already read).",
        rules=[(f"self.matches('{TASK_SOURCE_URI_RE}')", "spec.evaluation.taskSource.uri must be s3://BUCKET/PREFIX, file:///PATH or an absolute /PATH")],
        max_length=1024,
    )
    s3: S3Access | None = api_field(None, description="S3 connection settings for an s3:// uri.")

    @model_validator(mode="after")
    def _one_source(self) -> "TaskSource":
        # The same rules as cel_rules, so a manifest the API server would refuse is refused locally too.
        if sum(x is not None for x in (self.config_map, self.volume, self.uri)) != 1:
            raise ValueError("spec.evaluation.taskSource needs exactly one of configMap, volume or uri")
        if self.s3 is not None and not (self.uri or "").startswith("s3://"):
            raise ValueError("spec.evaluation.taskSource.s3 applies to an s3:// uri only")
        return self


GATE_NEEDS_EVALUATION = "spec.evaluation.gate needs spec.evaluation.enabled: true: with evaluation disabled no gate would be applied"


# spec.evaluation.maxSequenceLength's default is the calibration length, at most this (Evaluation.sequence_length:
# what the calibration stage cuts held-out rows to and what the plan counts).
EVALUATION_LENGTH_CAP = 1024


class Evaluation(ApiModel):
    """Fidelity of the compressed model against the original, on held-out samples, and lm-eval task scores."""

    # A task limit with no task to check would be a gate the user believes in and nothing enforces.
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        (
            "!has(self.gate) || !has(self.gate.maxTaskDrop) || (has(self.tasks) && size(self.tasks) > 0)",
            "spec.evaluation.gate.maxTaskDrop needs spec.evaluation.tasks to check",
        ),
        ("!has(self.enabled) || self.enabled || !has(self.tasks) || size(self.tasks) == 0", "spec.evaluation.tasks are not scored with spec.evaluation.enabled false"),
        # A gate without an evaluation would never be applied, and the job would succeed unchecked.
        ("self.enabled || !has(self.gate)", GATE_NEEDS_EVALUATION),
    ]

    enabled: bool = api_field(True, description="evaluate after compression. Default true.", schema_default=True)
    samples: int = api_field(16, description="held-out samples (never used for calibration). Default 16.", ge=1, le=10000, schema_default=16)
    max_sequence_length: int | None = api_field(None, description=f"tokens per evaluation sample. Default: the calibration length, at most {EVALUATION_LENGTH_CAP}.", ge=8, le=131072)
    tasks: list[EvaluationTask] = api_field(
        [],
        description="lm-evaluation-harness tasks to score the original (before compression) and the checkpoint on; the scores go to the manifest, the model card's model-index and status.result.metrics.tasks.",
        max_length=32,
        list_map_keys=["name"],
    )
    task_source: TaskSource | None = api_field(None, description="task definitions and data the cluster provides, for tasks not in lm-eval's registry or clusters without the Hub.")
    task_backend: Literal["auto", "hf", "vllm"] = api_field(
        "auto",
        description=(
            "lm-eval backend: hf (transformers, on the worker's GPUs or CPU), vllm (needs vLLM in the image, a GPU and a "
            "servable checkpoint), auto (vllm where all three hold, else hf). Both models are scored by the same backend. Default auto."
        ),
        schema_default="auto",
    )
    gate: QualityGate | None = api_field(None, description="limits that fail the job instead of publishing. Only with enabled: true.")

    def sequence_length(self, calibration_length: int) -> int:
        """Tokens per evaluation sample: maxSequenceLength, else the calibration length up to EVALUATION_LENGTH_CAP."""
        return self.max_sequence_length or min(calibration_length, EVALUATION_LENGTH_CAP)

    @model_validator(mode="after")
    def _gate_needs_evaluation(self) -> "Evaluation":
        # The same rule as cel_rules.
        if not self.enabled and self.gate is not None:
            raise ValueError(GATE_NEEDS_EVALUATION)
        return self

    @model_validator(mode="after")
    def _tasks_are_checkable(self) -> "Evaluation":
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("spec.evaluation.tasks names each task once")
        if self.gate is not None and self.gate.max_task_drop is not None and not self.tasks:
            raise ValueError("spec.evaluation.gate.maxTaskDrop needs spec.evaluation.tasks to check")
        if self.tasks and not self.enabled:
            raise ValueError("spec.evaluation.tasks are not scored with spec.evaluation.enabled false")
        return self
