"""Facts the worker and the operator share have one definition in the API: the worker's result is the status's
JobResult plus how the run ended, and the evaluation length's default is one method the worker and the plan call."""

from __future__ import annotations

import pytest

from kompress_api.v1alpha1 import EVALUATION_LENGTH_CAP, Calibration, CompressionJob, Evaluation, JobResult
from kompress_api.worker_protocol import WorkerResult

pytestmark = pytest.mark.unit


def test_the_worker_result_is_the_job_result_and_how_the_run_ended():
    assert issubclass(WorkerResult, JobResult)
    assert set(WorkerResult.model_fields) - set(JobResult.model_fields) == {"ok", "exit_code", "reason", "message", "stage"}
    result = WorkerResult(ok=True, output_uri="s3://models/tiny", checkpoint_bytes=3_100_000, compression_ratio=2.5)
    # what the operator copies into status.result: the JobResult's fields, as they were on the wire
    assert JobResult.model_validate({k: v for k, v in result.wire().items() if k in {f.alias for f in JobResult.model_fields.values()}}).wire() == {
        "outputUri": "s3://models/tiny",
        "checkpointBytes": 3_100_000,
        "compressionRatio": 2.5,
    }


@pytest.mark.parametrize(("calibration", "evaluation", "expected"), [(2048, None, EVALUATION_LENGTH_CAP), (512, None, 512), (512, 4096, 4096)])
def test_the_evaluation_length_defaults_to_the_calibration_length_capped(calibration, evaluation, expected):
    assert Evaluation(max_sequence_length=evaluation).sequence_length(Calibration(max_sequence_length=calibration).max_sequence_length) == expected


def test_the_crd_states_the_cap_the_model_applies():
    description = CompressionJob.model_json_schema()["$defs"]["Evaluation"]["properties"]["maxSequenceLength"]["description"]
    assert f"at most {EVALUATION_LENGTH_CAP}." in description
