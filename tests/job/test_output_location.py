"""A job never writes over its own source: where the model and the output URIs differ as strings but are one
place (two volumes on one PersistentVolumeClaim, a symlink on a laptop), the plan or preflight refuses the job,
naming both fields. The string cases are refused by the API itself (tests/api/test_malformed.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kompress_api.v1alpha1 import CompressionJob, parse

from kompress_job import cli
from kompress_job.errors import InvalidSpec
from kompress_job.planning import destination
from kompress_job.stages.preflight import check_not_the_model
from kompress_testing.models import config_dir

pytestmark = pytest.mark.unit

GLM_CONFIG = str(config_dir("glm-4.5-air") / "config.json")


def job(model: dict[str, Any], output: dict[str, Any]) -> CompressionJob:
    return parse({"metadata": {"name": "same-place"}, "spec": {"model": model, "recipe": {"preset": "w4a16"}, "output": output}})


def one_claim(model_sub: str | None = None, output_sub: str | None = None, output_uri: str = "file:///out/glm") -> CompressionJob:
    model_volume = {"claimName": "shared", "mountPath": "/models", **({"subPath": model_sub} if model_sub else {})}
    output_volume = {"claimName": "shared", "mountPath": "/out", **({"subPath": output_sub} if output_sub else {})}
    return job({"uri": "file:///models/glm", "volume": model_volume}, {"uri": output_uri, "volume": output_volume})


def test_two_mounts_of_one_claim_that_meet_are_refused_naming_both_fields():
    (problem,) = destination.output_overlaps_model(one_claim().spec)
    assert problem.is_error and problem.code == "OutputOverlapsModel"
    assert "spec.output.uri (file:///out/glm)" in problem.message and "spec.model.uri (file:///models/glm)" in problem.message
    assert "PersistentVolumeClaim shared" in problem.message
    # the output inside the model's folder, through sub-paths
    assert destination.output_overlaps_model(one_claim(model_sub="hub", output_sub="hub/glm", output_uri="file:///out").spec)


def test_mounts_that_do_not_meet_are_accepted():
    assert destination.output_overlaps_model(one_claim(model_sub="models", output_sub="compressed").spec) == []
    other = job({"uri": "file:///models/glm", "volume": {"claimName": "models", "mountPath": "/models"}},
                {"uri": "file:///out/glm", "volume": {"claimName": "out", "mountPath": "/out"}})
    assert destination.output_overlaps_model(other.spec) == []
    assert destination.output_overlaps_model(job({"uri": "hf://zai-org/GLM-4.5-Air"}, {"uri": "s3://bucket/glm"}).spec) == []


def test_kompress_plan_exits_20_on_it(tmp_path, capsys):
    manifest = tmp_path / "job.yaml"
    doc = {"apiVersion": "kompress.dev/v1alpha1", "kind": "CompressionJob", **{k: v for k, v in one_claim().model_dump(by_alias=True, exclude_none=True, mode="json").items() if k in ("metadata", "spec")}}
    manifest.write_text(yaml.safe_dump(doc))
    assert cli.main(["plan", str(manifest), "--model-config", GLM_CONFIG]) == 20
    assert "OutputOverlapsModel" in capsys.readouterr().out


def test_preflight_refuses_an_output_reached_through_a_symlink(tmp_path):
    model = tmp_path / "glm"
    model.mkdir()
    (tmp_path / "link").symlink_to(model)
    linked = job({"uri": f"file://{model}"}, {"uri": f"file://{tmp_path}/link/compressed"})
    with pytest.raises(InvalidSpec, match="spec.output.uri .* and spec.model.uri .* same folder"):
        check_not_the_model(linked.spec)
    check_not_the_model(job({"uri": f"file://{model}"}, {"uri": f"file://{tmp_path}/glm-w4a16"}).spec)
