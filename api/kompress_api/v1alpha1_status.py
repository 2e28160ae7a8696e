"""The status of a CompressionJob, kompress.dev/v1alpha1: what the operator writes, never the user.

Owns: every status field, its docs and bounds (the CRD's status schema is generated from these, with
the spec, by crdgen). kompress_api.v1alpha1 re-exports them: import them from there.
Must not: contain behaviour.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from kompress_api._model import ApiModel, api_field
from kompress_api.stages import DONE, STAGE_NAMES


class Phase(str, Enum):
    """A one-word summary for humans, derived from the conditions (never stored independently)."""

    PENDING = "Pending"
    PLANNING = "Planning"
    QUEUED = "Queued"
    RUNNING = "Running"
    PUBLISHING = "Publishing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class Condition(ApiModel):
    """A Kubernetes condition (metav1.Condition)."""

    type: str = api_field(description="condition type, e.g. Succeeded.", max_length=316)
    status: Literal["True", "False", "Unknown"] = api_field(description="True, False or Unknown.")
    reason: str = api_field(description="CamelCase machine-readable reason, e.g. OOMKilled.", max_length=1024)
    message: str = api_field("", description="what happened, in words a user can act on.", max_length=32768)
    last_transition_time: str = api_field(description="when status last changed (RFC 3339).")
    observed_generation: int | None = api_field(None, description="metadata.generation this condition was set for.", ge=0)


class Progress(ApiModel):
    """Where the worker is. Polled from the worker while it runs."""

    stage: str | None = api_field(None, description=f"current stage: {', '.join(STAGE_NAMES)}, {DONE}.")
    stage_index: int | None = api_field(None, description="1-based index of the stage.", ge=0)
    stage_count: int | None = api_field(None, description="number of stages.", ge=0)
    step: int | None = api_field(None, description="step within the stage.", ge=0)
    total_steps: int | None = api_field(None, description="steps in the stage, when known.", ge=0)
    percent: int | None = api_field(None, description="overall percent done, 0 to 100.", ge=0, le=100)
    message: str | None = api_field(None, description="what the stage is doing.")
    bytes_done: int | None = api_field(None, description="bytes moved in the current transfer.", ge=0)
    bytes_total: int | None = api_field(None, description="bytes to move in the current transfer.", ge=0)
    eta_seconds: int | None = api_field(None, description="estimated seconds left in the whole job.", ge=0)
    started_at: str | None = api_field(None, description="when the worker started (RFC 3339).")
    updated_at: str | None = api_field(None, description="when this progress was reported (RFC 3339).")


class PlanProblem(ApiModel):
    """Something the plan found, with what to do about it."""

    severity: Literal["error", "warning"] = api_field(description="error stops the job before any GPU is asked for; warning is reported.")
    code: str = api_field(description="stable identifier, e.g. GroupSizeMismatch.")
    message: str = api_field(description="what is wrong.")
    fix: str = api_field("", description="what to change.")


class PlanCache(ApiModel):
    """What the model cache held of the job's model when it was planned (only with a cache)."""

    claim_name: str | None = api_field(None, description="the PersistentVolumeClaim of the model cache.", max_length=253)
    cached_bytes: int = api_field(0, description="bytes of the model already verified in the cache: not downloaded again.", ge=0)
    total_bytes: int = api_field(0, description="bytes of the model's files the job fetches.", ge=0)
    download_bytes: int = api_field(0, description="bytes still to download (total minus cached).", ge=0)
    volume_bytes: int | None = api_field(None, description="bytes every entry of the cache takes on its volume, as the plan found it.", ge=0)


class PlanSummary(ApiModel):
    """The figures of the plan made before any GPU was asked for."""

    total_parameters: int | None = api_field(None, description="parameters of the model as loaded.", ge=0)
    estimated_checkpoint_bytes: int | None = api_field(None, description="estimated size of the compressed checkpoint.", ge=0)
    compression_ratio: float | None = api_field(None, description="bf16 size divided by the estimated checkpoint size.")
    host_memory_bytes: int | None = api_field(None, description="host RAM the worker needs.", ge=0)
    gpu_memory_bytes: int | None = api_field(None, description="GPU memory the worker needs per device.", ge=0)
    disk_bytes: int | None = api_field(None, description="scratch disk the worker needs.", ge=0)
    shm_bytes: int | None = api_field(None, description="size of /dev/shm the worker needs (with several GPUs the ranks share the model there).", ge=0)
    servable: bool | None = api_field(None, description="whether vLLM can serve the result, as far as known.")
    cache: PlanCache | None = api_field(None, description="with a model cache: how much of the model it already holds, and what is left to download.")
    problems: list[PlanProblem] = api_field([], description="errors and warnings found by the plan.")


class TaskScore(ApiModel):
    """One metric of one lm-eval task, on the original and on the compressed model."""

    task: str = api_field(description="the lm-eval task.", max_length=128)
    metric: str = api_field(description="the metric with its filter, as lm-eval names it, e.g. acc, acc_norm, exact_match,strict-match.", max_length=128)
    original: float | None = api_field(None, description="the original model's score.")
    compressed: float | None = api_field(None, description="the compressed model's score.")
    difference: float | None = api_field(None, description="compressed minus original.")
    original_stderr: float | None = api_field(None, description="the standard error lm-eval reports for the original's score.")
    compressed_stderr: float | None = api_field(None, description="the standard error lm-eval reports for the compressed model's score.")
    higher_is_better: bool | None = api_field(None, description="the direction of the metric, as the task says.")


# status.result.metrics.tasks holds at most this many scores (the manifest holds them all), so the status and the
# termination message stay small.
MAX_STATUS_TASK_SCORES = 12


class EvaluationMetrics(ApiModel):
    """Fidelity of the compressed model against the original."""

    samples: int | None = api_field(None, description="held-out samples evaluated.", ge=0)
    tokens: int | None = api_field(None, description="tokens evaluated.", ge=0)
    perplexity_original: float | None = api_field(None, description="perplexity of the original model.")
    perplexity_compressed: float | None = api_field(None, description="perplexity of the compressed model.")
    perplexity_increase: float | None = api_field(None, description="relative perplexity increase, e.g. 0.05 for +5%.")
    kl_divergence: float | None = api_field(None, description="mean KL divergence (nats) of next-token distributions, original to compressed.")
    top1_agreement: float | None = api_field(None, description="share of positions where both models predict the same next token.")
    tasks: list[TaskScore] | None = api_field(None, description=f"lm-eval scores per task and metric, those missing the gate first (at most {MAX_STATUS_TASK_SCORES}; the manifest has all).", max_length=MAX_STATUS_TASK_SCORES)
    task_scores_omitted: int | None = api_field(None, description="task scores left out of this list for its size (they are in the manifest).", ge=0)
    task_backend: str | None = api_field(None, description="the lm-eval backend that scored both models: hf or vllm.", max_length=16)
    gate_passed: bool | None = api_field(None, description="whether the quality gate passed (unset without a gate).")


class MtpResult(ApiModel):
    """What became of the source's multi-token-prediction layers."""

    handling: Literal["keep", "drop", "quantize"] = api_field(description="spec.recipe.mtp as applied.")
    layers: int = api_field(0, description="MTP layers the model's config declares.", ge=0)
    tensors: int = api_field(0, description="MTP tensors of the source checkpoint (kept: all of them are in the output, byte-identical).", ge=0)
    bytes: int = api_field(0, description="their size in bytes.", ge=0)


class PublishedDestination(ApiModel):
    """Where the checkpoint went, by kind, with a reference that names exactly what was published."""

    kind: Literal["s3", "file", "hf", "oci"] = api_field(description="s3 (an S3 prefix), file (a folder), hf (a Hugging Face Hub repository) or oci (an OCI image in a registry).")
    reference: str = api_field(
        description=(
            "what to give a consumer: the prefix or folder URI; for hf, the repository at its commit, hf://ORG/NAME@COMMIT "
            "(kompress verify and huggingface_hub's revision= take it as is); for oci, the image by digest, "
            "oci://REGISTRY/REPOSITORY@sha256:HEX (a KServe InferenceService's storageUri takes it as is)."
        ),
        max_length=1024,
    )
    digest: str | None = api_field(None, description="oci: the image manifest's digest (sha256:HEX), which the tag pointed to when the job pushed it.", max_length=80)
    tag: str | None = api_field(None, description="oci: the tag that was pushed, last, once every blob was in the registry.", max_length=128)
    commit: str | None = api_field(None, description="hf: the id of the one commit that holds every published file.", max_length=64)
    revision: str | None = api_field(None, description="hf: the branch the commit was made on.", max_length=255)
    signature: str | None = api_field(None, description="the OpenSSF model signing signature beside the model (spec.output.signing), e.g. model.sig; unset when unsigned.", max_length=255)


class JobResult(ApiModel):
    """What the worker produced."""

    output_uri: str | None = api_field(None, description="where the checkpoint was published.")
    destination: PublishedDestination | None = api_field(None, description="the destination's kind and an exact reference to what was published (for hf, the commit; for oci, the image digest).")
    manifest_uri: str | None = api_field(None, description="the manifest kompress.json: sizes, checksums, recipe, metrics.")
    rejected_uri: str | None = api_field(None, description="where a checkpoint that failed the quality gate was kept for inspection.")
    resolved_revision: str | None = api_field(None, description="the exact model revision compressed (Hub commit or S3 ETag digest).")
    checkpoint_bytes: int | None = api_field(None, description="size of the published checkpoint.", ge=0)
    original_bytes: int | None = api_field(None, description="size of the model as fetched.", ge=0)
    compression_ratio: float | None = api_field(None, description="bf16 size of the model divided by checkpoint_bytes.")
    metrics: EvaluationMetrics | None = api_field(None, description="fidelity figures.")
    mtp: MtpResult | None = api_field(None, description="the multi-token-prediction layers: kept (how many tensors, bytes) or dropped. Unset when the model has none.")


class Children(ApiModel):
    """Objects the operator created for this job."""

    plan_job: str | None = api_field(None, description="name of the CPU-only planning Job.")
    worker_job: str | None = api_field(None, description="name of the GPU worker Job.")
    worker_pod: str | None = api_field(None, description="name of the current worker pod.")


class CompressionJobStatus(ApiModel):
    """Observed state, written only by the operator."""

    observed_generation: int | None = api_field(None, description="the metadata.generation the status describes.", ge=0)
    phase: Phase | None = api_field(None, description="Pending, Planning, Queued, Running, Publishing, Succeeded, Failed or Suspended; derived from conditions.")
    conditions: list[Condition] = api_field(
        [],
        description="Planned, Queued, Running, Suspended, Succeeded, Failed, plus Reconciling and Stalled for kstatus-based tools.",
        list_map_keys=["type"],
    )
    progress: Progress | None = api_field(None, description="where the worker is.")
    plan: PlanSummary | None = api_field(None, description="the plan made before any GPU was asked for.")
    children: Children | None = api_field(None, description="the Jobs and pod created for this job.")
    result: JobResult | None = api_field(None, description="what was published.")
    start_time: str | None = api_field(None, description="when the worker started (RFC 3339).")
    completion_time: str | None = api_field(None, description="when the job ended (RFC 3339).")
    attempts: int | None = api_field(None, description="worker pods started so far.", ge=0)
