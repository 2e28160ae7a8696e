"""Discovery, version and OpenAPI documents, and a CRD's resource appearing in them when it is created."""

from __future__ import annotations

import copy

import pytest

from kompress_testing.apiserver import ApiStatusError

from .conftest import WIDGET_CRD

pytestmark = pytest.mark.integration


def test_core_group_version_is_v1(apiserver):
    assert apiserver.client.get("/api")["versions"] == ["v1"]
    core = apiserver.client.get("/api/v1")
    assert (core["kind"], core["groupVersion"]) == ("APIResourceList", "v1")
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert (pods["kind"], pods["namespaced"], pods["shortNames"]) == ("Pod", True, ["po"])
    assert any(r["name"] == "pods/status" for r in core["resources"])


def test_group_list_and_group_documents(apiserver):
    groups = {g["name"]: g for g in apiserver.client.get("/apis")["groups"]}
    assert groups["kompress.dev"]["preferredVersion"] == {"groupVersion": "kompress.dev/v1alpha1", "version": "v1alpha1"}
    assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
    assert {"batch", "rbac.authorization.k8s.io", "events.k8s.io", "coordination.k8s.io"} <= set(groups)
    assert "gateway.networking.k8s.io" not in groups  # in KMock's k3s bundle, not in kube-apiserver
    assert apiserver.client.get("/apis/batch")["kind"] == "APIGroup"


@pytest.mark.apiserver(crd=False)
def test_creating_a_crd_serves_its_resource_with_names_and_subresources(apiserver):
    with pytest.raises(ApiStatusError):
        apiserver.client.get("/apis/example.dev/v1")
    created = apiserver.apply_crd(copy.deepcopy(WIDGET_CRD))
    assert {c["type"]: c["status"] for c in created["status"]["conditions"]} == {"NamesAccepted": "True", "Established": "True"}
    resources = {r["name"]: r for r in apiserver.client.get("/apis/example.dev/v1")["resources"]}
    assert set(resources) == {"widgets", "widgets/status"}
    widgets = resources["widgets"]
    assert (widgets["kind"], widgets["singularName"], widgets["shortNames"], widgets["categories"]) == (
        "Widget", "widget", ["wdg"], ["examples"])
    assert widgets["namespaced"] is True and "watch" in widgets["verbs"]


def test_kompress_crd_is_served_as_generated(apiserver):
    resources = {r["name"]: r for r in apiserver.client.get("/apis/kompress.dev/v1alpha1")["resources"]}
    assert resources["compressionjobs"]["shortNames"] == ["cjob", "kcj"]
    assert resources["compressionjobs"]["categories"] == ["kompress"]
    assert "compressionjobs/status" in resources


def test_an_invalid_crd_is_refused(apiserver):
    broken = copy.deepcopy(WIDGET_CRD)
    broken["metadata"]["name"] = "gadgets.example.dev"
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = [{"rule": "self.spec.size >"}]
    with pytest.raises(ApiStatusError) as refused:
        apiserver.apply_crd(broken)
    assert refused.value.code == 422
    assert "metadata.name" in refused.value.message and "compilation failed" in refused.value.message


def test_version_and_health(apiserver):
    assert apiserver.client.get("/version")["gitVersion"].startswith("v1.32")
    assert apiserver.client.get("/healthz") == "ok"


def test_openapi_v3_advertises_server_side_field_validation_and_the_crd_schema(apiserver):
    index = apiserver.client.get("/openapi/v3")["paths"]
    url = index["apis/kompress.dev/v1alpha1"]["serverRelativeURL"]
    assert "?hash=" in url
    document = apiserver.client.get(url.split("?")[0])
    item = document["paths"]["/apis/kompress.dev/v1alpha1/namespaces/{namespace}/compressionjobs/{name}"]
    assert item["patch"]["x-kubernetes-group-version-kind"] == {"group": "kompress.dev", "version": "v1alpha1", "kind": "CompressionJob"}
    assert "fieldValidation" in {p["name"] for p in item["patch"]["parameters"]}
    schema = document["components"]["schemas"]["dev.kompress.v1alpha1.CompressionJob"]
    assert "recipe" in schema["properties"]["spec"]["properties"]


def test_unknown_urls_are_404_in_kubernetes_format(apiserver):
    with pytest.raises(ApiStatusError) as missing:
        apiserver.client.get("/apis/nothing.example/v1/things")
    assert (missing.value.code, missing.value.status["kind"]) == (404, "Status")
