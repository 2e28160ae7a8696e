"""Deletion: finalizers and deletionTimestamp, propagation policies, garbage collection, namespaces, CRDs."""

from __future__ import annotations

import time

import pytest

from kompress_testing.apiserver import ApiStatusError

from .conftest import JOBS, tiny_job

pytestmark = pytest.mark.integration
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def gone(client, path: str, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.get(path)
        except ApiStatusError as exc:
            if exc.code == 404:
                return True
        time.sleep(0.02)
    return False


def owned_configmap(name: str, owner: dict, **extra) -> dict:
    ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"], **extra}
    return {"metadata": {"name": name, "ownerReferences": [ref]}, "data": {"k": "v"}}


def test_a_finalizer_holds_the_object_until_removed(apiserver):
    job = tiny_job()
    job["metadata"]["finalizers"] = ["kompress.dev/cleanup"]
    created = apiserver.client.post(JOBS, job)
    deleting = apiserver.client.delete(f"{JOBS}/tiny-laptop")
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == created["metadata"]["generation"] + 1
    assert apiserver.client.get(f"{JOBS}/tiny-laptop")["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"finalizers": ["kompress.dev/cleanup", "other/one"]}})
    assert "no new finalizers can be added if the object is being deleted" in refused.value.message
    apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"finalizers": None}})
    assert gone(apiserver.client, f"{JOBS}/tiny-laptop", timeout=0.1)


def test_delete_without_finalizers_answers_a_success_status(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    answer = apiserver.client.delete(f"{JOBS}/tiny-laptop")
    assert answer["kind"] == "Status" and answer["status"] == "Success"
    assert answer["details"] == {"name": "tiny-laptop", "group": "kompress.dev", "kind": "compressionjobs",
                                 "uid": created["metadata"]["uid"]}


PODS = "/api/v1/namespaces/default/pods"


def pod(name: str, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_a_pod_a_kubelet_runs_is_deleted_gracefully_and_a_pending_one_at_once(apiserver):
    apiserver.client.post(PODS, pod("unscheduled"))
    assert apiserver.client.delete(f"{PODS}/unscheduled")["status"] == "Success"

    apiserver.client.post(PODS, pod("running", nodeName="node-1", terminationGracePeriodSeconds=20))
    deleting = apiserver.client.delete(f"{PODS}/running")
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 20 and deleting["metadata"]["deletionTimestamp"]
    again = apiserver.client.delete(f"{PODS}/running", gracePeriodSeconds=5)
    assert again["metadata"]["deletionGracePeriodSeconds"] == 5, "a shorter grace period shortens the deletion"
    # The kubelet, once the containers have stopped, deletes it for good.
    assert apiserver.client.delete(f"{PODS}/running", gracePeriodSeconds=0)["status"] == "Success"
    assert gone(apiserver.client, f"{PODS}/running", timeout=0.1)

    apiserver.client.post(PODS, pod("finished", nodeName="node-1"))
    apiserver.client.patch(f"{PODS}/finished/status", {"status": {"phase": "Succeeded"}})
    assert apiserver.client.delete(f"{PODS}/finished")["status"] == "Success"


def test_delete_preconditions(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.delete(f"{JOBS}/tiny-laptop", {"preconditions": {"uid": "not-this-one"}})
    assert refused.value.code == 409 and "Precondition failed: UID in precondition: not-this-one" in refused.value.message


def test_background_propagation_collects_dependents(apiserver):
    owner = apiserver.client.post(JOBS, tiny_job())
    apiserver.client.post(CONFIGMAPS, owned_configmap("child", owner))
    apiserver.client.post(CONFIGMAPS, {"metadata": {"name": "unrelated"}})
    apiserver.client.delete(f"{JOBS}/tiny-laptop", {"propagationPolicy": "Background"})
    assert gone(apiserver.client, f"{CONFIGMAPS}/child")
    assert apiserver.client.get(f"{CONFIGMAPS}/unrelated")


def test_orphan_propagation_keeps_dependents_and_drops_their_owner_reference(apiserver):
    owner = apiserver.client.post(JOBS, tiny_job())
    apiserver.client.post(CONFIGMAPS, owned_configmap("child", owner))
    apiserver.client.delete(f"{JOBS}/tiny-laptop", {"propagationPolicy": "Orphan"})
    assert gone(apiserver.client, f"{JOBS}/tiny-laptop")
    assert "ownerReferences" not in apiserver.client.get(f"{CONFIGMAPS}/child")["metadata"]


def test_foreground_propagation_deletes_dependents_before_the_owner(apiserver):
    owner = apiserver.client.post(JOBS, tiny_job())
    child = owned_configmap("child", owner, blockOwnerDeletion=True)
    child["metadata"]["finalizers"] = ["test/hold"]
    apiserver.client.post(CONFIGMAPS, child)
    answer = apiserver.client.delete(f"{JOBS}/tiny-laptop", propagationPolicy="Foreground")
    assert "foregroundDeletion" in answer["metadata"]["finalizers"]
    time.sleep(0.2)
    # The owner waits for the child, which waits for its own finalizer.
    assert apiserver.client.get(f"{JOBS}/tiny-laptop")["metadata"]["deletionTimestamp"]
    assert apiserver.client.get(f"{CONFIGMAPS}/child")["metadata"]["deletionTimestamp"]
    apiserver.client.patch(f"{CONFIGMAPS}/child", {"metadata": {"finalizers": None}})
    assert gone(apiserver.client, f"{JOBS}/tiny-laptop")


def test_jobs_orphan_their_dependents_unless_told_otherwise(apiserver):
    job = apiserver.client.post("/apis/batch/v1/namespaces/default/jobs", {"metadata": {"name": "j"}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    job["apiVersion"], job["kind"] = "batch/v1", "Job"
    apiserver.client.post(CONFIGMAPS, owned_configmap("pod-like", job))
    apiserver.client.delete("/apis/batch/v1/namespaces/default/jobs/j")
    assert gone(apiserver.client, "/apis/batch/v1/namespaces/default/jobs/j")
    assert "ownerReferences" not in apiserver.client.get(f"{CONFIGMAPS}/pod-like")["metadata"]


def test_deleting_a_namespace_deletes_its_content_then_itself(apiserver):
    apiserver.client.post("/api/v1/namespaces", {"metadata": {"name": "ml"}})
    apiserver.client.post("/apis/kompress.dev/v1alpha1/namespaces/ml/compressionjobs", tiny_job())
    terminating = apiserver.client.delete("/api/v1/namespaces/ml")
    assert terminating["status"]["phase"] == "Terminating"
    assert gone(apiserver.client, "/api/v1/namespaces/ml")
    assert apiserver.client.get("/apis/kompress.dev/v1alpha1/compressionjobs")["items"] == []


def test_deleting_the_crd_deletes_its_objects_and_its_api(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    apiserver.client.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/compressionjobs.kompress.dev")
    assert gone(apiserver.client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/compressionjobs.kompress.dev")
    with pytest.raises(ApiStatusError) as missing:
        apiserver.client.get("/apis/kompress.dev/v1alpha1")
    assert missing.value.code == 404
