"""CompressionJob, kompress.dev/v1alpha1: the one typed model of the API.

Owns: every spec and status field, its docs, bounds, defaults and CEL rules. The CRD in crds/
is generated from this module (`make crds`); the operator, the worker and the CLI parse with it.
Must not: contain behaviour beyond parsing and the few derived facts every consumer needs.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import StringConstraints, model_validator

from kompress_api._model import QUANTITY_RE, ApiModel, api_field

GROUP = "kompress.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CompressionJob"
PLURAL = "compressionjobs"
SINGULAR = "compressionjob"
# `cj` is taken by cronjobs; these collide with no built-in resource.
SHORT_NAMES = ["cjob", "kcj"]

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPUS = 4


class Preset(str, Enum):
    """Named recipes. docs/presets.md says what each keeps, quantizes, and where it can be served."""

    SPARSE24_W4A16_W8A8 = "sparse24-w4a16-w8a8"
    W4A16_W8A8 = "w4a16-w8a8"
    W4A16 = "w4a16"
    FP8_DYNAMIC = "fp8-dynamic"
    FP8_BLOCK = "fp8-block"
    NVFP4A16 = "nvfp4a16"
    MXFP4A16 = "mxfp4a16"
    NVFP4 = "nvfp4"


MODEL_URI_RE = r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+|/.+)$"
CALIBRATION_URI_RE = r"^(builtin://[a-z0-9-]+|hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|file:///.+|/.+)$"
OUTPUT_URI_RE = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+)$"
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ABS_PATH_RE = r"^/.*$"

Quantity = Union[int, str]
# Bounded strings let the API server estimate the cost of the CEL rules that compare whole objects.
Name = Annotated[str, StringConstraints(max_length=253)]
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace. Kompress never copies the value anywhere."""

    name: str = api_field(description="name of the Secret, in the CompressionJob's namespace.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
    key: str = api_field(description="key inside the Secret whose value is used.", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class S3Access(ApiModel):
    """How to reach an S3 or S3-compatible store (MinIO, Ceph, GCS interop, R2...)."""

    endpoint: str | None = api_field(None, description="endpoint URL for S3-compatible stores, e.g. https://minio.example:9000. Empty means AWS S3.", pattern=r"^https?://.+$", max_length=1024)
    region: str | None = api_field(None, description="region name, e.g. us-east-1. Empty means the credential chain's default.", max_length=64)
    path_style: bool = api_field(False, description="use path-style addressing (https://host/bucket/key), which most S3-compatible stores need. Default false.")
    credentials_secret: str | None = api_field(
        None,
        description=(
            "name of a Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optional AWS_SESSION_TOKEN), "
            "passed to the worker by reference. Leave empty to use the standard AWS credential chain (workload identity, IRSA)."
        ),
        pattern=DNS_SUBDOMAIN_RE,
        max_length=253,
    )


class HubAccess(ApiModel):
    """How to reach the Hugging Face Hub or a mirror of it."""

    endpoint: str | None = api_field(None, description="Hub endpoint (HF_ENDPOINT) for mirrors, e.g. https://hf-mirror.example. Empty means huggingface.co.", pattern=r"^https?://.+$", max_length=1024)
    token_secret: SecretKeyRef | None = api_field(None, description="Secret key holding a Hugging Face token (HF_TOKEN), for gated or private repositories.")


class VolumeRef(ApiModel):
    """A PersistentVolumeClaim mounted into the worker."""

    claim_name: str = api_field(description="name of the PersistentVolumeClaim.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
    mount_path: str = api_field(description="absolute path where the claim is mounted in the worker, e.g. /models.", pattern=ABS_PATH_RE, max_length=1024)
    sub_path: str | None = api_field(None, description="sub-path inside the volume to mount instead of its root.", max_length=1024)
    read_only: bool = api_field(True, description="mount read-only. Default true.")


class ModelSource(ApiModel):
    """The model to compress."""

    # A revision on an S3 prefix or a volume would be ignored, and the user would believe the model pinned.
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("!has(self.revision) || self.uri.startsWith('hf://')", "spec.model.revision applies to hf:// models only: an S3 prefix or a volume has no revisions"),
    ]

    uri: str = api_field(
        description=(
            "where the model is: hf://ORG/NAME (Hugging Face Hub), s3://BUCKET/PREFIX (a folder with config.json and "
            "*.safetensors), file:///PATH or /PATH (a folder on a mounted volume)."
        ),
        rules=[(f"self.matches('{MODEL_URI_RE}')", "spec.model.uri must be hf://ORG/NAME, s3://BUCKET/PREFIX, file:///PATH or an absolute /PATH")],
        max_length=1024,
    )
    revision: str | None = api_field(None, description="Hub revision (branch, tag or commit) to fetch. The resolved commit is recorded in status.result and the manifest. Default main.", max_length=255)
    trust_remote_code: bool = api_field(False, description="allow the model repository's own Python code to run (transformers trust_remote_code). Default false.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = api_field("auto", description="dtype the model is loaded in for compression: auto takes the checkpoint's. Default auto.")
    volume: VolumeRef | None = api_field(None, description="a volume to mount for file:// or path URIs.")
    s3: S3Access | None = api_field(None, description="S3 connection settings for s3:// URIs.")
    hugging_face: HubAccess | None = api_field(None, description="Hub connection settings for hf:// URIs.")

    @model_validator(mode="after")
    def _revision_on_the_hub_only(self) -> "ModelSource":
        _hub_only(self.revision, self.uri, "spec.model.revision applies to hf:// models only: an S3 prefix or a volume has no revisions")
        return self


def _hub_only(revision: str | None, uri: str, message: str) -> None:
    # The same rule as the cel_rules of ModelSource and Calibration, so a manifest the API server would refuse is refused locally too.
    if revision is not None and not uri.startswith("hf://"):
        raise ValueError(message)


class Calibration(ApiModel):
    """Calibration data: the text the compression algorithms observe."""

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("!has(self.revision) || self.uri.startsWith('hf://')", "spec.calibration.revision applies to hf:// datasets only"),
    ]

    uri: str = api_field(
        "builtin://chatterbot",
        description=(
            "where the data is: builtin://chatterbot (English dialogues shipped with the worker image, BSD licence), "
            "hf://ORG/NAME (a Hub dataset), s3://BUCKET/KEY.jsonl, file:///PATH.jsonl or /PATH.jsonl. JSONL rows hold "
            "plain text or chat messages. Default builtin://chatterbot."
        ),
        rules=[(f"self.matches('{CALIBRATION_URI_RE}')", "spec.calibration.uri must be builtin://NAME, hf://ORG/NAME, s3://BUCKET/KEY, file:///PATH or /PATH")],
        schema_default="builtin://chatterbot",
        max_length=1024,
    )
    revision: str | None = api_field(
        None,
        description="for hf:// datasets: the branch, tag or commit to read. It is resolved to a commit once, before any work, and recorded in the manifest (calibration.resolvedRevision). Default main.",
        max_length=255,
    )
    split: str | None = api_field(None, description="dataset split for hf:// datasets, e.g. train_sft. Default train.", max_length=128)
    column: str | None = api_field(None, description="the field holding text or chat messages. Default: 'messages' if present, else 'text'.", max_length=128)
    format: Literal["auto", "text", "messages"] = api_field("auto", description="text: plain strings; messages: chat turns rendered with the model's chat template; auto: decided per row. Default auto.", schema_default="auto")
    samples: int = api_field(512, description="number of calibration samples. 512 is a good start for large models. Default 512.", ge=1, le=100000, schema_default=512)
    max_sequence_length: int = api_field(2048, description="tokens per sample, longer samples are truncated. Default 2048.", ge=8, le=131072, schema_default=2048)
    seed: int = api_field(42, description="shuffle seed, so a re-run picks the same samples. Default 42.", ge=0, schema_default=42)
    s3: S3Access | None = api_field(None, description="S3 connection settings for s3:// URIs.")
    hugging_face: HubAccess | None = api_field(None, description="Hub connection settings for hf:// URIs.")

    @model_validator(mode="after")
    def _revision_on_the_hub_only(self) -> "Calibration":
        _hub_only(self.revision, self.uri, "spec.calibration.revision applies to hf:// datasets only")
        return self


class RecipePath(str, Enum):
    """How the worker applies the recipe."""

    AUTO = "auto"
    DATA_FREE = "data-free"
    LOADED = "loaded"


# The presets whose schemes need no calibration data (the worker derives the same from the resolved recipe;
# tests/job/test_data_free.py holds the two together). The CRD refuses path data-free for the others.
DATA_FREE_PRESETS = ("fp8-dynamic", "fp8-block", "nvfp4a16", "mxfp4a16")
_DATA_FREE_MESSAGE = "spec.recipe.path data-free needs a preset that learns nothing from data: fp8-dynamic, fp8-block, nvfp4a16 or mxfp4a16 (or path auto/loaded)"


class RecipeOverrides(ApiModel):
    """Typed knobs on a preset. Anything beyond these calls for spec.recipe.custom."""

    ignore: list[Pattern] = api_field(
        [],
        description=(
            "more modules to keep in 16-bit, untouched: exact module names (model.layers.0.mlp.down_proj) or "
            "regexes prefixed re: (re:.*mlp\\.down_proj$). Each entry must match at least one module."
        ),
        max_length=256,
    )
    group_size: int | None = api_field(None, description="group size for 4-bit weights. Layers whose input width is not a multiple fall back to the largest of 64 or 32 that divides it, else to per-channel. Default 128.", ge=16, le=1024)
    experts: str | None = api_field(
        None,
        description="regex (re:...) of module names to treat as routed experts, overriding the detection from the model's structure.",
        rules=[("self.startsWith('re:')", "spec.recipe.overrides.experts must be a regex starting with re:")],
        max_length=1024,
    )


class Recipe(ApiModel):
    """What to do to the model: a named preset, or a complete llm-compressor recipe."""

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("has(self.preset) != has(self.custom)", "spec.recipe needs exactly one of preset or custom"),
        ("!has(self.overrides) || has(self.preset)", "spec.recipe.overrides applies to a preset only"),
        (
            "!has(self.path) || self.path != 'data-free' || !has(self.preset) || self.preset in " + str(list(DATA_FREE_PRESETS)).replace('"', "'"),
            _DATA_FREE_MESSAGE,
        ),
    ]

    preset: Preset | None = api_field(
        None,
        description=(
            "a named recipe: sparse24-w4a16-w8a8 (the founding recipe: SparseGPT 2:4, AWQ, INT4 W4A16 on attention and "
            "dense MLP, INT8 W8A8 static on experts, router/gate_proj/lm_head 16-bit; NOT servable by vLLM today), "
            "w4a16-w8a8 (servable: INT4 W4A16 non-experts, INT8 W8A8 dynamic on experts), w4a16 (servable, smallest), "
            "fp8-dynamic (servable on FP8 GPUs, no calibration), fp8-block (FP8, 128x128 weight blocks, no calibration), "
            "nvfp4a16 and mxfp4a16 (FP4 weights only, no calibration), nvfp4 (FP4 weights and activations, calibrated; "
            "Blackwell). See docs/presets.md."
        ),
    )
    overrides: RecipeOverrides | None = api_field(None, description="typed adjustments of the preset. Only with preset.")
    path: RecipePath = api_field(
        RecipePath.AUTO,
        description=(
            "how the worker applies the recipe: data-free (llm-compressor's model_free_ptq: the safetensors files one by one, "
            "never the whole model in memory; only for recipes that need no calibration: fp8-dynamic, fp8-block, nvfp4a16, "
            "mxfp4a16), loaded (the whole model in host memory, llm-compressor's oneshot; every recipe), or auto (default: "
            "data-free when the recipe allows it, else loaded)."
        ),
    )
    custom: str | None = api_field(
        None,
        description="a complete llm-compressor recipe in YAML, used as given. Every targets and ignore entry must match a module, and no module may be in two config groups.",
        max_length=262144,
    )

    @model_validator(mode="after")
    def _one_recipe(self) -> "Recipe":
        # The same two rules as cel_rules, so a manifest the API server would refuse is refused locally too.
        if (self.preset is None) == (self.custom is None):
            raise ValueError("spec.recipe needs exactly one of preset or custom")
        if self.overrides is not None and self.preset is None:
            raise ValueError("spec.recipe.overrides applies to a preset only")
        if self.path is RecipePath.DATA_FREE and self.preset is not None and self.preset.value not in DATA_FREE_PRESETS:
            raise ValueError(_DATA_FREE_MESSAGE)
        return self


class Output(ApiModel):
    """Where the compressed checkpoint is published."""

    uri: str = api_field(
        description="s3://BUCKET/PREFIX (any S3-compatible store) or file:///PATH (local runs, or a mounted volume). The manifest kompress.json is written last: a prefix without it is never a finished model.",
        rules=[(f"self.matches('{OUTPUT_URI_RE}')", "spec.output.uri must be s3://BUCKET/PREFIX or file:///PATH")],
        max_length=1024,
    )
    s3: S3Access | None = api_field(None, description="S3 connection settings for s3:// URIs.")
    volume: VolumeRef | None = api_field(None, description="a volume to mount for file:// URIs (mounted read-write).")
    overwrite: bool = api_field(False, description="replace a finished model already at the destination. Default false: the job fails rather than overwrite.")


class Resources(ApiModel):
    """What the worker pod asks for. Unset memory and scratch are sized from the plan."""

    gpus: int = api_field(DEFAULT_GPUS, description="number of GPUs. More than one runs llm-compressor's distributed (DDP) oneshot; 0 runs on CPU. Default 4.", ge=0, le=64, schema_default=DEFAULT_GPUS)
    gpu_resource_name: str | None = api_field(None, description="extended resource name of the GPU, e.g. nvidia.com/gpu or amd.com/gpu. Default: the operator's setting.", pattern=r"^([a-z0-9.-]+/)?[a-z0-9A-Z._-]+$", max_length=253)
    cpu: Quantity | None = api_field(None, description="CPU request and limit, e.g. 16. Default: 8 per GPU, at least 2.", int_or_string=True)
    memory: Quantity | None = api_field(None, description="memory request and limit, e.g. 256Gi. Default: the plan's host RAM estimate (the whole model is held in host RAM).", int_or_string=True)
    scratch: Quantity | None = api_field(None, description="scratch disk for the download and the compressed output, e.g. 500Gi. Default: the plan's disk estimate.", int_or_string=True)
    scratch_storage_class: str | None = api_field(None, description="storage class of a per-job ephemeral volume for scratch. Default: an emptyDir on the node.", max_length=253)
    shm: Quantity | None = api_field(None, description="size of /dev/shm (memory-backed), for data loaders and NCCL. Default 16Gi.", int_or_string=True)


class GpuArchitecture(str, Enum):
    """NVIDIA GPU generations, as vLLM's kernels tell them apart."""

    AMPERE = "ampere"  # A100, A10, RTX 30xx: compute capability 8.0/8.6
    ADA = "ada"  # L4, L40S, RTX 40xx: 8.9 (FP8)
    HOPPER = "hopper"  # H100, H200: 9.0 (FP8)
    BLACKWELL = "blackwell"  # B200, GB200, RTX PRO 6000: 10.x/12.x (FP8, FP4)


class Serving(ApiModel):
    """Where the checkpoint will be served, so the plan can say whether vLLM serves it there and why."""

    gpu: GpuArchitecture | None = api_field(
        None,
        description=(
            "GPU architecture vLLM will serve on: ampere, ada, hopper or blackwell. Default: the job's own GPUs, read from "
            "spec.scheduling.nodeSelector's nvidia.com/gpu.family or nvidia.com/gpu.product label when set, else hopper."
        ),
    )
    tensor_parallel: int | None = api_field(None, description="vLLM --tensor-parallel-size. Default: spec.resources.gpus (at least 1).", ge=1, le=64)
    expert_parallel: bool = api_field(False, description="vLLM --enable-expert-parallel: every routed expert whole on one GPU instead of split across the tensor-parallel GPUs. Default false.")


class Scheduling(ApiModel):
    """Passed through to the worker pod unchanged."""

    node_selector: dict[str, Name] | None = api_field(None, description="node labels the worker pod must match.", max_length=64)
    tolerations: list[dict[str, Any]] | None = api_field(None, description="tolerations of the worker pod (core/v1 Toleration).", preserve_unknown=True, max_length=64)
    affinity: dict[str, Any] | None = api_field(None, description="affinity of the worker pod (core/v1 Affinity).", preserve_unknown=True)
    priority_class_name: str | None = api_field(None, description="PriorityClass of the worker pod.", max_length=253)
    runtime_class_name: str | None = api_field(None, description="RuntimeClass of the worker pod, e.g. nvidia.", max_length=253)
    service_account_name: str | None = api_field(None, description="ServiceAccount of the worker pod (for workload identity). It needs no Kubernetes rights. Default: the operator's worker account.", max_length=253)
    image_pull_secrets: list[Name] | None = api_field(None, description="names of Secrets to pull the worker image.", max_length=16)
    queue_name: str | None = api_field(None, description="Kueue LocalQueue: the Job is labelled kueue.x-k8s.io/queue-name and waits for admission.", max_length=63)
    workload_priority_class: str | None = api_field(None, description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class).", max_length=253)


class QualityGate(ApiModel):
    """Limits a compressed model must meet to be published. Unset limits are not checked."""

    max_perplexity_increase: float | None = api_field(None, description="largest relative perplexity increase, e.g. 0.1 for +10%.", ge=0)
    max_kl_divergence: float | None = api_field(None, description="largest mean KL divergence (nats) between the original's and the compressed model's next-token distributions.", ge=0)
    min_top1_agreement: float | None = api_field(None, description="smallest share of positions where both models predict the same next token, 0 to 1.", ge=0, le=1)


class Evaluation(ApiModel):
    """Fidelity of the compressed model against the original, on held-out samples."""

    enabled: bool = api_field(True, description="evaluate after compression. Default true.", schema_default=True)
    samples: int = api_field(16, description="held-out samples (never used for calibration). Default 16.", ge=1, le=10000, schema_default=16)
    max_sequence_length: int | None = api_field(None, description="tokens per evaluation sample. Default: the calibration length, at most 1024.", ge=8, le=131072)
    gate: QualityGate | None = api_field(None, description="limits that fail the job instead of publishing.")


def _immutable(description: str) -> str:
    return description + " Immutable."


class CompressionJobSpec(ApiModel):
    """Desired compression: what model, what data, what recipe, where to publish, on what hardware."""

    model: ModelSource = api_field(description=_immutable("the model to compress."), mutable=False)
    calibration: Calibration = api_field(Calibration(), description=_immutable("calibration data."), mutable=False, schema_default={})
    recipe: Recipe = api_field(description=_immutable("the compression recipe."), mutable=False)
    output: Output = api_field(description=_immutable("where the checkpoint is published."), mutable=False)
    resources: Resources = api_field(Resources(), description=_immutable("what the worker asks for."), mutable=False, schema_default={})
    scheduling: Scheduling | None = api_field(None, description=_immutable("scheduling pass-through for the worker pod."), mutable=False)
    evaluation: Evaluation = api_field(Evaluation(), description=_immutable("fidelity evaluation and quality gate."), mutable=False, schema_default={})
    serving: Serving | None = api_field(None, description=_immutable("where the checkpoint will be served (GPU architecture, tensor and expert parallelism): the plan checks vLLM can serve it there."), mutable=False)
    suspend: bool = api_field(False, description="true stops the worker (or keeps it from starting); false lets it run. The only field that may change after creation. Default false.", schema_default=False)
    backoff_limit: int = api_field(2, description=_immutable("retries of the worker pod after failures that may be transient (not bad input, not disruptions). Default 2."), ge=0, le=20, mutable=False, schema_default=2)
    active_deadline_seconds: int | None = api_field(None, description=_immutable("the most seconds the worker Job may run before it is failed."), ge=1, mutable=False)
    ttl_seconds_after_finished: int | None = api_field(None, description=_immutable("delete the finished Job (not the CompressionJob, never the output) this many seconds after it ends."), ge=0, mutable=False)
    pending_timeout_seconds: int = api_field(1800, description=_immutable("how long the worker pod may wait unschedulable or failing to pull its image before the job fails. Default 1800."), ge=30, mutable=False, schema_default=1800)
    image: str | None = api_field(None, description=_immutable("worker image override. Default: the operator's setting."), max_length=1024, mutable=False)


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------


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

    stage: str | None = api_field(None, description="current stage: plan, fetch-model, calibration, baseline, compress, save, verify, evaluate, publish, done.")
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
    problems: list[PlanProblem] = api_field([], description="errors and warnings found by the plan.")


class EvaluationMetrics(ApiModel):
    """Fidelity of the compressed model against the original."""

    samples: int | None = api_field(None, description="held-out samples evaluated.", ge=0)
    tokens: int | None = api_field(None, description="tokens evaluated.", ge=0)
    perplexity_original: float | None = api_field(None, description="perplexity of the original model.")
    perplexity_compressed: float | None = api_field(None, description="perplexity of the compressed model.")
    perplexity_increase: float | None = api_field(None, description="relative perplexity increase, e.g. 0.05 for +5%.")
    kl_divergence: float | None = api_field(None, description="mean KL divergence (nats) of next-token distributions, original to compressed.")
    top1_agreement: float | None = api_field(None, description="share of positions where both models predict the same next token.")
    gate_passed: bool | None = api_field(None, description="whether the quality gate passed (unset without a gate).")


class JobResult(ApiModel):
    """What the worker produced."""

    output_uri: str | None = api_field(None, description="where the checkpoint was published.")
    manifest_uri: str | None = api_field(None, description="the manifest kompress.json: sizes, checksums, recipe, metrics.")
    rejected_uri: str | None = api_field(None, description="where a checkpoint that failed the quality gate was kept for inspection.")
    resolved_revision: str | None = api_field(None, description="the exact model revision compressed (Hub commit or S3 ETag digest).")
    checkpoint_bytes: int | None = api_field(None, description="size of the published checkpoint.", ge=0)
    original_bytes: int | None = api_field(None, description="size of the model as fetched.", ge=0)
    compression_ratio: float | None = api_field(None, description="bf16 size of the model divided by checkpoint_bytes.")
    metrics: EvaluationMetrics | None = api_field(None, description="fidelity figures.")


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


class ObjectMeta(ApiModel):
    """The part of metadata Kompress reads."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class CompressionJob(ApiModel):
    """A request to compress one model with one recipe and publish the result."""

    api_version: Literal["kompress.dev/v1alpha1"] = API_VERSION
    kind: Literal["CompressionJob"] = KIND
    metadata: ObjectMeta = ObjectMeta()
    spec: CompressionJobSpec
    status: CompressionJobStatus | None = None


def parse(obj: dict[str, Any]) -> CompressionJob:
    """Parse a CompressionJob from its wire form (a kubectl manifest or an API object)."""
    return CompressionJob.model_validate(obj)


def model_uri_scheme(uri: str) -> str:
    """hf, s3, file (file:// URIs and plain absolute paths alike)."""
    match = re.match(r"^([a-z0-9]+)://", uri)
    return "file" if match is None else match.group(1)
