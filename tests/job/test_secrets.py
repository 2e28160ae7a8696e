"""Secret values never leave the worker: a whole pod run with planted credentials in every credential
variable, the Hub token really sent (private repository) and S3 keys really used, then every log line,
the manifest, the model card, the termination message and the progress JSON are searched for each value
in every encoding a library or a format could give it (repr, JSON, URL, base64 of it and of `user:it`).

The credentials are planted as Secrets made from files often are: with a trailing newline or spaces
(`echo KEY > f; kubectl create secret generic --from-file`), and with `/`, `+`, `=`, `%` and non-ASCII
letters in the values that allow them."""

from __future__ import annotations

import base64
import json
import subprocess
from urllib.parse import quote

import pytest

from kompress_testing import compute_runs, signing_keys
from kompress_testing.jobs import write_checkpoint
from kompress_testing.secret_scan import assert_no_secret, encodings, key_secrets  # noqa: F401 - encodings: part of what the scan means

pytestmark = pytest.mark.integration

HF_TOKEN = "hf_PLANTEDsecretTOKEN0123456789abcdef\n"
UNUSED = {
    "KOMPRESS_MODEL_S3_AWS_ACCESS_KEY_ID": "  AKIAPLANTEDMODELKEY01\n",
    "KOMPRESS_MODEL_S3_AWS_SECRET_ACCESS_KEY": "planted/model/sécret+key=%41 0123456789\n",
    "KOMPRESS_OUTPUT_S3_AWS_SESSION_TOKEN": None,  # filled in per test
}


def padded(env: dict[str, str]) -> dict[str, str]:
    """The same credentials, as Secrets made from files carry them."""
    return {name: value + ("\n" if i % 2 == 0 else "  \r\n") for i, (name, value) in enumerate(env.items())}


def pod(tmp_path, doc, env, checkpoint) -> tuple[subprocess.CompletedProcess, str]:
    """The worker pod with a ready checkpoint standing in for compression: (the process, its termination message)."""
    return compute_runs.pod_run(doc, tmp_path, env, timeout=300, worker_args=(str(checkpoint),))


def test_a_whole_run_leaks_no_secret_value(s3, bucket, hub, model_folder, tokenizer_files, tmp_path):
    commit = hub.add_repo("planted/tiny-moe", model_folder, token=HF_TOKEN.strip())
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
    env = {"HF_TOKEN": HF_TOKEN, **padded({**s3.env("calibration"), **s3.env("output")}), **{k: v for k, v in UNUSED.items() if v}}

    done, termination = pod(tmp_path, doc, env, checkpoint)

    assert done.returncode == 0, done.stderr[-3000:]
    assert {r.authorization for r in hub.requests} == {f"Bearer {HF_TOKEN.strip()}"}  # the token was used, without its newline
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


@pytest.mark.parametrize("variable", ["KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID", "HF_TOKEN"])
def test_a_credential_with_a_control_character_inside_is_refused_once_naming_it(s3, bucket, hub, model_folder, tokenizer_files, tmp_path, variable):
    """Two values pasted into one Secret: AccessDenied (19, not retried) naming the variable, never the value;
    not a malformed header whose error shows the key id, retried as WorkerError or StorageUnreachable."""
    hub.add_repo("planted/tiny-moe", model_folder, token=HF_TOKEN.strip())
    env = {"HF_TOKEN": HF_TOKEN, **s3.env("output")}
    broken = env[variable].strip()
    env[variable] = broken[:6] + "\n" + broken[6:] + "\n"
    doc = {
        "metadata": {"name": "planted", "namespace": "ml"},
        "spec": {
            "model": {"uri": "hf://planted/tiny-moe", "huggingFace": {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf", "key": "token"}}},
            "recipe": {"preset": "w4a16"},
            "output": {"uri": f"s3://{bucket}/out", "s3": s3.access()},
            "resources": {"gpus": 0},
        },
    }

    done, termination = pod(tmp_path, doc, env, write_checkpoint(tmp_path / "checkpoint", tokenizer_files))

    assert done.returncode == 19, done.stderr[-3000:]
    result = json.loads(termination)
    assert result["reason"] == "AccessDenied" and f"${variable}" in result["message"] and "U+000A" in result["message"]
    assert_no_secret([env[variable], broken[:6], broken[6:], s3.secret_access_key], logs=done.stderr, termination_message=termination)


def test_the_progress_json_is_redacted_too():
    import urllib.request

    from kompress_job.progress import ProgressReporter
    from kompress_job.progress_server import ProgressServer
    from kompress_job.redaction import Redactor

    secret = "planted/progress+secret=%41 é\n"
    reporter = ProgressReporter(["publish"])
    with ProgressServer(reporter, "127.0.0.1:0", redact=Redactor.from_env({"AWS_SECRET_ACCESS_KEY": secret})) as server:
        with reporter.stage("publish"):
            reporter.message(f"uploading with {secret!r}, {json.dumps(secret)}, {quote(secret)}, {base64.b64encode(('u:' + secret).encode()).decode()}")
            with urllib.request.urlopen(server.url + "/progress", timeout=5) as response:
                body = response.read().decode()
    assert "uploading with" in body
    assert_no_secret([secret], progress_json=body)


@pytest.mark.slow
def test_a_run_that_really_compresses_leaks_no_secret_value(s3, bucket, hub, tmp_path):
    """The tiny GLM4-MoE from the Hub stand-in, compressed by llm-compressor for real (load, compress, save,
    verify, evaluate against a baseline), published to S3; only stages not written yet (plan) are stood in for."""
    from kompress_testing.jobs import stage_exists
    from kompress_testing.models import write_model

    model = write_model("glm4-moe", tmp_path / "glm4-moe")
    commit = hub.add_repo("planted/tiny-glm4-moe", model, token=HF_TOKEN.strip())
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


def test_a_signed_hub_publication_leaks_neither_the_write_token_nor_the_signing_key(tmp_path, tokenizer_files):
    """The hf:// output's write token (planted with a newline) really used for every write, the signing key really used for
    model.sig, and neither in any log line, the manifest, the card, the signature, the termination message or any file
    committed."""
    from kompress_testing.hub import LocalHub

    token = "hf_PLANTEDwriteTOKEN/+=0123456789abcdef"
    keys = signing_keys.key_folder(tmp_path / "signing")
    checkpoint = write_checkpoint(tmp_path / "checkpoint", tokenizer_files)
    with LocalHub(write_token=token) as hub:
        doc = {
            "metadata": {"name": "planted", "namespace": "ml", "uid": "1234"},
            "spec": {
                "model": {"uri": str(checkpoint)},
                "recipe": {"preset": "w4a16-w8a8"},
                "output": {"uri": "hf://planted/signed", "huggingFace": {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf-write", "key": "token"}},
                           "signing": {"keySecret": "model-signing"}},
                "resources": {"gpus": 0},
                "evaluation": {"samples": 4},
                "calibration": {"samples": 8, "maxSequenceLength": 32},
            },
        }
        env = {"KOMPRESS_OUTPUT_HF_TOKEN": token + "\n", "KOMPRESS_OUTPUT_SIGNING_DIR": str(keys)}

        done, termination = pod(tmp_path, doc, env, checkpoint)

        assert done.returncode == 0, done.stderr[-3000:]
        writes = [r for r in hub.requests if r.method in ("POST", "PUT") and "/lfs-upload/" not in r.path and "/validate-yaml" not in r.path]
        assert writes and {r.authorization for r in writes} == {f"Bearer {token}"}  # the token was used, without its newline
        files = hub.files("planted/signed")
        assert "model.sig" in files and json.loads(files["kompress.json"])["signature"]["method"] == "key"
        committed = "\n".join(data.decode("latin-1") for data in files.values())
    secrets = [token, *key_secrets((keys / "private-key.pem").read_text())]
    assert_no_secret(secrets, logs=done.stderr, committed_files=committed, termination_message=termination,
                     signature=files["model.sig"].decode(), manifest=files["kompress.json"].decode())
