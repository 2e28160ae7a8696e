"""Malformed CompressionJobs are refused, with a message that names the field: by the CRD's schema and
CEL rules as a real kube-apiserver applies them (server-side dry run; the messages pinned are its own),
by `kubectl apply`, and by the typed model where it can tell without the stored object (one model,
consistent answers)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import pydantic
import pytest
import yaml

from kompress_api import v1alpha1
from kompress_testing.cluster.client import ApiStatusError

from .conftest import tiny_job, with_spec


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[dict[str, Any]], Any]
    field: str  # the field the API server's error names
    says: str  # a part of its message
    kubectl: bool = False  # also checked end to end with kubectl
    typed: bool = True  # the typed model (so `kompress run`) refuses it too; False for what holds in a cluster only

    def job(self) -> dict[str, Any]:
        return with_spec(self.change)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = spec
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return change


_TERMS = "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"


def _required(expressions: list[dict[str, Any]]) -> dict[str, Any]:
    """A required node affinity of one term with these expressions."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": expressions}]}}}


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda spec: spec.pop(key)


CASES = [
    Case("gpus-not-an-integer", _set("resources.gpus", "four"), "spec.resources.gpus", "must be of type integer"),
    Case("model-uri-unsupported-scheme", _set("model.uri", "ftp://mirror.example/glm"), "spec.model.uri",
         "spec.model.uri must be hf://ORG/NAME", kubectl=True),
    Case("no-model", _drop("model"), "spec.model", "Required value", kubectl=True),
    Case("negative-gpus", _set("resources.gpus", -1), "spec.resources.gpus", "should be greater than or equal to 0", kubectl=True),
    Case("too-many-gpus", _set("resources.gpus", 65), "spec.resources.gpus", "should be less than or equal to 64"),
    Case("unknown-preset", _set("recipe.preset", "w2a2"), "spec.recipe.preset", 'Unsupported value: "w2a2"', kubectl=True),
    Case("unknown-mtp-handling", _set("recipe.mtp", "prune"), "spec.recipe.mtp", 'Unsupported value: "prune"'),
    Case("no-output", _drop("output"), "spec.output", "Required value", kubectl=True),
    Case("hf-token-by-value", _set("model.huggingFace", {"token": "hf_abcdefghijklmnop"}), "spec.model.huggingFace.token",
         'unknown field "spec.model.huggingFace.token"', kubectl=True),
    Case("hf-token-secret-as-a-string", _set("model.huggingFace", {"tokenSecret": "hf_abcdefghijklmnop"}),
         "spec.model.huggingFace.tokenSecret", "must be of type object", kubectl=True),
    Case("s3-keys-by-value", _set("output.s3", {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "wJalrXUtnFEMI"}),
         "spec.output.s3.secretAccessKey", 'unknown field "spec.output.s3.secretAccessKey"'),
    Case("preset-and-custom", _set("recipe.custom", "quant_stage: {}"), "spec.recipe",
         "spec.recipe needs exactly one of preset or custom", kubectl=True),
    Case("neither-preset-nor-custom", _set("recipe", {}), "spec.recipe", "spec.recipe needs exactly one of preset or custom"),
    Case("overrides-with-custom", _set("recipe", {"custom": "quant_stage: {}", "overrides": {"groupSize": 64}}), "spec.recipe",
         "spec.recipe.overrides applies to a preset only"),
    Case("data-free-with-a-calibrated-preset", _set("recipe", {"preset": "nvfp4", "path": "data-free"}), "spec.recipe",
         "spec.recipe.path data-free needs a preset that learns nothing from data"),
    Case("serving-unknown-gpu", _set("serving", {"gpu": "volta"}), "spec.serving.gpu", "volta"),
    Case("bad-memory-quantity", _set("resources.memory", "12 GB"), "spec.resources.memory", "should match", kubectl=True),
    Case("unknown-field-strict", _set("colour", "blue"), "spec.colour", 'unknown field "spec.colour"', kubectl=True),
    Case("output-uri-http", _set("output.uri", "http://bucket/x"), "spec.output.uri", "spec.output.uri must be s3://BUCKET/PREFIX"),
    # oci://REGISTRY/REPOSITORY:TAG: each part malformed in turn, each refused naming the field and the form.
    Case("oci-output-without-a-registry-host", _set("output.uri", "oci://team/model:v1"), "spec.output.uri",
         "spec.output.uri must be oci://REGISTRY/REPOSITORY:TAG", kubectl=True),
    Case("oci-output-without-a-tag", _set("output.uri", "oci://ghcr.io/team/model"), "spec.output.uri", "spec.output.uri must be oci://REGISTRY/REPOSITORY:TAG"),
    Case("oci-output-by-digest", _set("output.uri", "oci://ghcr.io/team/model@sha256:" + "0" * 64), "spec.output.uri", "not a digest"),
    Case("oci-output-uppercase-repository", _set("output.uri", "oci://ghcr.io/Team/model:v1"), "spec.output.uri", "a lowercase repository path"),
    Case("oci-output-empty-path-component", _set("output.uri", "oci://ghcr.io/team//model:v1"), "spec.output.uri", "a lowercase repository path"),
    Case("oci-output-tag-too-long", _set("output.uri", "oci://ghcr.io/team/model:" + "t" * 120), "spec.output.uri", "a tag of at most 119"),
    Case("oci-settings-on-an-s3-output", _set("output.oci", {"insecure": True}), "spec.output", "spec.output.oci applies to an oci:// uri only"),
    Case("oci-credentials-by-value", lambda spec: (_set("output.uri", "oci://ghcr.io/team/model:v1")(spec),
                                                   _set("output.oci", {"username": "bot", "password": "hunter2-planted"})(spec)),
         "spec.output.oci.password", 'unknown field "spec.output.oci.password"'),
    Case("calibration-uri-unsupported", _set("calibration.uri", "ftp://data"), "spec.calibration.uri",
         "spec.calibration.uri must be builtin://NAME"),
    Case("zero-calibration-samples", _set("calibration.samples", 0), "spec.calibration.samples", "should be greater than or equal to 1"),
    Case("group-size-too-small", _set("recipe.overrides", {"groupSize": 8}), "spec.recipe.overrides.groupSize",
         "should be greater than or equal to 16"),
    Case("experts-not-a-regex", _set("recipe.overrides", {"experts": "mlp.experts"}), "spec.recipe.overrides.experts",
         "must be a regex starting with re:"),
    Case("suspend-not-a-boolean", _set("suspend", "yes"), "spec.suspend", "must be of type boolean"),
    Case("secret-name-not-a-dns-name", _set("model.huggingFace", {"tokenSecret": {"name": "Bad_Name", "key": "token"}}),
         "spec.model.huggingFace.tokenSecret.name", "should match"),
    Case("unsupported-dtype", _set("model.dtype", "int8"), "spec.model.dtype", 'Unsupported value: "int8"'),
    Case("top1-agreement-above-one", _set("evaluation.gate", {"minTop1Agreement": 1.5}), "spec.evaluation.gate.minTop1Agreement",
         "should be less than or equal to 1"),
    Case("revision-on-a-volume-model", _set("model.revision", "main"), "spec.model",
         "spec.model.revision applies to hf:// models only", kubectl=True),
    Case("revision-on-builtin-calibration", _set("calibration.revision", "v1"), "spec.calibration",
         "spec.calibration.revision applies to hf:// datasets only"),
    Case("relative-mount-path", _set("model.volume", {"claimName": "models", "mountPath": "models"}), "spec.model.volume.mountPath",
         "should match"),
    # What a batch/v1 Job could never hold: refused here, not by the Job create (issues 13 and 14).
    Case("queue-name-with-a-space", _set("scheduling", {"queueName": "team a"}), "spec.scheduling.queueName", "should match", kubectl=True),
    Case("queue-name-too-long", _set("scheduling", {"queueName": "q" * 64}), "spec.scheduling.queueName", "may not be more than 63"),
    Case("queue-name-trailing-newline", _set("scheduling", {"queueName": "team-a\n"}), "spec.scheduling.queueName", "should match"),
    Case("workload-priority-class-too-long", _set("scheduling", {"queueName": "q", "workloadPriorityClass": "p" * 64}),
         "spec.scheduling.workloadPriorityClass", "may not be more than 63"),
    Case("workload-priority-class-not-a-label-value", _set("scheduling", {"queueName": "q", "workloadPriorityClass": "-high"}),
         "spec.scheduling.workloadPriorityClass", "should match"),
    Case("node-selector-key-with-a-space", _set("scheduling", {"nodeSelector": {"gpu type": "a100"}}), "spec.scheduling.nodeSelector",
         "nodeSelector keys must be label keys", kubectl=True),
    Case("node-selector-key-name-too-long", _set("scheduling", {"nodeSelector": {"example.com/" + "k" * 64: "a100"}}),
         "spec.scheduling.nodeSelector", "nodeSelector keys must be label keys"),
    Case("node-selector-key-prefix-too-long", _set("scheduling", {"nodeSelector": {"a" * 254 + "/gpu": "a100"}}),
         "spec.scheduling.nodeSelector", "nodeSelector keys must be label keys"),
    Case("node-selector-value-with-a-space", _set("scheduling", {"nodeSelector": {"gpu": "a100 80gb"}}), "spec.scheduling.nodeSelector.gpu",
         "should match"),
    Case("toleration-operator-unknown", _set("scheduling", {"tolerations": [{"key": "gpu", "operator": "In"}]}),
         "spec.scheduling.tolerations[0].operator", 'Unsupported value: "In"', kubectl=True),
    Case("toleration-effect-unknown", _set("scheduling", {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoRun"}]}),
         "spec.scheduling.tolerations[0].effect", 'Unsupported value: "NoRun"'),
    Case("toleration-exists-with-a-value", _set("scheduling", {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}),
         "spec.scheduling.tolerations[0]", "operator Exists must have no value"),
    Case("toleration-without-key-not-exists", _set("scheduling", {"tolerations": [{"operator": "Equal", "value": "x"}]}),
         "spec.scheduling.tolerations[0]", "without a key must have operator Exists"),
    Case("toleration-seconds-without-no-execute", _set("scheduling", {"tolerations": [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}]}),
         "spec.scheduling.tolerations[0]", "tolerationSeconds applies to effect NoExecute only"),
    Case("toleration-unknown-field", _set("scheduling", {"tolerations": [{"key": "gpu", "operater": "Exists"}]}),
         "spec.scheduling.tolerations[0].operater", "unknown field"),
    Case("affinity-unknown-operator", _set("scheduling", {"affinity": _required([{"key": "gpu", "operator": "Has", "values": ["h100"]}])}),
         f"{_TERMS}[0].matchExpressions[0].operator", 'Unsupported value: "Has"', kubectl=True),
    Case("affinity-no-terms", _set("scheduling", {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}),
         _TERMS, "should have at least 1 items"),
    Case("affinity-in-without-values", _set("scheduling", {"affinity": _required([{"key": "gpu", "operator": "In"}])}),
         f"{_TERMS}[0].matchExpressions[0]", "operator In and NotIn need at least one value"),
    Case("affinity-exists-with-values", _set("scheduling", {"affinity": _required([{"key": "gpu", "operator": "Exists", "values": ["x"]}])}),
         f"{_TERMS}[0].matchExpressions[0]", "operator Exists and DoesNotExist take no values"),
    Case("affinity-gt-not-an-integer", _set("scheduling", {"affinity": _required([{"key": "gpu-count", "operator": "Gt", "values": ["four"]}])}),
         f"{_TERMS}[0].matchExpressions[0]", "exactly one value, an integer"),
    Case("affinity-key-not-a-label-key", _set("scheduling", {"affinity": _required([{"key": "gpu type", "operator": "Exists"}])}),
         f"{_TERMS}[0].matchExpressions[0].key", "should match"),
    Case("affinity-weight-zero", _set("scheduling", {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 0, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}]}}}),
         "spec.scheduling.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "should be greater than or equal to 1"),
    Case("affinity-misspelt-field", _set("scheduling", {"affinity": {"nodeAffinity": {"requiredDuringScheduling": {"nodeSelectorTerms": []}}}}),
         "spec.scheduling.affinity.nodeAffinity.requiredDuringScheduling", "unknown field"),
    Case("gpu-resource-name-without-domain", _set("resources.gpuResourceName", "gpu"), "spec.resources.gpuResourceName", "should match",
         kubectl=True),
    Case("gpu-resource-name-in-kubernetes-io", _set("resources.gpuResourceName", "kubernetes.io/gpu"), "spec.resources.gpuResourceName",
         "not in the kubernetes.io domain"),
    Case("gpu-resource-name-requests-prefix", _set("resources.gpuResourceName", "requests.nvidia.com/gpu"), "spec.resources.gpuResourceName",
         "must not start with requests."),
    Case("negative-memory", _set("resources.memory", "-4Gi"), "spec.resources.memory", "should match", kubectl=True),
    Case("negative-scratch", _set("resources.scratch", "-1"), "spec.resources.scratch", "should match"),
    Case("negative-cpu-integer", _set("resources.cpu", -2), "spec.resources.cpu", "should be greater than or equal to 0"),
    Case("absolute-sub-path", _set("model.volume", {"claimName": "models", "mountPath": "/models", "subPath": "/etc"}),
         "spec.model.volume.subPath", "subPath must be a relative path"),
    Case("sub-path-escapes-the-volume", _set("output.volume", {"claimName": "out", "mountPath": "/out", "subPath": "a/../../b"}),
         "spec.output.volume.subPath", "subPath must not contain '..'", kubectl=True),
    Case("model-volume-on-scratch", _set("model.volume", {"claimName": "models", "mountPath": "/scratch/"}), "spec.model.volume.mountPath",
         "must not be on, above or inside /scratch", kubectl=True),
    Case("model-volume-on-dev-shm", _set("model.volume", {"claimName": "models", "mountPath": "/dev/shm"}), "spec.model.volume.mountPath",
         "must not be on, above or inside"),
    Case("output-volume-above-dev-shm", _set("output.volume", {"claimName": "out", "mountPath": "/dev"}), "spec.output.volume.mountPath",
         "must not be on, above or inside"),
    Case("model-and-output-volumes-on-one-path", lambda spec: (
        _set("model.volume", {"claimName": "models", "mountPath": "/data"})(spec),
        _set("output.volume", {"claimName": "out", "mountPath": "/data/"})(spec)), "spec",
         "spec.model.volume.mountPath and spec.output.volume.mountPath must differ"),
    # A job must never write over its own source (issue 14).
    Case("output-is-the-model", _set("output.uri", "file:///tmp/kompress/tiny-glm4-moe"), "spec",
         "spec.output.uri must not be spec.model.uri", kubectl=True),
    Case("output-is-the-model-with-a-slash", _set("output.uri", "file:///tmp/kompress/tiny-glm4-moe/"), "spec",
         "spec.output.uri must not be spec.model.uri"),
    Case("output-inside-the-model", _set("output.uri", "file:///tmp/kompress/tiny-glm4-moe/compressed"), "spec",
         "spec.output.uri must not be spec.model.uri"),
    Case("output-holds-the-model", _set("output.uri", "file:///tmp/kompress"), "spec", "spec.output.uri must not be spec.model.uri"),
    Case("output-is-a-plain-path-model", lambda spec: (_set("model.uri", "/tmp/kompress/tiny-glm4-moe/")(spec),
                                                        _set("output.uri", "file:///tmp/kompress/tiny-glm4-moe")(spec)), "spec",
         "spec.output.uri must not be spec.model.uri"),
    Case("output-is-the-s3-model", lambda spec: (_set("model.uri", "s3://models/glm/")(spec), _set("output.uri", "s3://models/glm")(spec)),
         "spec", "spec.output.uri must not be spec.model.uri", kubectl=True),
    Case("output-is-the-s3-bucket-of-the-model", lambda spec: (_set("model.uri", "s3://models/glm")(spec), _set("output.uri", "s3://models")(spec)),
         "spec", "spec.output.uri must not be spec.model.uri"),
    # Regexes: refused at admission where surely broken, by the typed model always; never a planning pod crash.
    Case("ignore-regex-unclosed-bracket", _set("recipe.overrides", {"ignore": ["lm_head", "re:.*mlp[.down"]}), "spec.recipe.overrides.ignore",
         "has a re: entry that is not a valid regex", kubectl=True),
    Case("ignore-regex-nothing-to-repeat", _set("recipe.overrides", {"ignore": ["re:*proj"]}), "spec.recipe.overrides.ignore",
         "not a valid regex"),
    Case("experts-regex-unclosed-bracket", _set("recipe.overrides", {"experts": "re:.*experts\\.[0-9+\\."}), "spec.recipe.overrides.experts",
         "spec.recipe.overrides.experts is not a valid regex"),
    Case("gate-with-evaluation-disabled", _set("evaluation", {"enabled": False, "gate": {"minTop1Agreement": 0.9}}), "spec.evaluation",
         "spec.evaluation.gate needs spec.evaluation.enabled: true", kubectl=True),
    # A file:// output in a cluster lives on a volume, or it is lost with the container.
    Case("file-output-without-a-volume", lambda spec: spec["output"].pop("volume"), "spec.output",
         "spec.output.uri is a file:// path but spec.output.volume is not set", kubectl=True, typed=False),
    Case("file-output-outside-its-volume", _set("output.volume", {"claimName": "out", "mountPath": "/mnt/out"}), "spec.output",
         "spec.output.uri must lie inside spec.output.volume.mountPath"),
    Case("image-with-a-space", _set("image", "registry.example/kompress worker:1"), "spec.image", "should match"),
    Case("image-with-a-trailing-newline", _set("image", "registry.example/kompress-worker:1\n"), "spec.image", "should match"),
    # RE2's `$` is the end of the text; Python's also matches before a final newline (a value from `echo`).
    Case("model-uri-trailing-newline", _set("model.uri", "hf://zai-org/GLM-4.5-Air\n"), "spec.model.uri", "spec.model.uri must be hf://ORG/NAME"),
    Case("priority-class-not-a-dns-name", _set("scheduling", {"priorityClassName": "High Priority"}), "spec.scheduling.priorityClassName",
         "should match"),
    Case("task-name-with-a-space", _set("evaluation.tasks", [{"name": "arc easy"}]), "spec.evaluation.tasks[0].name",
         "must be an lm-eval task name"),
    Case("task-negative-fewshot", _set("evaluation.tasks", [{"name": "gsm8k", "numFewshot": -1}]), "spec.evaluation.tasks[0].numFewshot",
         "should be greater than or equal to 0"),
    Case("task-source-two-places", _set("evaluation.taskSource", {"configMap": "tasks", "uri": "s3://bucket/tasks"}), "spec.evaluation.taskSource",
         "needs exactly one of configMap, volume or uri", kubectl=True),
    Case("task-source-s3-on-a-config-map", _set("evaluation.taskSource", {"configMap": "tasks", "s3": {"pathStyle": True}}), "spec.evaluation.taskSource",
         "taskSource.s3 applies to an s3:// uri only"),
    Case("task-drop-negative", _set("evaluation.gate", {"maxTaskDrop": -0.1}), "spec.evaluation.gate.maxTaskDrop",
         "should be greater than or equal to 0"),
    Case("task-drop-without-tasks", _set("evaluation.gate", {"maxTaskDrop": 0.02}), "spec.evaluation",
         "spec.evaluation.gate.maxTaskDrop needs spec.evaluation.tasks to check", kubectl=True),
    Case("tasks-with-evaluation-off", _set("evaluation", {"enabled": False, "tasks": [{"name": "arc_easy"}]}), "spec.evaluation",
         "spec.evaluation.tasks are not scored with spec.evaluation.enabled false"),
    Case("unknown-task-backend", _set("evaluation.taskBackend", "sglang"), "spec.evaluation.taskBackend", 'Unsupported value: "sglang"'),
    # hf:// outputs (issue 19): a repository id huggingface_hub accepts, settings for hf:// only, a branch, Secrets by reference.
    Case("hub-output-with-a-path", _set("output", {"uri": "hf://kompress/glm/w4a16"}), "spec.output.uri",
         "spec.output.uri must be hf://ORG/NAME for the Hugging Face Hub", kubectl=True),
    Case("hub-output-with-a-branch-in-the-uri", _set("output", {"uri": "hf://kompress/glm@w4a16"}), "spec.output.uri",
         "the branch goes in spec.output.huggingFace.revision"),
    Case("hub-output-double-dash", _set("output", {"uri": "hf://kompress/glm--w4a16"}), "spec.output.uri", "no '--' or '..'"),
    Case("hub-output-name-too-long", _set("output", {"uri": "hf://kompress/" + "g" * 88}), "spec.output.uri", "the name at most 87 characters"),
    Case("hub-output-no-name", _set("output", {"uri": "hf://kompress"}), "spec.output.uri", "spec.output.uri must be hf://ORG/NAME"),
    Case("hub-settings-on-an-s3-output", _set("output", {"uri": "s3://bucket/x", "huggingFace": {"private": True}}), "spec.output",
         "spec.output.huggingFace applies to an hf:// uri only", kubectl=True),
    Case("hub-output-token-by-value", _set("output", {"uri": "hf://kompress/glm", "huggingFace": {"token": "hf_abcdefghijklmnop"}}),
         "spec.output.huggingFace.token", 'unknown field "spec.output.huggingFace.token"', kubectl=True),
    Case("hub-output-branch-is-a-ref-path", _set("output", {"uri": "hf://kompress/glm", "huggingFace": {"revision": "refs/pr/1"}}),
         "spec.output.huggingFace.revision", "must be a branch name"),
    Case("hub-output-branch-is-a-commit", _set("output", {"uri": "hf://kompress/glm", "huggingFace": {"revision": "0123456789abcdef0123456789abcdef01234567"}}),
         "spec.output.huggingFace.revision", "not a commit id"),
    Case("hub-output-branch-with-a-space", _set("output", {"uri": "hf://kompress/glm", "huggingFace": {"revision": "w4 a16"}}),
         "spec.output.huggingFace.revision", "should match"),
    Case("signing-key-by-value", _set("output.signing", {"keySecret": "signing", "privateKey": "-----BEGIN PRIVATE KEY-----"}),
         "spec.output.signing.privateKey", 'unknown field "spec.output.signing.privateKey"', kubectl=True),
    Case("signing-without-a-secret", _set("output.signing", {"method": "key"}), "spec.output.signing.keySecret", "Required value"),
    Case("signing-keyless-sigstore", _set("output.signing", {"keySecret": "signing", "method": "sigstore"}), "spec.output.signing.method",
         'Unsupported value: "sigstore"'),
    Case("signing-secret-not-a-dns-name", _set("output.signing", {"keySecret": "Signing_Key"}), "spec.output.signing.keySecret", "should match"),
]
IDS = [case.id for case in CASES]


@pytest.mark.unit
def test_the_table_covers_what_issue_2_asks_for():
    assert len(CASES) >= 15
    assert len(set(IDS)) == len(IDS)


def refusal(cluster, job, old=None) -> ApiStatusError:
    with pytest.raises(ApiStatusError) as refused:
        cluster.admit(job, old)
    return refused.value


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_api_server_refuses_and_names_the_field(module_apiserver, case):
    error = refusal(module_apiserver, case.job())
    status = error.status
    causes = (status.get("details") or {}).get("causes") or []
    named = [c.get("message", "") for c in causes if c.get("field") == case.field]
    # A strict-decoding refusal (400) has no causes: the field is in its message.
    assert named or case.field in status["message"], f"no error for {case.field}: {status}"
    assert any(case.says in text for text in named) or case.says in status["message"], status


def _location(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the API server writes a field path: spec.list[0].name, spec.map.key."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


@pytest.mark.unit
@pytest.mark.parametrize("case", [c for c in CASES if c.typed], ids=[c.id for c in CASES if c.typed])
def test_typed_model_refuses_the_same_spec(case):
    with pytest.raises(pydantic.ValidationError) as refused:
        v1alpha1.parse(case.job())
    locations = {_location(error["loc"]) for error in refused.value.errors()}
    assert any(location == case.field or location.startswith(case.field + ".") or location.startswith(case.field + "[")
               for location in locations), locations


@pytest.mark.integration
@pytest.mark.parametrize("case", [c for c in CASES if c.kubectl], ids=[c.id for c in CASES if c.kubectl])
def test_kubectl_apply_is_refused_by_the_api_server(module_apiserver, case):
    result = module_apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(case.job()), check=False)
    assert result.returncode == 1
    assert case.field in result.stderr and case.says in result.stderr, result.stderr
    assert "NotFound" in module_apiserver.kubectl("get", "compressionjob", "tiny-laptop", check=False).stderr


# --- Fields that must not change once the job exists (transition rules need the stored object) ---

IMMUTABLE_CHANGES = [
    ("model", _set("model.uri", "hf://zai-org/GLM-4.5")),
    ("recipe", _set("recipe.preset", "w4a16")),
    ("output", _set("output.uri", "s3://other-bucket/prefix")),
    ("resources", _set("resources.gpus", 8)),
    ("calibration", _set("calibration.samples", 64)),
]


@pytest.mark.integration
@pytest.mark.parametrize("field,change", IMMUTABLE_CHANGES, ids=[f for f, _ in IMMUTABLE_CHANGES])
def test_changing_an_immutable_field_is_refused_on_update(module_apiserver, field, change):
    updated = with_spec(change)
    error = refusal(module_apiserver, updated, old=tiny_job())
    assert f"spec.{field} is immutable" in error.status["message"], error.status
    # The same change is fine when the job is created that way: transition rules do not run on create.
    assert module_apiserver.admit(updated)["metadata"]["name"] == "tiny-laptop"


@pytest.mark.integration
def test_suspend_may_change_after_creation(module_apiserver):
    assert module_apiserver.admit(with_spec(_set("suspend", True)), old=tiny_job())["spec"]["suspend"] is True


@pytest.mark.integration
def test_kubectl_apply_of_a_changed_model_is_refused_but_suspend_is_accepted(apiserver):
    apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(tiny_job()))
    refused = apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(with_spec(_set("model.uri", "hf://zai-org/GLM-4.5"))),
                                check=False)
    assert refused.returncode == 1
    assert "spec.model is immutable" in refused.stderr
    suspended = apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(with_spec(_set("suspend", True))))
    assert "configured" in suspended.stdout
    stored = apiserver.client.get(apiserver.path(name="tiny-laptop"))
    assert stored["spec"]["suspend"] is True
    assert stored["spec"]["model"]["uri"] == tiny_job()["spec"]["model"]["uri"]
    assert stored["metadata"]["generation"] == 2


# --- Locations that look alike but are not the same place are accepted ---

NOT_OVERLAPPING = [
    ("file:///models/glm", "file:///models/glm-w4a16"),  # a sibling that shares a prefix, not a path segment
    ("s3://models/glm", "s3://models/glm-w4a16/"),
    ("hf://zai-org/GLM-4.5-Air", "s3://models/zai-org/GLM-4.5-Air"),
]


@pytest.mark.integration
@pytest.mark.parametrize("model,output", NOT_OVERLAPPING, ids=[o for _, o in NOT_OVERLAPPING])
def test_an_output_beside_the_model_is_accepted(module_apiserver, model, output):
    volume = {"claimName": "out", "mountPath": output[len("file://"):].rsplit("/", 1)[0]} if output.startswith("file://") else None
    job = with_spec(lambda spec: (_set("model.uri", model)(spec), _set("output", {"uri": output, **({"volume": volume} if volume else {})})(spec)))
    assert module_apiserver.admit(job)["spec"]["output"]["uri"] == output
    v1alpha1.parse(job)


BROKEN_FOR_PYTHON_ONLY = [
    # Admission cannot compile a regex; the typed model (the operator parses every job with it) can.
    ("unbalanced-parenthesis", {"ignore": ["re:(.*mlp"]}, "spec.recipe.overrides.ignore[0]: 're:(.*mlp' is not a valid regex: missing )"),
    ("bad-escape", {"experts": "re:.*\\experts"}, "spec.recipe.overrides.experts: 're:.*\\\\experts' is not a valid regex: bad escape"),
]


@pytest.mark.unit
@pytest.mark.parametrize("overrides,says", [c[1:] for c in BROKEN_FOR_PYTHON_ONLY], ids=[c[0] for c in BROKEN_FOR_PYTHON_ONLY])
def test_the_typed_model_compiles_every_regex_and_names_the_entry(overrides, says):
    with pytest.raises(pydantic.ValidationError) as refused:
        v1alpha1.parse(with_spec(_set("recipe.overrides", overrides)))
    assert says in str(refused.value)


@pytest.mark.integration
def test_valid_regexes_with_brackets_are_accepted(module_apiserver):
    job = with_spec(_set("recipe.overrides", {"ignore": ["re:.*layers\\.[0-3]\\.mlp", "re:.*\\[x", "re:[]a]"], "experts": "re:.*experts\\.[0-9]+\\."}))
    assert module_apiserver.admit(job)["spec"]["recipe"]["overrides"]["experts"] == "re:.*experts\\.[0-9]+\\."
    v1alpha1.parse(job)


@pytest.mark.unit
def test_a_local_run_writes_a_file_output_without_a_volume(tmp_path, capsys):
    from kompress_job import cli
    from kompress_testing.models import config_dir

    job = with_spec(lambda spec: spec["output"].pop("volume"))
    v1alpha1.parse(job)  # what `kompress run` and `kompress plan` read the manifest with
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    assert cli.main(["plan", str(manifest), "--model-config", str(config_dir("glm-4.5-air") / "config.json")]) == 0


@pytest.mark.integration
def test_the_same_prefix_on_another_s3_store_is_not_the_model(module_apiserver):
    job = with_spec(lambda spec: (_set("model.uri", "s3://models/glm")(spec), _set("model.s3", {"endpoint": "https://minio-a.example"})(spec),
                                  _set("output.uri", "s3://models/glm")(spec), _set("output.s3", {"endpoint": "https://minio-b.example"})(spec)))
    assert module_apiserver.admit(job)["spec"]["output"]["s3"]["endpoint"] == "https://minio-b.example"
    v1alpha1.parse(job)
