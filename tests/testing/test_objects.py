"""Writes as a real API server makes them: identity and versions, conflicts, PUT, the patch types."""

from __future__ import annotations

import pytest

from kompress_testing.apiserver import ApiStatusError

from .conftest import JOBS, WIDGETS, tiny_job, widget

pytestmark = pytest.mark.integration


def test_create_fills_identity_versions_and_namespace_from_the_url(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    meta = created["metadata"]
    assert meta["namespace"] == "default"
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0


def test_resource_version_grows_with_every_write_across_resources(apiserver):
    first = apiserver.client.post(JOBS, tiny_job("a"))
    secret = apiserver.client.post("/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    second = apiserver.client.post(JOBS, tiny_job("b"))
    versions = [int(o["metadata"]["resourceVersion"]) for o in (first, secret, second)]
    assert versions == sorted(versions) and len(set(versions)) == 3


def test_generate_name_gives_a_unique_name(apiserver):
    job = tiny_job()
    job["metadata"] = {"generateName": "tiny-"}
    names = {apiserver.client.post(JOBS, job)["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3 and all(name.startswith("tiny-") and len(name) == 10 for name in names)


def test_a_name_is_required(apiserver):
    job = tiny_job()
    job["metadata"] = {}
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.post(JOBS, job)
    assert refused.value.code == 422
    assert "metadata.name: Required value: name or generateName is required" in refused.value.message


def test_creating_an_existing_object_is_a_conflict(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.post(JOBS, tiny_job())
    assert (refused.value.code, refused.value.reason) == (409, "AlreadyExists")
    assert refused.value.message == 'compressionjobs.kompress.dev "tiny-laptop" already exists'


def test_namespace_must_exist(apiserver):
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.post("/apis/kompress.dev/v1alpha1/namespaces/nowhere/compressionjobs", tiny_job())
    assert (refused.value.code, refused.value.message) == (404, 'namespaces "nowhere" not found')


def test_put_replaces_and_a_stale_resource_version_is_a_conflict(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    job = dict(created)
    job["metadata"] = dict(created["metadata"], labels={"team": "ml"})
    updated = apiserver.client.put(f"{JOBS}/tiny-laptop", job)
    assert updated["metadata"]["labels"] == {"team": "ml"}
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(ApiStatusError) as stale:
        apiserver.client.put(f"{JOBS}/tiny-laptop", job)  # still carries the old resourceVersion
    assert (stale.value.code, stale.value.reason) == (409, "Conflict")
    assert "the object has been modified; please apply your changes to the latest version and try again" in stale.value.message


def test_put_of_a_custom_resource_needs_a_resource_version(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    del created["metadata"]["resourceVersion"]
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.put(f"{JOBS}/tiny-laptop", created)
    assert refused.value.code == 422
    assert "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update" in refused.value.message


def test_patch_carrying_a_stale_resource_version_is_a_conflict(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(ApiStatusError) as stale:
        apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"],
                                                                    "labels": {"a": "2"}}})
    assert stale.value.code == 409


def test_generation_counts_spec_changes_only(widgets):
    created = widgets.client.post(WIDGETS, widget())
    assert created["metadata"]["generation"] == 1
    labelled = widgets.client.patch(f"{WIDGETS}/w1", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    status = widgets.client.patch(f"{WIDGETS}/w1/status", {"status": {"phase": "Ready"}})
    assert status["metadata"]["generation"] == 1
    grown = widgets.client.patch(f"{WIDGETS}/w1", {"spec": {"size": 2}})
    assert grown["metadata"]["generation"] == 2


def test_a_write_that_changes_nothing_keeps_the_resource_version(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    same = apiserver.client.patch(f"{JOBS}/tiny-laptop", {"spec": {"suspend": False}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_json_patch_with_a_failing_test_is_422_not_500(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.patch(f"{JOBS}/tiny-laptop", [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["kompress.dev/cleanup"]},
        ], patch_type="json")
    assert (refused.value.code, refused.value.reason) == (422, "Invalid")
    assert "testing value /metadata/resourceVersion failed" in refused.value.message


def test_json_patch_with_a_passing_test_applies(apiserver):
    created = apiserver.client.post(JOBS, tiny_job())
    patched = apiserver.client.patch(f"{JOBS}/tiny-laptop", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": created["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": ["kompress.dev/cleanup"]},
    ], patch_type="json")
    assert patched["metadata"]["finalizers"] == ["kompress.dev/cleanup"]


def test_merge_patch_deletes_with_null_and_replaces_lists(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x/one", "x/two"]}})
    patched = apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"labels": {"a": None}, "finalizers": ["x/three"]}})
    assert patched["metadata"]["labels"] == {"b": "2"}
    assert patched["metadata"]["finalizers"] == ["x/three"]


def test_strategic_merge_patch_is_refused_for_custom_resources(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.patch(f"{JOBS}/tiny-laptop", {"spec": {"suspend": True}}, patch_type="strategic")
    assert refused.value.code == 415


def test_strategic_merge_patch_merges_lists_by_their_keys_for_built_ins(apiserver):
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                      "containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                                     {"name": "sidecar", "image": "side:1"}]}}}}
    apiserver.client.post("/apis/apps/v1/namespaces/default/deployments", deployment)
    patched = apiserver.client.patch("/apis/apps/v1/namespaces/default/deployments/web", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}]}}}}, patch_type="strategic")
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("app", "app:2"), ("sidecar", "side:1")]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]


def test_server_side_apply_creates_then_merges(apiserver):
    job = tiny_job()
    created = apiserver.client.request("PATCH", f"{JOBS}/tiny-laptop", job, params={"fieldManager": "me"},
                                       content_type="application/apply-patch+yaml")
    assert created["metadata"]["uid"]
    job["metadata"]["labels"] = {"applied": "twice"}
    again = apiserver.client.request("PATCH", f"{JOBS}/tiny-laptop", job, params={"fieldManager": "me"},
                                     content_type="application/apply-patch+yaml")
    assert again["metadata"]["labels"] == {"applied": "twice"} and again["metadata"]["uid"] == created["metadata"]["uid"]


def test_secret_string_data_is_stored_as_base64_data(apiserver):
    created = apiserver.client.post("/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}, "stringData": {"token": "abc"}})
    assert created["data"] == {"token": "YWJj"} and "stringData" not in created and created["type"] == "Opaque"


def test_dry_run_validates_without_storing(apiserver):
    created = apiserver.client.post(JOBS, tiny_job(), dryRun="All")
    assert created["spec"]["backoffLimit"] == 2  # defaulted as for real
    with pytest.raises(ApiStatusError):
        apiserver.client.get(f"{JOBS}/tiny-laptop")


def test_list_has_a_kind_and_a_resource_version_and_built_in_items_do_not_repeat_kind(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    jobs = apiserver.client.get(JOBS)
    assert jobs["kind"] == "CompressionJobList" and int(jobs["metadata"]["resourceVersion"]) > 0
    assert jobs["items"][0]["kind"] == "CompressionJob"
    namespaces = apiserver.client.get("/api/v1/namespaces")
    assert namespaces["kind"] == "NamespaceList" and "kind" not in namespaces["items"][0]


def test_list_pages_with_limit_and_continue(apiserver):
    for name in ("a", "b", "c"):
        apiserver.client.post(JOBS, tiny_job(name))
    first = apiserver.client.get(JOBS, limit=2)
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    rest = apiserver.client.get(JOBS, limit=2, **{"continue": first["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"] and "continue" not in rest["metadata"]


def test_label_and_field_selectors_filter_lists(apiserver):
    apiserver.client.post(JOBS, tiny_job("a", team="ml"))
    apiserver.client.post(JOBS, tiny_job("b", team="infra"))
    apiserver.client.post(JOBS, tiny_job("c"))
    names = lambda **q: [i["metadata"]["name"] for i in apiserver.client.get(JOBS, **q)["items"]]  # noqa: E731
    assert names(labelSelector="team=ml") == ["a"]
    assert names(labelSelector="team in (ml,infra)") == ["a", "b"]
    assert names(labelSelector="team!=ml") == ["b", "c"]
    assert names(labelSelector="!team") == ["c"]
    assert names(fieldSelector="metadata.name=b") == ["b"]
    assert names(fieldSelector="metadata.namespace=default,metadata.name!=a") == ["b", "c"]
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.get(JOBS, fieldSelector="spec.suspend=true")
    assert (refused.value.code, refused.value.message) == (400, "field label not supported: spec.suspend")


def test_jobs_get_a_selector_and_need_a_restart_policy(apiserver):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client.post("/apis/batch/v1/namespaces/default/jobs", job)
    assert 'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"' in refused.value.message
    job["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    created = apiserver.client.post("/apis/batch/v1/namespaces/default/jobs", job)
    uid = created["metadata"]["uid"]
    assert created["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert created["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "j"
    assert created["spec"]["backoffLimit"] == 6


def test_kmock_reactions_answer_first_for_fault_injection(apiserver):
    import kmock

    apiserver.client.post(JOBS, tiny_job())
    jobs = kmock.resource("kompress.dev", "v1alpha1", "compressionjobs")
    apiserver.call(lambda: apiserver.server["patch", jobs][:1] << 503)
    with pytest.raises(ApiStatusError) as failed:
        apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"labels": {"a": "b"}}})
    assert failed.value.code == 503
    assert "labels" not in apiserver.client.get(f"{JOBS}/tiny-laptop")["metadata"]  # the emulator never saw it
    assert apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"labels": {"a": "b"}}})["metadata"]["labels"] == {"a": "b"}


def test_unknown_fields_warn_by_default_and_are_pruned(apiserver):
    job = tiny_job()
    job["spec"]["colour"] = "blue"
    response = apiserver.client.session.post(apiserver.url + JOBS, json=job)
    assert response.status_code == 201
    assert response.headers["Warning"] == '299 - "unknown field \\"spec.colour\\""'
    assert "colour" not in response.json()["spec"]


def test_objects_keep_their_history_for_kmock_style_assertions(apiserver):
    apiserver.client.post(JOBS, tiny_job())
    apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"labels": {"a": "b"}}})
    apiserver.client.delete(f"{JOBS}/tiny-laptop")
    history = apiserver.call(lambda: list(apiserver.server.objects["kompress.dev/v1alpha1/compressionjobs", "default", "tiny-laptop"].history))
    assert len(history) == 3 and history[-1] is None  # created, labelled, deleted
    assert history[1] >= {"metadata": {"labels": {"a": "b"}}}
