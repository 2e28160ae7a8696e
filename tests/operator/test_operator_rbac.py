"""The operator runs on exactly the rights the Helm chart grants it: no RBAC denial from plan to worker Job."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from kompress_api.worker_protocol import PlannerResult

from operator_cluster import NAMESPACE, PLAN, Cluster, JobController, OperatorThread, jobs_of, one_job, tiny, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "helm"
RELEASE_NAMESPACE = "kompress-system"


def chart_rbac() -> list[dict]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`")
    out = subprocess.run([str(HELM), "template", "kompress", str(ROOT / "charts" / "kompress"), "--namespace", RELEASE_NAMESPACE], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]


@pytest.mark.apiserver(rbac=True)
def test_the_operator_needs_no_more_than_the_charts_rbac(apiserver, tmp_path, clock):
    from kompress_testing.apiserver import write_kubeconfig

    admin = apiserver.client
    for ns in (RELEASE_NAMESPACE, NAMESPACE):
        admin.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    operator_account = None
    for doc in chart_rbac():
        kind = doc["kind"]
        if kind == "ServiceAccount":
            admin.post(f"/api/v1/namespaces/{RELEASE_NAMESPACE}/serviceaccounts", doc)
        else:
            admin.post(f"/apis/rbac.authorization.k8s.io/v1/{kind.lower()}s", doc)
            if kind == "ClusterRoleBinding":
                operator_account = doc["subjects"][0]["name"]
    assert operator_account is not None

    token = apiserver.service_account_token(RELEASE_NAMESPACE, operator_account)
    operator_kubeconfig = write_kubeconfig(tmp_path / "kubeconfig-operator", apiserver.url, token, namespace=RELEASE_NAMESPACE)
    from kompress_testing.apiserver import ADMIN_TOKEN

    cluster = Cluster(apiserver, write_kubeconfig(tmp_path / "kubeconfig-ml", apiserver.url, ADMIN_TOKEN, namespace=NAMESPACE))
    controller = JobController(cluster)
    op = OperatorThread(operator_kubeconfig, clock).start()
    try:
        cluster.apply(tiny().manifest())
        plan_job = one_job(cluster, "plan")
        controller.run_to_end(plan_job["metadata"]["name"], lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)), lambda j: j.complete())
        one_job(cluster, "worker")
        cluster.wait_phase("tiny", "Queued")
        wait_for("the events", lambda: {"Planning", "PlanSucceeded"} <= {e["reason"] for e in cluster.events("tiny")})
        assert len(jobs_of(cluster, "worker")) == 1
    finally:
        op.stop()
    denied = apiserver.call(lambda: list(apiserver.server.denied))
    assert denied == [], f"the operator was refused: {denied}"
