"""`kompress run` and `kompress worker` as a user and the operator see them: exit codes, the printed summary,
JSON logs, and the termination message. Each runs as a real process against moto's S3 over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from kompress_api.exit_codes import ExitCode
from kompress_api.worker_protocol import WorkerResult

pytestmark = pytest.mark.integration


def job_doc(model_uri: str, output: dict, **spec) -> dict:
    return {
        "apiVersion": "kompress.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "tiny", "namespace": "ml"},
        "spec": {"model": {"uri": model_uri}, "recipe": {"preset": "w4a16"}, "output": output, "resources": {"gpus": 0}, **spec},
    }


def kompress(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMPRESS_", "AWS_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "kompress_job.cli", *args], env=full_env, capture_output=True, text=True, timeout=120, cwd=cwd)


def write_job(tmp_path, doc) -> str:
    path = tmp_path / "job.yaml"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"}, "stringData": {"AWS_ACCESS_KEY_ID": "x"}}
    path.write_text(yaml.safe_dump_all([secret, doc]))  # a Secret beside the job, as in examples/
    return str(path)


@pytest.fixture
def s3_output(s3, bucket):
    return {"uri": f"s3://{bucket}/out/tiny", "s3": s3.access()}


@pytest.mark.parametrize(
    ("case", "code", "says"),
    [
        ("wrong-secret", ExitCode.ACCESS_DENIED, "refused the credentials for the output"),
        ("missing-bucket", ExitCode.ACCESS_DENIED, "the bucket 'no-such-bucket' does not exist"),
        ("unreachable", ExitCode.STORAGE_UNREACHABLE, "cannot reach the S3 endpoint http://127.0.0.1:9"),
        ("no-credentials", ExitCode.ACCESS_DENIED, "KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID is not set"),
    ],
)
def test_output_problems_fail_in_preflight_with_a_clear_reason_and_exit_code(s3, s3_output, model_folder, tmp_path, case, code, says):
    env = s3.env("output")
    output = dict(s3_output)
    if case == "wrong-secret":
        env = s3.env("output", secret_access_key="not-the-secret")
    elif case == "missing-bucket":
        output["uri"] = "s3://no-such-bucket/out"
    elif case == "unreachable":
        output["s3"] = {**output["s3"], "endpoint": "http://127.0.0.1:9"}
    elif case == "no-credentials":
        env = {}
    path = write_job(tmp_path, job_doc(str(model_folder), output))

    done = kompress("run", path, "--log-format", "json", env=env)

    assert done.returncode == code.code, done.stderr[-3000:]
    assert f"Failed ({code.reason}, exit {code.code}) in stage preflight" in done.stdout
    assert says in done.stdout
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(r["level"] == "error" and says in r["message"] for r in records)


def test_an_existing_model_fails_with_output_exists(s3, s3_output, bucket, model_folder, tmp_path):
    s3.client().put_object(Bucket=bucket, Key="out/tiny/kompress.json", Body=b"{}")
    path = write_job(tmp_path, job_doc(str(model_folder), s3_output))
    done = kompress("run", path, "--json", env=s3.env("output"))
    assert done.returncode == ExitCode.OUTPUT_EXISTS.code
    result = WorkerResult.model_validate(json.loads(done.stdout))
    assert result.reason == "OutputExists" and "spec.output.overwrite" in result.message


def test_a_missing_model_or_calibration_set_fails_before_any_download(s3, s3_output, model_folder, tmp_path):
    path = write_job(tmp_path, job_doc("/models/absent", s3_output))
    done = kompress("run", path, env=s3.env("output"))
    assert done.returncode == ExitCode.MODEL_NOT_FOUND.code, done.stdout
    path = write_job(tmp_path, job_doc(str(model_folder), s3_output, calibration={"uri": "builtin://wikipedia"}))
    done = kompress("run", path, env=s3.env("output"))
    assert done.returncode == ExitCode.CALIBRATION_NOT_FOUND.code, done.stdout


def test_a_workdir_that_cannot_be_made_is_a_usage_error_in_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    path = write_job(tmp_path, job_doc(str(tmp_path / "model"), {"uri": "file:///tmp/out"}))
    done = kompress("run", path, "--workdir", str(tmp_path / "file" / "work"))
    assert done.returncode == ExitCode.USAGE.code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stdout.startswith("Failed (InvalidArguments, exit 2): cannot use --workdir")


def test_an_invalid_manifest_names_the_field(tmp_path):
    path = write_job(tmp_path, job_doc("ftp://nowhere", {"uri": "file:///tmp/out"}))
    done = kompress("run", path)
    assert done.returncode == ExitCode.INVALID_SPEC.code
    assert "Failed (InvalidSpec, exit 10)" in done.stdout and "spec.model.uri must be hf://ORG/NAME" in done.stdout


def test_the_worker_reports_through_json_logs_and_the_termination_message(s3, s3_output, model_folder, tmp_path):
    doc = job_doc(str(model_folder), s3_output)
    termination = tmp_path / "termination-log"
    env = {
        **s3.env("output", secret_access_key="wrong"),
        "KOMPRESS_JOB": json.dumps({"metadata": doc["metadata"], "spec": doc["spec"]}),
        "KOMPRESS_TERMINATION_LOG": str(termination),
        "KOMPRESS_PROGRESS_BIND": "127.0.0.1:0",
        "KOMPRESS_SCRATCH": str(tmp_path / "scratch"),
    }
    done = kompress("worker", env=env)

    assert done.returncode == ExitCode.ACCESS_DENIED.code
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    assert any(r.get("stage") == "preflight" and r["level"] == "error" for r in records)
    assert len(termination.read_bytes()) <= 4096
    result = WorkerResult.model_validate(json.loads(termination.read_text()))
    assert (result.ok, result.reason, result.stage) == (False, "AccessDenied", "preflight")


def test_the_worker_without_a_job_says_so_in_its_termination_message(tmp_path):
    termination = tmp_path / "termination-log"
    done = kompress("worker", env={"KOMPRESS_TERMINATION_LOG": str(termination)})
    assert done.returncode == ExitCode.INVALID_SPEC.code
    result = WorkerResult.model_validate(json.loads(termination.read_text()))
    assert result.reason == "InvalidSpec" and "KOMPRESS_JOB" in result.message


def test_sigterm_mid_job_leaves_an_honest_termination_message(model_folder, tokenizer_files, tmp_path):
    import signal
    import time
    import urllib.request

    from kompress_testing.jobs import write_checkpoint
    from kompress_testing.s3 import free_port

    doc = job_doc(str(model_folder), {"uri": f"file://{tmp_path / 'out'}"}, calibration={"samples": 4, "maxSequenceLength": 16}, evaluation={"samples": 2})
    port = free_port()
    termination = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMPRESS_")}
    env.update(
        {
            "KOMPRESS_JOB": json.dumps({"metadata": doc["metadata"], "spec": doc["spec"]}),
            "KOMPRESS_TERMINATION_LOG": str(termination),
            "KOMPRESS_PROGRESS_BIND": f"127.0.0.1:{port}",
            "KOMPRESS_SCRATCH": str(tmp_path / "scratch"),
        }
    )
    checkpoint = write_checkpoint(tmp_path / "checkpoint", tokenizer_files)
    child = subprocess.Popen([sys.executable, "-m", "kompress_testing.worker_run", str(checkpoint), "--hang-in", "compress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stage, deadline = None, time.monotonic() + 120
        while stage != "compress" and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=2) as response:
                    stage = json.loads(response.read())["stage"]
            except OSError:
                continue
        assert stage == "compress", "the worker never reached the compress stage"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 143, stderr[-2000:]
    result = WorkerResult.model_validate(json.loads(termination.read_text()))
    assert (result.ok, result.reason, result.stage) == (False, "Terminated", "compress")
    assert not (tmp_path / "out" / "kompress.json").exists()


@pytest.mark.unit
def test_the_run_summary_says_where_the_model_went_and_what_it_is_worth():
    from kompress_api.v1alpha1 import EvaluationMetrics
    from kompress_job.runner import summary

    ok = WorkerResult(
        ok=True,
        message="published to s3://models/glm/w4a16",
        manifest_uri="s3://models/glm/w4a16/kompress.json",
        resolved_revision="6b371e2a",
        checkpoint_bytes=105_000_000_000,
        original_bytes=214_000_000_000,
        compression_ratio=2.04,
        metrics=EvaluationMetrics(perplexity_increase=0.031, kl_divergence=0.0123, top1_agreement=0.912),
    )
    text = summary(ok)
    assert text.startswith("Succeeded: published to s3://models/glm/w4a16")
    for part in ("s3://models/glm/w4a16/kompress.json", "105.000 GB", "2.04x vs bf16", "perplexity +3.10%", "KL 0.0123", "top-1 0.912"):
        assert part in text
    failed = WorkerResult(ok=False, exit_code=17, reason="QualityGateFailed", message="missed", stage="publish", rejected_uri="s3://m/x.rejected")
    assert summary(failed) == "Failed (QualityGateFailed, exit 17) in stage publish: missed\n  rejected checkpoint kept at s3://m/x.rejected"
