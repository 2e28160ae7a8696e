"""The operator end to end over real HTTP: real Kopf against the real control plane (its Job controller,
scheduler and garbage collector), kubectl where a user would type it, and the test itself playing the
kubelet (Pod status)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kompress_api import v1alpha1 as api
from kompress_api.exit_codes import non_retriable_codes
from kompress_api.worker_protocol import PlannerResult, WorkerResult
from kompress_testing.wrappers import make_cjob

from operator_cluster import GIB, PLAN, RESULT, Cluster, OperatorThread, container, event_reasons, jobs_of, one_job, plan, reconciled_again, tiny, wait_for

pytestmark = pytest.mark.integration

class _Progress(BaseHTTPRequestHandler):
    doc: dict[str, Any] = {}

    def do_GET(self):  # noqa: N802
        body = json.dumps(type(self).doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def worker_progress(cluster: Cluster, clock) -> Any:
    """A worker's progress endpoint on 127.0.0.1, and an operator told that workers serve it on that port."""
    port = _free_port()
    server = _Server(("127.0.0.1", port), _Progress)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    op = OperatorThread(cluster, clock, progress_port=port).start()
    yield _Progress
    op.stop()
    server.shutdown()
    server.server_close()


# --- the flow ------------------------------------------------------------------------------------------


def test_apply_plans_first_then_creates_exactly_one_worker_job(cluster, operator, controller):
    cluster.apply(tiny().manifest())
    plan_job = one_job(cluster, "plan")
    # nothing asks for a GPU before the plan exists
    assert jobs_of(cluster, "worker") == []
    assert container(plan_job)["command"] == ["kompress", "plan-pod"]
    assert cluster.wait_phase("tiny", "Planning")

    worker = plan(cluster, controller)
    cjob = cluster.cjob("tiny")
    assert worker["metadata"]["ownerReferences"][0]["uid"] == cjob["metadata"]["uid"]
    res = container(worker)["resources"]
    # four GPUs by default; memory and scratch from the plan, since the spec gave none
    assert res["limits"]["nvidia.com/gpu"] == "4" and res["limits"]["memory"] == "8Gi" and res["requests"]["ephemeral-storage"] == "20Gi"
    env = {e["name"]: e for e in container(worker)["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert {"prefix": "KOMPRESS_OUTPUT_S3_", "secretRef": {"name": "s3-creds"}} in container(worker)["envFrom"]
    assert worker["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"] == non_retriable_codes()

    status = cluster.wait_phase("tiny", "Queued")
    assert status["plan"]["hostMemoryBytes"] == 8 * GIB and status["children"]["workerJob"] == worker["metadata"]["name"]
    # more reconciles and the events our own writes cause never make a second Job
    reconciled_again(cluster, operator, "tiny")
    assert len(jobs_of(cluster, "plan")) == 1 and len(jobs_of(cluster, "worker")) == 1
    reasons = wait_for("events", lambda: (r := event_reasons(cluster, "tiny")) and "PlanSucceeded" in r and r)
    assert {"Planning", "PlanSucceeded", "PlanWarning"} <= set(reasons)
    assert reasons.count("PlanSucceeded") == 1
    # what a user sees: the CRD's printer columns, served as a table
    table = cluster.kubectl("get", "compressionjobs").stdout
    assert "PHASE" in table and "Queued" in table and "hf://org/tiny-moe" in table


def test_the_status_follows_the_worker_to_success(cluster, controller, worker_progress):
    cluster.apply(tiny().manifest())
    worker = plan(cluster, controller)
    name = worker["metadata"]["name"]
    pod = controller.start_pod(name)
    controller.pod_status(pod["metadata"]["name"], lambda p: p.waiting("ContainerCreating"))
    assert cluster.wait_phase("tiny", "Queued")

    worker_progress.doc = {"stage": "compress", "stageIndex": 7, "stageCount": 11, "percent": 42, "message": "layer 12 of 46"}
    controller.pod_status(pod["metadata"]["name"], lambda p: p.running(ip="127.0.0.1"))
    status = wait_for("progress", lambda: (s := cluster.status("tiny")).get("progress", {}).get("percent") == 42 and s)
    assert status["phase"] == "Running" and status["progress"]["message"] == "layer 12 of 46"
    assert "stage compress (7/11)" in cluster.kubectl("describe", "compressionjob", "tiny").stdout

    worker_progress.doc = {"stage": "publish", "percent": 95}
    cluster.wait_phase("tiny", "Publishing")

    controller.pod_status(pod["metadata"]["name"], lambda p: p.succeeded(RESULT))
    status = cluster.wait_phase("tiny", "Succeeded")
    assert status["result"]["outputUri"] == "s3://models/tiny" and status["result"]["checkpointBytes"] == 3_100_000
    assert status["completionTime"] and status["progress"]["percent"] == 100
    succeeded = cluster.condition("tiny", "Succeeded")
    assert succeeded["message"].startswith("published 3.1 MB to s3://models/tiny")
    reasons = wait_for("the Succeeded event", lambda: (r := event_reasons(cluster, "tiny")) and "Succeeded" in r and r)
    assert {"WorkerRunning", "Publishing", "Succeeded"} <= set(reasons)
    assert "Succeeded" in cluster.kubectl("get", "cjob", "tiny").stdout


@pytest.mark.parametrize(
    ("spec", "pod_state", "reason", "words"),
    [
        (
            {},
            lambda p: p.failed(11, WorkerResult(ok=False, exit_code=11, reason="ModelNotFound", stage="fetch-model", message="hf://org/tiny-moe: 404")),
            "ModelNotFound",
            "stage fetch-model: hf://org/tiny-moe: 404",
        ),
        # no retries, so the Job controller fails the Job on the first OOM (BackoffLimitExceeded)
        ({"backoffLimit": 0}, lambda p: p.oom_killed(), "OOMKilled", "ran out of memory (limit 8Gi)"),
        # the Job controller's own deadline, counted from the Job's start
        ({"activeDeadlineSeconds": 2}, lambda p: p.running(), "DeadlineExceeded", "spec.activeDeadlineSeconds"),
    ],
    ids=["worker-exit-code", "oom-killed", "deadline"],
)
def test_each_failure_class_ends_failed_with_its_reason(cluster, operator, controller, spec, pod_state, reason, words):
    cluster.apply(tiny().with_spec(**{"activeDeadlineSeconds": 3600, **spec}).manifest())
    worker = plan(cluster, controller)
    controller.run_to_end(worker["metadata"]["name"], pod_state)
    status = cluster.wait_phase("tiny", "Failed")
    failed = cluster.condition("tiny", "Failed")
    assert failed["reason"] == reason and words in failed["message"]
    assert cluster.condition("tiny", "Stalled")["status"] == "True"
    assert status["completionTime"]
    wait_for(f"a Warning Event {reason}", lambda: any(e["reason"] == reason and e["type"] == "Warning" for e in cluster.events("tiny")))


@pytest.mark.parametrize(
    ("state", "reason", "words"),
    [
        (lambda p: p.unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."), "Unschedulable", "3 Insufficient nvidia.com/gpu"),
        (lambda p: p.waiting("ImagePullBackOff", 'Back-off pulling image "registry.example/kompress-job:1.0"'), "ImagePullBackOff", "Back-off pulling image"),
    ],
    ids=["unschedulable", "image-pull"],
)
def test_a_stuck_pod_is_explained_then_fails_after_the_pending_timeout(cluster, operator, controller, clock, state, reason, words):
    cluster.apply(tiny().with_spec(pendingTimeoutSeconds=600).manifest())
    worker = plan(cluster, controller)
    pod = controller.start_pod(worker["metadata"]["name"])
    controller.pod_status(pod["metadata"]["name"], state)
    queued = wait_for("the waiting reason", lambda: (c := cluster.condition("tiny", "Queued")) and c["reason"] == reason and c)
    assert words in queued["message"] and cluster.status("tiny")["phase"] == "Queued"

    clock.advance(601)  # the next resync sees the pod pending for longer than spec.pendingTimeoutSeconds
    cluster.wait_phase("tiny", "Failed")
    failed = cluster.condition("tiny", "Failed")
    assert failed["reason"] == reason and words in failed["message"] and "(600s)" in failed["message"]
    # the stuck Job is removed, so it can't take GPUs later
    wait_for("the worker Job to be deleted", lambda: jobs_of(cluster, "worker") == [])


def test_planning_errors_reach_the_user_before_any_worker_job(cluster, operator, controller):
    cluster.apply(tiny().with_preset("sparse24-w4a16-w8a8").manifest())
    plan_job = one_job(cluster, "plan")
    rejected = api.PlanSummary(problems=[api.PlanProblem(severity="error", code="GroupSizeMismatch", message="model.layers.0.mlp.down_proj in_features 10944 is not a multiple of 128", fix="set spec.recipe.overrides.groupSize to 64")])
    controller.run_to_end(
        plan_job["metadata"]["name"],
        lambda p: p.failed(20, PlannerResult(ok=False, exit_code=20, reason="PlanRejected", message="1 error", plan=rejected)),
    )
    cluster.wait_phase("tiny", "Failed")
    failed = cluster.condition("tiny", "Failed")
    assert failed["reason"] == "PlanRejected" and "GroupSizeMismatch" in failed["message"] and "groupSize to 64" in failed["message"]
    assert cluster.condition("tiny", "Planned")["status"] == "False"
    event = wait_for("the PlanRejected event", lambda: next((e for e in cluster.events("tiny") if e["reason"] == "PlanRejected"), None))
    assert event["type"] == "Warning" and "GroupSizeMismatch" in event["message"]
    assert "PlanRejected" in cluster.kubectl("describe", "cjob", "tiny").stdout
    reconciled_again(cluster, operator, "tiny", times=3)  # a finished job is not resynced: changes bring reconciles
    assert jobs_of(cluster, "worker") == []


def test_invalid_spec_is_refused_by_the_crd_before_any_job(cluster, operator):
    bad = make_cjob("tiny", namespace=cluster.namespace).manifest()
    bad["spec"]["recipe"] = {"preset": "w4a16", "custom": "quant_stage: {}"}
    result = cluster.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0 and "exactly one of preset or custom" in result.stderr
    bad_uri = make_cjob("tiny", namespace=cluster.namespace).with_model("ftp://example/model").manifest()
    result = cluster.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(bad_uri), check=False)
    assert result.returncode != 0 and "spec.model.uri must be" in result.stderr
    assert cluster.client.get(cluster.cjobs_path)["items"] == []
    assert cluster.jobs() == []


def test_a_regex_only_python_can_refuse_fails_the_job_before_any_job_naming_the_entry(cluster, operator):
    # The CRD cannot compile a regex (no CEL function does); the operator parses with the typed model, which does.
    cluster.apply(tiny().with_spec(recipe={"preset": "w4a16", "overrides": {"ignore": ["lm_head", "re:(.*mlp"]}}).manifest())
    cluster.wait_phase("tiny", "Failed")
    failed = cluster.condition("tiny", "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.recipe.overrides.ignore[1]: 're:(.*mlp' is not a valid regex" in failed["message"]
    time.sleep(10 * operator.config.resync_interval_s)  # ten resyncs: nothing more is tried
    assert cluster.jobs() == []  # no planning pod to crash three times
    assert [e["reason"] for e in cluster.events("tiny")].count("InvalidSpec") == 1


# --- suspend, Kueue, delete ---------------------------------------------------------------------------------


def test_suspend_stops_the_worker_and_resume_lets_it_run(cluster, operator, controller):
    cluster.apply(tiny().manifest())
    worker = plan(cluster, controller)
    name = worker["metadata"]["name"]
    assert worker["spec"]["suspend"] is False

    cluster.kubectl("patch", "compressionjob", "tiny", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for("the Job to be suspended", lambda: cluster.job(name)["spec"]["suspend"] is True)
    status = cluster.wait_phase("tiny", "Suspended")
    assert status["observedGeneration"] == cluster.cjob("tiny")["metadata"]["generation"]

    cluster.kubectl("patch", "compressionjob", "tiny", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("the Job to be resumed", lambda: cluster.job(name)["spec"]["suspend"] is False)
    wait_for("Resumed", lambda: cluster.condition("tiny", "Suspended")["reason"] == "Resumed")
    assert {"SuspendedBySpec", "Resumed"} <= set(wait_for("events", lambda: (r := event_reasons(cluster, "tiny")) and "Resumed" in r and r))
    assert len(jobs_of(cluster, "worker")) == 1


def test_a_job_created_suspended_is_planned_but_gets_no_worker_until_resumed(cluster, operator, controller):
    cluster.apply(tiny().suspended().manifest())
    plan_job = one_job(cluster, "plan")
    controller.run_to_end(plan_job["metadata"]["name"], lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)))
    status = wait_for("the plan", lambda: (s := cluster.status("tiny")).get("plan") and s)
    assert status["phase"] == "Suspended" and jobs_of(cluster, "worker") == []
    cluster.kubectl("patch", "cjob", "tiny", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    one_job(cluster, "worker")


def test_kueue_labels_the_job_and_queued_is_distinct_from_running(cluster, operator, controller):
    cluster.apply(tiny().with_queue("gpu-batch", priority="research").manifest())
    worker = plan(cluster, controller)
    name = worker["metadata"]["name"]
    assert worker["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
    assert worker["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "research"
    assert worker["spec"]["suspend"] is True
    cluster.wait_phase("tiny", "Queued")
    assert cluster.condition("tiny", "Queued")["reason"] == "WaitingForKueueAdmission"

    # Kueue admits it (played by the test: Kueue's controller is not run here): un-suspends the Job;
    # the operator must not suspend it again
    cluster.client.patch(f"{cluster.jobs_path}/{name}", {"spec": {"suspend": False}})
    pod = controller.start_pod(name)
    controller.pod_status(pod["metadata"]["name"], lambda p: p.running())
    cluster.wait_phase("tiny", "Running")
    assert cluster.job(name)["spec"]["suspend"] is False


def test_delete_removes_the_children_and_never_the_output(cluster, operator, controller, tmp_path):
    output = tmp_path / "published"
    output.mkdir()
    (output / "kompress.json").write_text("{}")
    cluster.apply(tiny().with_output(f"file://{output}", volume={"claimName": "published", "mountPath": str(output)}).manifest())
    plan(cluster, controller)
    cluster.kubectl("delete", "compressionjob", "tiny", "--wait=true", "--timeout=20s")
    # kube-controller-manager's garbage collector learns a new CRD's kind from discovery every 30 s: early in a
    # session (or after the chart test re-created the CRD) it may need that long before it acts.
    wait_for("the garbage collector to remove the Jobs", lambda: cluster.jobs() == [], timeout=75)
    wait_for("a few resyncs", lambda: operator.runtime.metrics.reconciles._value.get() > 0)
    assert cluster.jobs() == []
    assert (output / "kompress.json").read_text() == "{}"


def test_an_operator_watching_some_namespaces_leaves_the_others_alone(cluster, clock):
    other = f"{cluster.namespace}-other"
    cluster.api.create_namespace(other)
    op = OperatorThread(cluster, clock, watch_namespaces=(cluster.namespace,)).start()
    try:
        elsewhere = make_cjob("elsewhere", namespace=other).manifest()
        cluster.client.post(f"/apis/kompress.dev/v1alpha1/namespaces/{other}/compressionjobs", elsewhere)
        cluster.apply(tiny().manifest())
        one_job(cluster, "plan")
        reconciled_again(cluster, op, "tiny", times=3)
        assert cluster.client.get(f"/apis/batch/v1/namespaces/{other}/jobs")["items"] == []
        assert "status" not in cluster.client.get(f"/apis/kompress.dev/v1alpha1/namespaces/{other}/compressionjobs/elsewhere")
    finally:
        op.stop()
        cluster.client.delete(f"/api/v1/namespaces/{other}")


# --- what only a real Job controller shows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduling", "words"),
    [
        ({"priorityClassName": "no-such-priority"}, "no PriorityClass with name no-such-priority was found"),
        ({"runtimeClassName": "no-such-runtime"}, 'RuntimeClass "no-such-runtime" not found'),
    ],
    ids=["priority-class", "runtime-class"],
)
def test_a_worker_pod_the_job_controller_cannot_create_is_explained_then_fails(cluster, operator, controller, clock, scheduling, words):
    # The Job is valid, so the API server accepts it; creating its pod is what fails (FailedCreate Events on the Job).
    cluster.apply(tiny().with_scheduling(**scheduling).with_spec(pendingTimeoutSeconds=600).manifest())
    worker = plan(cluster, controller)
    queued = wait_for("the reason the pod was not created",
                      lambda: (q := cluster.condition("tiny", "Queued")) and q["reason"] == "FailedCreate" and q)
    assert words in queued["message"] and worker["metadata"]["name"] in queued["message"]
    assert cluster.status("tiny")["phase"] == "Queued"
    clock.advance(601)
    cluster.wait_phase("tiny", "Failed")
    failed = cluster.condition("tiny", "Failed")
    assert failed["reason"] == "FailedCreate" and words in failed["message"] and "(600s)" in failed["message"]
    wait_for("the worker Job to be deleted", lambda: jobs_of(cluster, "worker") == [])


def test_a_missing_service_account_is_explained_while_planning_then_fails(cluster, operator, clock):
    # The planning pod runs under the same ServiceAccount as the worker: it is the first that cannot be created.
    cluster.apply(tiny().with_scheduling(serviceAccountName="nobody").with_spec(pendingTimeoutSeconds=600).manifest())
    planned = wait_for("the reason the planning pod was not created",
                       lambda: (p := cluster.condition("tiny", "Planned")) and p["reason"] == "FailedCreate" and p)
    assert 'serviceaccount "nobody" not found' in planned["message"]
    # the Event follows the status write
    wait_for("a FailedCreate Warning", lambda: any(e["reason"] == "FailedCreate" and e["type"] == "Warning" for e in cluster.events("tiny")))
    clock.advance(601)
    cluster.wait_phase("tiny", "Failed")
    assert cluster.condition("tiny", "Failed")["reason"] == "FailedCreate" and jobs_of(cluster, "worker") == []


def test_kueue_suspend_then_resume_at_once_keeps_the_job_alive(cluster, operator, controller):
    # Suspending a Kueue job deletes its Job; a resume before that Job's DELETED event reaches the operator must
    # not let the late event read as "someone deleted the worker Job" (issue 14).
    cluster.apply(tiny().with_queue("gpu-batch").manifest())
    first = plan(cluster, controller)
    cluster.wait_phase("tiny", "Queued")
    for _ in range(3):
        cluster.kubectl("patch", "cjob", "tiny", "--type=merge", "-p", '{"spec":{"suspend":true}}')
        cluster.kubectl("patch", "cjob", "tiny", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("the first worker Job to be gone", lambda: first["metadata"]["uid"] not in {j["metadata"]["uid"] for j in jobs_of(cluster, "worker")})
    worker = wait_for(f"a new worker Job (status: {cluster.status('tiny')})", lambda: jobs_of(cluster, "worker"))[0]
    assert worker["spec"]["suspend"] is True  # waiting for Kueue again
    reconciled_again(cluster, operator, "tiny")  # a job waiting for Kueue is not resynced: changes bring reconciles
    status = cluster.wait_phase("tiny", "Queued")
    assert cluster.condition("tiny", "Failed") is None or cluster.condition("tiny", "Failed")["status"] != "True", status
    assert status["children"]["workerJob"] == worker["metadata"]["name"]
