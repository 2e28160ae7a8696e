"""The demo's own pieces (kompress_testing.demo): the manifest it applies, the checks it makes on what was
published, and what it prints. The whole flow runs in tests/e2e/test_demo_flow.py."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

import pytest

from kompress_testing.demo import flow, report


@pytest.mark.unit
def test_the_demo_job_names_the_demo_s3_endpoint_and_can_be_pointed_elsewhere() -> None:
    job = flow.demo_job()
    assert flow.s3_port_of(job) == 9900
    assert job["spec"]["resources"]["gpus"] == 0 and job["spec"]["model"]["uri"].startswith("s3://")
    moved = flow.with_endpoint(flow.demo_job(), "http://127.0.0.1:12345")
    locations = ("model", "calibration", "output")
    assert {moved["spec"][where]["s3"]["endpoint"] for where in locations} == {"http://127.0.0.1:12345"}
    # the lm-eval task source is read from the same S3 server
    assert moved["spec"]["evaluation"]["taskSource"]["s3"]["endpoint"] == "http://127.0.0.1:12345"
    moved["spec"]["evaluation"]["taskSource"]["s3"]["endpoint"] = job["spec"]["evaluation"]["taskSource"]["s3"]["endpoint"]
    assert {k: v for k, v in moved["spec"].items() if k not in locations} == {k: v for k, v in job["spec"].items() if k not in locations}


@pytest.fixture(scope="module")
def s3() -> Any:
    """moto's S3 server over HTTP, wrapped as the demo's stack holds it. MotoS3, not a bare moto server: moto's
    authentication switch is process-wide, so every server in the test process must hand out real keys."""
    from kompress_testing.s3 import MotoS3

    with MotoS3() as server:
        client = server.client()
        client.create_bucket(Bucket="out")
        yield SimpleNamespace(s3=SimpleNamespace(client=lambda: client))


def _publish(client: Any, prefix: str, files: dict[str, bytes], *, manifest: bool = True) -> None:
    entries = []
    for name, data in files.items():
        client.put_object(Bucket="out", Key=f"{prefix}/{name}", Body=data)
        entries.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    if manifest:
        doc = {"kind": "KompressManifest", "format": 1, "status": "published", "files": entries, "checkpointBytes": sum(e["size"] for e in entries)}
        client.put_object(Bucket="out", Key=f"{prefix}/kompress.json", Body=json.dumps(doc).encode())


@pytest.mark.integration
def test_published_files_are_checked_against_the_manifest(s3: Any) -> None:
    client = s3.s3.client()
    _publish(client, "good", {"config.json": b"{}", "model.safetensors": b"weights"})
    good = flow.read_published(s3, "s3://out/good")
    assert good.checksum_problems == [] and good.files_checked == 2
    assert good.objects == {"config.json": 2, "model.safetensors": 7, "kompress.json": good.objects["kompress.json"]}

    _publish(client, "tampered", {"config.json": b"{}", "model.safetensors": b"weights"})
    client.put_object(Bucket="out", Key="tampered/model.safetensors", Body=b"WEIGHTS")
    client.delete_object(Bucket="out", Key="tampered/config.json")
    assert flow.read_published(s3, "s3://out/tampered").checksum_problems == [
        "config.json: listed in the manifest, missing in S3",
        "model.safetensors: SHA-256 differs from the manifest's",
    ]

    _publish(client, "unfinished", {"model.safetensors": b"w"}, manifest=False)
    unfinished = flow.read_published(s3, "s3://out/unfinished")
    assert unfinished.manifest is None and unfinished.checksum_problems == ["no kompress.json under s3://out/unfinished: not a finished model"]
    assert "(no manifest: not a finished model)" in report.listing_report(unfinished, "s3://out/unfinished")


@pytest.mark.unit
def test_the_report_puts_the_plan_next_to_what_happened() -> None:
    cjob = {"metadata": {"name": "demo"}, "status": {
        "phase": "Succeeded", "children": {"workerPod": "demo-abcde-worker-xyz12"},
        "plan": {"estimatedCheckpointBytes": 1_000_000, "hostMemoryBytes": 2_000_000_000},
        "result": {"checkpointBytes": 1_100_000}}}
    records = [{"pod": "demo-abcde-plan-qqqqq", "peakMemoryBytes": 10, "seconds": 1.0, "exitCode": 0},
               {"pod": "demo-abcde-worker-xyz12", "peakMemoryBytes": 600_000_000, "memoryLimitBytes": 2_000_000_000, "seconds": 61.2, "exitCode": 0}]
    published = flow.Published({"model.safetensors": 1_010_000, "README.md": 3_000, "kompress.json": 8_000}, None, [])
    text = report.plan_vs_actual(cjob, records, published)
    # The plan estimates the weight files; the whole folder adds the card, tokenizer and picture.
    assert "weight files    planned    1.00 MB   published    1.01 MB (+1.00%)" in text
    assert "whole folder                         published    1.10 MB" in text
    assert "planned    2.00 GB   peak       600.00 MB, limit 2.00 GB (ran 61s, exit 0)" in text


@pytest.mark.unit
def test_a_failure_report_shows_each_pod_with_its_exit() -> None:
    pods = [
        {"metadata": {"name": "demo-plan-a"}, "status": {"phase": "Failed", "podIP": "127.1.2.3", "containerStatuses": [
            {"name": "planner", "state": {"terminated": {"exitCode": 11, "reason": "Error"}}}]}},
        {"metadata": {"name": "demo-worker-b"}, "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]}},
    ]
    jobs = [{"metadata": {"name": "demo-plan"}, "status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}}]
    text = report.workloads_report(jobs, pods)
    assert "demo-plan                      active 0 succeeded 0 failed 1 Failed(PodFailurePolicy)" in text
    assert "planner: exit 11 (Error)" in text
    assert "unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in text
