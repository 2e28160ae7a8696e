"""The KServe InferenceService in examples/ is one KServe accepts: every field checked against KServe's own API types,
as its Python SDK ships them (kserve 0.21.0, generated from KServe's OpenAPI; `make kserve-sdk` downloads the wheel,
which is read, never installed), down through the Kubernetes types they embed (the kubernetes client's models); and
it serves the image the CompressionJob beside it publishes.

KServe's CRD itself (its structural schema) is in no package these registries serve: the SDK's types are the schema
checked here, with unknown fields and missing required ones refused, as the API server's strict decoding would."""

from __future__ import annotations

import ast
import re
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WHEEL = ROOT / ".tools" / "kserve" / "kserve-0.21.0-py3-none-any.whl"
EXAMPLE = ROOT / "examples" / "glm-4.5-air-oci-kserve.yaml"
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str, "date": str}
_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")

pytestmark = pytest.mark.unit


def _model_types(source: str) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """(openapi_types, attribute_map, required python names) of the one model class in an openapi-generator module."""
    tree = ast.parse(source)
    found: dict[str, dict[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and node.targets[0].id in ("openapi_types", "attribute_map"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["openapi_types"], found["attribute_map"], set(_REQUIRED.findall(source))


@cache
def kserve_models() -> dict[str, tuple[dict[str, str], dict[str, str], set[str]]]:
    if not WHEEL.exists():
        raise RuntimeError(f"KServe's SDK wheel is not here ({WHEEL}): run `make kserve-sdk`")
    models = {}
    with zipfile.ZipFile(WHEEL) as wheel:
        for name in wheel.namelist():
            if re.match(r"^kserve/models/v\w+\.py$", name):
                source = wheel.read(name).decode()
                match = re.search(r"^class (V\w+)\(object\):", source, re.MULTILINE)
                if match:
                    models[match.group(1)] = _model_types(source)
    return models


@cache
def model_types(name: str) -> tuple[dict[str, str], dict[str, str], set[str]]:
    if name in kserve_models():
        return kserve_models()[name]
    import inspect

    import kubernetes.client.models as k8s

    cls = getattr(k8s, name)  # kubernetes 37's models are pydantic: a required field is a required pydantic field
    required = {n for n, f in getattr(cls, "model_fields", {}).items() if f.is_required()} | set(_REQUIRED.findall(inspect.getsource(cls)))
    return dict(cls.openapi_types), dict(cls.attribute_map), required


def problems(value: Any, kind: str, path: str) -> list[str]:
    """What KServe's (and Kubernetes') types refuse in `value`, typed `kind` ('V1beta1ModelSpec', 'list[V1EnvVar]', ...)."""
    if value is None:
        return []
    if kind.startswith(("list[", "List[")):  # KServe's generator writes list[X], the kubernetes client's List[X]
        if not isinstance(value, list):
            return [f"{path}: must be a list"]
        return [p for i, item in enumerate(value) for p in problems(item, kind[5:-1], f"{path}[{i}]")]
    if kind.startswith(("dict(", "Dict[")):
        inner = kind[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict):
            return [f"{path}: must be a map"]
        return [p for key, item in value.items() for p in problems(item, inner, f"{path}.{key}")]
    if kind in PRIMITIVES:
        return [] if isinstance(value, PRIMITIVES[kind]) and not (kind in ("int", "float") and isinstance(value, bool)) else [f"{path}: must be {kind}"]
    if not isinstance(value, dict):
        return [f"{path}: must be an object ({kind})"]
    types, wire, required = model_types(kind)
    by_wire = {w: py for py, w in wire.items()}
    found = [f"{path}.{key}: unknown field of {kind}" for key in value if key not in by_wire]
    found += [f"{path}.{wire[py]}: required by {kind}" for py in required if wire[py] not in value]
    for key, item in value.items():
        if key in by_wire:
            found += problems(item, types[by_wire[key]], f"{path}.{key}")
    return found


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc}


def test_the_checker_refuses_what_kserve_would():
    service = documents()["InferenceService"]
    assert problems(service, "V1beta1InferenceService", "") == []
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["predictor"]["model"]["storageURI"] = broken["spec"]["predictor"]["model"].pop("storageUri")
    broken["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] = 160
    broken["spec"]["predictor"]["imagePullSecrets"] = [{"secretName": "registry-pull"}]
    assert sorted(problems(broken, "V1beta1InferenceService", "")) == [
        ".spec.predictor.imagePullSecrets[0].secretName: unknown field of V1LocalObjectReference",
        ".spec.predictor.model.resources.limits.memory: must be str",
        ".spec.predictor.model.storageURI: unknown field of V1beta1ModelSpec",
    ]
    assert problems({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "spec": {}}, "V1beta1InferenceService", "") == [
        ".spec.predictor: required by V1beta1InferenceServiceSpec"]


def test_the_inference_service_is_valid_for_kserve_and_serves_the_jobs_image():
    docs = documents()
    service, job = docs["InferenceService"], docs["CompressionJob"]
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert problems(service, "V1beta1InferenceService", "") == []
    model = service["spec"]["predictor"]["model"]
    # the image the job publishes (by its tag; the comment says how to pin the digest the status records)
    assert model["storageUri"] == job["spec"]["output"]["uri"]
    assert model["storageUri"].startswith("oci://") and model["modelFormat"]["name"] == "huggingface"
    assert any(arg == f"--tensor-parallel-size={job['spec']['resources']['gpus']}" for arg in model["args"])
    assert model["resources"]["limits"]["nvidia.com/gpu"] == str(job["spec"]["resources"]["gpus"])
