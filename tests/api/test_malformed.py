"""Malformed CompressionJobs are refused, with a message that names the field: by the CRD's schema and
CEL rules (as the API server applies them), by `kubectl apply` against the emulated server, and by the
typed model where it can tell without the stored object (one model, consistent answers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pydantic
import pytest
import yaml

from kompress_api import v1alpha1
from kompress_testing import crdschema

from .conftest import tiny_job, with_spec


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[dict[str, Any]], Any]
    field: str  # the field the API server's error names
    says: str  # a part of its message
    kubectl: bool = False  # also checked end to end with kubectl

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
]
IDS = [case.id for case in CASES]


@pytest.mark.unit
def test_the_table_covers_what_issue_2_asks_for():
    assert len(CASES) >= 15
    assert len(set(IDS)) == len(IDS)


@pytest.mark.unit
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_schema_refuses_and_names_the_field(case):
    errors = crdschema.validate(case.job())
    named = [str(error) for error in errors if error.field == case.field]
    assert named, f"no error for {case.field}: {[str(e) for e in errors]}"
    assert any(case.says in text for text in named), named


@pytest.mark.unit
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_typed_model_refuses_the_same_spec(case):
    with pytest.raises(pydantic.ValidationError) as refused:
        v1alpha1.parse(case.job())
    locations = {".".join(str(part) for part in error["loc"]) for error in refused.value.errors()}
    assert any(location == case.field or location.startswith(case.field + ".") for location in locations), locations


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


@pytest.mark.unit
@pytest.mark.parametrize("field,change", IMMUTABLE_CHANGES, ids=[f for f, _ in IMMUTABLE_CHANGES])
def test_changing_an_immutable_field_is_refused_on_update(field, change):
    stored = crdschema.admit(tiny_job()).object
    updated = with_spec(change)
    errors = crdschema.validate(updated, old=stored)
    assert any(f"spec.{field} is immutable" in str(e) for e in errors), [str(e) for e in errors]
    # The same change is fine when the job is created that way: transition rules do not run on create.
    assert crdschema.validate(updated) == []


@pytest.mark.unit
def test_suspend_may_change_after_creation():
    stored = crdschema.admit(tiny_job()).object
    assert crdschema.validate(with_spec(_set("suspend", True)), old=stored) == []


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
