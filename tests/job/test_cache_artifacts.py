"""Calibration samples and the baseline record kept in the model cache (issue 20): a retry of a job, whose new pod
has a fresh scratch, neither reads its calibration data again nor runs the original over the held-out rows again.

Shown by the source's side, not the worker's word: the calibration object's GETs as a counting proxy in front of
S3 (moto) sees them, the Hub stand-in's log of dataset files served, and the original model's forward passes
counted by a hook this test puts on the model the worker loaded. What changes the data or the record (the object
rewritten, another seed, another model version) is made again."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from _worker_helpers import tiny_models  # noqa: F401 - fixture
from kompress_api.v1alpha1 import CompressionJob, S3Access
from kompress_job import pipeline
from kompress_job.context import RunContext
from kompress_job.io.cache.metrics import STATS
from kompress_job.io.s3client import make_client
from kompress_job.io.s3objects import TransferSettings
from kompress_job.io.transfer import S3Transfer
from kompress_job.io.upload import UploadItem
from kompress_job.progress import ProgressReporter
from kompress_testing.counting_proxy import CountingProxy
from kompress_testing.models import corpus_texts

pytestmark = pytest.mark.integration

STAGES = ["fetch-model", "calibration", "load-model", "baseline"]


@pytest.fixture
def proxy(s3):
    with CountingProxy(s3.endpoint) as p:
        yield p


@pytest.fixture
def sources(s3, bucket, tiny_models, tmp_path):  # noqa: F811
    """The tiny llama under s3://BUCKET/models/llama and 80 text rows at s3://BUCKET/data/rows.jsonl."""
    folder = tiny_models["llama"]
    client = make_client(S3Access(**s3.access()), s3.env("model"), "model")
    items = [UploadItem(p, bucket, f"models/llama/{p.relative_to(folder).as_posix()}") for p in sorted(folder.rglob("*")) if p.is_file()]
    rows = tmp_path / "rows.jsonl"
    write_rows(rows, 0)
    items.append(UploadItem(rows, bucket, "data/rows.jsonl"))
    with S3Transfer(client, TransferSettings()) as transfer:
        transfer.upload_files(items)
    return folder


def write_rows(path: Path, offset: int) -> Path:
    texts = [t for t in corpus_texts() if len(t) > 30][offset:offset + 80]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def job_for(bucket, s3, proxy, *, preset="w4a16", seed=42, calibration=None):
    access = s3.access(endpoint=proxy.endpoint)
    return CompressionJob.model_validate({
        "metadata": {"name": f"cache-{preset}", "namespace": "default", "uid": "u-1"},
        "spec": {
            "model": {"uri": f"s3://{bucket}/models/llama", "s3": access, "dtype": "float32"},
            "calibration": {**(calibration or {"uri": f"s3://{bucket}/data/rows.jsonl", "s3": access}), "samples": 8, "maxSequenceLength": 32, "seed": seed},
            "evaluation": {"samples": 6},
            "recipe": {"preset": preset},
            "output": {"uri": "file:///tmp/kompress-cache-artifacts-out"},
            "resources": {"gpus": 0},
        },
    })


class ForwardCounter:
    """Counts forward passes of the model the load-model stage left (a hook of the test's, not the worker's word)."""

    def __init__(self) -> None:
        self.calls = 0

    def attach(self, model) -> None:  # noqa: ANN001
        model.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def attempt(job, env, workdir: Path, counter: ForwardCounter | None = None, stages=STAGES) -> RunContext:
    """One worker pod's run of `stages`, in a scratch folder of its own (a retry's pod starts with an empty one)."""
    ctx = RunContext(job=job, workdir=workdir, progress=ProgressReporter(list(stages)), env=env, log=logging.getLogger("kompress.test"))
    for name in stages:
        with ctx.progress.stage(name):
            pipeline.stage_function(name)(ctx)
        if name == "load-model" and counter is not None:
            counter.attach(ctx.model)
    return ctx


def calibration_gets(proxy, bucket) -> list[str]:
    return [r for r in proxy.requests if r == f"GET /{bucket}/data/rows.jsonl"]


def test_a_retry_reads_no_calibration_data_and_runs_no_baseline_forward_pass(s3, bucket, proxy, sources, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**s3.env("model"), **s3.env("calibration"), "KOMPRESS_CACHE_DIR": str(cache)}
    job = job_for(bucket, s3, proxy)

    first_pass = ForwardCounter()
    first = attempt(job, env, tmp_path / "pod-1", first_pass)
    assert len(calibration_gets(proxy, bucket)) == 1 and first_pass.calls > 0  # made here: read once, recorded
    assert first.baseline is not None and first.baseline.tokens > 0
    hits_before = dict(STATS.artifact_hits)

    proxy.reset()
    retry_pass = ForwardCounter()
    retry = attempt(job, env, tmp_path / "pod-2", retry_pass)

    assert calibration_gets(proxy, bucket) == [] and proxy.body_bytes("/data/rows.jsonl") == 0  # S3 served none of it
    assert retry_pass.calls == 0  # the original never ran over the held-out rows again
    assert retry.calibration.to_dict() == first.calibration.to_dict() and retry.holdout.to_dict() == first.holdout.to_dict()
    assert (retry.baseline.samples, retry.baseline.tokens, retry.baseline.plan) == (first.baseline.samples, first.baseline.tokens, first.baseline.plan)
    assert not (tmp_path / "pod-2" / "calibration").exists()  # nothing of the source came into the new scratch
    # The record read back is the original's: the model it came from compares identical with it.
    from kompress_job.model import fidelity_comparison

    assert fidelity_comparison.compare(retry.model, retry.baseline).identical
    assert {k: STATS.artifact_hits[k] - hits_before.get(k, 0) for k in ("calibration", "baseline")} == {"calibration": 1, "baseline": 1}

    # Another preset on the same model and data (the same samples, the same held-out rows) reuses both as well.
    proxy.reset()
    other_pass = ForwardCounter()
    attempt(job_for(bucket, s3, proxy, preset="fp8-dynamic"), env, tmp_path / "pod-3", other_pass)
    assert calibration_gets(proxy, bucket) == [] and other_pass.calls == 0


def test_what_changes_the_data_or_the_rows_is_made_again(s3, bucket, proxy, sources, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**s3.env("model"), **s3.env("calibration"), "KOMPRESS_CACHE_DIR": str(cache)}
    first = attempt(job_for(bucket, s3, proxy), env, tmp_path / "pod-1")

    proxy.reset()
    reseeded_pass = ForwardCounter()
    reseeded = attempt(job_for(bucket, s3, proxy, seed=7), env, tmp_path / "pod-2", reseeded_pass)
    assert len(calibration_gets(proxy, bucket)) == 1 and reseeded_pass.calls > 0  # other rows picked: both made again
    assert reseeded.holdout.to_dict() != first.holdout.to_dict()

    # The object rewritten in place (a new ETag): the new rows are read, never the stored samples of the old ones.
    write_rows(tmp_path / "rows.jsonl", 200)
    s3.client().upload_file(str(tmp_path / "rows.jsonl"), bucket, "data/rows.jsonl")
    proxy.reset()
    rewritten = attempt(job_for(bucket, s3, proxy), env, tmp_path / "pod-3", stages=["fetch-model", "calibration"])
    assert len(calibration_gets(proxy, bucket)) == 1
    assert rewritten.holdout["text"] != first.holdout["text"]


def test_a_hub_dataset_is_not_downloaded_again_by_a_retry(s3, bucket, proxy, sources, hub, tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    write_rows(data / "train.jsonl", 0)
    hub.add_repo("kompress/rows", data, repo_type="dataset")
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**s3.env("model"), "KOMPRESS_CACHE_DIR": str(cache)}
    job = job_for(bucket, s3, proxy, calibration={"uri": "hf://kompress/rows", "huggingFace": {"endpoint": hub.endpoint}})
    stages = ["preflight", "fetch-model", "calibration"]

    first = attempt(job, env, tmp_path / "pod-1", stages=stages)
    served = [p for p in hub.downloaded() if "/datasets/" in p]
    assert served and first.calibration_revision
    retry = attempt(job, env, tmp_path / "pod-2", stages=stages)
    assert [p for p in hub.downloaded() if "/datasets/" in p] == served  # the Hub's own log: no data file again
    assert retry.calibration_revision == first.calibration_revision  # the commit the manifest records
    assert retry.calibration.to_dict() == first.calibration.to_dict()


def test_without_a_cache_every_attempt_reads_and_records_again(s3, bucket, proxy, sources, tmp_path):
    env = {**s3.env("model"), **s3.env("calibration")}
    job = job_for(bucket, s3, proxy)
    attempt(job, env, tmp_path / "pod-1")
    proxy.reset()
    again = ForwardCounter()
    attempt(job, env, tmp_path / "pod-2", again)
    assert len(calibration_gets(proxy, bucket)) == 1 and again.calls > 0
