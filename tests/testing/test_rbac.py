"""RBAC enforcement: bearer tokens map to identities; Roles, ClusterRoles and their bindings stored in the
server decide, as kube-apiserver's RBAC authorizer does; refusals are 403 in Kubernetes' words."""

from __future__ import annotations

import pytest

from kompress_testing.apiserver import ApiStatusError

from .conftest import JOBS, tiny_job

pytestmark = [pytest.mark.integration, pytest.mark.apiserver(rbac=True)]
ML_JOBS = "/apis/kompress.dev/v1alpha1/namespaces/ml/compressionjobs"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture
def operator(apiserver):
    """A ServiceAccount ml/operator, its token and its client (no rights yet); namespace ml with one job."""
    apiserver.client.post("/api/v1/namespaces", {"metadata": {"name": "ml"}})
    apiserver.client.post("/api/v1/namespaces/ml/serviceaccounts", {"metadata": {"name": "operator"}})
    apiserver.client.post(ML_JOBS, tiny_job())
    apiserver.client.post(JOBS, tiny_job())
    token = apiserver.service_account_token("ml", "operator")
    return apiserver.client_for(token), token


def role(name: str, *rules: dict, namespace: str | None = "ml") -> tuple[str, dict]:
    kind = "Role" if namespace else "ClusterRole"
    path = f"{RBAC}/namespaces/{namespace}/roles" if namespace else f"{RBAC}/clusterroles"
    return path, {"metadata": {"name": name}, "rules": list(rules), "kind": kind}


def binding(name: str, role_kind: str, role_name: str, namespace: str | None = "ml",
            subject: dict | None = None) -> tuple[str, dict]:
    subject = subject or {"kind": "ServiceAccount", "name": "operator", "namespace": "ml"}
    path = f"{RBAC}/namespaces/{namespace}/rolebindings" if namespace else f"{RBAC}/clusterrolebindings"
    return path, {"metadata": {"name": name}, "subjects": [subject],
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name}}


def grant(apiserver, *objects: tuple[str, dict]) -> None:
    for path, body in objects:
        apiserver.client.post(path, body)


def refused(call) -> ApiStatusError:
    with pytest.raises(ApiStatusError) as error:
        call()
    return error.value


def test_unknown_token_is_401(apiserver):
    assert refused(lambda: apiserver.client_for("nobody-knows-me").get(JOBS)).code == 401


def test_no_binding_no_access_with_kubernetes_wording(apiserver, operator):
    client, _ = operator
    error = refused(lambda: client.get(ML_JOBS))
    assert (error.code, error.reason) == (403, "Forbidden")
    assert error.message == ('compressionjobs.kompress.dev is forbidden: User "system:serviceaccount:ml:operator" cannot list '
                             'resource "compressionjobs" in API group "kompress.dev" in the namespace "ml"')
    denied = apiserver.call(lambda: [d.attributes.describe() for d in apiserver.server.denied])
    assert "list compressionjobs.kompress.dev in namespace ml" in denied


def test_role_binding_grants_in_its_namespace_only_and_says_which_rule(apiserver, operator):
    client, _ = operator
    grant(apiserver, role("reader", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["get", "list"]}),
          binding("reader", "Role", "reader"))
    assert client.get(ML_JOBS)["items"]
    assert refused(lambda: client.get(JOBS)).code == 403
    reason = apiserver.call(lambda: [d.reason for d in apiserver.server.decisions if d.allowed and d.attributes.user.name.endswith("operator")])
    assert reason[-1] == 'RBAC: allowed by RoleBinding "reader/ml" of Role "reader" to ServiceAccount "operator/ml"'


def test_status_subresource_needs_its_own_rule(apiserver, operator):
    client, _ = operator
    grant(apiserver, role("writer", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["get", "patch"]}),
          binding("writer", "Role", "writer"))
    client.patch(f"{ML_JOBS}/tiny-laptop", {"metadata": {"labels": {"a": "b"}}})
    error = refused(lambda: client.patch(f"{ML_JOBS}/tiny-laptop/status", {"status": {"phase": "Running"}}))
    assert 'cannot patch resource "compressionjobs/status" in API group "kompress.dev"' in error.message
    grant(apiserver, role("status", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs/status"], "verbs": ["patch"]}),
          binding("status", "Role", "status"))
    assert client.patch(f"{ML_JOBS}/tiny-laptop/status", {"status": {"phase": "Running"}})["status"] == {"phase": "Running"}


def test_wildcard_subresource_rule(apiserver, operator):
    client, _ = operator
    grant(apiserver, role("any-status", {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["get"]}),
          binding("any-status", "Role", "any-status"))
    assert client.get(f"{ML_JOBS}/tiny-laptop/status")["kind"] == "CompressionJob"
    assert refused(lambda: client.get(f"{ML_JOBS}/tiny-laptop")).code == 403


def test_cluster_role_binding_grants_everywhere_and_cluster_wide_lists(apiserver, operator):
    client, _ = operator
    grant(apiserver, role("watcher", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["list", "watch"]},
                          namespace=None),
          binding("watcher", "ClusterRole", "watcher", namespace=None))
    assert len(client.get("/apis/kompress.dev/v1alpha1/compressionjobs")["items"]) == 2
    first = next(client.watch("/apis/kompress.dev/v1alpha1/compressionjobs", timeoutSeconds=5, resourceVersion="1"))
    assert first["type"] == "ADDED"
    assert refused(lambda: client.get(f"{JOBS}/tiny-laptop")).code == 403  # get is not list


def test_a_role_binding_can_grant_a_cluster_role_in_one_namespace(apiserver, operator):
    client, _ = operator
    grant(apiserver, role("jobs", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["list"]}, namespace=None),
          binding("jobs", "ClusterRole", "jobs"))
    assert client.get(ML_JOBS)["items"]
    assert refused(lambda: client.get(JOBS)).code == 403
    assert refused(lambda: client.get("/apis/kompress.dev/v1alpha1/compressionjobs")).code == 403


def test_watch_list_and_deletecollection_are_distinct_verbs(apiserver, operator):
    client, _ = operator
    grant(apiserver, role("lister", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["list", "delete"]}),
          binding("lister", "Role", "lister"))
    assert refused(lambda: list(client.watch(ML_JOBS, timeoutSeconds=1))).code == 403
    assert refused(lambda: client.delete(ML_JOBS)).code == 403
    assert client.delete(f"{ML_JOBS}/tiny-laptop")["status"] == "Success"


def test_resource_names_limit_a_rule_to_named_objects(apiserver, operator):
    client, _ = operator
    apiserver.client.post(ML_JOBS, tiny_job("other"))
    grant(apiserver, role("one", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["get"],
                                  "resourceNames": ["tiny-laptop"]}),
          binding("one", "Role", "one"))
    assert client.get(f"{ML_JOBS}/tiny-laptop")
    assert refused(lambda: client.get(f"{ML_JOBS}/other")).code == 403


def test_group_subjects_and_aggregated_cluster_roles(apiserver, operator):
    client, _ = operator
    grant(apiserver,
          role("aggregate", namespace=None),
          binding("all-sas", "ClusterRole", "aggregate", namespace=None,
                  subject={"kind": "Group", "name": "system:serviceaccounts:ml", "apiGroup": "rbac.authorization.k8s.io"}))
    apiserver.client.patch(f"{RBAC}/clusterroles/aggregate",
                           {"aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"kompress.dev/aggregate": "true"}}]}})
    assert refused(lambda: client.get(ML_JOBS)).code == 403
    part = role("part", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["list"]}, namespace=None)
    part[1]["metadata"]["labels"] = {"kompress.dev/aggregate": "true"}
    grant(apiserver, part)
    assert client.get(ML_JOBS)["items"]


def test_the_admin_token_bypasses_rbac(apiserver, operator):
    assert apiserver.client.get(ML_JOBS)["items"]


def test_kubectl_with_a_service_account_token_and_auth_can_i(apiserver, operator):
    _, token = operator
    result = apiserver.kubectl("get", "cjob", "-n", "ml", token=token, check=False)
    assert result.returncode == 1
    assert 'Error from server (Forbidden): compressionjobs.kompress.dev is forbidden: User "system:serviceaccount:ml:operator"' in result.stderr
    grant(apiserver, role("reader", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs"], "verbs": ["list"]}),
          binding("reader", "Role", "reader"))
    assert "tiny-laptop" in apiserver.kubectl("get", "cjob", "-n", "ml", token=token).stdout
    as_operator = ["--as=system:serviceaccount:ml:operator"]
    assert apiserver.kubectl("auth", "can-i", "list", "compressionjobs", "-n", "ml", *as_operator).stdout.strip() == "yes"
    assert apiserver.kubectl("auth", "can-i", "delete", "compressionjobs", "-n", "ml", *as_operator, check=False).stdout.strip() == "no"
    assert apiserver.kubectl("auth", "can-i", "list", "compressionjobs", "-n", "ml", token=token).stdout.strip() == "yes"


def test_the_server_says_which_binding_would_allow_a_request(apiserver, operator):
    grant(apiserver, role("status", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs/status"], "verbs": ["patch", "update"]}),
          binding("status", "Role", "status"))
    sa = "system:serviceaccount:ml:operator"
    allowed = apiserver.call(lambda: apiserver.server.check(sa, "patch", "compressionjobs", "kompress.dev", "ml", subresource="status"))
    assert allowed.allowed and allowed.reason == 'RBAC: allowed by RoleBinding "status/ml" of Role "status" to ServiceAccount "operator/ml"'
    denied = apiserver.call(lambda: apiserver.server.check(sa, "patch", "compressionjobs", "kompress.dev", "default", subresource="status"))
    assert not denied.allowed and 'cannot patch resource "compressionjobs/status"' in denied.reason


def test_auth_can_i_list_shows_what_a_service_account_may_do(apiserver, operator):
    grant(apiserver, role("status", {"apiGroups": ["kompress.dev"], "resources": ["compressionjobs/status"], "verbs": ["patch"]}),
          binding("status", "Role", "status"))
    listed = apiserver.kubectl("auth", "can-i", "--list", "-n", "ml", "--as=system:serviceaccount:ml:operator").stdout
    rows = [line.split() for line in listed.splitlines()]
    assert ["compressionjobs.kompress.dev/status", "[]", "[]", "[patch]"] in rows
    assert not any(row and row[0] == "*.*" for row in rows)
    elsewhere = apiserver.kubectl("auth", "can-i", "--list", "-n", "default", "--as=system:serviceaccount:ml:operator").stdout
    assert "compressionjobs" not in elsewhere
