"""What a CompressionJob runs on, kompress.dev/v1alpha1: spec.resources, spec.scheduling and spec.serving.

Owns: what the worker pod asks for (Resources, the GPU defaults), what is passed through to it for
placement (Scheduling: node selector, tolerations, affinity, Kueue labels) and where the checkpoint will be
served (Serving, GpuArchitecture): fields, docs, bounds, defaults and CEL rules. The syntax of the pod-spec
values themselves lives in podspec.
kompress_api.v1alpha1 re-exports them: import them from there.
Must not: size anything from the plan or build a pod (the operator does).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Union

from pydantic import StringConstraints, field_validator

from kompress_api._model import ApiModel, api_field, re2_search
from kompress_api.podspec import (
    Affinity,
    DNS_SUBDOMAIN_RE,
    EXTENDED_RESOURCE_RE,
    LABEL_VALUE_RE,
    NODE_SELECTOR_KEYS_MESSAGE,
    NODE_SELECTOR_KEYS_RULE,
    PREFIX_LENGTH_RE,
    QUALIFIED_NAME_MAX,
    QUALIFIED_NAME_RE,
    LabelValue,
    Toleration,
)

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPUS = 4


Quantity = Union[int, str]
# Bounded strings let the API server estimate the cost of the CEL rules that compare whole objects.
Name = Annotated[str, StringConstraints(max_length=253)]


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
