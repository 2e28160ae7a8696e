"""The model cache in the planning and worker pods (issue 20): the operator's claim or the spec's, mounted read-write
at one path the worker is told, the worker's UID's group owning it; nothing without a claim, when disabled, or for a
model on a volume (used in place)."""

from __future__ import annotations

import dataclasses

import kubernetes_validate
import pytest
from kompress_api import v1alpha1 as api
from kompress_api import worker_protocol
from kompress_testing.wrappers import make_cjob

from kompress_operator import children, pod_access
from kompress_operator.config import OperatorConfig, from_env

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig(worker_image="registry.example/kompress-job:1.0", cache_claim="team-cache", cache_max_bytes=500 * 10**9)


def both(wrapper, config=CONFIG):
    cjob = api.parse(wrapper.obj())
    return {"plan": children.build_plan_job(cjob, config), "worker": children.build_worker_job(cjob, None, config)}


def pod(job):
    return job["spec"]["template"]["spec"]


def cache_of(job):
    spec = pod(job)
    (container,) = spec["containers"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if v["name"] == pod_access.CACHE_VOLUME]
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] == pod_access.CACHE_VOLUME]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return claims, mounts, env


def test_planning_and_worker_pods_mount_the_operators_cache_claim_owned_by_the_worker_uid():
    for role, job in both(make_cjob().with_model("s3://models/glm-air")).items():
        kubernetes_validate.validate(job, "1.32.0", strict=True)
        claims, mounts, env = cache_of(job)
        assert claims == ["team-cache"], role
        assert mounts == [{"name": pod_access.CACHE_VOLUME, "mountPath": worker_protocol.CACHE_DIR}], role  # read-write
        assert env[worker_protocol.ENV_CACHE_DIR] == worker_protocol.CACHE_DIR and env[worker_protocol.ENV_CACHE_MAX_BYTES] == str(500 * 10**9)
        security = pod(job)["securityContext"]
        assert security["fsGroup"] == worker_protocol.WORKER_UID and security["fsGroupChangePolicy"] == "OnRootMismatch"
        assert security["runAsNonRoot"] is True
    worker_mounts = [m["name"] for m in pod(both(make_cjob())["worker"])["containers"][0]["volumeMounts"]]
    assert {pod_access.SCRATCH_VOLUME, pod_access.SHM_VOLUME} <= set(worker_mounts)  # scratch and shm are still there


def test_a_jobs_claim_name_overrides_and_enabled_false_opts_out():
    claims, _, _ = cache_of(both(make_cjob().with_model("hf://org/m", cache={"claimName": "my-cache"}))["worker"])
    assert claims == ["my-cache"]
    claims, _, _ = cache_of(both(make_cjob().with_model("hf://org/m", cache={"claimName": "my-cache"}), dataclasses.replace(CONFIG, cache_claim=""))["plan"])
    assert claims == ["my-cache"]  # a job may use a cache the operator has no default for
    for role, job in both(make_cjob().with_model("hf://org/m", cache={"enabled": False})).items():
        claims, mounts, env = cache_of(job)
        assert (claims, mounts, worker_protocol.ENV_CACHE_DIR in env) == ([], [], False), role
        assert "fsGroup" not in pod(job)["securityContext"]


def test_no_cache_without_a_claim_or_for_a_model_on_a_volume():
    for job in both(make_cjob(), dataclasses.replace(CONFIG, cache_claim="")).values():
        assert cache_of(job)[0] == [] and worker_protocol.ENV_CACHE_DIR not in cache_of(job)[2]
    volume = {"claimName": "weights", "mountPath": "/models"}
    for job in both(make_cjob().with_model("file:///models/glm", volume=volume)).values():
        assert cache_of(job)[0] == []


def test_the_operator_learns_the_cache_from_its_environment():
    config = from_env({"KOMPRESS_CACHE_CLAIM": "kompress-model-cache", "KOMPRESS_CACHE_MAX_BYTES": "1000000000000"})
    assert (config.cache_claim, config.cache_max_bytes) == ("kompress-model-cache", 10**12)


def test_a_bad_cache_claim_name_is_refused_naming_the_field():
    with pytest.raises(Exception, match="claim_name|claimName"):
        api.parse(make_cjob().with_model("hf://org/m", cache={"claimName": "Not_A_Name"}).obj())
