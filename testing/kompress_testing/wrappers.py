"""Fluent builders of Kubernetes objects for tests (jobset's pkg/util/testing/wrappers.go, in Python).

    make_cjob("tiny").with_preset("w4a16").with_gpus(2).suspended().obj()
    JobWrapper(manifest).created().failed("BackoffLimitExceeded").obj()
    pod_for(job).running(ip="127.0.0.1").obj()

Owns: CompressionJob, Job and Pod objects in the shape the API server returns, with the status a
Job controller and a kubelet would write. Tests of pure functions use them as they are; integration
tests write the same statuses through the API, playing the Job controller and the kubelet.
Must not: import the operator.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from kompress_api.worker_protocol import PlannerResult, WorkerResult

T0 = "2026-11-26T10:00:00Z"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


class CJobWrapper:
    def __init__(self, name: str, namespace: str, uid: str | None) -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "kompress.dev/v1alpha1",
            "kind": "CompressionJob",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()), "generation": 1, "creationTimestamp": T0, "resourceVersion": "1"},
            "spec": {
                "model": {"uri": "hf://org/tiny-moe"},
                "recipe": {"preset": "w4a16-w8a8"},
                "output": {"uri": "s3://models/tiny"},
            },
        }

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def manifest(self) -> dict[str, Any]:
        """What a user applies: no uid, generation, status."""
        obj = self.obj()
        obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]}
        obj.pop("status", None)
        return obj

    def with_spec(self, **fields: Any) -> CJobWrapper:
        _merge(self._obj["spec"], fields)
        return self

    def with_model(self, uri: str, **more: Any) -> CJobWrapper:
        return self.with_spec(model={"uri": uri, **more})

    def with_preset(self, preset: str) -> CJobWrapper:
        self._obj["spec"]["recipe"] = {"preset": preset}
        return self

    def with_hub_token(self, secret: str, key: str = "token") -> CJobWrapper:
        return self.with_spec(model={"huggingFace": {"tokenSecret": {"name": secret, "key": key}}})

    def with_s3_credentials(self, location: str, secret: str) -> CJobWrapper:
        return self.with_spec(**{location: {"s3": {"credentialsSecret": secret}}})

    def with_output(self, uri: str, **more: Any) -> CJobWrapper:
        return self.with_spec(output={"uri": uri, **more})

    def with_gpus(self, gpus: int) -> CJobWrapper:
        return self.with_spec(resources={"gpus": gpus})

    def with_resources(self, **resources: Any) -> CJobWrapper:
        return self.with_spec(resources=resources)

    def with_scheduling(self, **scheduling: Any) -> CJobWrapper:
        return self.with_spec(scheduling=scheduling)

    def with_queue(self, queue: str, priority: str | None = None) -> CJobWrapper:
        return self.with_scheduling(queueName=queue, **({"workloadPriorityClass": priority} if priority else {}))

    def suspended(self, value: bool = True) -> CJobWrapper:
        return self.with_spec(suspend=value)

    def with_generation(self, generation: int) -> CJobWrapper:
        self._obj["metadata"]["generation"] = generation
        return self

    def with_status(self, status: dict[str, Any]) -> CJobWrapper:
        self._obj["status"] = copy.deepcopy(status)
        return self

    def deleting(self) -> CJobWrapper:
        self._obj["metadata"]["deletionTimestamp"] = T0
        return self


def make_cjob(name: str = "tiny", namespace: str = "ml", uid: str | None = None) -> CJobWrapper:
    return CJobWrapper(name, namespace, uid)


class JobWrapper:
    """A batch/v1 Job as the Job controller leaves it."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self._obj = copy.deepcopy(manifest)
        self._obj.setdefault("status", {})

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def created(self, at: str = T0) -> JobWrapper:
        meta = self._obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", at)
        return self

    def started(self, at: str = T0, active: int = 1) -> JobWrapper:
        self._obj["status"].update({"startTime": at, "active": active})
        return self

    def counts(self, failed: int = 0, succeeded: int = 0, active: int = 0) -> JobWrapper:
        self._obj["status"].update({"failed": failed, "succeeded": succeeded, "active": active})
        return self

    def _condition(self, ctype: str, reason: str, message: str, at: str) -> JobWrapper:
        conds = self._obj["status"].setdefault("conditions", [])
        conds.append({"type": ctype, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at, "lastProbeTime": at})
        return self

    def complete(self, at: str = "2026-11-26T11:00:00Z") -> JobWrapper:
        self._obj["status"].update({"succeeded": 1, "active": 0, "completionTime": at})
        return self._condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", at)

    def failed(self, reason: str = "BackoffLimitExceeded", message: str = "Job has reached the specified backoff limit", at: str = "2026-11-26T11:00:00Z") -> JobWrapper:
        self._obj["status"].update({"active": 0})
        return self._condition("Failed", reason, message, at)

    def suspend(self, value: bool = True) -> JobWrapper:
        self._obj["spec"]["suspend"] = value
        return self

    def deleting(self) -> JobWrapper:
        self._obj["metadata"]["deletionTimestamp"] = T0
        return self


class PodWrapper:
    """A Pod of a Job, as the Job controller creates it and the scheduler and kubelet update it."""

    def __init__(self, pod: dict[str, Any]) -> None:
        self._obj = pod

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    @property
    def container(self) -> str:
        return self._obj["spec"]["containers"][0]["name"]

    def created_at(self, at: str) -> PodWrapper:
        self._obj["metadata"]["creationTimestamp"] = at
        return self

    def _status(self, **fields: Any) -> PodWrapper:
        self._obj["status"] = fields
        return self

    def unschedulable(self, message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.") -> PodWrapper:
        return self._status(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}])

    def waiting(self, reason: str, message: str = "") -> PodWrapper:
        return self._status(
            phase="Pending",
            conditions=[{"type": "PodScheduled", "status": "True"}],
            containerStatuses=[{"name": self.container, "ready": False, "restartCount": 0, "image": "", "imageID": "", "state": {"waiting": {"reason": reason, "message": message}}}],
        )

    def running(self, ip: str = "10.0.0.7", at: str = T0) -> PodWrapper:
        return self._status(
            phase="Running",
            podIP=ip,
            startTime=at,
            conditions=[{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
            containerStatuses=[{"name": self.container, "ready": True, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {"startedAt": at}}}],
        )

    def terminated(self, exit_code: int, message: str = "", reason: str | None = None, phase: str | None = None) -> PodWrapper:
        state = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"), "message": message, "startedAt": T0, "finishedAt": "2026-11-26T11:00:00Z"}
        return self._status(
            phase=phase or ("Succeeded" if exit_code == 0 else "Failed"),
            startTime=T0,
            containerStatuses=[{"name": self.container, "ready": False, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": state}}],
        )

    def succeeded(self, result: WorkerResult | PlannerResult | None = None) -> PodWrapper:
        return self.terminated(0, json.dumps(result.wire()) if result is not None else "")

    def failed(self, exit_code: int, result: WorkerResult | PlannerResult | str | None = None) -> PodWrapper:
        message = result if isinstance(result, str) else (json.dumps(result.wire()) if result is not None else "")
        return self.terminated(exit_code, message)

    def oom_killed(self) -> PodWrapper:
        return self.terminated(137, "", reason="OOMKilled")

    def evicted(self) -> PodWrapper:
        return self._status(phase="Failed", reason="Evicted", message="The node was low on resource: memory.", conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}])


def pod_for(job: dict[str, Any], suffix: str = "abcde", ip: str | None = None) -> PodWrapper:
    """The pod the Job controller would create from `job`'s template (status empty: just created)."""
    template = job["spec"]["template"]
    job_meta = job["metadata"]
    labels = dict(template.get("metadata", {}).get("labels") or {})
    labels.update({"batch.kubernetes.io/job-name": job_meta["name"], "job-name": job_meta["name"]})
    if job_meta.get("uid"):
        labels["batch.kubernetes.io/controller-uid"] = job_meta["uid"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job_meta['name']}-{suffix}",
            "namespace": job_meta.get("namespace"),
            "uid": str(uuid.uuid4()),
            "creationTimestamp": T0,
            "labels": labels,
            "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_meta["name"], "uid": job_meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": copy.deepcopy(template["spec"]),
        "status": {"phase": "Pending"},
    }
    return PodWrapper(pod)
