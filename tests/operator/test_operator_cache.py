"""The model cache through the real control plane (issue 20): the CRD takes spec.model.cache, the operator with a
default cache claim makes planning and worker Jobs whose pods (made by the real Job controller, validated by the
real API server) mount the claim with the worker's fsGroup; a job that opts out mounts nothing."""

from __future__ import annotations

import json

import pytest
from kompress_api import v1alpha1 as api
from kompress_api import worker_protocol
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from operator_cluster import PLAN, OperatorThread, event_reasons, jobs_of, one_job, plan, reconciled_again, tiny, wait_for

pytestmark = pytest.mark.integration

CLAIM = "kompress-model-cache"


@pytest.fixture
def cache_operator(cluster, clock):
    cluster.client.post(f"/api/v1/namespaces/{cluster.namespace}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
    })
    op = OperatorThread(cluster, clock, cache_claim=CLAIM, cache_max_bytes=900 * 10**9).start()
    yield op
    op.stop()


def cache_volumes(pod_spec):
    return [v["persistentVolumeClaim"]["claimName"] for v in pod_spec.get("volumes", []) if "persistentVolumeClaim" in v]


def test_planning_and_worker_pods_mount_the_cache_claim(cluster, cache_operator, controller):
    cluster.apply(tiny().with_model("s3://models/glm-air").manifest())
    plan_job = one_job(cluster, "plan")
    plan_pod = wait_for("the planning pod", lambda: cluster.pods(plan_job["metadata"]["name"]))[0]
    worker = plan(cluster, controller)
    worker_pod = wait_for("the worker pod", lambda: cluster.pods(worker["metadata"]["name"]))[0]
    for pod in (plan_pod, worker_pod):
        spec = pod["spec"]
        assert cache_volumes(spec) == [CLAIM]
        assert spec["securityContext"]["fsGroup"] == worker_protocol.WORKER_UID
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env[worker_protocol.ENV_CACHE_DIR] == worker_protocol.CACHE_DIR and env[worker_protocol.ENV_CACHE_MAX_BYTES] == str(900 * 10**9)
        assert env[worker_protocol.ENV_CACHE_CLAIM] == CLAIM  # so the plan can name the claim it found the model in


def test_a_job_that_opts_out_mounts_no_cache_and_a_bad_claim_name_is_refused_at_admission(cluster, cache_operator, controller):
    cluster.apply(tiny("no-cache").with_model("s3://models/glm-air", cache={"enabled": False}).manifest())
    assert cache_volumes(one_job(cluster, "plan")["spec"]["template"]["spec"]) == []
    bad = tiny("bad").with_model("s3://models/glm-air", cache={"claimName": "Not_A_Claim"}).manifest()
    bad["metadata"]["namespace"] = cluster.namespace
    result = cluster.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0 and "spec.model.cache.claimName" in result.stderr
    assert [j["metadata"]["name"] for j in jobs_of(cluster, "plan")] == [one_job(cluster, "plan")["metadata"]["name"]]


def test_a_job_asking_for_a_cache_where_there_is_none_fails_naming_the_field_before_any_job(cluster, operator):
    # This operator has no default cache claim (no chart cache.*): spec.model.cache.enabled alone cannot be honoured.
    cluster.apply(tiny("wants-cache").with_model("s3://models/glm-air", cache={"enabled": True}).manifest())
    status = cluster.wait_phase("wants-cache", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NoCacheClaim"
    assert "spec.model.cache.enabled" in failed["message"] and "spec.model.cache.claimName" in failed["message"]
    assert "NoCacheClaim" in wait_for("the Event", lambda: event_reasons(cluster, "wants-cache"))
    assert cluster.jobs() == []  # no planning Job, no GPU Job: it never ran without the cache it asked for

    # Its own claim, or no cache asked for at all, is fine with the same operator.
    cluster.apply(tiny("own-claim").with_model("s3://models/glm-air", cache={"enabled": True, "claimName": "team-cache"}).manifest())
    assert cache_volumes(one_job(cluster, "plan")["spec"]["template"]["spec"]) == ["team-cache"]
    cluster.apply(tiny("no-cache").with_model("s3://models/glm-air").manifest())
    wait_for("the second planning Job", lambda: len(jobs_of(cluster, "plan")) == 2)
    assert cluster.status("no-cache").get("phase") != "Failed"


def scraped(op) -> dict:
    text = generate_latest(op.runtime.metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_plans_cache_figures_are_in_status_plan_its_condition_and_the_operators_metrics(cluster, cache_operator, controller):
    held = PLAN.model_copy(update={"cache": api.PlanCache(claim_name=CLAIM, cached_bytes=5_000_000, total_bytes=5_000_000, download_bytes=0, volume_bytes=7_000_000)})
    cluster.apply(tiny("second").with_model("s3://models/glm-air").manifest())
    plan(cluster, controller, worker_protocol.PlannerResult(ok=True, plan=held))
    status = wait_for("the plan", lambda: (s := cluster.status("second")).get("plan") and s)
    assert status["plan"]["cache"] == {"claimName": CLAIM, "cachedBytes": 5_000_000, "totalBytes": 5_000_000, "downloadBytes": 0, "volumeBytes": 7_000_000}
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert "model cache: 5.0 MB of 5.0 MB cached, 0 B to download" in planned["message"]

    partly = PLAN.model_copy(update={"cache": api.PlanCache(claim_name=CLAIM, cached_bytes=1_000_000, total_bytes=4_000_000, download_bytes=3_000_000, volume_bytes=8_000_000)})
    cluster.apply(tiny("other").with_model("s3://models/other").manifest())
    job = wait_for("the second planning Job", lambda: [j for j in jobs_of(cluster, "plan") if "other" in j["metadata"]["name"]])[0]
    controller.run_to_end(job["metadata"]["name"], lambda p: p.succeeded(worker_protocol.PlannerResult(ok=True, plan=partly)))
    wait_for("the second plan", lambda: cluster.status("other").get("plan"))
    metrics = wait_for("the metrics", lambda: (m := scraped(cache_operator)).get(("kompress_cache_misses_total", ())) and m)
    assert metrics[("kompress_cache_hits_total", ())] == 1 and metrics[("kompress_cache_misses_total", ())] == 1
    assert metrics[("kompress_cache_bytes_saved_total", ())] == 6_000_000
    assert metrics[("kompress_cache_bytes_on_volume", (("claim", CLAIM), ("namespace", cluster.namespace)))] == 8_000_000
    # Counted once per job: later reconciles (a change to each job brings one; a quiet job is not resynced) add nothing.
    reconciled_again(cluster, cache_operator, "second", times=3)
    reconciled_again(cluster, cache_operator, "other", times=3)
    assert scraped(cache_operator)[("kompress_cache_bytes_saved_total", ())] == 6_000_000
