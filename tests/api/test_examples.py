"""Every CompressionJob in examples/ is valid: for the API server's schema and CEL rules (a real
kube-apiserver, server-side dry run), for the typed model, and with `kubectl apply` (default, strict validation)."""

from __future__ import annotations

import pytest
import yaml

from kompress_api import v1alpha1
from .conftest import example_jobs

EXAMPLES = example_jobs()


@pytest.mark.unit
def test_the_founding_examples_are_there():
    names = {doc["metadata"]["name"] for _, doc in EXAMPLES}
    assert {"glm-4-5-air-founding", "glm-4-5-air-w4a16-w8a8", "tiny-laptop"} <= names


@pytest.mark.integration
@pytest.mark.parametrize("job", [doc for _, doc in EXAMPLES], ids=[name for name, _ in EXAMPLES])
def test_example_is_admitted_by_the_api_server(module_apiserver, job):
    assert module_apiserver.admit(job)["metadata"]["name"] == job["metadata"]["name"]


@pytest.mark.unit
@pytest.mark.parametrize("job", [doc for _, doc in EXAMPLES], ids=[name for name, _ in EXAMPLES])
def test_example_parses_with_the_typed_model(job):
    parsed = v1alpha1.parse(job)
    assert parsed.spec.model.uri == job["spec"]["model"]["uri"]


@pytest.mark.integration
def test_founding_example_asks_for_what_the_project_was_founded_on(module_apiserver):
    job = dict(EXAMPLES)["examples/glm-4.5-air-founding.yaml:glm-4-5-air-founding"]
    spec = module_apiserver.admit(job)["spec"]
    assert spec["recipe"] == {"preset": "sparse24-w4a16-w8a8", "mtp": "keep"}  # the MTP layer kept by default
    assert spec["resources"]["gpus"] == 4
    assert (spec["calibration"]["samples"], spec["calibration"]["maxSequenceLength"]) == (512, 2048)
    assert spec["output"]["uri"].startswith("s3://")
    assert spec["model"]["huggingFace"]["tokenSecret"] == {"name": "hf-token", "key": "token"}


@pytest.mark.integration
def test_examples_apply_with_kubectl_default_validation(apiserver):
    applied = apiserver.kubectl("apply", "-f", "examples/glm-4.5-air-founding.yaml", "-f", "examples/glm-4.5-air-servable.yaml",
                                "-f", "examples/tiny-laptop.yaml")
    assert "compressionjob.kompress.dev/tiny-laptop created" in applied.stdout
    assert "secret/hf-token created" in applied.stdout
    stored = yaml.safe_load(apiserver.kubectl("get", "compressionjob", "tiny-laptop", "-o", "yaml").stdout)
    # The server applied the schema's defaults, as a real one does.
    assert stored["spec"]["calibration"]["seed"] == 42
    assert stored["spec"]["backoffLimit"] == 2
