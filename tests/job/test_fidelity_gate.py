"""The quality gate on a real run: the worker pod's entry point, every stage real (llm-compressor included),
the trained test model, output to moto's S3 over HTTP. A model that misses the gate ends with exit code 17,
nothing under the final prefix, a rejected copy beside it that says so, and the figures in the termination
message the operator reads."""

from __future__ import annotations

import json

import pytest
from kompress_api.exit_codes import ExitCode
from kompress_api.worker_protocol import WorkerResult

from kompress_testing import compute_runs

pytestmark = [pytest.mark.slow, pytest.mark.integration]

GATE = {"maxPerplexityIncrease": 0.02, "minTop1Agreement": 0.9}


def test_a_model_that_misses_the_gate_fails_and_is_kept_only_beside_the_final_prefix(s3, bucket, tmp_path):
    job = compute_runs.trained_job({"preset": "sparse24-w4a16-w8a8"}, gate=GATE, output_uri=f"s3://{bucket}/models/chat")
    doc = job.wire()
    doc["spec"]["output"]["s3"] = s3.access()

    done, termination = compute_runs.pod_run(doc, tmp_path, s3.env("output"))

    assert done.returncode == ExitCode.QUALITY_GATE_FAILED.code == 17, done.stderr[-4000:]
    # nothing under the final prefix; the rejected copy beside it, complete and marked
    assert s3.keys(bucket, "models/chat/") == []
    rejected = set(s3.keys(bucket, "models/chat.rejected/"))
    assert {"models/chat.rejected/kompress.json", "models/chat.rejected/README.md", "models/chat.rejected/fidelity.png", "models/chat.rejected/model.safetensors"} <= rejected
    manifest = json.loads(s3.client().get_object(Bucket=bucket, Key="models/chat.rejected/kompress.json")["Body"].read())
    evaluation = manifest["evaluation"]
    assert manifest["status"] == "rejected" and evaluation["gatePassed"] is False
    increase = evaluation["metrics"]["perplexityIncrease"]
    assert increase > GATE["maxPerplexityIncrease"]
    figure = f"perplexity {increase:+.1%}"
    assert any(f.startswith(figure) and f.endswith("> limit +2.0%") for f in evaluation["gateFailures"])
    card = s3.client().get_object(Bucket=bucket, Key="models/chat.rejected/README.md")["Body"].read().decode()
    assert "REJECTED" in card and figure in card and "![" in card and "(fidelity.png)" in card

    # what the operator reads: the reason, the figures and the limits, where the rejected copy is
    result = WorkerResult.model_validate(json.loads(termination))
    assert (result.ok, result.exit_code, result.reason) == (False, 17, "QualityGateFailed")
    assert figure in result.message and "> limit +2.0%" in result.message
    assert result.rejected_uri == f"s3://{bucket}/models/chat.rejected" and result.output_uri is None
    assert result.metrics.perplexity_increase == increase and result.metrics.gate_passed is False
    assert result.checkpoint_bytes == manifest["checkpointBytes"]  # fidelity.png and .json included, as published
