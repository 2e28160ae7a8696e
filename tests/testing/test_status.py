"""The /status subresource is isolated from the main resource, as with `subresources: {status: {}}`."""

from __future__ import annotations

import pytest

from kompress_testing.apiserver import ApiStatusError

from .conftest import JOBS, tiny_job

pytestmark = pytest.mark.integration


def test_create_drops_status(apiserver):
    job = tiny_job()
    job["status"] = {"phase": "Succeeded"}
    assert "status" not in apiserver.client.post(JOBS, job)


def test_writes_to_the_main_resource_ignore_status(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    apiserver.client.patch(f"{JOBS}/tiny-laptop/status", {"status": {"phase": "Running"}})
    patched = apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Succeeded"}})
    assert patched["status"] == {"phase": "Running"} and patched["metadata"]["labels"] == {"a": "b"}
    replaced = dict(patched, status={"phase": "Failed"})
    assert apiserver.client.put(f"{JOBS}/tiny-laptop", replaced)["status"] == {"phase": "Running"}


def test_writes_to_status_change_only_status(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    patched = apiserver.client.patch(f"{JOBS}/tiny-laptop/status", {
        "metadata": {"labels": {"sneaky": "yes"}, "finalizers": ["x/y"]},
        "spec": {"suspend": True},
        "status": {"phase": "Running", "observedGeneration": 1},
    })
    assert patched["status"] == {"phase": "Running", "observedGeneration": 1}
    assert patched["spec"] == created["spec"]
    assert "labels" not in patched["metadata"] and "finalizers" not in patched["metadata"]


def test_status_is_validated_and_pruned_against_the_schema(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.patch(f"{JOBS}/tiny-laptop/status", {"status": {"progress": {"percent": 140}}})
    assert refused.value.code == 422 and "status.progress.percent" in refused.value.message
    # An undeclared status field is pruned (Kopf's "Patching failed with inconsistencies" comes from this).
    pruned = apiserver.client.patch(f"{JOBS}/tiny-laptop/status", {"status": {"phase": "Running", "handlerState": {"x": 1}}},
                                    fieldValidation="Ignore")
    assert pruned["status"] == {"phase": "Running"}


def test_status_of_a_resource_without_the_subresource_is_not_found(apiserver):
    apiserver.client.post("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})
    with pytest.raises(ApiStatusError) as missing:
        apiserver.client.get("/api/v1/namespaces/default/configmaps/c/status")
    assert missing.value.code == 404


def test_get_status_returns_the_whole_object(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    got = apiserver.client.get(f"{JOBS}/tiny-laptop/status")
    assert got["kind"] == "CompressionJob" and got["spec"]["model"]
