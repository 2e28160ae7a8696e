"""The demo's flow, automated: every part of Kompress as a process, a CompressionJob from kubectl to a
verified checkpoint in S3 (kompress_testing.demo; `make demo` prints the same flow).

S3 is moto's server, the Kubernetes API the emulated one, the pods local processes of the node agent;
the operator, the planner and the worker run their real code, with the chart's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run the whole flow once; the tests below read what it left."""
    from kompress_testing.demo import flow
    from kompress_testing.demo.stack import running_stack

    workdir = tmp_path_factory.mktemp("demo")
    job = flow.demo_job()
    # Smaller than the demo's, same code paths.
    job["spec"]["calibration"]["samples"] = 8
    job["spec"]["evaluation"]["samples"] = 4
    with running_stack(workdir) as stack:
        job = flow.with_endpoint(job, stack.s3.endpoint)
        flow.prepare(stack, job)
        flow.apply_job(stack, job)
        final = flow.wait_finished(stack, job["metadata"]["name"], timeout=480)
        published = flow.read_published(stack, job["spec"]["output"]["uri"]) if final["status"]["phase"] == "Succeeded" else None
        checkpoint = flow.download_checkpoint(stack, job["spec"]["output"]["uri"], workdir / "downloaded") if published else None
        events = stack.client.get("/api/v1/namespaces/default/events")["items"]
        pods = stack.client.get("/api/v1/namespaces/default/pods")["items"]
        logs = flow.pod_logs(stack, lines=10_000)
        secret_values = [stack.s3.access_key_id, stack.s3.secret_access_key]
        yield {"job": job, "final": final, "published": published, "checkpoint": checkpoint, "events": events, "pods": pods,
               "logs": logs, "secrets": secret_values, "workdir": workdir}


def _conditions(cjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in cjob["status"].get("conditions") or []}


def test_the_job_succeeds_with_honest_conditions(finished: dict[str, Any]) -> None:
    final = finished["final"]
    conditions = _conditions(final)
    assert final["status"]["phase"] == "Succeeded", json.dumps(final["status"], indent=1) + "\n" + "\n".join(
        f"--- {name}\n{text[-3000:]}" for name, text in finished["logs"].items())
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Planned"]["status"] == "True"
    assert conditions.get("Failed", {}).get("status") != "True"
    assert final["status"]["observedGeneration"] == final["metadata"]["generation"]
    # The planning pod ran first, on the CPU, then exactly one worker pod.
    roles = sorted(p["metadata"]["labels"].get("kompress.dev/role") for p in finished["pods"])
    assert roles == ["plan", "worker"]
    assert all(p["status"]["phase"] == "Succeeded" for p in finished["pods"])


def test_the_result_describes_what_was_published(finished: dict[str, Any]) -> None:
    result = finished["final"]["status"]["result"]
    output = finished["job"]["spec"]["output"]["uri"]
    manifest = finished["published"].manifest
    assert result["outputUri"] == output
    assert result["manifestUri"] == f"{output}/kompress.json"
    assert result["checkpointBytes"] == manifest["checkpointBytes"]
    assert result["compressionRatio"] > 1
    plan = finished["final"]["status"]["plan"]
    assert plan["estimatedCheckpointBytes"] > 0 and plan["hostMemoryBytes"] > 0


def test_every_published_file_matches_the_manifest(finished: dict[str, Any]) -> None:
    published = finished["published"]
    assert published.checksum_problems == []
    manifest = published.manifest
    assert manifest["kind"] == "KompressManifest" and manifest["status"] == "published"
    assert manifest["source"]["uri"] == finished["job"]["spec"]["model"]["uri"]
    assert manifest["recipe"]["preset"] == finished["job"]["spec"]["recipe"]["preset"]
    assert manifest["job"]["uid"] == finished["final"]["metadata"]["uid"]
    listed = {f["path"] for f in manifest["files"]}
    assert "config.json" in listed and any(path.endswith(".safetensors") for path in listed)
    assert set(published.objects) - listed == {"kompress.json"}, "everything under the prefix is in the manifest, but itself"


def test_the_checkpoint_in_s3_reloads_and_generates(finished: dict[str, Any]) -> None:
    from kompress_job.model import modelio
    from kompress_job.model.verification import VerificationReport, check_runs

    folder: Path = finished["checkpoint"]
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    model = modelio.load_causal_lm(folder, dtype="auto")
    tokenizer = modelio.load_tokenizer(folder)
    report = VerificationReport(checkpoint=str(folder))
    check_runs(model, tokenizer, report)
    assert report.failures == []
    assert report.generated_tokens > 0


def test_no_secret_value_leaks_into_status_manifest_events_or_logs(finished: dict[str, Any]) -> None:
    places = {
        "the CompressionJob": json.dumps(finished["final"]),
        "the manifest": json.dumps(finished["published"].manifest),
        "the events": json.dumps(finished["events"]),
        **{f"pod log {name}": text for name, text in finished["logs"].items()},
        **{f"{p.name}": p.read_text(errors="replace") for p in (finished["workdir"] / "logs").glob("*.log")},
    }
    for secret in finished["secrets"]:
        assert [where for where, text in places.items() if secret in text] == []
