"""The planning and worker Jobs: names, sizing, scheduling, credentials by reference, failure policy, Kueue."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from kompress_api import v1alpha1 as api
from kompress_api.exit_codes import non_retriable_codes
from kompress_api.worker_protocol import S3_ENV_PREFIX
from kompress_testing.wrappers import make_cjob

from kompress_operator import child_names, children, pod_access
from kompress_operator.config import OperatorConfig

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig(worker_image="registry.example/kompress-job:1.0", worker_service_account="kompress-worker")
UID = "0f3c9a2e-1111-4222-8333-444455556666"


def parse(wrapper):
    return api.parse(wrapper.obj())


def container(job):
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


def env_of(job):
    return {e["name"]: e for e in container(job).get("env", [])}


def worker(wrapper, plan=None, config=CONFIG):
    return children.build_worker_job(parse(wrapper), plan, config)


# --- names -------------------------------------------------------------------------------------


def test_child_names_derive_from_name_and_uid_so_a_restart_finds_them():
    cjob = parse(make_cjob("glm-air", uid=UID))
    assert child_names.plan_job_name(cjob) == "glm-air-0f3c9-plan"
    assert child_names.worker_job_name(cjob) == "glm-air-0f3c9-worker"
    assert children.build_worker_job(cjob, None, CONFIG)["metadata"]["name"] == child_names.worker_job_name(cjob)


def test_long_names_are_shortened_to_a_valid_job_name_and_stay_distinct():
    long = "a" * 200 + "-b"
    one = child_names.child_name(long, "11111-aaa", "worker")
    other = child_names.child_name(long, "22222-bbb", "worker")
    assert len(one) <= 63 and len(other) <= 63
    assert one != other
    assert one.endswith("-11111-worker") and not one.startswith("-")
    # no trailing dash or dot before the suffix, which would make an invalid name
    assert child_names.child_name("x" * 50 + "-.yyy", "abcde", "plan") == "x" * 50 + "-abcde-plan"


# --- both Jobs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("build", ["plan", "worker"])
def test_children_are_owned_labelled_and_valid_batch_v1_jobs(build):
    wrapper = make_cjob("tiny", uid=UID).with_hub_token("hf-token").with_s3_credentials("output", "s3-creds")
    cjob = parse(wrapper)
    job = children.build_plan_job(cjob, CONFIG) if build == "plan" else children.build_worker_job(cjob, None, CONFIG)
    # the real Kubernetes schema for batch/v1 Job, strict: no unknown fields, quantities as strings
    kubernetes_validate.validate(job, "1.32.0", strict=True)
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "kompress.dev/v1alpha1", "kind": "CompressionJob", "name": "tiny", "uid": UID, "controller": True, "blockOwnerDeletion": True}
    assert job["metadata"]["labels"][child_names.LABEL_OWNER_UID] == UID
    # pods carry the labels and the owner's name, so their events lead back to the CompressionJob
    template = job["spec"]["template"]["metadata"]
    assert template["labels"][child_names.LABEL_OWNER_UID] == UID
    assert template["annotations"][child_names.ANNOTATION_OWNER_NAME] == "tiny"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "kompress-worker"
    sc = container(job)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container(job)["terminationMessagePath"] == "/dev/termination-log"
    assert container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == non_retriable_codes()
    assert rules[1]["onExitCodes"]["containerName"] == container(job)["name"]


@pytest.mark.parametrize("build", ["plan", "worker"])
def test_secrets_reach_pods_only_by_reference(build):
    wrapper = (
        make_cjob(uid=UID)
        .with_hub_token("hf-token", "token")
        .with_s3_credentials("model", "model-creds")
        .with_s3_credentials("output", "out-creds")
        .with_spec(calibration={"uri": "s3://data/cal.jsonl", "s3": {"credentialsSecret": "cal-creds"}})
    )
    cjob = parse(wrapper)
    job = children.build_plan_job(cjob, CONFIG) if build == "plan" else children.build_worker_job(cjob, None, CONFIG)
    env = env_of(job)
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    env_from = {e["prefix"]: e["secretRef"]["name"] for e in container(job)["envFrom"]}
    if build == "plan":
        # planning reads config.json only: the model's credentials and no others
        assert env_from == {S3_ENV_PREFIX["model"]: "model-creds"}
    else:
        assert env_from == {S3_ENV_PREFIX["model"]: "model-creds", S3_ENV_PREFIX["calibration"]: "cal-creds", S3_ENV_PREFIX["output"]: "out-creds"}
    # the job document names the Secrets and holds no value; no ConfigMap is involved at all
    doc = json.loads(env["KOMPRESS_JOB"]["value"])
    assert doc["metadata"] == {"name": "tiny", "namespace": "ml", "uid": UID}
    assert doc["spec"]["model"]["huggingFace"]["tokenSecret"] == {"name": "hf-token", "key": "token"}
    assert api.CompressionJobSpec.model_validate(doc["spec"]) == cjob.spec
    assert "configMap" not in json.dumps(job)


def test_plan_job_is_cpu_only_same_image_and_short_lived():
    wrapper = make_cjob(uid=UID).with_scheduling(nodeSelector={"gpu": "h100"}, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}], runtimeClassName="nvidia")
    job = children.build_plan_job(parse(wrapper), CONFIG)
    c = container(job)
    assert c["image"] == CONFIG.worker_image
    assert c["command"] == ["kompress", "plan-pod"]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    assert "gpu" not in json.dumps(c["resources"])
    pod = job["spec"]["template"]["spec"]
    # it goes nowhere near the GPU nodes the worker is steered to
    assert not {"nodeSelector", "tolerations", "runtimeClassName", "affinity"} & set(pod)
    assert job["spec"]["ttlSecondsAfterFinished"] == CONFIG.plan_ttl_seconds
    assert "suspend" not in job["spec"]


def test_plan_job_mounts_a_model_volume_read_only():
    wrapper = make_cjob(uid=UID).with_model("file:///models/tiny", volume={"claimName": "models", "mountPath": "/models"})
    job = children.build_plan_job(parse(wrapper), CONFIG)
    assert container(job)["volumeMounts"] == [{"name": "model", "mountPath": "/models", "readOnly": True}]
    assert job["spec"]["template"]["spec"]["volumes"] == [{"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}]


# --- the worker Job --------------------------------------------------------------------------------


def test_worker_asks_for_four_gpus_by_default():
    job = worker(make_cjob(uid=UID))
    res = container(job)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "4"
    assert res["limits"]["cpu"] == res["requests"]["cpu"] == "32"
    assert env_of(job)["KOMPRESS_GPUS"]["value"] == "4"
    assert container(job)["command"] == ["kompress", "worker"]


def test_gpu_resource_name_comes_from_the_spec_else_the_operator():
    amd = OperatorConfig(gpu_resource_name="amd.com/gpu")
    assert "amd.com/gpu" in container(worker(make_cjob().with_gpus(2), config=amd))["resources"]["limits"]
    spec_says = make_cjob().with_resources(gpus=2, gpuResourceName="gpu.intel.com/i915")
    limits = container(worker(spec_says, config=amd))["resources"]["limits"]
    assert limits["gpu.intel.com/i915"] == "2" and "amd.com/gpu" not in limits


def test_zero_gpus_asks_for_none_and_at_least_two_cpus():
    res = container(worker(make_cjob().with_gpus(0)))["resources"]
    assert not any("gpu" in key for key in res["limits"])
    assert res["limits"]["cpu"] == "2"


def test_memory_and_scratch_come_from_the_plan_when_the_spec_is_silent():
    plan = api.PlanSummary(host_memory_bytes=229_000_000_000, disk_bytes=330 * 1024**3)
    job = worker(make_cjob(), plan=plan)
    res = container(job)["resources"]
    assert res["limits"]["memory"] == res["requests"]["memory"] == "214Gi"  # 229e9 B rounded up to whole GiB
    assert res["requests"]["ephemeral-storage"] == "330Gi"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {"sizeLimit": "330Gi"}}


def test_the_spec_wins_over_the_plan_and_small_figures_stay_readable():
    plan = api.PlanSummary(host_memory_bytes=50_000_000, disk_bytes=3 * 1024**3 + 1)
    res = container(worker(make_cjob().with_resources(memory="300Gi", cpu=12), plan=plan))["resources"]
    assert res["limits"]["memory"] == "300Gi" and res["limits"]["cpu"] == "12"
    assert res["requests"]["ephemeral-storage"] == "3073Mi"
    assert container(worker(make_cjob().with_resources(memory=123456789)))["resources"]["limits"]["memory"] == "123456789"


def test_without_spec_or_plan_figures_the_operator_defaults_apply():
    res = container(worker(make_cjob()))["resources"]
    assert res["limits"]["memory"] == CONFIG.default_memory
    assert res["requests"]["ephemeral-storage"] == CONFIG.default_scratch


def test_dev_shm_is_memory_backed_and_scratch_is_mounted():
    job = worker(make_cjob().with_resources(shm="32Gi", scratch="500Gi"))
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/scratch": "scratch"}
    assert env_of(job)["KOMPRESS_SCRATCH"]["value"] == "/scratch"


def test_dev_shm_is_sized_from_the_plan_unless_the_spec_says():
    plan = api.PlanSummary(host_memory_bytes=300 * 2**30, disk_bytes=400 * 2**30, shm_bytes=204 * 2**30)
    shm = lambda job: {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}["dshm"]["emptyDir"]["sizeLimit"]  # noqa: E731
    assert shm(worker(make_cjob(), plan)) == "204Gi"
    assert shm(worker(make_cjob().with_resources(shm="32Gi"), plan)) == "32Gi"
    assert shm(worker(make_cjob(), api.PlanSummary(host_memory_bytes=2**30))) == CONFIG.default_shm


def test_scratch_on_a_storage_class_is_a_generic_ephemeral_volume():
    job = worker(make_cjob().with_resources(scratch="600Gi", scratchStorageClass="fast-nvme"))
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["scratch"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim == {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-nvme", "resources": {"requests": {"storage": "600Gi"}}}
    # the disk is not on the node, so the node's ephemeral storage is not asked for
    assert "ephemeral-storage" not in container(job)["resources"]["requests"]
    kubernetes_validate.validate(job, "1.32.0", strict=True)


def test_scheduling_is_passed_through_unchanged():
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}]}}}
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
    wrapper = make_cjob().with_scheduling(
        nodeSelector={"pool": "gpu"},
        tolerations=tolerations,
        affinity=affinity,
        priorityClassName="batch-high",
        runtimeClassName="nvidia",
        serviceAccountName="irsa-s3",
        imagePullSecrets=["regcred"],
    )
    pod = worker(wrapper)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == tolerations
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "batch-high"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["serviceAccountName"] == "irsa-s3"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_model_and_output_volumes_are_mounted_output_read_write():
    wrapper = make_cjob().with_model("file:///models/glm", volume={"claimName": "models", "mountPath": "/models"}).with_output("file:///out/glm", volume={"claimName": "out", "mountPath": "/out"})
    job = worker(wrapper)
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["model"]["readOnly"] is True and mounts["output"]["readOnly"] is False
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "out", "readOnly": False}


def test_job_limits_come_from_the_spec():
    job = worker(make_cjob().with_spec(backoffLimit=5, activeDeadlineSeconds=7200, ttlSecondsAfterFinished=600))
    assert job["spec"]["backoffLimit"] == 5
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    plain = worker(make_cjob())
    assert plain["spec"]["backoffLimit"] == 2
    assert "activeDeadlineSeconds" not in plain["spec"] and "ttlSecondsAfterFinished" not in plain["spec"]


def test_progress_port_is_declared_and_the_worker_told_to_serve_it():
    job = worker(make_cjob())
    assert container(job)["ports"] == [{"name": "progress", "containerPort": 8080, "protocol": "TCP"}]
    assert env_of(job)["KOMPRESS_PROGRESS_BIND"]["value"] == "0.0.0.0:8080"


def test_image_comes_from_the_spec_else_the_operator():
    assert container(worker(make_cjob()))["image"] == CONFIG.worker_image
    assert container(worker(make_cjob().with_spec(image="mirror.example/kompress:2")))["image"] == "mirror.example/kompress:2"


def test_kueue_queue_labels_the_job_and_creates_it_suspended_for_admission():
    job = worker(make_cjob().with_queue("gpu-batch", priority="research"))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "research"
    assert job["spec"]["suspend"] is True
    plain = worker(make_cjob())
    assert plain["spec"]["suspend"] is False
    assert not any(key.startswith("kueue.x-k8s.io/") for key in plain["metadata"]["labels"])


def test_spec_suspend_creates_the_job_suspended():
    assert worker(make_cjob().suspended())["spec"]["suspend"] is True


def test_ownership_is_checked_by_uid():
    job = worker(make_cjob(uid=UID))
    assert child_names.is_owned_by(job, UID)
    assert not child_names.is_owned_by(job, "another-uid")
    assert not child_names.is_owned_by({"metadata": {}}, UID)


def test_quantities_round_up():
    assert children.bytes_to_quantity(1) == "1Mi"
    assert children.bytes_to_quantity(1024**2 + 1) == "2Mi"
    assert children.bytes_to_quantity(8 * 1024**3) == "8Gi"
    assert children.bytes_to_quantity(10 * 1024**3) == "10Gi"
    assert children.bytes_to_quantity(10 * 1024**3 + 1) == "11Gi"


# --- lm-eval task sources ----------------------------------------------------------------------


def _with_tasks(source):
    return make_cjob(uid=UID).with_spec(evaluation={"tasks": [{"name": "kompress_chat_mc"}], "taskSource": source})


def test_a_task_config_map_is_mounted_read_only_where_the_worker_reads_tasks():
    job = worker(_with_tasks({"configMap": "lm-eval-tasks"}))
    kubernetes_validate.validate(job, "1.32.0", strict=True)
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["tasks"] == {"name": "tasks", "mountPath": api.TASK_CONFIG_MAP_MOUNT, "readOnly": True}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tasks"] == {"name": "tasks", "configMap": {"name": "lm-eval-tasks"}}


def test_a_task_volume_is_mounted_read_only_even_when_the_spec_says_read_write():
    job = worker(_with_tasks({"volume": {"claimName": "evals", "mountPath": "/evals", "subPath": "lm-eval", "readOnly": False}}))
    kubernetes_validate.validate(job, "1.32.0", strict=True)
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["tasks"] == {"name": "tasks", "mountPath": "/evals", "readOnly": True, "subPath": "lm-eval"}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tasks"]["persistentVolumeClaim"] == {"claimName": "evals", "readOnly": True}


def test_an_s3_task_source_gets_its_own_credentials_by_reference_and_no_mount():
    job = worker(_with_tasks({"uri": "s3://evals/lm-eval", "s3": {"credentialsSecret": "evals-creds"}}))
    env_from = {e["prefix"]: e["secretRef"]["name"] for e in container(job)["envFrom"]}
    assert env_from == {S3_ENV_PREFIX["tasks"]: "evals-creds"}
    assert "tasks" not in {m["name"] for m in container(job)["volumeMounts"]}


def test_the_plan_job_gets_no_task_source():
    job = children.build_plan_job(parse(_with_tasks({"configMap": "lm-eval-tasks"})), CONFIG)
    pod = job["spec"]["template"]["spec"]
    assert all("configMap" not in v for v in pod.get("volumes", [])) and "tasks" not in {m["name"] for m in container(job).get("volumeMounts", [])}


# --- hf:// outputs and signing (issue 19) ----------------------------------------------------------


def hub_output_cjob(**output):
    return make_cjob(uid=UID).with_hub_token("hf-read", "token").with_spec(
        output={"uri": "hf://kompress/glm-w4a16", "huggingFace": {"endpoint": "https://hub.example", "tokenSecret": {"name": "hf-write", "key": "token"}}, **output}
    )


def test_an_hf_output_gets_its_write_token_by_reference_apart_from_the_models_token():
    job = worker(hub_output_cjob())
    env = env_of(job)
    assert env["KOMPRESS_OUTPUT_HF_TOKEN"] == {"name": "KOMPRESS_OUTPUT_HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-write", "key": "token"}}}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-read"  # the model's, read-only, unchanged
    assert "HF_ENDPOINT" not in env  # the output's endpoint is the spec's, never the model's mirror variable
    # the planner reads config.json only: no write token there
    assert "KOMPRESS_OUTPUT_HF_TOKEN" not in env_of(children.build_plan_job(parse(hub_output_cjob()), CONFIG))
    kubernetes_validate.validate(job, "1.32.0", strict=True)


@pytest.mark.parametrize("method", ["key", "certificate"])
def test_the_signing_key_is_mounted_read_only_from_its_secret_and_only_named_in_the_environment(method):
    job = worker(make_cjob(uid=UID).with_spec(output={"uri": "s3://models/glm", "signing": {"keySecret": "model-signing", "method": method}}))
    pod = job["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == pod_access.SIGNING_VOLUME]
    files = ["private-key.pem"] + (["certificate.pem", "certificate-chain.pem"] if method == "certificate" else [])
    assert volume["secret"] == {"secretName": "model-signing", "items": [{"key": f, "path": f} for f in files], "defaultMode": 0o440, "optional": True}
    [mount] = [m for m in container(job)["volumeMounts"] if m["name"] == pod_access.SIGNING_VOLUME]
    assert mount == {"name": pod_access.SIGNING_VOLUME, "mountPath": "/kompress/signing", "readOnly": True}
    assert env_of(job)["KOMPRESS_OUTPUT_SIGNING_DIR"] == {"name": "KOMPRESS_OUTPUT_SIGNING_DIR", "value": "/kompress/signing"}
    assert pod["securityContext"]["fsGroup"] == 65532  # the worker's group may read the 0440 files; others in the pod may not
    assert not any("signing" in (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name", "") for e in container(job)["env"])
    assert "model-signing" not in json.dumps(children.build_plan_job(parse(make_cjob(uid=UID).with_spec(output={"uri": "s3://models/glm", "signing": {"keySecret": "model-signing"}})), CONFIG)["spec"]["template"]["spec"].get("volumes", []))
    kubernetes_validate.validate(job, "1.32.0", strict=True)
# --- an oci:// output's registry Secret ----------------------------------------------------------


def _oci(**oci):
    return make_cjob(uid=UID).with_spec(output={"uri": "oci://registry.example:5000/models/tiny:w4a16", "oci": oci})


def test_an_oci_output_gets_its_registry_secret_as_a_read_only_file_never_as_a_value():
    job = worker(_oci(credentialsSecret="registry-push"))
    kubernetes_validate.validate(job, "1.32.0", strict=True)
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["oci-auth"] == {"name": "oci-auth", "mountPath": "/kompress/oci-auth", "readOnly": True}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["oci-auth"] == {"name": "oci-auth", "secret": {"secretName": "registry-push", "defaultMode": 0o444,
                                                                   "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]}}
    # the worker is told where the file is; no variable holds a credential, none comes from the Secret
    assert env_of(job)["KOMPRESS_OUTPUT_OCI_AUTH"] == {"name": "KOMPRESS_OUTPUT_OCI_AUTH", "value": "/kompress/oci-auth/.dockerconfigjson"}
    assert "registry-push" not in json.dumps(container(job).get("envFrom", [])) and "secretKeyRef" not in json.dumps(container(job)["env"])
    # planning never needs the registry
    plan = children.build_plan_job(parse(_oci(credentialsSecret="registry-push")), CONFIG)
    assert "volumes" not in plan["spec"]["template"]["spec"] and "KOMPRESS_OUTPUT_OCI_AUTH" not in env_of(plan)


def test_an_anonymous_oci_output_mounts_nothing():
    job = worker(_oci(insecure=True))
    assert "oci-auth" not in {m["name"] for m in container(job)["volumeMounts"]}
    assert "KOMPRESS_OUTPUT_OCI_AUTH" not in env_of(job)
