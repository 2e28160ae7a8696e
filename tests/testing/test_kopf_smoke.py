"""A trivial Kopf operator runs against the emulated server the way it runs against a cluster: it watches,
adds its finalizer with a JSON patch guarded by a resourceVersion `test`, creates an owned child, patches
status, posts events, handles deletion, and the child is garbage-collected with its owner."""

from __future__ import annotations

import threading
import time

import kopf
import kubernetes
import pytest

from kompress_testing.apiserver import ADMIN_TOKEN
from kompress_testing.kopf_runner import KopfThread

from .conftest import JOBS, tiny_job

pytestmark = pytest.mark.integration


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_kopf_operator_creates_a_child_reports_status_and_cleans_up(apiserver):
    registry = kopf.OperatorRegistry()
    calls: dict[str, int] = {"create": 0, "delete": 0}
    lock = threading.Lock()
    batch = kubernetes.client.BatchV1Api(kubernetes.config.new_client_from_config(str(apiserver.kubeconfig)))

    @kopf.on.create("kompress.dev", "v1alpha1", "compressionjobs", registry=registry)
    def start(body, name, namespace, patch, **_):
        with lock:
            calls["create"] += 1
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{name}-worker"},
               "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "worker", "image": "kompress"}]}}}}
        kopf.adopt(job, owner=body)
        batch.create_namespaced_job(namespace, job)
        patch.status["phase"] = "Running"
        patch.status["children"] = {"workerJob": job["metadata"]["name"]}
        kopf.info(body, reason="WorkerCreated", message=f"created Job {job['metadata']['name']}")

    @kopf.on.delete("kompress.dev", "v1alpha1", "compressionjobs", registry=registry)
    def stop(**_):
        with lock:
            calls["delete"] += 1

    with KopfThread(registry, apiserver.url, ADMIN_TOKEN):
        apiserver.client.post(JOBS, tiny_job())
        job = wait_for(lambda: (obj := apiserver.client.get(f"{JOBS}/tiny-laptop")).get("status", {}).get("phase") == "Running" and obj)
        assert job["status"]["children"] == {"workerJob": "tiny-laptop-worker"}
        assert "kopf.zalando.org/KopfFinalizerMarker" in job["metadata"]["finalizers"]
        worker = apiserver.client.get("/apis/batch/v1/namespaces/default/jobs/tiny-laptop-worker")
        assert worker["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        events = wait_for(lambda: apiserver.client.get("/api/v1/namespaces/default/events",
                                                       fieldSelector="involvedObject.name=tiny-laptop")["items"])
        assert any(e["reason"] == "WorkerCreated" for e in events)

        apiserver.kubectl("delete", "compressionjob", "tiny-laptop", "--timeout=20s")
        wait_for(lambda: not apiserver.client.get(JOBS)["items"])
        wait_for(lambda: not apiserver.client.get("/apis/batch/v1/namespaces/default/jobs")["items"])
    assert calls == {"create": 1, "delete": 1}
    assert apiserver.call(lambda: apiserver.server.internal_errors) == []
