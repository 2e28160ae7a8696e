"""The model cache through the real control plane (issue 20): the CRD takes spec.model.cache, the operator with a
default cache claim makes planning and worker Jobs whose pods (made by the real Job controller, validated by the
real API server) mount the claim with the worker's fsGroup; a job that opts out mounts nothing."""

from __future__ import annotations

import json

import pytest
from kompress_api import worker_protocol as wp

from operator_cluster import OperatorThread, jobs_of, one_job, plan, tiny, wait_for

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
        assert spec["securityContext"]["fsGroup"] == wp.WORKER_UID
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env[wp.ENV_CACHE_DIR] == wp.CACHE_DIR and env[wp.ENV_CACHE_MAX_BYTES] == str(900 * 10**9)


def test_a_job_that_opts_out_mounts_no_cache_and_a_bad_claim_name_is_refused_at_admission(cluster, cache_operator, controller):
    cluster.apply(tiny("no-cache").with_model("s3://models/glm-air", cache={"enabled": False}).manifest())
    assert cache_volumes(one_job(cluster, "plan")["spec"]["template"]["spec"]) == []
    bad = tiny("bad").with_model("s3://models/glm-air", cache={"claimName": "Not_A_Claim"}).manifest()
    bad["metadata"]["namespace"] = cluster.namespace
    result = cluster.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0 and "spec.model.cache.claimName" in result.stderr
    assert [j["metadata"]["name"] for j in jobs_of(cluster, "plan")] == [one_job(cluster, "plan")["metadata"]["name"]]
