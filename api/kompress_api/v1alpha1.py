"""CompressionJob, kompress.dev/v1alpha1: the one typed model of the API.

Owns: every spec field, its docs, bounds, defaults and CEL rules (the status types live in
v1alpha1_status and the syntax of pod-spec values in podspec; both are re-exported or used from
here). The CRD in crds/ is generated from this module (`make crds`); the operator, the worker and
the CLI parse with it.
Must not: contain behaviour beyond parsing and the few derived facts every consumer needs.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import StringConstraints, field_validator, model_validator

from kompress_api import locations
from kompress_api._model import QUANTITY_RE, ApiModel, api_field, re2_search
from kompress_api.paths import WORKER_PATHS  # noqa: F401 - exported here as it always was
from kompress_api.podspec import (  # noqa: F401 - the pod-spec syntax the parts use, exported here as it always was
    Affinity,
    DNS_SUBDOMAIN_RE,
    EXTENDED_RESOURCE_RE,
    LABEL_VALUE_RE,
    NODE_SELECTOR_KEYS_MESSAGE,
    NODE_SELECTOR_KEYS_RULE,
    PREFIX_LENGTH_RE,
    QUALIFIED_NAME_MAX,
    QUALIFIED_NAME_RE,
    WORKER_PATH_RE,
    LabelValue,
    Toleration,
)
from kompress_api.v1alpha1_access import (  # noqa: F401 - the connection settings and volumes, re-exported
    ABS_PATH_RE,
    HubAccess,
    OciAccess,
    S3Access,
    SecretKeyRef,
    VolumeRef,
)
from kompress_api.v1alpha1_evaluation import (  # noqa: F401 - the evaluation and its gate, re-exported
    EVALUATION_LENGTH_CAP,
    GATE_NEEDS_EVALUATION,
    TASK_CONFIG_MAP_MOUNT,
    TASK_NAME_RE,
    TASK_SOURCE_URI_RE,
    Evaluation,
    EvaluationTask,
    QualityGate,
    TaskSource,
)
from kompress_api.v1alpha1_output import (  # noqa: F401 - the output and its URIs' grammar, re-exported
    HUB_BRANCH_RE,
    HUB_NAME_MAX,
    HUB_OUTPUT_URI_MESSAGE,
    HUB_OUTPUT_URI_RE,
    HUB_OUTPUT_URI_RULE,
    HUB_SETTINGS_NEED_HUB,
    OCI_OUTPUT_URI_MESSAGE,
    OCI_OUTPUT_URI_RE,
    OCI_REGISTRY_RE,
    OCI_REPOSITORY_RE,
    OCI_SETTINGS_NEED_OCI,
    OCI_TAG_MAX,
    OCI_TAG_RE,
    OUTPUT_INSIDE_VOLUME,
    OUTPUT_NEEDS_VOLUME,
    OUTPUT_URI_RE,
    HubOutput,
    Output,
    Signing,
    hub_output_uri_problem,
)
from kompress_api.v1alpha1_recipe import (  # noqa: F401 - the recipe, re-exported
    BROKEN_REGEX_RE,
    BROKEN_REGEX_WHY,
    DATA_FREE_PRESETS,
    REGEX_PREFIX,
    Pattern,
    Preset,
    Recipe,
    RecipeOverrides,
    RecipePath,
    regex_problem,
)
from kompress_api.v1alpha1_source import (  # noqa: F401 - the model and the calibration data, re-exported
    CALIBRATION_URI_RE,
    MODEL_URI_RE,
    Calibration,
    ModelCacheSetting,
    ModelSource,
)
from kompress_api.v1alpha1_status import (  # noqa: F401 - the API's status types, re-exported
    MAX_STATUS_TASK_SCORES,
    Children,
    CompressionJobStatus,
    Condition,
    EvaluationMetrics,
    JobResult,
    MtpResult,
    Phase,
    PlanCache,
    PlanProblem,
    PlanSummary,
    Progress,
    PublishedDestination,
    TaskScore,
)

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


Quantity = Union[int, str]
# Bounded strings let the API server estimate the cost of the CEL rules that compare whole objects.
Name = Annotated[str, StringConstraints(max_length=253)]


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


class Resources(ApiModel):
    """What the worker pod asks for. Unset memory and scratch are sized from the plan."""

    gpus: int = api_field(DEFAULT_GPUS, description="number of GPUs. More than one runs llm-compressor's distributed (DDP) oneshot; 0 runs on CPU. Default 4.", ge=0, le=64, schema_default=DEFAULT_GPUS)
    gpu_resource_name: str | None = api_field(
        None,
        description="extended resource name of the GPU (DOMAIN/NAME, outside kubernetes.io), e.g. nvidia.com/gpu or amd.com/gpu. Default: the operator's setting.",
        pattern=EXTENDED_RESOURCE_RE,
        rules=[
            (f"self.matches('{PREFIX_LENGTH_RE}')", "gpuResourceName's domain must be at most 253 characters"),
            (r"!self.matches(r'kubernetes\.io/')", "gpuResourceName must be an extended resource, not in the kubernetes.io domain"),
            ("!self.startsWith('requests.')", "gpuResourceName must not start with requests."),
        ],
        max_length=QUALIFIED_NAME_MAX,
    )
    cpu: Quantity | None = api_field(None, description="CPU request and limit, e.g. 16. Default: 8 per GPU, at least 2.", int_or_string=True)
    memory: Quantity | None = api_field(None, description="memory request and limit, e.g. 256Gi. Default: the plan's host RAM estimate (the whole model is held in host RAM).", int_or_string=True)
    scratch: Quantity | None = api_field(None, description="scratch disk for the download and the compressed output, e.g. 500Gi. Default: the plan's disk estimate.", int_or_string=True)
    scratch_storage_class: str | None = api_field(None, description="storage class of a per-job ephemeral volume for scratch. Default: an emptyDir on the node.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
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
    """Passed through to the worker pod unchanged. The API refuses what a Job could not hold."""

    node_selector: dict[str, LabelValue] | None = api_field(
        None,
        description="node labels the worker pod must match: label keys and label values (at most 63 characters).",
        rules=[(NODE_SELECTOR_KEYS_RULE, NODE_SELECTOR_KEYS_MESSAGE)],
        max_length=64,
    )
    tolerations: list[Toleration] | None = api_field(None, description="tolerations of the worker pod (core/v1 Toleration).", max_length=64)
    affinity: Affinity | None = api_field(None, description="affinity of the worker pod (core/v1 Affinity): nodeAffinity is checked, pod (anti-)affinity passed through.")
    priority_class_name: str | None = api_field(None, description="PriorityClass of the worker pod.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
    runtime_class_name: str | None = api_field(None, description="RuntimeClass of the worker pod, e.g. nvidia.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
    service_account_name: str | None = api_field(None, description="ServiceAccount of the worker pod (for workload identity). It needs no Kubernetes rights. Default: the operator's worker account.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
    image_pull_secrets: list[Name] | None = api_field(None, description="names of Secrets to pull the worker image.", max_length=16)
    queue_name: str | None = api_field(None, description="Kueue LocalQueue: the Job is labelled kueue.x-k8s.io/queue-name and waits for admission. A label value: at most 63 characters.", pattern=LABEL_VALUE_RE, max_length=63)
    workload_priority_class: str | None = api_field(None, description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class). A label value: at most 63 characters.", pattern=LABEL_VALUE_RE, max_length=63)

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # The same rule as NODE_SELECTOR_KEYS_RULE.
        if value and not all(re2_search(QUALIFIED_NAME_RE, k) and re2_search(PREFIX_LENGTH_RE, k) for k in value):
            raise ValueError(NODE_SELECTOR_KEYS_MESSAGE)
        return value


def _immutable(description: str) -> str:
    return description + " Immutable."


# CEL has no rstrip: the longest prefix ending in a character other than '/' is the path without trailing slashes.
def _cel_trimmed(expr: str) -> str:
    return f"{expr}.find('^.*[^/]')"


MOUNT_PATHS_DIFFER = "spec.model.volume.mountPath and spec.output.volume.mountPath must differ: two volumes cannot be mounted on one path"


class CompressionJobSpec(ApiModel):
    """Desired compression: what model, what data, what recipe, where to publish, on what hardware."""

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        (f"!has(self.model.volume) || !has(self.output.volume) || {_cel_trimmed('self.model.volume.mountPath')} != {_cel_trimmed('self.output.volume.mountPath')}",
         MOUNT_PATHS_DIFFER),
        (locations.OVERLAP_RULE, locations.OVERLAP_MESSAGE),
    ]

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
    # A container image is refused by the Job's validation if empty or with whitespace (it would be a ChildRefused).
    image: str | None = api_field(None, description=_immutable("worker image override, e.g. registry.example/kompress-worker:0.1.0. Default: the operator's setting."), pattern=r"^\S+$", max_length=1024, mutable=False)

    @model_validator(mode="after")
    def _as_the_cel_rules_say(self) -> "CompressionJobSpec":
        # The same rules as cel_rules, so a manifest the API server would refuse is refused locally too.
        model, output = self.model.volume, self.output.volume
        if model is not None and output is not None and model.mount_path.rstrip("/") == output.mount_path.rstrip("/"):
            raise ValueError(MOUNT_PATHS_DIFFER)
        endpoints = [loc.s3.endpoint if loc.s3 else None for loc in (self.model, self.output)]
        if locations.uris_overlap(self.model.uri, endpoints[0], self.output.uri, endpoints[1]):
            raise ValueError(locations.OVERLAP_MESSAGE)
        return self


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
