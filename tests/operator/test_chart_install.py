"""Installing with the chart, as a platform team would without a cluster: `helm template | kubectl apply` to the
emulated API server (RBAC enforced), then the operator started exactly as the chart's Deployment starts it (its
args, its environment, its ServiceAccount's identity), reconciling a CompressionJob a user applies with kubectl."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kompress_testing.apiserver import write_kubeconfig
from kompress_testing.wrappers import make_cjob

from operator_cluster import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "helm"
RELEASE_NAMESPACE = "kompress-system"
WATCHED = "ml"


def render() -> str:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`")
    args = [str(HELM), "template", "kompress", str(ROOT / "charts" / "kompress"), "--namespace", RELEASE_NAMESPACE, "--include-crds",
            "--set", f"watchNamespaces={{{WATCHED}}}", "--set", "networkPolicy.enabled=true", "--set", "argocd.healthCheckConfigMap=true"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.apiserver(rbac=True, crd=False)
def test_the_chart_installs_with_kubectl_and_its_operator_reconciles_a_job(apiserver, tmp_path):
    # 1. The namespaces exist (helm's --create-namespace; the watched one is the team's), then the whole chart,
    #    CRD included, goes in with kubectl's default (strict) validation.
    for ns in (RELEASE_NAMESPACE, WATCHED):
        apiserver.kubectl("create", "namespace", ns)
    applied = apiserver.kubectl("apply", "-f", "-", input=render()).stdout
    for kind in ("customresourcedefinition.apiextensions.k8s.io/compressionjobs.kompress.dev", "deployment.apps/kompress-operator",
                 "role.rbac.authorization.k8s.io/kompress-operator", "networkpolicy.networking.k8s.io/kompress-worker-progress"):
        assert kind in applied, applied
    wait_for("the CRD to be served", lambda: apiserver.kubectl("get", "compressionjobs", "-n", WATCHED, check=False).returncode == 0)

    # 2. The operator as its pod would run: the Deployment's command line and environment, the chart's ServiceAccount.
    deployment = yaml.safe_load(apiserver.kubectl("get", "deployment", "kompress-operator", "-n", RELEASE_NAMESPACE, "-o", "yaml").stdout)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # Only the ports move (this machine is shared); everything else is what the chart says.
    env |= {"KOMPRESS_HEALTH_PORT": str(_free_port()), "KOMPRESS_METRICS_PORT": str(_free_port())}
    token = apiserver.service_account_token(RELEASE_NAMESPACE, pod["serviceAccountName"])
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig-operator", apiserver.url, token, namespace=RELEASE_NAMESPACE)
    operator = subprocess.Popen([sys.executable, "-m", "kompress_operator", *container["args"]], env={**os.environ, **env, "KUBECONFIG": str(kubeconfig)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # 3. A user applies a job in the watched namespace: it is planned (a planning Job, status Planning).
        job = make_cjob("tiny").manifest()
        job["metadata"]["namespace"] = WATCHED
        apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
        jobs = wait_for("the planning Job", lambda: apiserver.client.get(f"/apis/batch/v1/namespaces/{WATCHED}/jobs")["items"], timeout=30)
        plan_job = jobs[0]
        assert plan_job["metadata"]["labels"]["kompress.dev/role"] == "plan"
        # The planning pod runs the chart's worker image under the chart's worker ServiceAccount.
        plan_pod = plan_job["spec"]["template"]["spec"]
        assert plan_pod["containers"][0]["image"] == env["KOMPRESS_WORKER_IMAGE"]
        assert plan_pod["serviceAccountName"] == env["KOMPRESS_WORKER_SERVICE_ACCOUNT"]
        cjob = wait_for("status Planning", lambda: (c := apiserver.client.get(apiserver.path(namespace=WATCHED, name="tiny"))).get("status", {}).get("phase") == "Planning" and c, timeout=30)
        assert cjob["status"]["children"]["planJob"] == plan_job["metadata"]["name"]
        assert apiserver.call(lambda: list(apiserver.server.denied)) == [], "the chart's RBAC refused the operator something"
    finally:
        operator.terminate()
        _, stderr = operator.communicate(timeout=30)
    assert operator.returncode in (0, -15), stderr[-3000:]
