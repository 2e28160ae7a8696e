"""The tests' Kubernetes is the real one: kube-apiserver at the version testing/cluster/go.mod pins, with
real authentication and RBAC, and no emulated server left in the tree."""

from __future__ import annotations

import importlib.util
import json

import pytest

from kompress_testing.cluster.build import kubernetes_version
from kompress_testing.cluster.client import ApiStatusError

pytestmark = pytest.mark.integration


def test_kubectl_version_reports_the_pinned_kube_apiserver(apiserver):
    versions = json.loads(apiserver.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == kubernetes_version() == "v1.35.4"
    assert versions["serverVersion"]["gitTreeState"] == "clean"


def test_no_emulated_api_server_remains():
    assert importlib.util.find_spec("kompress_testing.apiserver") is None
    assert importlib.util.find_spec("kompress_testing.crdschema") is None


def test_authentication_and_rbac_are_real(apiserver):
    # An unknown token is refused by authentication (401); a real token of a ServiceAccount without any binding
    # is authenticated and then refused by RBAC (403), in Kubernetes' words.
    with pytest.raises(ApiStatusError) as unknown:
        apiserver.client_for("not-a-token").get(apiserver.path("pods", api_version="v1"))
    assert unknown.value.code == 401
    token = apiserver.service_account_token(apiserver.namespace, "nobody")
    with pytest.raises(ApiStatusError) as refused:
        apiserver.client_for(token).get(apiserver.path("pods", api_version="v1"))
    assert refused.value.code == 403
    user = f"system:serviceaccount:{apiserver.namespace}:nobody"
    assert f'User "{user}" cannot list resource "pods"' in refused.value.status["message"]
    assert f"{user} list pods" in apiserver.denied(user)
