"""CompressionJob, kompress.dev/v1alpha1: the one typed model of the API, assembled from its parts.

Owns: the resource's names (group, version, kind, plural, short names), CompressionJobSpec (which parts
the spec has, in what order, which are immutable, and the rules across parts: distinct mount paths, no
overlap of model and output), CompressionJob, parse and model_uri_scheme. Each part's fields, docs,
bounds, defaults and CEL rules live beside this module: v1alpha1_access (connection settings, volumes),
v1alpha1_source (model, calibration), v1alpha1_recipe, v1alpha1_output, v1alpha1_evaluation,
v1alpha1_resources (resources, scheduling, serving) and v1alpha1_status; the syntax of pod-spec values
is podspec's. All are re-exported here, so consumers import the API from this one module. The CRD in
crds/ is generated from it (`make crds`); the operator, the worker and the CLI parse with it.
Must not: contain behaviour beyond parsing and the few derived facts every consumer needs.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from kompress_api import locations
from kompress_api._model import QUANTITY_RE, ApiModel, api_field, re2_search  # noqa: F401 - QUANTITY_RE, re2_search exported here as they always were
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
from kompress_api.v1alpha1_resources import (  # noqa: F401 - what the worker runs on and where it is served, re-exported
    DEFAULT_GPU_RESOURCE,
    DEFAULT_GPUS,
    GpuArchitecture,
    Name,
    Quantity,
    Resources,
    Scheduling,
    Serving,
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
