"""Publishing: checksums, the manifest last, resuming after a kill, overwrite rules, the rejected prefix,
and the same layout on a local folder. The compute stages are stood in for (kompress_testing.jobs);
preflight, fetch-model, calibration and publish are the product's own code over HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys

import pytest

from kompress_api.exit_codes import ExitCode
from kompress_job.runner import execute
from kompress_job.io.s3objects import MiB
from kompress_testing.jobs import ComputeStandIns, make_job, write_checkpoint

pytestmark = pytest.mark.integration


def run(job, env, tmp_path, checkpoint, **stand_in_options):
    stand_ins = ComputeStandIns(checkpoint, **stand_in_options)
    result = execute(job, env, workdir=tmp_path / "work", devices=0, resolve=stand_ins.resolve, termination_log=tmp_path / "termination-log")
    return result, stand_ins


def s3_job(s3, bucket, model_folder, prefix="out/tiny", **spec):
    output = {"s3": s3.access(), **spec.pop("output", {})}
    return make_job(f"file://{model_folder}", f"s3://{bucket}/{prefix}", output=output, **spec)


def read(s3, bucket, key) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def manifest_of(s3, bucket, prefix="out/tiny") -> dict:
    return json.loads(read(s3, bucket, f"{prefix}/kompress.json"))


@pytest.fixture
def checkpoint(tmp_path, tokenizer_files):
    return write_checkpoint(tmp_path / "checkpoint", tokenizer_files)


def test_every_file_is_published_with_its_sha256_and_the_manifest_describes_the_run(s3, bucket, model_folder, checkpoint, tmp_path):
    result, _ = run(s3_job(s3, bucket, model_folder), s3.env("output"), tmp_path, checkpoint)

    assert result.ok, result.message
    assert result.output_uri == f"s3://{bucket}/out/tiny"
    assert result.manifest_uri == f"s3://{bucket}/out/tiny/kompress.json"
    published = {f.name for f in checkpoint.iterdir()} | {"README.md", "kompress.json"}
    assert set(s3.keys(bucket, "out/tiny/")) == {f"out/tiny/{n}" for n in published}

    manifest = manifest_of(s3, bucket)
    assert manifest["status"] == "published" and manifest["format"] == 2
    assert manifest["recipe"]["effective"]["kept16bit"] == {"modules": 3, "parameters": 150000, "ofParameters": 608752}  # camelCase, nested too
    assert {f["path"] for f in manifest["files"]} == published - {"kompress.json"}
    for entry in manifest["files"]:
        body = read(s3, bucket, f"out/tiny/{entry['path']}")
        assert entry["size"] == len(body) and entry["sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["source"]["uri"] == f"file://{model_folder}"
    assert manifest["recipe"]["preset"] == "w4a16-w8a8" and manifest["recipe"]["effective"]["preset"] == "w4a16-w8a8"
    assert manifest["groups"] == {"group_0": 2, "group_1": 12}
    assert manifest["calibration"]["samples"] == 8 and manifest["calibration"]["heldOut"] == 4
    assert manifest["evaluation"]["metrics"]["perplexityIncrease"] == 0.05
    assert {"llmcompressor", "compressed-tensors", "transformers", "torch"} <= set(manifest["libraries"])
    assert {"preflight", "fetch-model", "calibration", "save", "publish"} <= set(manifest["timings"])

    card = read(s3, bucket, "out/tiny/README.md").decode()
    assert "w4a16-w8a8" in card and "vllm serve" in card and "+5.00 %" in card
    assert "| `group_1` | W8A8 | – | 12 |" in card and "3 modules (24.6 % of parameters)" in card


def test_a_killed_upload_leaves_no_manifest_and_a_rerun_sends_only_what_is_missing(s3, bucket, model_folder, tokenizer_files, tmp_path, caplog):
    checkpoint = write_checkpoint(
        tmp_path / "checkpoint",
        tokenizer_files,
        {"model-00001-of-00003.safetensors": 11 * MiB, "model-00002-of-00003.safetensors": 11 * MiB, "model-00003-of-00003.safetensors": 300_000},
    )
    job = s3_job(s3, bucket, model_folder)
    env = {**s3.env("output"), "KOMPRESS_TRANSFER_PART_MIB": "5", "KOMPRESS_TRANSFER_WORKERS": "1"}
    pod_env = {
        **os.environ,
        **env,
        "KOMPRESS_JOB": json.dumps({"metadata": job.metadata.model_dump(exclude_none=True), "spec": job.spec.wire()}),
        "KOMPRESS_SCRATCH": str(tmp_path / "scratch"),
        "KOMPRESS_TERMINATION_LOG": str(tmp_path / "killed-termination-log"),
        "KOMPRESS_PROGRESS_BIND": "127.0.0.1:0",
    }
    # The two large shards go in 3 parts each; the pod dies hard as the 3rd part is about to be sent,
    # so 2 parts are stored and neither shard is complete.
    child = subprocess.run([sys.executable, "-m", "kompress_testing.worker_run", str(checkpoint), "--die-before-part", "3"], env=pod_env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 137, child.stderr[-2000:]

    keys = s3.keys(bucket, "out/tiny/")
    assert "out/tiny/kompress.json" not in keys  # not a finished model
    client = s3.client()
    done = sum(obj["Size"] for obj in client.list_objects_v2(Bucket=bucket, Prefix="out/tiny/").get("Contents", []))
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix="out/tiny/").get("Uploads", [])
    stored_parts = sum(p["Size"] for u in uploads for p in client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
    assert stored_parts == 2 * 5 * MiB  # the rerun must not send these again
    done += stored_parts
    before = {obj["Key"]: obj["LastModified"] for obj in client.list_objects_v2(Bucket=bucket, Prefix="out/tiny/").get("Contents", [])}

    caplog.set_level(logging.INFO)
    result, _ = run(job, env, tmp_path, checkpoint)

    assert result.ok, result.message
    total = sum(p.stat().st_size for p in checkpoint.iterdir())
    [sent_record] = [r for r in caplog.records if hasattr(r, "bytes_sent")]
    assert sent_record.bytes_sent == total - done  # only what the killed attempt had not delivered
    after = {obj["Key"]: obj["LastModified"] for obj in client.list_objects_v2(Bucket=bucket, Prefix="out/tiny/")["Contents"]}
    assert all(after[key] == modified for key, modified in before.items())  # finished objects untouched
    manifest = manifest_of(s3, bucket)
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256(read(s3, bucket, f"out/tiny/{entry['path']}")).hexdigest()
    assert client.list_multipart_uploads(Bucket=bucket, Prefix="out/tiny/").get("Uploads", []) == []  # nothing left open


def test_a_finished_model_at_the_destination_is_never_overwritten_by_default(s3, bucket, model_folder, checkpoint, tmp_path):
    first, _ = run(s3_job(s3, bucket, model_folder), s3.env("output"), tmp_path / "a", checkpoint)
    assert first.ok
    original = read(s3, bucket, "out/tiny/kompress.json")

    second, stand_ins = run(s3_job(s3, bucket, model_folder), s3.env("output"), tmp_path / "b", checkpoint)

    assert second.exit_code == ExitCode.OUTPUT_EXISTS.code and second.reason == "OutputExists"
    assert second.stage == "preflight" and "overwrite" in second.message
    assert stand_ins.ran == []  # refused before any work
    assert read(s3, bucket, "out/tiny/kompress.json") == original


def test_overwrite_replaces_the_model_and_removes_files_only_the_old_one_had(s3, bucket, model_folder, tokenizer_files, tmp_path):
    old = write_checkpoint(tmp_path / "old", tokenizer_files, {"model-00001-of-00002.safetensors": 1000, "model-00002-of-00002.safetensors": 1000})
    new = write_checkpoint(tmp_path / "new", tokenizer_files, {"model.safetensors": 1500})
    assert run(s3_job(s3, bucket, model_folder), s3.env("output"), tmp_path / "a", old)[0].ok

    result, _ = run(s3_job(s3, bucket, model_folder, output={"overwrite": True}), s3.env("output"), tmp_path / "b", new)

    assert result.ok
    keys = set(s3.keys(bucket, "out/tiny/"))
    assert "out/tiny/model.safetensors" in keys
    assert not {"out/tiny/model-00001-of-00002.safetensors", "out/tiny/model-00002-of-00002.safetensors"} & keys
    assert {f["path"] for f in manifest_of(s3, bucket)["files"]} == {k.removeprefix("out/tiny/") for k in keys} - {"kompress.json"}


def test_a_model_that_missed_the_gate_goes_to_the_rejected_prefix_only(s3, bucket, model_folder, checkpoint, tmp_path):
    result, _ = run(s3_job(s3, bucket, model_folder), s3.env("output"), tmp_path, checkpoint, gate_failures=["perplexity +31% > +25%"])

    assert result.exit_code == ExitCode.QUALITY_GATE_FAILED.code and result.reason == "QualityGateFailed"
    assert result.rejected_uri == f"s3://{bucket}/out/tiny.rejected"
    assert result.output_uri is None and result.manifest_uri is None
    assert s3.keys(bucket, "out/tiny/") == []  # nothing under the final prefix
    manifest = manifest_of(s3, bucket, "out/tiny.rejected")
    assert manifest["status"] == "rejected" and manifest["evaluation"]["gateFailures"] == ["perplexity +31% > +25%"]
    card = read(s3, bucket, "out/tiny.rejected/README.md").decode()
    assert "REJECTED" in card and "perplexity +31% > +25%" in card


def test_a_local_folder_gets_the_same_layout_manifest_and_resume(model_folder, checkpoint, tmp_path):
    out = tmp_path / "published"
    job = make_job(f"file://{model_folder}", f"file://{out}")

    result, _ = run(job, {}, tmp_path / "a", checkpoint)

    assert result.ok and result.manifest_uri == f"file://{out}/kompress.json"
    manifest = json.loads((out / "kompress.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {p.name for p in out.iterdir()} - {"kompress.json"}
    for entry in manifest["files"]:
        assert hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert not list(out.glob(".*tmp"))

    (out / "kompress.json").unlink()  # as if killed before the manifest: the re-run copies nothing again
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again, _ = run(job, {}, tmp_path / "b", checkpoint)
    assert again.ok
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in mtimes.items() if name != "README.md")
