"""Every CompressionJob in examples/ is valid: for the CRD's schema and rules, for the typed model, and
for an API server that `kubectl apply` (default, strict validation) sends it to."""

from __future__ import annotations

import pytest
import yaml

from kompress_api import v1alpha1
from kompress_testing import crdschema

from .conftest import example_jobs

EXAMPLES = example_jobs()


@pytest.mark.unit
def test_the_founding_examples_are_there():
    names = {doc["metadata"]["name"] for _, doc in EXAMPLES}
    assert {"glm-4-5-air-founding", "glm-4-5-air-w4a16-w8a8", "tiny-laptop"} <= names


@pytest.mark.unit
@pytest.mark.parametrize("job", [doc for _, doc in EXAMPLES], ids=[name for name, _ in EXAMPLES])
def test_example_validates_against_the_crd_schema_and_rules(job):
    assert crdschema.validate(job) == []


@pytest.mark.unit
@pytest.mark.parametrize("job", [doc for _, doc in EXAMPLES], ids=[name for name, _ in EXAMPLES])
def test_example_parses_with_the_typed_model(job):
    parsed = v1alpha1.parse(job)
    assert parsed.spec.model.uri == job["spec"]["model"]["uri"]


@pytest.mark.unit
def test_founding_example_asks_for_what_the_project_was_founded_on():
    job = dict(EXAMPLES)["examples/glm-4.5-air-founding.yaml:glm-4-5-air-founding"]
    spec = crdschema.admit(job).object["spec"]
    assert spec["recipe"] == {"preset": "sparse24-w4a16-w8a8"}
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
