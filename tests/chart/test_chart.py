"""The Helm chart, rendered by a real helm binary: lint, schema-checked values, manifests that validate
against Kubernetes' own schemas, restricted pod security, and RBAC without Secrets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kompress"
HELM = ROOT / ".tools" / "helm"
K8S_VERSION = "1.33"

NON_DEFAULT = [
    "--set", "watchNamespaces={ml,research}",
    "--set", "networkPolicy.enabled=true",
    "--set", "serviceMonitor.enabled=true",
    "--set", "argocd.healthCheckConfigMap=true",
    "--set", "operator.logFormat=text",
    "--set", "worker.gpuResourceName=amd.com/gpu",
    "--set", "worker.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/kompress",
]

pytestmark = pytest.mark.integration


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check)


def render(*values: str) -> list[dict]:
    out = helm("template", "kompress", str(CHART), "--namespace", "kompress-system", *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_passes_with_default_and_non_default_values():
    assert helm("lint", str(CHART)).returncode == 0
    assert helm("lint", str(CHART), *NON_DEFAULT).returncode == 0


@pytest.mark.parametrize("values", [[], NON_DEFAULT], ids=["default", "non-default"])
def test_rendered_builtin_objects_validate_against_kubernetes_schemas(values):
    docs = render(*values)
    checked = 0
    for doc in docs:
        if doc["kind"] in ("ServiceMonitor", "CustomResourceDefinition"):
            continue  # not a built-in kind; the CRD is judged by kube-apiserver (test_chart_server.py)
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 6


def test_validator_would_catch_a_malformed_deployment():
    deployment = by_kind(render(), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = ["not", "a", "string"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_values_schema_refuses_bad_values_with_the_key_path():
    for bad, key in [("operator.logFormat=xml", "/operator/logFormat"), ("operator.healthPort=70000", "/operator/healthPort"), ("worker.typo=1", "worker")]:
        result = helm("template", "kompress", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, bad
        assert key in result.stderr, result.stderr


def test_chart_crd_is_the_generated_crd():
    assert (CHART / "files" / "crds" / "kompress.dev_compressionjobs.yaml").read_text() == (ROOT / "crds" / "kompress.dev_compressionjobs.yaml").read_text(), "run `make crds`"


def test_the_crd_is_a_release_resource_kept_on_uninstall():
    """A template, so `helm upgrade` updates it (Helm never upgrades crds/; an old `crds/` folder would also
    collide with the template on install); `keep`, so `helm uninstall` never deletes every CompressionJob."""
    assert not (CHART / "crds").exists(), "the CRD belongs in files/crds/ (make crds), rendered by templates/crd.yaml"
    (crd,) = by_kind(render(), "CustomResourceDefinition")
    generated = yaml.safe_load((ROOT / "crds" / "kompress.dev_compressionjobs.yaml").read_text())
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false,Delete=false"  # Argo CD's "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kompress"
    assert not by_kind(render("--set", "crds.install=false"), "CustomResourceDefinition")


def test_operator_pod_runs_restricted():
    spec = by_kind(render(), "Deployment")[0]["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["strategy"]["type"] == "Recreate", "two standalone Kopf operators must never overlap"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]


def test_operator_configuration_follows_values():
    env = {e["name"]: e["value"] for e in by_kind(render(*NON_DEFAULT), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KOMPRESS_WATCH_NAMESPACES"] == "ml,research"
    assert env["KOMPRESS_GPU_RESOURCE_NAME"] == "amd.com/gpu"
    assert env["KOMPRESS_LOG_FORMAT"] == "text"
    assert env["KOMPRESS_WORKER_SERVICE_ACCOUNT"] == "kompress-worker"


def _operator_rules(docs: list[dict]) -> list[dict]:
    return [rule for d in docs if d["kind"] in ("Role", "ClusterRole") and d["metadata"]["name"].endswith("-operator") for rule in d["rules"]]


@pytest.mark.parametrize("values", [[], NON_DEFAULT], ids=["cluster-wide", "namespaced"])
def test_operator_rbac_never_touches_secrets_or_configmaps(values):
    rules = _operator_rules(render(*values))
    assert rules
    for rule in rules:
        assert not {"secrets", "configmaps", "*"} & set(rule["resources"]), rule
        assert "*" not in rule["verbs"] and "*" not in rule["apiGroups"], rule


def test_namespaced_mode_grants_nothing_cluster_wide_to_the_operator():
    docs = render(*NON_DEFAULT)
    assert not by_kind(docs, "ClusterRoleBinding")
    roles = by_kind(docs, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {"ml", "research"}
    # The only ClusterRoles left aggregate CompressionJob rights into the built-in edit/view roles for users.
    for cluster_role in by_kind(docs, "ClusterRole"):
        assert any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in cluster_role["metadata"]["labels"])


def test_worker_service_account_has_no_rights_and_no_token():
    docs = render(*NON_DEFAULT)
    workers = [sa for sa in by_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == "kompress-worker"]
    assert {sa["metadata"]["namespace"] for sa in workers} == {"ml", "research"}
    assert all(sa["automountServiceAccountToken"] is False for sa in workers)
    assert workers[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    bound = {s["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in d["subjects"]}
    assert "kompress-worker" not in bound


def test_network_policy_admits_only_the_operator_on_the_progress_port():
    policies = by_kind(render(*NON_DEFAULT), "NetworkPolicy")
    assert {p["metadata"]["namespace"] for p in policies} == {"ml", "research"}
    ingress = policies[0]["spec"]["ingress"]
    assert len(ingress) == 1 and ingress[0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    peer = ingress[0]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kompress-system"}
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"


def test_a_changed_progress_port_moves_the_operator_and_the_network_policy_together():
    docs = render(*NON_DEFAULT, "--set", "worker.progressPort=9095")
    env = {e["name"]: e["value"] for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KOMPRESS_PROGRESS_PORT"] == "9095"  # the port the operator gives the worker and polls
    for policy in by_kind(docs, "NetworkPolicy"):
        assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9095}]


def test_values_schema_refuses_a_gpu_resource_name_without_a_domain():
    result = helm("template", "kompress", str(CHART), "--set", "worker.gpuResourceName=gpu", check=False)
    assert result.returncode != 0 and "gpuResourceName" in result.stderr


def test_network_policy_without_namespaces_fails_with_a_clear_message():
    result = helm("template", "kompress", str(CHART), "--set", "networkPolicy.enabled=true", check=False)
    assert result.returncode != 0 and "networkPolicy.namespaces" in result.stderr


def test_argocd_configmap_carries_the_tested_health_check():
    config_map = by_kind(render(*NON_DEFAULT), "ConfigMap")[0]
    lua = (CHART / "files" / "argocd" / "health.lua").read_text()
    assert config_map["data"]["resource.customizations.health.kompress.dev_CompressionJob"].strip() == lua.strip()


def test_values_table_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()

    def leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and key not in ("resources",):
                yield from leaves(value, path + ".")
            else:
                yield path

    missing = [path for path in leaves(values) if f"`{path}`" not in readme]
    assert not missing, f"charts/kompress/README.md lacks: {missing}"
