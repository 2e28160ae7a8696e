"""The objects the operator creates for a CompressionJob: the planning Job and the worker Job.

Owns: their names (deterministic from the parent's name and uid, so a restarted operator finds
rather than duplicates), labels, ownerReferences, pod specs, sizing from the spec or the plan, the
podFailurePolicy that turns the worker's exit codes into "fail now" or "retry", Kueue labels.
Must not: call the API, read a clock or the environment, or touch a Secret's value: credentials
reach pods only as secretKeyRef / envFrom references, or (an oci:// output's dockerconfigjson, the signing key of
spec.output.signing) a Secret volume.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kompress_api import v1alpha1 as api
from kompress_api import worker_protocol as wp
from kompress_api.exit_codes import non_retriable_codes

from kompress_operator import suspension
from kompress_operator.child_names import (
    ANNOTATION_OWNER_NAME,
    CONTAINER_NAME,
    LABEL_NAME,
    PLAN_CONTAINER_NAME,
    ROLE_PLAN,
    ROLE_WORKER,
    child_labels,
    owner_reference,
    parent_meta,
    plan_job_name,
    worker_job_name,
)
from kompress_operator.config import OperatorConfig

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

SHM_VOLUME = "dshm"
SCRATCH_VOLUME = "scratch"
MODEL_VOLUME = "model"
CACHE_VOLUME = "model-cache"
OUTPUT_VOLUME = "output"
TASKS_VOLUME = "tasks"
SIGNING_VOLUME = "signing-key"
OCI_AUTH_VOLUME = "oci-auth"

GIB = 1024**3
MIB = 1024**2


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


def bytes_to_quantity(n: int) -> str:
    """Whole GiB from 10 GiB up or when exact (readable in `kubectl describe`), else whole MiB; rounded up."""
    if n >= 10 * GIB or (n > 0 and n % GIB == 0):
        return f"{math.ceil(n / GIB)}Gi"
    return f"{max(1, math.ceil(n / MIB))}Mi"


def _quantity(value: api.Quantity | None) -> str | None:
    # kubernetes client 37 and the API server both want quantities as strings.
    return None if value is None else str(value)


def worker_resources(spec: api.CompressionJobSpec, plan: api.PlanSummary | None, config: OperatorConfig) -> dict[str, str]:
    """cpu, memory, scratch, shm and GPUs for the worker: the spec's, else the plan's, else defaults."""
    res = spec.resources
    plan = plan or api.PlanSummary()
    gpus = res.gpus
    return {
        "gpus": str(gpus),
        "gpu_resource": res.gpu_resource_name or config.gpu_resource_name,
        "cpu": _quantity(res.cpu) or str(max(2, 8 * gpus)),
        "memory": _quantity(res.memory) or (bytes_to_quantity(plan.host_memory_bytes) if plan.host_memory_bytes else config.default_memory),
        "scratch": _quantity(res.scratch) or (bytes_to_quantity(plan.disk_bytes) if plan.disk_bytes else config.default_scratch),
        "shm": _quantity(res.shm) or (bytes_to_quantity(plan.shm_bytes) if plan.shm_bytes else config.default_shm),
    }


# ---------------------------------------------------------------------------------------------
# What the pods share: the job document, credentials by reference, the security context
# ---------------------------------------------------------------------------------------------


def job_document(cjob: api.CompressionJob) -> str:
    """$KOMPRESS_JOB: name, namespace, uid and spec. The spec holds Secret names, never values."""
    meta = parent_meta(cjob)
    doc = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
        "spec": cjob.spec.wire(),
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def _hub_access(spec: api.CompressionJobSpec, locations: tuple[str, ...]) -> list[api.HubAccess]:
    return [hub for loc in locations if (hub := getattr(spec, loc).hugging_face) is not None]


def credential_env(spec: api.CompressionJobSpec, locations: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, envFrom) that hand the pod its credentials by reference only.

    The Hub token is one variable (HF_TOKEN): the model's Secret if it names one, else the
    calibration data's. S3 credentials arrive per location with the prefixes of worker_protocol.
    """
    env: list[dict[str, Any]] = []
    hubs = _hub_access(spec, tuple(loc for loc in locations if loc in ("model", "calibration")))
    token = next((hub.token_secret for hub in hubs if hub.token_secret is not None), None)
    if token is not None:
        env.append({"name": wp.ENV_HF_TOKEN, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    endpoint = next((hub.endpoint for hub in hubs if hub.endpoint), None)
    if endpoint:
        env.append({"name": wp.ENV_HF_ENDPOINT, "value": endpoint})
    # An hf:// output's write token is a variable of its own: never the model's read token, never sent to the model's mirror.
    output_hub = spec.output.hugging_face if "output" in locations and spec.output.uri.startswith("hf://") else None
    if output_hub is not None and output_hub.token_secret is not None:
        ref = output_hub.token_secret
        env.append({"name": wp.ENV_OUTPUT_HF_TOKEN, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env_from = []
    for loc in locations:
        s3 = _s3_access(spec, loc)
        if s3 is not None and s3.credentials_secret:
            env_from.append({"prefix": wp.S3_ENV_PREFIX[loc], "secretRef": {"name": s3.credentials_secret}})
    return env, env_from


def _s3_access(spec: api.CompressionJobSpec, location: str) -> api.S3Access | None:
    if location == "tasks":
        source = spec.evaluation.task_source
        return source.s3 if source is not None else None
    return getattr(spec, location).s3


def task_source_mounts(spec: api.CompressionJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) that give the worker spec.evaluation.taskSource: a ConfigMap at TASK_CONFIG_MAP_MOUNT or
    a claim at its mountPath, both read-only (lm-eval only reads them); an S3 prefix needs none (the worker downloads it)."""
    source = spec.evaluation.task_source
    if source is None or not spec.evaluation.enabled or not spec.evaluation.tasks:
        return [], []
    if source.config_map is not None:
        mount = {"name": TASKS_VOLUME, "mountPath": api.TASK_CONFIG_MAP_MOUNT, "readOnly": True}
        return [mount], [{"name": TASKS_VOLUME, "configMap": {"name": source.config_map}}]
    if source.volume is not None:
        return [_volume_mount(source.volume, TASKS_VOLUME, read_only=True)], [_pvc_volume(source.volume, TASKS_VOLUME, read_only=True)]
    return [], []


def signing_key(spec: api.CompressionJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes, env) that give the worker spec.output.signing's key: the Secret's signing files mounted
    read-only at SIGNING_DIR (the certificate files optional) and a variable naming the folder. The key stays in the
    Secret and the mounted files, never in an environment variable or an object the operator writes. Mode 0440 with the
    pod's fsGroup the worker's group: readable by the worker, by nobody else in the pod."""
    signing = spec.output.signing
    if signing is None:
        return [], [], []
    files = (wp.SIGNING_PRIVATE_KEY, wp.SIGNING_CERTIFICATE, wp.SIGNING_CERTIFICATE_CHAIN)
    mount = {"name": SIGNING_VOLUME, "mountPath": wp.SIGNING_DIR, "readOnly": True}
    items = [{"key": wp.SIGNING_PRIVATE_KEY, "path": wp.SIGNING_PRIVATE_KEY}]
    if signing.method == "certificate":
        items += [{"key": name, "path": name} for name in files[1:]]
    # optional: certificate-chain.pem may be absent, and a missing Secret or key is named by the worker in preflight
    # (AccessDenied, the Secret and the file), not left as a pod that never starts.
    volume = {"name": SIGNING_VOLUME, "secret": {"secretName": signing.key_secret, "items": items, "defaultMode": 0o440, "optional": True}}
    return [mount], [volume], [{"name": wp.ENV_OUTPUT_SIGNING_DIR, "value": wp.SIGNING_DIR}]
def oci_auth(spec: api.CompressionJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes, env) that give the worker an oci:// output's registry Secret: the dockerconfigjson mounted
    read-only at OCI_AUTH_DIR and a variable naming the file. The values stay in the Secret and the mounted file, never
    in an environment variable or an object the operator writes."""
    oci = spec.output.oci
    if oci is None or not oci.credentials_secret or not spec.output.uri.startswith("oci://"):
        return [], [], []
    mount = {"name": OCI_AUTH_VOLUME, "mountPath": wp.OCI_AUTH_DIR, "readOnly": True}
    volume = {"name": OCI_AUTH_VOLUME, "secret": {"secretName": oci.credentials_secret, "items": [{"key": wp.OCI_AUTH_KEY, "path": wp.OCI_AUTH_KEY}], "defaultMode": 0o444}}
    return [mount], [volume], [{"name": wp.ENV_OUTPUT_OCI_AUTH, "value": f"{wp.OCI_AUTH_DIR}/{wp.OCI_AUTH_KEY}"}]


def restricted_security_context() -> dict[str, Any]:
    """The container side of the Pod Security Standard "restricted"."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_failure_policy(container: str) -> dict[str, Any]:
    """Disruptions (eviction, preemption, node drain) don't count; bad input fails the Job at once.

    Any other failure (exit 1, 30, OOMKilled's 137, a crash) is retried up to backoffLimit.
    """
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In", "values": non_retriable_codes()}},
        ]
    }


def _volume_mount(ref: api.VolumeRef, volume: str, read_only: bool) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": volume, "mountPath": ref.mount_path, "readOnly": read_only}
    if ref.sub_path:
        mount["subPath"] = ref.sub_path
    return mount


def _pvc_volume(ref: api.VolumeRef, volume: str, read_only: bool) -> dict[str, Any]:
    return {"name": volume, "persistentVolumeClaim": {"claimName": ref.claim_name, "readOnly": read_only}}


def cache_claim(spec: api.CompressionJobSpec, config: OperatorConfig) -> str | None:
    """The model cache claim this job mounts: the spec's, else the operator's; none when disabled or for a volume folder."""
    setting = spec.model.cache
    if setting is not None and not setting.enabled:
        return None
    if api.model_uri_scheme(spec.model.uri) == "file":
        return None  # used in place, never cached
    return (setting.claim_name if setting is not None else None) or config.cache_claim or None


def cache_refusal(spec: api.CompressionJobSpec, config: OperatorConfig) -> str | None:
    """Why this job cannot run as written: it asks for the model cache (spec.model.cache.enabled true) and there is
    no claim to mount, neither its own nor the operator's. None when it can (a volume folder is never cached, so
    it never needs one)."""
    setting = spec.model.cache
    if setting is None or not setting.enabled or api.model_uri_scheme(spec.model.uri) == "file":
        return None
    if setting.claim_name or config.cache_claim:
        return None
    return (
        "spec.model.cache.enabled is true, but there is no model cache to use: spec.model.cache.claimName is not set and "
        "this operator has no default cache claim (chart cache.enabled with cache.existingClaim or cache.storageClass). "
        "Set spec.model.cache.claimName to a ReadWriteMany PersistentVolumeClaim in this namespace, have the chart's cache "
        "installed (docs/install.md, Model cache), or set spec.model.cache.enabled: false to download into the job's scratch"
    )


def with_cache(pod: dict[str, Any], container: dict[str, Any], spec: api.CompressionJobSpec, config: OperatorConfig) -> None:
    """Mount the model cache claim read-write, tell the worker where it is, and make the worker's UID's group own it.

    fsGroupChangePolicy OnRootMismatch: the kubelet re-owns the volume only when its root is not the group's yet,
    not every file of a terabyte cache at every pod start.
    """
    claim = cache_claim(spec, config)
    if claim is None:
        return
    container.setdefault("volumeMounts", []).append({"name": CACHE_VOLUME, "mountPath": wp.CACHE_DIR})
    pod.setdefault("volumes", []).append({"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    container["env"].append({"name": wp.ENV_CACHE_DIR, "value": wp.CACHE_DIR})
    container["env"].append({"name": wp.ENV_CACHE_CLAIM, "value": claim})
    if config.cache_max_bytes:
        container["env"].append({"name": wp.ENV_CACHE_MAX_BYTES, "value": str(config.cache_max_bytes)})
    pod["securityContext"] = pod["securityContext"] | {"fsGroup": wp.WORKER_UID, "fsGroupChangePolicy": "OnRootMismatch"}


def _service_account(spec: api.CompressionJobSpec, config: OperatorConfig) -> dict[str, Any]:
    name = (spec.scheduling.service_account_name if spec.scheduling else None) or config.worker_service_account
    return {"serviceAccountName": name} if name else {}


def _image_pull_secrets(spec: api.CompressionJobSpec) -> dict[str, Any]:
    names = spec.scheduling.image_pull_secrets if spec.scheduling else None
    return {"imagePullSecrets": [{"name": n} for n in names]} if names else {}


def _job(cjob: api.CompressionJob, role: str, name: str, pod_spec: dict[str, Any], job_spec: dict[str, Any], extra_labels: dict[str, str]) -> dict[str, Any]:
    labels = child_labels(cjob, role)
    annotations = {ANNOTATION_OWNER_NAME: parent_meta(cjob).name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": parent_meta(cjob).namespace,
            "labels": labels | extra_labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(cjob)],
        },
        "spec": {
            "completions": 1,
            "parallelism": 1,
            # A replacement pod starts only when the failed one is gone, so two never hold GPUs at once.
            "podReplacementPolicy": "Failed",
            **job_spec,
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def _base_pod_spec(config: OperatorConfig, spec: api.CompressionJobSpec) -> dict[str, Any]:
    return {
        # podFailurePolicy requires Never: the Job controller, not the kubelet, decides on retries.
        "restartPolicy": "Never",
        # The pods need no Kubernetes API: no token, no service links.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        **_service_account(spec, config),
        **_image_pull_secrets(spec),
    }


def _container(name: str, image: str, command: list[str], env: list[dict[str, Any]], env_from: list[dict[str, Any]], config: OperatorConfig) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": list(command),
        "env": env,
        "securityContext": restricted_security_context(),
        "terminationMessagePath": wp.TERMINATION_LOG,
        # A crash before the result is written still leaves the log's tail where the operator reads.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def _image(spec: api.CompressionJobSpec, config: OperatorConfig) -> str:
    return spec.image or config.worker_image


# ---------------------------------------------------------------------------------------------
# The planning Job
# ---------------------------------------------------------------------------------------------


def build_plan_job(cjob: api.CompressionJob, config: OperatorConfig) -> dict[str, Any]:
    """A CPU-only Job running `kompress plan-pod`: config.json only, with the model's credentials.

    It asks for no GPU and goes to no GPU node (no scheduling pass-through), so a mistake in the
    recipe costs a minute of CPU. It runs even while spec.suspend is true: a plan is free to see.
    """
    spec = cjob.spec
    credentials, env_from = credential_env(spec, ("model",))
    env = [
        {"name": wp.ENV_JOB, "value": job_document(cjob)},
        {"name": wp.ENV_TERMINATION_LOG, "value": wp.TERMINATION_LOG},
        {"name": wp.ENV_LOG_FORMAT, "value": "json"},
        *credentials,
    ]
    container = _container(PLAN_CONTAINER_NAME, _image(spec, config), wp.PLANNER_COMMAND, env, env_from, config)
    quantities = {"cpu": config.plan_cpu, "memory": config.plan_memory}
    container["resources"] = {"requests": dict(quantities), "limits": dict(quantities)}
    pod = _base_pod_spec(config, spec) | {"containers": [container]}
    if spec.model.volume is not None:
        container["volumeMounts"] = [_volume_mount(spec.model.volume, MODEL_VOLUME, read_only=True)]
        pod["volumes"] = [_pvc_volume(spec.model.volume, MODEL_VOLUME, read_only=True)]
    with_cache(pod, container, spec, config)
    job_spec = {
        "backoffLimit": 2,
        "activeDeadlineSeconds": config.plan_active_deadline_seconds,
        "ttlSecondsAfterFinished": config.plan_ttl_seconds,
        "podFailurePolicy": pod_failure_policy(PLAN_CONTAINER_NAME),
    }
    return _job(cjob, ROLE_PLAN, plan_job_name(cjob), pod, job_spec, {})


# ---------------------------------------------------------------------------------------------
# The worker Job
# ---------------------------------------------------------------------------------------------


def _scratch_volume(spec: api.CompressionJobSpec, size: str) -> dict[str, Any]:
    storage_class = spec.resources.scratch_storage_class
    if storage_class is None:
        return {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": size}}
    # A generic ephemeral volume: a PVC made with the pod and deleted with it, on the class given.
    claim = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": storage_class,
        "resources": {"requests": {"storage": size}},
    }
    return {"name": SCRATCH_VOLUME, "ephemeral": {"volumeClaimTemplate": {"metadata": {"labels": {LABEL_NAME: "kompress"}}, "spec": claim}}}


def _scheduling(spec: api.CompressionJobSpec) -> dict[str, Any]:
    sched = spec.scheduling
    if sched is None:
        return {}
    passed = {
        "nodeSelector": sched.node_selector,
        "tolerations": [t.wire() for t in sched.tolerations] if sched.tolerations else None,
        "affinity": sched.affinity.wire() if sched.affinity else None,
        "priorityClassName": sched.priority_class_name,
        "runtimeClassName": sched.runtime_class_name,
    }
    return {key: value for key, value in passed.items() if value}


def kueue_labels(spec: api.CompressionJobSpec) -> dict[str, str]:
    sched = spec.scheduling
    if sched is None or not sched.queue_name:
        return {}
    labels = {KUEUE_QUEUE_LABEL: sched.queue_name}
    if sched.workload_priority_class:
        labels[KUEUE_PRIORITY_LABEL] = sched.workload_priority_class
    return labels


def build_worker_job(cjob: api.CompressionJob, plan: api.PlanSummary | None, config: OperatorConfig) -> dict[str, Any]:
    """The GPU Job running `kompress worker`, sized from the spec or, where it is silent, the plan."""
    spec = cjob.spec
    sizes = worker_resources(spec, plan, config)
    credentials, env_from = credential_env(spec, ("model", "calibration", "output", *(("tasks",) if spec.evaluation.tasks else ())))
    env = [
        {"name": wp.ENV_JOB, "value": job_document(cjob)},
        {"name": wp.ENV_GPUS, "value": sizes["gpus"]},
        {"name": wp.ENV_SCRATCH_DIR, "value": wp.SCRATCH_DIR},
        {"name": wp.ENV_PROGRESS_BIND, "value": f"0.0.0.0:{config.progress_port}"},
        {"name": wp.ENV_TERMINATION_LOG, "value": wp.TERMINATION_LOG},
        {"name": wp.ENV_LOG_FORMAT, "value": "json"},
        *credentials,
    ]
    container = _container(CONTAINER_NAME, _image(spec, config), wp.WORKER_COMMAND, env, env_from, config)
    limits = {"cpu": sizes["cpu"], "memory": sizes["memory"]}
    if spec.resources.gpus > 0:
        limits[sizes["gpu_resource"]] = sizes["gpus"]
    requests = {"cpu": sizes["cpu"], "memory": sizes["memory"]}
    if spec.resources.scratch_storage_class is None:
        # The emptyDir lives on the node's disk: ask the scheduler for a node that has the room.
        requests["ephemeral-storage"] = sizes["scratch"]
    container["resources"] = {"requests": requests, "limits": limits}
    container["ports"] = [{"name": "progress", "containerPort": config.progress_port, "protocol": "TCP"}]

    mounts = [{"name": SHM_VOLUME, "mountPath": wp.SHM_DIR}, {"name": SCRATCH_VOLUME, "mountPath": wp.SCRATCH_DIR}]
    volumes = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": sizes["shm"]}}, _scratch_volume(spec, sizes["scratch"])]
    if spec.model.volume is not None:
        mounts.append(_volume_mount(spec.model.volume, MODEL_VOLUME, read_only=spec.model.volume.read_only))
        volumes.append(_pvc_volume(spec.model.volume, MODEL_VOLUME, read_only=spec.model.volume.read_only))
    if spec.output.volume is not None:
        # The output is written, whatever read_only says.
        mounts.append(_volume_mount(spec.output.volume, OUTPUT_VOLUME, read_only=False))
        volumes.append(_pvc_volume(spec.output.volume, OUTPUT_VOLUME, read_only=False))
    task_mounts, task_volumes = task_source_mounts(spec)
    mounts += task_mounts
    volumes += task_volumes
    signing_mounts, signing_volumes, signing_env = signing_key(spec)
    mounts += signing_mounts
    volumes += signing_volumes
    container["env"] += signing_env
    oci_mounts, oci_volumes, oci_env = oci_auth(spec)
    mounts += oci_mounts
    volumes += oci_volumes
    container["env"] += oci_env
    container["volumeMounts"] = mounts

    pod = _base_pod_spec(config, spec) | _scheduling(spec) | {"containers": [container], "volumes": volumes}
    if signing_volumes:
        pod["securityContext"] = pod["securityContext"] | {"fsGroup": wp.WORKER_UID}
    with_cache(pod, container, spec, config)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": pod_failure_policy(CONTAINER_NAME),
        # spec.suspend, or for Kueue always (it admits a Job by un-suspending it): suspension.py.
        "suspend": suspension.of(spec).created_suspended(spec),
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return _job(cjob, ROLE_WORKER, worker_job_name(cjob), pod, job_spec, kueue_labels(spec))
