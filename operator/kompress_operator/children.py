"""The objects the operator creates for a CompressionJob: the planning Job and the worker Job, as manifests.

Owns: the Job and pod specs (restartPolicy, no service account token, the restricted security contexts, the
container's env and command), sizing from the spec or the plan (`worker_resources`), the worker's shm and scratch
volumes, the podFailurePolicy that turns the worker's exit codes into "fail now" or "retry", the scheduling
pass-through and Kueue labels. Names, labels and ownerReferences come from child_names.py; credentials, claims and
the model cache from pod_access.py.
Must not: call the API, read a clock or the environment, or touch a Secret's value (pod_access.py hands pods their
credentials by reference only).
"""

from __future__ import annotations

import json
import math
from typing import Any

from kompress_api import v1alpha1 as api
from kompress_api import worker_protocol
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
from kompress_operator.pod_access import (
    MODEL_VOLUME,
    OUTPUT_VOLUME,
    SCRATCH_VOLUME,
    SHM_VOLUME,
    credential_env,
    oci_auth,
    pvc_volume,
    signing_key,
    task_source_mounts,
    volume_mount,
    with_cache,
)

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

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
# What the pods share: the job document, the security context, the failure policy
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
        "terminationMessagePath": worker_protocol.TERMINATION_LOG,
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
        {"name": worker_protocol.ENV_JOB, "value": job_document(cjob)},
        {"name": worker_protocol.ENV_TERMINATION_LOG, "value": worker_protocol.TERMINATION_LOG},
        {"name": worker_protocol.ENV_LOG_FORMAT, "value": "json"},
        *credentials,
    ]
    container = _container(PLAN_CONTAINER_NAME, _image(spec, config), worker_protocol.PLANNER_COMMAND, env, env_from, config)
    quantities = {"cpu": config.plan_cpu, "memory": config.plan_memory}
    container["resources"] = {"requests": dict(quantities), "limits": dict(quantities)}
    pod = _base_pod_spec(config, spec) | {"containers": [container]}
    if spec.model.volume is not None:
        container["volumeMounts"] = [volume_mount(spec.model.volume, MODEL_VOLUME, read_only=True)]
        pod["volumes"] = [pvc_volume(spec.model.volume, MODEL_VOLUME, read_only=True)]
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
        {"name": worker_protocol.ENV_JOB, "value": job_document(cjob)},
        {"name": worker_protocol.ENV_GPUS, "value": sizes["gpus"]},
        {"name": worker_protocol.ENV_SCRATCH_DIR, "value": worker_protocol.SCRATCH_DIR},
        {"name": worker_protocol.ENV_PROGRESS_BIND, "value": f"0.0.0.0:{config.progress_port}"},
        {"name": worker_protocol.ENV_TERMINATION_LOG, "value": worker_protocol.TERMINATION_LOG},
        {"name": worker_protocol.ENV_LOG_FORMAT, "value": "json"},
        *credentials,
    ]
    container = _container(CONTAINER_NAME, _image(spec, config), worker_protocol.WORKER_COMMAND, env, env_from, config)
    limits = {"cpu": sizes["cpu"], "memory": sizes["memory"]}
    if spec.resources.gpus > 0:
        limits[sizes["gpu_resource"]] = sizes["gpus"]
    requests = {"cpu": sizes["cpu"], "memory": sizes["memory"]}
    if spec.resources.scratch_storage_class is None:
        # The emptyDir lives on the node's disk: ask the scheduler for a node that has the room.
        requests["ephemeral-storage"] = sizes["scratch"]
    container["resources"] = {"requests": requests, "limits": limits}
    container["ports"] = [{"name": "progress", "containerPort": config.progress_port, "protocol": "TCP"}]

    mounts = [{"name": SHM_VOLUME, "mountPath": worker_protocol.SHM_DIR}, {"name": SCRATCH_VOLUME, "mountPath": worker_protocol.SCRATCH_DIR}]
    volumes = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": sizes["shm"]}}, _scratch_volume(spec, sizes["scratch"])]
    if spec.model.volume is not None:
        mounts.append(volume_mount(spec.model.volume, MODEL_VOLUME, read_only=spec.model.volume.read_only))
        volumes.append(pvc_volume(spec.model.volume, MODEL_VOLUME, read_only=spec.model.volume.read_only))
    if spec.output.volume is not None:
        # The output is written, whatever read_only says.
        mounts.append(volume_mount(spec.output.volume, OUTPUT_VOLUME, read_only=False))
        volumes.append(pvc_volume(spec.output.volume, OUTPUT_VOLUME, read_only=False))
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
        pod["securityContext"] = pod["securityContext"] | {"fsGroup": worker_protocol.WORKER_UID}
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
