"""Secret values never leave the worker: a whole pod run with planted credentials in every credential
variable, the Hub token really sent (private repository) and S3 keys really used, then every log line,
the manifest, the model card and the termination message are searched for each value."""

from __future__ import annotations

import json
import subprocess

import pytest

from kompress_testing import compute_runs
from kompress_testing.jobs import write_checkpoint

pytestmark = pytest.mark.integration

HF_TOKEN = "hf_PLANTEDsecretTOKEN0123456789abcdef"
UNUSED = {
    "KOMPRESS_MODEL_S3_AWS_ACCESS_KEY_ID": "AKIAPLANTEDMODELKEY01",
    "KOMPRESS_MODEL_S3_AWS_SECRET_ACCESS_KEY": "planted/model/secret+key=0123456789",
    "KOMPRESS_OUTPUT_S3_AWS_SESSION_TOKEN": None,  # filled in per test
}


def pod(tmp_path, doc, env, checkpoint) -> tuple[subprocess.CompletedProcess, str]:
    """The worker pod with a ready checkpoint standing in for compression: (the process, its termination message)."""
    return compute_runs.pod_run(doc, tmp_path, env, timeout=300, worker_args=(str(checkpoint),))


def assert_no_secret(secrets: list[str], **texts: str) -> None:
    for name, text in texts.items():
        assert text, f"{name} is empty: nothing was scanned"
        for secret in secrets:
            assert secret not in text, f"a secret value appears in the {name}"


def test_a_whole_run_leaks_no_secret_value(s3, bucket, hub, model_folder, tokenizer_files, tmp_path):
    commit = hub.add_repo("planted/tiny-moe", model_folder, token=HF_TOKEN)
    s3.client().put_object(Bucket=bucket, Key="data/calib.jsonl", Body="".join(json.dumps({"text": f"calibration line {i}"}) + "\n" for i in range(30)).encode())
    checkpoint = write_checkpoint(tmp_path / "checkpoint", tokenizer_files)
    doc = {
        "metadata": {"name": "planted", "namespace": "ml", "uid": "1234"},
        "spec": {
            "model": {"uri": "hf://planted/tiny-moe", "huggingFace": {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf", "key": "token"}}},
            "calibration": {"uri": f"s3://{bucket}/data/calib.jsonl", "samples": 8, "maxSequenceLength": 32, "s3": s3.access()},
            "recipe": {"preset": "w4a16-w8a8"},
            "output": {"uri": f"s3://{bucket}/out/planted", "s3": s3.access()},
            "resources": {"gpus": 0},
            "evaluation": {"samples": 4},
        },
    }
    env = {"HF_TOKEN": HF_TOKEN, **s3.env("calibration"), **s3.env("output"), **{k: v for k, v in UNUSED.items() if v}}

    done, termination = pod(tmp_path, doc, env, checkpoint)

    assert done.returncode == 0, done.stderr[-3000:]
    assert {r.authorization for r in hub.requests} == {f"Bearer {HF_TOKEN}"}  # the token was used
    manifest = s3.client().get_object(Bucket=bucket, Key="out/planted/kompress.json")["Body"].read().decode()
    card = s3.client().get_object(Bucket=bucket, Key="out/planted/README.md")["Body"].read().decode()
    assert json.loads(manifest)["source"]["resolvedRevision"] == commit
    secrets = [HF_TOKEN, s3.access_key_id, s3.secret_access_key, *(v for v in UNUSED.values() if v)]
    assert_no_secret(secrets, logs=done.stderr, stdout=done.stdout or "-", manifest=manifest, model_card=card, termination_message=termination)
    assert all(json.loads(line) for line in done.stderr.splitlines() if line.strip())  # JSON lines throughout


def test_a_failing_run_leaks_no_secret_value_either(s3, bucket, model_folder, tokenizer_files, tmp_path):
    wrong = "wrong/secret/PLANTED+value=987654321"
    session = "PLANTED-session-token-abcdef0123456789"
    doc = {
        "metadata": {"name": "planted", "namespace": "ml"},
        "spec": {"model": {"uri": str(model_folder)}, "recipe": {"preset": "w4a16"}, "output": {"uri": f"s3://{bucket}/out", "s3": s3.access()}, "resources": {"gpus": 0}},
    }
    env = {**s3.env("output", secret_access_key=wrong), "KOMPRESS_OUTPUT_S3_AWS_SESSION_TOKEN": session, "HF_TOKEN": HF_TOKEN}

    done, termination = pod(tmp_path, doc, env, write_checkpoint(tmp_path / "checkpoint", tokenizer_files))

    assert done.returncode == 19, done.stderr[-3000:]
    assert_no_secret([wrong, session, HF_TOKEN, s3.access_key_id], logs=done.stderr, termination_message=termination)


@pytest.mark.slow
def test_a_run_that_really_compresses_leaks_no_secret_value(s3, bucket, hub, tmp_path):
    """The tiny GLM4-MoE from the Hub stand-in, compressed by llm-compressor for real (load, compress, save,
    verify, evaluate against a baseline), published to S3; only stages not written yet (plan) are stood in for."""
    from kompress_testing.jobs import stage_exists
    from kompress_testing.models import write_model

    model = write_model("glm4-moe", tmp_path / "glm4-moe")
    commit = hub.add_repo("planted/tiny-glm4-moe", model, token=HF_TOKEN)
    doc = {
        "metadata": {"name": "planted-real", "namespace": "ml", "uid": "5678"},
        "spec": {
            "model": {"uri": "hf://planted/tiny-glm4-moe", "dtype": "float32", "huggingFace": {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf", "key": "token"}}},
            "calibration": {"samples": 16, "maxSequenceLength": 64},
            "recipe": {"preset": "w4a16-w8a8"},
            "output": {"uri": f"s3://{bucket}/out/real", "s3": s3.access()},
            "resources": {"gpus": 0},
            "evaluation": {"samples": 4},
        },
    }
    env = {"HF_TOKEN": HF_TOKEN, **s3.env("output"), **{k: v for k, v in UNUSED.items() if v}}

    done, termination = compute_runs.pod_run(doc, tmp_path, env)

    assert done.returncode == 0, done.stderr[-4000:]
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    ran = [r["stage"] for r in records if r["message"].startswith("stage ") and r["message"].endswith("start")]
    assert any(r["logger"] == "kompress.stdout" for r in records)  # llm-compressor's own lines, as JSON too
    assert {"load-model", "baseline", "compress", "save", "verify", "evaluate"} <= set(ran)
    assert all(stage_exists(s) for s in ("load-model", "baseline", "compress", "save", "verify", "evaluate"))
    manifest = json.loads(s3.client().get_object(Bucket=bucket, Key="out/real/kompress.json")["Body"].read())
    card = s3.client().get_object(Bucket=bucket, Key="out/real/README.md")["Body"].read().decode()
    assert manifest["source"]["resolvedRevision"] == commit
    assert manifest["recipe"]["effective"]["preset"] == "w4a16-w8a8" and sum(manifest["groups"].values()) > 0
    assert {"recipe.yaml", "kompress-record.json", "config.json"} <= {f["path"] for f in manifest["files"]}
    secrets = [HF_TOKEN, s3.access_key_id, s3.secret_access_key, *(v for v in UNUSED.values() if v)]
    assert_no_secret(secrets, logs=done.stderr, manifest=json.dumps(manifest), model_card=card, termination_message=termination)
