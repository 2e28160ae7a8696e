"""A CompressionJob whose model misses its quality gate ends Failed, reason QualityGateFailed, with the figures
and the limits in its status message and where the rejected copy was kept.

The worker pod's termination message is a real worker's: the pod entry point with every stage real
(llm-compressor, the trained test model, output to a folder), run by this test. The operator is the real
one over HTTP; the test plays the Job controller and the kubelet, as the other operator flow tests do."""

from __future__ import annotations

import json

import pytest
from kompress_api.worker_protocol import WorkerResult
from kompress_testing import compute_runs
from kompress_testing.wrappers import make_cjob

from operator_cluster import plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_missed_gate_fails_the_job_with_the_figures_in_its_status(cluster, operator, controller, tmp_path):
    out = tmp_path / "models" / "chat"
    job = compute_runs.trained_job({"preset": "fp8-dynamic"}, gate={"minTop1Agreement": 0.99}, output_uri=f"file://{out}")
    done, termination = compute_runs.pod_run(job.wire(), tmp_path)
    assert done.returncode == 17, done.stderr[-3000:]
    top1 = WorkerResult.model_validate(json.loads(termination)).metrics.top1_agreement

    spec = job.wire()["spec"]
    spec["output"]["volume"] = {"claimName": "models", "mountPath": str(out.parent)}  # a cluster's file:// output lives on a volume
    cluster.apply(make_cjob("chat", namespace="ml").with_spec(**spec).manifest())
    worker = plan(cluster, controller)
    controller.run_to_end(
        worker["metadata"]["name"],
        lambda p: p.failed(17, termination),
    )

    status = cluster.wait_phase("chat", "Failed", timeout=20)
    failed = cluster.condition("chat", "Failed")
    assert failed["reason"] == "QualityGateFailed"
    assert f"top-1 agreement {top1:.1%} < limit 99.0%" in failed["message"]
    assert f"kept for inspection at file://{out}.rejected" in failed["message"]
    assert status["result"]["rejectedUri"] == f"file://{out}.rejected"
    assert status["result"]["metrics"]["gatePassed"] is False and status["result"]["metrics"]["top1Agreement"] == top1
    assert not any(p.is_file() for p in out.rglob("*")) and (out.parent / "chat.rejected" / "kompress.json").is_file()


def test_task_scores_of_a_real_worker_reach_the_status(cluster, operator, controller, tmp_path):
    # The worker scores the local lm-eval task on both models (no Hub: the task folder is the source).
    from kompress_testing import lmeval_task

    out = tmp_path / "models" / "chat"
    job = compute_runs.trained_job({"preset": "w4a16"}, output_uri=f"file://{out}", tasks=[{"name": lmeval_task.TASK}])
    done, termination = compute_runs.pod_run(job.wire(), tmp_path, {"HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = {s.metric: s for s in WorkerResult.model_validate(json.loads(termination)).metrics.tasks}

    spec = job.wire()["spec"]
    spec["output"]["volume"] = {"claimName": "models", "mountPath": str(out.parent)}
    cluster.apply(make_cjob("chat", namespace="ml").with_spec(**spec).manifest())
    worker = plan(cluster, controller)
    controller.run_to_end(worker["metadata"]["name"], lambda p: p.succeeded(WorkerResult.model_validate(json.loads(termination))))

    status = cluster.wait_phase("chat", "Succeeded", timeout=20)
    in_status = {s["metric"]: s for s in status["result"]["metrics"]["tasks"] if s["task"] == lmeval_task.TASK}
    assert in_status["acc"]["original"] == scores["acc"].original and in_status["acc"]["compressed"] == scores["acc"].compressed
    assert in_status["acc"]["original"] > 0.5  # clearly above chance (0.25): the task and the model are real
    assert status["result"]["metrics"]["taskBackend"] == "hf"
    assert lmeval_task.TASK in cluster.condition("chat", "Succeeded")["message"]
