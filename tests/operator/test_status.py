"""Status from children: each step of the flow, each failure class, with the words a user reads.

Each case builds a scene with the fluent wrappers (the Job controller's and kubelet's view of the
children), computes the status as the operator would, and checks what `kubectl get/describe` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kompress_api import v1alpha1 as api
from kompress_api.worker_protocol import PlannerResult, WorkerResult
from kompress_testing.wrappers import CJobWrapper, JobWrapper, make_cjob, pod_for

from kompress_operator import children, status
from kompress_operator.observed import Observed, StatusUpdate
from kompress_operator.config import OperatorConfig

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig()
UID = "7a1b2c3d-0000-4000-8000-000000000001"
NOW = datetime(2026, 11, 26, 10, 10, tzinfo=timezone.utc)

PLAN = api.PlanSummary(
    total_parameters=106_850_000_000,
    estimated_checkpoint_bytes=105_600_000_000,
    compression_ratio=2.02,
    host_memory_bytes=229_000_000_000,
    gpu_memory_bytes=12_000_000_000,
    disk_bytes=330_000_000_000,
    servable=True,
    problems=[api.PlanProblem(severity="warning", code="TensorParallelMisaligned", message="TP-4 splits 1408 into 352, not a multiple of 128", fix="serve with TP 1 or 2")],
)
REJECTED = api.PlanSummary(
    problems=[
        api.PlanProblem(severity="error", code="GroupSizeMismatch", message="model.layers.0.mlp.down_proj in_features 10944 is not a multiple of 128", fix="add it to spec.recipe.overrides.ignore or set groupSize 64"),
        api.PlanProblem(severity="warning", code="NotServable", message="2:4 sparsity has no vLLM kernels", fix="use preset w4a16-w8a8"),
    ]
)
RESULT = WorkerResult(
    ok=True,
    output_uri="s3://models/tiny",
    manifest_uri="s3://models/tiny/kompress.json",
    resolved_revision="abc123",
    checkpoint_bytes=105_600_000_000,
    original_bytes=213_700_000_000,
    compression_ratio=2.02,
    metrics=api.EvaluationMetrics(perplexity_increase=0.031, top1_agreement=0.92, samples=16),
)


@dataclass
class Scene:
    """A CompressionJob and its children at one moment; `step` computes the status and keeps it."""

    wrapper: CJobWrapper = field(default_factory=lambda: make_cjob(uid=UID))
    cjob: dict[str, Any] = field(init=False)
    plan_job: dict[str, Any] | None = None
    plan_pods: list[dict[str, Any]] = field(default_factory=list)
    worker_job: dict[str, Any] | None = None
    worker_pods: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.cjob = self.wrapper.obj()

    @property
    def model(self) -> api.CompressionJob:
        return api.parse(self.cjob)

    def observed(self) -> Observed:
        return Observed(self.cjob, self.plan_job, self.plan_pods, self.worker_job, self.worker_pods, self.progress)

    def step(self, now: datetime = NOW) -> StatusUpdate:
        update = status.compute_status(self.observed(), now)
        # every status written must be one the CRD's schema keeps whole (unknown fields would be pruned)
        api.CompressionJobStatus.model_validate(update.status)
        self.cjob["status"] = update.status
        return update

    # --- the flow, as the Job controller and the kubelet would report it ---

    def plan_running(self, pod: Any = None) -> Scene:
        self.plan_job = JobWrapper(children.build_plan_job(self.model, CONFIG)).created().started().obj()
        self.plan_pods = [pod(pod_for(self.plan_job)).obj() if pod else pod_for(self.plan_job).running().obj()]
        return self

    def planned(self, plan: api.PlanSummary = PLAN) -> Scene:
        self.plan_running()
        self.plan_job = JobWrapper(self.plan_job).complete().obj()
        self.plan_pods = [pod_for(self.plan_job).succeeded(PlannerResult(ok=True, plan=plan)).obj()]
        self.step()
        return self

    def worker_created(self) -> Scene:
        self.planned()
        self.worker_job = JobWrapper(children.build_worker_job(self.model, PLAN, CONFIG)).created().obj()
        return self

    def worker_pod(self, build: Any, suffix: str = "aaaaa") -> Scene:
        self.worker_job = JobWrapper(self.worker_job).started().obj()
        self.worker_pods.append(build(pod_for(self.worker_job, suffix)).obj())
        return self

    def worker_running(self, progress: dict[str, Any] | None = None) -> Scene:
        self.worker_created().worker_pod(lambda p: p.running())
        self.progress = progress
        return self

    def worker_failed(self, build: Any, job_reason: str = "PodFailurePolicy", job_message: str = "") -> Scene:
        self.worker_running()
        self.step()
        self.worker_pods = [build(pod_for(self.worker_job, "aaaaa")).obj()]
        self.worker_job = JobWrapper(self.worker_job).counts(failed=1).failed(job_reason, job_message).obj()
        return self


def cond(update: StatusUpdate, ctype: str) -> dict[str, Any]:
    found = next((c for c in update.status["conditions"] if c["type"] == ctype), None)
    assert found is not None, f"no {ctype} condition in {update.status['conditions']}"
    return found


def reasons(update: StatusUpdate) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in update.events]


# --- planning ----------------------------------------------------------------------------------------


def test_a_new_job_is_pending_and_reconciling():
    update = Scene().step()
    assert update.status["phase"] == "Pending"
    assert cond(update, "Reconciling")["status"] == "True"
    assert update.status["observedGeneration"] == 1


def test_while_the_plan_runs_the_job_is_planning_and_says_so():
    update = Scene().plan_running().step()
    assert update.status["phase"] == "Planning"
    planned = cond(update, "Planned")
    assert (planned["status"], planned["reason"]) == ("Unknown", "Planning")
    assert "no GPU is asked for" in planned["message"]
    assert update.status["children"]["planJob"].endswith("-plan")
    assert reasons(update) == [("Normal", "Planning")]


def test_a_plan_stores_its_figures_and_tells_warnings_as_events():
    scene = Scene().planned()
    update = status.compute_status(scene.observed(), NOW)
    assert update.status["plan"]["hostMemoryBytes"] == 229_000_000_000
    planned = cond(update, "Planned")
    assert (planned["status"], planned["reason"]) == ("True", "PlanSucceeded")
    assert "checkpoint ≈ 105.6 GB (2.0x smaller than bf16)" in planned["message"] and "1 warning(s): TensorParallelMisaligned" in planned["message"]
    # the first computation told it; replaying the same facts tells nothing
    assert not update.changed and update.events == []
    first = status.compute_status(replace(scene.observed(), cjob=make_cjob(uid=UID).obj() | {"status": {}}), NOW)
    assert ("Warning", "PlanWarning") in reasons(first) and ("Normal", "PlanSucceeded") in reasons(first)


def test_a_rejected_plan_fails_before_any_gpu_with_the_errors_and_fixes():
    scene = Scene().plan_running()
    scene.plan_job = JobWrapper(scene.plan_job).counts(failed=1).failed("PodFailurePolicy", "Container planner for pod ml/x failed with exit code 20 matching FailJob rule at index 1").obj()
    scene.plan_pods = [pod_for(scene.plan_job).failed(20, PlannerResult(ok=False, exit_code=20, reason="PlanRejected", message="1 error", plan=REJECTED)).obj()]
    update = scene.step()
    assert update.status["phase"] == "Failed"
    failed = cond(update, "Failed")
    assert failed["reason"] == "PlanRejected"
    assert "GroupSizeMismatch: model.layers.0.mlp.down_proj in_features 10944 is not a multiple of 128 Fix: add it to spec.recipe.overrides.ignore" in failed["message"]
    assert "no GPU was asked for" in failed["message"]
    assert cond(update, "Planned")["status"] == "False" and cond(update, "Stalled")["status"] == "True"
    assert update.status["plan"]["problems"][0]["code"] == "GroupSizeMismatch"
    assert ("Warning", "PlanRejected") in reasons(update) and ("Warning", "PlanWarning") in reasons(update)
    assert "workerJob" not in update.status["children"]


def test_a_planning_pod_that_cannot_find_the_model_fails_with_the_workers_reason():
    scene = Scene().plan_running()
    scene.plan_job = JobWrapper(scene.plan_job).failed("PodFailurePolicy").obj()
    scene.plan_pods = [pod_for(scene.plan_job).failed(11, PlannerResult(ok=False, exit_code=11, reason="ModelNotFound", message="hf://org/tiny-moe does not exist or needs spec.model.huggingFace.tokenSecret")).obj()]
    failed = cond(scene.step(), "Failed")
    assert failed["reason"] == "ModelNotFound" and "tokenSecret" in failed["message"]


def test_a_planning_pod_out_of_memory_points_at_the_operators_setting_not_the_spec():
    scene = Scene().plan_running()
    scene.plan_job = JobWrapper(scene.plan_job).counts(failed=3).failed("BackoffLimitExceeded").obj()
    scene.plan_pods = [pod_for(scene.plan_job).oom_killed().obj()]
    failed = cond(scene.step(), "Failed")
    assert failed["reason"] == "OOMKilled"
    assert "the planning pod ran out of memory (limit 2Gi); raise the operator's planning pod memory (KOMPRESS_PLAN_MEMORY)" in failed["message"]


def test_a_plan_job_that_succeeds_without_a_plan_is_a_failure_not_a_guess():
    scene = Scene().plan_running()
    scene.plan_job = JobWrapper(scene.plan_job).complete().obj()
    scene.plan_pods = [pod_for(scene.plan_job).succeeded(None).obj()]
    failed = cond(scene.step(), "Failed")
    assert failed["reason"] == "PlanFailed" and "termination message" in failed["message"]


def test_a_planning_pod_stuck_on_its_image_shows_why_then_fails_after_the_timeout():
    scene = Scene().plan_running(lambda p: p.waiting("ImagePullBackOff", 'Back-off pulling image "registry.example/kompress-job:1.0"'))
    update = scene.step()
    planned = cond(update, "Planned")
    assert (planned["status"], planned["reason"]) == ("Unknown", "ImagePullBackOff")
    assert "imagePullSecrets" in planned["message"]
    later = scene.step(NOW + timedelta(seconds=1800))
    failed = cond(later, "Failed")
    assert failed["reason"] == "ImagePullBackOff" and "pendingTimeoutSeconds (1800s)" in failed["message"]


# --- waiting for the worker ------------------------------------------------------------------------------


def test_kueue_admission_is_shown_as_queued_not_running():
    scene = Scene(make_cjob(uid=UID).with_queue("gpu-batch"))
    scene.worker_created()
    update = scene.step()
    assert update.status["phase"] == "Queued"
    queued = cond(update, "Queued")
    assert (queued["reason"], queued["message"]) == ("WaitingForKueueAdmission", "waiting for Kueue to admit the Job in queue gpu-batch")
    assert update.status["children"]["workerJob"].endswith("-worker")


def test_unschedulable_shows_the_schedulers_message_then_fails_after_the_timeout():
    scene = Scene(make_cjob(uid=UID).with_spec(pendingTimeoutSeconds=900)).worker_created()
    scene.worker_pod(lambda p: p.unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."))
    update = scene.step()
    queued = cond(update, "Queued")
    assert update.status["phase"] == "Queued"
    assert queued["reason"] == "Unschedulable" and "0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in queued["message"]
    assert ("Warning", "Unschedulable") in reasons(update)
    # still pending fifteen minutes after the pod was made: give up, and say what to change
    later = scene.step(datetime(2026, 11, 26, 10, 15, 0, tzinfo=timezone.utc))
    failed = cond(later, "Failed")
    assert later.status["phase"] == "Failed" and failed["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in failed["message"] and "Insufficient nvidia.com/gpu, for more than spec.pendingTimeoutSeconds (900s); ask for fewer GPUs" in failed["message"] and "ask for fewer GPUs" in failed["message"]


def test_an_invalid_image_name_fails_at_once():
    scene = Scene().worker_created().worker_pod(lambda p: p.waiting("InvalidImageName", 'couldn\'t parse image name "Kompress:latest"'))
    failed = cond(scene.step(), "Failed")
    assert failed["reason"] == "InvalidImageName" and "fix spec.image" in failed["message"]


def test_a_missing_secret_is_named_while_waiting():
    scene = Scene().worker_created().worker_pod(lambda p: p.waiting("CreateContainerConfigError", 'secret "s3-credentials" not found'))
    queued = cond(scene.step(), "Queued")
    assert queued["reason"] == "CreateContainerConfigError" and 'secret "s3-credentials" not found' in queued["message"]


def test_a_pod_being_created_is_queued_without_alarm():
    scene = Scene().worker_created().worker_pod(lambda p: p.waiting("ContainerCreating"))
    update = scene.step()
    assert cond(update, "Queued")["reason"] == "PodPending" and update.status["phase"] == "Queued"
    assert all(e.type == "Normal" for e in update.events)


# --- running ------------------------------------------------------------------------------------------


def test_running_shows_the_polled_progress():
    progress = {"stage": "compress", "stageIndex": 7, "stageCount": 11, "percent": 42, "message": "layer 12 of 46", "etaSeconds": 3900, "unknownField": 1}
    scene = Scene().worker_created().worker_pod(lambda p: p.waiting("ContainerCreating"))
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").running().obj()]
    scene.progress = progress
    update = scene.step()
    assert update.status["phase"] == "Running"
    assert update.status["progress"] == {"stage": "compress", "stageIndex": 7, "stageCount": 11, "percent": 42, "message": "layer 12 of 46", "etaSeconds": 3900}
    running = cond(update, "Running")
    assert running["reason"] == "WorkerRunning" and running["message"] == "stage compress (7/11): layer 12 of 46, 42% done, about 1h05m left"
    queued = cond(update, "Queued")
    assert (queued["status"], queued["reason"]) == ("False", "Started")
    assert reasons(update) == [("Normal", "WorkerRunning")]
    assert update.status["startTime"] == "2026-11-26T10:00:00Z" and update.status["attempts"] == 1
    assert update.status["children"]["workerPod"].endswith("-aaaaa")


def test_publishing_is_its_own_phase():
    update = Scene().worker_running({"stage": "publish", "percent": 93}).step()
    assert update.status["phase"] == "Publishing" and cond(update, "Running")["reason"] == "Publishing"


def test_without_a_fresh_poll_the_last_progress_stands():
    scene = Scene().worker_running({"stage": "compress", "percent": 40})
    scene.step()
    scene.progress = None
    assert scene.step().status["progress"]["percent"] == 40


# --- the end --------------------------------------------------------------------------------------------


def test_a_finished_pod_before_its_job_completes_stays_running_not_queued():
    # The kubelet reports the pod Succeeded a moment before the Job controller marks the Job Complete.
    scene = Scene().worker_running({"stage": "publish", "percent": 97})
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").succeeded(RESULT).obj()]
    update = scene.step()
    assert update.status["phase"] == "Publishing"  # as before the pod ended: never back to Running or Queued
    assert cond(update, "Running")["reason"] == "WorkerFinished"
    assert not any(c["type"] == "Queued" and c["status"] == "True" for c in update.status["conditions"])


def test_success_puts_the_workers_result_in_status():
    scene = Scene().worker_running({"stage": "publish", "percent": 97})
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").succeeded(RESULT).obj()]
    scene.worker_job = JobWrapper(scene.worker_job).complete().obj()
    update = scene.step()
    assert update.status["phase"] == "Succeeded"
    assert update.status["result"] == {
        "outputUri": "s3://models/tiny",
        "manifestUri": "s3://models/tiny/kompress.json",
        "resolvedRevision": "abc123",
        "checkpointBytes": 105_600_000_000,
        "originalBytes": 213_700_000_000,
        "compressionRatio": 2.02,
        "metrics": {"samples": 16, "perplexityIncrease": 0.031, "top1Agreement": 0.92},
    }
    succeeded = cond(update, "Succeeded")
    assert succeeded["message"] == "published 105.6 GB to s3://models/tiny (2.0x smaller than bf16); perplexity +3.1%, top-1 agreement 92.0%"
    assert update.status["completionTime"] == "2026-11-26T11:00:00Z"
    assert update.status["progress"]["percent"] == 100
    assert cond(update, "Reconciling")["status"] == "False" and cond(update, "Stalled")["status"] == "False"
    assert reasons(update) == [("Normal", "Succeeded")]


def test_an_hf_output_shows_its_commit_and_signature_in_the_status():
    commit = "2f01a7d2f16cdd38838c5fff1a64c2c0788ab374"
    destination = api.PublishedDestination(kind="hf", reference=f"hf://kompress/tiny@{commit}", commit=commit, revision="main", signature="model.sig")
    result = RESULT.model_copy(update={"output_uri": "hf://kompress/tiny", "manifest_uri": f"hf://kompress/tiny@{commit}/kompress.json", "destination": destination})
    scene = Scene().worker_running({"stage": "publish", "percent": 97})
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").succeeded(result).obj()]
    scene.worker_job = JobWrapper(scene.worker_job).complete().obj()
    update = scene.step()
    assert update.status["result"]["destination"] == {"kind": "hf", "reference": f"hf://kompress/tiny@{commit}", "commit": commit, "revision": "main", "signature": "model.sig"}
    assert cond(update, "Succeeded")["message"].startswith(f"published 105.6 GB to hf://kompress/tiny (hf: hf://kompress/tiny@{commit}), signed (model.sig)")


def _failure(result: WorkerResult) -> Any:
    return lambda p: p.failed(result.exit_code, result)


@pytest.mark.parametrize(
    ("name", "build", "job_reason", "reason", "words"),
    [
        (
            "bad input fails at once with the worker's words",
            _failure(WorkerResult(ok=False, exit_code=14, reason="TargetsMatchNothing", stage="compress", message="ignore entry re:.*foo$ matches no module")),
            "PodFailurePolicy",
            "TargetsMatchNothing",
            "stage compress: ignore entry re:.*foo$ matches no module",
        ),
        (
            "out of memory names the limit that was asked",
            lambda p: p.oom_killed(),
            "BackoffLimitExceeded",
            "OOMKilled",
            "ran out of memory (limit 214Gi); raise spec.resources.memory",
        ),
        (
            "retries exhausted say how many",
            _failure(WorkerResult(ok=False, exit_code=30, reason="StorageUnreachable", message="s3://models: connection refused")),
            "BackoffLimitExceeded",
            "StorageUnreachable",
            "failed 1 time(s), spec.backoffLimit is 2: s3://models: connection refused",
        ),
        (
            "a crash without a result shows the log's tail",
            lambda p: p.failed(1, "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error: an illegal memory access"),
            "BackoffLimitExceeded",
            "WorkerError",
            "exited with code 1: an unexpected error in the worker; last log lines: Traceback",
        ),
        (
            "no readable pod leaves the Job's own reason",
            lambda p: p,
            "BackoffLimitExceeded",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ),
    ],
)
def test_each_failure_class_has_a_reason_and_a_message_to_act_on(name, build, job_reason, reason, words):
    job_message = "Job has reached the specified backoff limit" if job_reason == "BackoffLimitExceeded" else "matched FailJob rule"
    update = Scene().worker_failed(build, job_reason, job_message).step()
    failed = cond(update, "Failed")
    assert update.status["phase"] == "Failed", name
    assert failed["reason"] == reason, name
    assert words in failed["message"], name
    assert cond(update, "Stalled")["status"] == "True"
    assert ("Warning", reason) in reasons(update)
    assert cond(update, "Running")["status"] == "False"


def test_a_deadline_names_the_limit_and_the_stage_it_stopped_in():
    scene = Scene(make_cjob(uid=UID).with_spec(activeDeadlineSeconds=3600)).worker_running({"stage": "compress", "percent": 50})
    scene.step()
    scene.worker_pods = []
    scene.worker_job = JobWrapper(scene.worker_job).failed("DeadlineExceeded", "Job was active longer than specified deadline").obj()
    failed = cond(scene.step(), "Failed")
    assert failed["reason"] == "DeadlineExceeded"
    assert failed["message"] == "the worker ran longer than spec.activeDeadlineSeconds (3600s) and was stopped in stage compress; raise it, or ask for more GPUs"


def test_a_missed_quality_gate_keeps_the_figures_and_where_the_rejected_model_is():
    gate = WorkerResult(ok=False, exit_code=17, reason="QualityGateFailed", stage="evaluate", message="perplexity +31% > +25%", rejected_uri="s3://models/tiny.rejected/", metrics=api.EvaluationMetrics(perplexity_increase=0.31, gate_passed=False))
    update = Scene().worker_failed(_failure(gate)).step()
    assert cond(update, "Failed")["reason"] == "QualityGateFailed"
    assert update.status["result"]["rejectedUri"] == "s3://models/tiny.rejected/"
    assert update.status["result"]["metrics"]["gatePassed"] is False


def test_a_retry_is_told_and_counted():
    scene = Scene().worker_running()
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").failed(30, WorkerResult(ok=False, exit_code=30, reason="StorageUnreachable", message="timeout")).obj()]
    scene.worker_job = JobWrapper(scene.worker_job).counts(failed=1, active=1).obj()
    scene.worker_pods.append(pod_for(scene.worker_job, "bbbbb").waiting("ContainerCreating").obj())
    update = scene.step()
    assert update.status["attempts"] == 2 and update.status["phase"] == "Queued"
    running = cond(update, "Running")
    assert (running["status"], running["reason"]) == ("False", "WorkerRetrying")
    assert "attempt 1 of 3 failed (StorageUnreachable: timeout); retrying" == running["message"]
    assert ("Warning", "WorkerRetrying") in reasons(update)


def test_a_disruption_is_not_a_failure():
    scene = Scene().worker_running()
    scene.step()
    # the evicted pod is ignored by podFailurePolicy: the Job stays active and starts another
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").evicted().obj(), pod_for(scene.worker_job, "bbbbb").running().obj()]
    update = scene.step()
    assert update.status["phase"] == "Running" and "Failed" not in [c["type"] for c in update.status["conditions"]]


def test_a_worker_job_deleted_behind_the_operators_back_is_reported_not_rerun():
    scene = Scene().worker_running()
    scene.step()
    scene.worker_job, scene.worker_pods = None, []
    failed = cond(scene.step(), "Failed")
    assert failed["reason"] == "WorkerJobDeleted" and "s3://models/tiny" in failed["message"]


def test_terminal_states_are_sticky():
    scene = Scene().worker_running()
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").succeeded(RESULT).obj()]
    scene.worker_job = JobWrapper(scene.worker_job).complete().obj()
    done = scene.step()
    # whatever the children do afterwards (TTL deletes the Job, a replayed event...), the outcome stands
    scene.worker_job, scene.worker_pods = None, []
    again = scene.step(NOW + timedelta(days=1))
    assert not again.changed and again.events == [] and again.status == done.status


# --- suspension ------------------------------------------------------------------------------------------


def test_suspend_and_resume_are_told():
    scene = Scene(make_cjob(uid=UID).suspended()).worker_created()
    scene.worker_job = JobWrapper(scene.worker_job).suspend().obj()
    update = scene.step()
    assert update.status["phase"] == "Suspended"
    assert cond(update, "Suspended")["reason"] == "SuspendedBySpec"
    assert cond(update, "Reconciling")["status"] == "False"
    scene.cjob["spec"]["suspend"] = False
    scene.cjob["metadata"]["generation"] = 2
    resumed = scene.step()
    assert cond(resumed, "Suspended")["status"] == "False" and cond(resumed, "Suspended")["reason"] == "Resumed"
    assert resumed.status["observedGeneration"] == 2
    assert ("Normal", "Resumed") in reasons(resumed)


def test_a_kueue_job_suspended_by_deletion_is_not_lost():
    scene = Scene(make_cjob(uid=UID).with_queue("gpu-batch")).worker_created()
    scene.step()
    scene.cjob["spec"]["suspend"] = True
    scene.worker_job = None
    update = scene.step()
    assert update.status["phase"] == "Suspended" and "workerJob" not in update.status["children"]


# --- replay and odd input ---------------------------------------------------------------------------------


def test_replaying_the_same_facts_changes_nothing_and_tells_nothing():
    scene = Scene().worker_running({"stage": "compress", "percent": 10})
    scene.step()
    again = scene.step(NOW + timedelta(minutes=5))
    assert not again.changed and again.events == []


def test_a_spec_the_model_refuses_fails_with_invalid_spec():
    cjob = make_cjob(uid=UID).obj()
    update = status.invalid_spec_status(cjob, "spec.recipe needs exactly one of preset or custom", NOW)
    failed = cond(update, "Failed")
    assert failed["reason"] == "InvalidSpec" and "exactly one of preset or custom" in failed["message"]
    assert update.status["phase"] == "Failed"


def _scores(n: int) -> list[api.TaskScore]:
    return [api.TaskScore(task=f"task{i}", metric="acc", original=0.875, compressed=0.8542, difference=-0.0208, original_stderr=0.048, compressed_stderr=0.051, higher_is_better=True) for i in range(n)]


def test_task_scores_reach_the_status_result_and_the_succeeded_message():
    with_tasks = RESULT.model_copy(update={"metrics": RESULT.metrics.model_copy(update={"tasks": _scores(1), "task_backend": "hf"})})
    scene = Scene().worker_running({"stage": "publish", "percent": 97})
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").succeeded(with_tasks).obj()]
    scene.worker_job = JobWrapper(scene.worker_job).complete().obj()
    update = scene.step()
    metrics = update.status["result"]["metrics"]
    assert metrics["taskBackend"] == "hf"
    assert metrics["tasks"] == [{"task": "task0", "metric": "acc", "original": 0.875, "compressed": 0.8542, "difference": -0.0208, "originalStderr": 0.048, "compressedStderr": 0.051, "higherIsBetter": True}]
    assert cond(update, "Succeeded")["message"].endswith("top-1 agreement 92.0%, task0 acc 0.875 -> 0.854")


def test_the_message_names_a_few_task_scores_and_says_where_the_rest_are():
    metrics = api.EvaluationMetrics(tasks=_scores(5), task_scores_omitted=7)
    assert status.task_figures(metrics) == ["task0 acc 0.875 -> 0.854", "task1 acc 0.875 -> 0.854", "task2 acc 0.875 -> 0.854", "9 more task scores in status.result.metrics.tasks and the manifest"]
    assert status.task_figures(api.EvaluationMetrics()) == []


def test_a_missed_task_drop_keeps_the_scores_and_the_figures_in_the_failed_message():
    line = "task kompress_chat_mc acc 0.8750 -> 0.5625 (drop 0.3125) > limit 0.0100"
    gate = WorkerResult(
        ok=False, exit_code=17, reason="QualityGateFailed", stage="publish", rejected_uri="s3://models/tiny.rejected",
        message=f"the compressed model missed the quality gate ({line}); kept for inspection at s3://models/tiny.rejected, not published to s3://models/tiny",
        metrics=api.EvaluationMetrics(tasks=_scores(1), gate_passed=False),
    )
    update = Scene().worker_failed(_failure(gate)).step()
    failed = cond(update, "Failed")
    assert failed["reason"] == "QualityGateFailed" and line in failed["message"]
    assert update.status["result"]["metrics"]["tasks"][0]["compressed"] == 0.8542
    assert update.status["result"]["rejectedUri"] == "s3://models/tiny.rejected"


def test_an_oci_image_reaches_the_status_by_digest_and_the_succeeded_message_names_it():
    digest = "sha256:" + "ab" * 32
    pushed = RESULT.model_copy(update={
        "output_uri": "oci://registry.example/models/tiny:w4a16",
        "manifest_uri": f"oci://registry.example/models/tiny@{digest}#/models/kompress.json",
        "destination": api.PublishedDestination(kind="oci", reference=f"oci://registry.example/models/tiny@{digest}", digest=digest, tag="w4a16"),
    })
    scene = Scene().worker_running({"stage": "publish", "percent": 97})
    scene.step()
    scene.worker_pods = [pod_for(scene.worker_job, "aaaaa").succeeded(pushed).obj()]
    scene.worker_job = JobWrapper(scene.worker_job).complete().obj()
    update = scene.step()
    assert update.status["result"]["destination"] == {"kind": "oci", "reference": f"oci://registry.example/models/tiny@{digest}", "digest": digest, "tag": "w4a16"}
    assert cond(update, "Succeeded")["message"].startswith(
        f"published 105.6 GB to oci://registry.example/models/tiny:w4a16 (oci: oci://registry.example/models/tiny@{digest}) (2.0x smaller")
