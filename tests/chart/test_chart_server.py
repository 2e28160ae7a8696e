"""The chart and its CRD as a platform engineer meets them on a cluster, here the session's real kube-apiserver:
every rendered object accepted by the server (its own validation, admission and Pod Security), `kubectl explain`
printing the CRD's docs, and `kubectl get cjob` printing the CRD's columns, as tables made by the server."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kompress_testing.wrappers import make_cjob

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kompress"
HELM = ROOT / ".tools" / "helm"
# The chart with everything switched on that a cluster without the Prometheus Operator accepts (no ServiceMonitor kind).
NAMESPACED = ["--set", "networkPolicy.enabled=true", "--set", "argocd.healthCheckConfigMap=true", "--set", "operator.logFormat=text"]


def render(release: str, namespace: str, *values: str) -> str:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`")
    args = [str(HELM), "template", release, str(CHART), "--namespace", namespace, *values]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def server_dry_run(apiserver, manifests: str) -> subprocess.CompletedProcess[str]:
    """Every object through kube-apiserver's whole write path (decoding, validation, admission), nothing stored.
    Not `helm install --dry-run=server`: Helm 4.1 then only reads the cluster (lookups, ownership checks; the
    audit log shows GETs only) and sends no object for validation. Server-side apply: the CRD, with a
    description on every field, is larger than client-side apply's annotation may be."""
    return apiserver.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=chart-check", "--dry-run=server",
                             "-f", "-", input=manifests, check=False)


def restricted(apiserver) -> None:
    """The release namespace enforces and warns at Pod Security `restricted`, as a hardened cluster's would."""
    apiserver.kubectl("label", "namespace", apiserver.namespace, "pod-security.kubernetes.io/enforce=restricted",
                      "pod-security.kubernetes.io/warn=restricted")


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_kube_apiserver_accepts_every_object_the_chart_renders(apiserver, mode):
    restricted(apiserver)
    values = [] if mode == "cluster-wide" else ["--set", f"watchNamespaces={{{apiserver.namespace}}}", *NAMESPACED]
    result = server_dry_run(apiserver, render(f"kompress-{apiserver.namespace[-6:]}", apiserver.namespace, *values))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. "would violate PodSecurity"
    applied = result.stdout
    for kind in ("customresourcedefinition.apiextensions.k8s.io/compressionjobs.kompress.dev", "deployment.apps/", "serviceaccount/kompress-worker"):
        assert kind in applied, applied
    if mode == "namespaced":
        assert "role.rbac.authorization.k8s.io/" in applied and "networkpolicy.networking.k8s.io/" in applied, applied


def test_the_server_check_would_catch_a_pod_that_is_not_restricted(apiserver):
    restricted(apiserver)
    docs = [d for d in yaml.safe_load_all(render("kompress", apiserver.namespace)) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    assert "would violate PodSecurity" in server_dry_run(apiserver, yaml.safe_dump(deployment)).stderr
    deployment["spec"]["replicas"] = -1
    result = server_dry_run(apiserver, yaml.safe_dump(deployment))
    assert result.returncode != 0 and "spec.replicas" in result.stderr, result.stderr


def _words(text: str) -> str:
    return " ".join(text.split())


def test_kubectl_explain_prints_the_crds_descriptions(apiserver, kompress_crd):
    schema = kompress_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["recipe"]
    out = _words(apiserver.kubectl("explain", "compressionjob.spec.recipe").stdout)
    assert "KIND: CompressionJob" in out and "VERSION: v1alpha1" in out, out
    assert _words(schema["description"]) in out
    for name, field in schema["properties"].items():
        assert name in out, name
        assert _words(field["description"]) in out, f"{name}: {field['description']!r} not in {out!r}"
    # The enum a user may type, from the server's published schema.
    assert "enum: sparse24-w4a16-w8a8, w4a16-w8a8, w4a16, fp8-dynamic" in out


def _table(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def test_kubectl_get_shows_the_crds_columns_filled_from_status(apiserver):
    job = make_cjob("tiny").manifest()
    job["metadata"]["namespace"] = apiserver.namespace
    apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    # What the operator writes while the worker compresses (a merge patch on the /status subresource).
    progress = {"stage": "compress", "stageIndex": 5, "stageCount": 9, "percent": 42, "message": "layer 12 of 48"}
    status = {"phase": "Running", "progress": progress, "conditions": [
        {"type": "Running", "status": "True", "reason": "WorkerRunning", "message": "compressing", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    apiserver.client.patch(apiserver.path(name="tiny", subresource="status"), {"status": status})

    header, row = _table(apiserver.kubectl("get", "cjob").stdout)
    assert header == ["NAME", "PHASE", "STAGE", "PROGRESS", "MODEL", "OUTPUT", "AGE"]
    assert row[:6] == ["tiny", "Running", "compress", "42", job["spec"]["model"]["uri"], job["spec"]["output"]["uri"]]
    assert re.fullmatch(r"\d+s", row[6]), row

    header, row = _table(apiserver.kubectl("get", "cjob", "-o", "wide").stdout)
    assert header[7:] == ["PRESET", "GPUS", "SUCCEEDED", "PUBLISHED", "REASON"]
    assert row[7] == job["spec"]["recipe"]["preset"]
