"""The chart installed for real, as a platform team installs it: `helm install --create-namespace` on the session's
kube-apiserver, the operator run as the chart's Deployment runs it (its args, its environment, its ServiceAccount's
token), a job to Succeeded (`kubectl wait`) with no request refused by the chart's RBAC, `helm upgrade` to a chart
whose CRD has a new field, `helm uninstall`; and the aggregated roles giving users of `view`/`edit` their rights.

Not `helm install --wait`: no kubelet here runs the operator's pod (the test plays only the Nodes that Jobs' pods
land on), so the Deployment would never be ready; the operator runs as a process instead.
The CRD is cluster-scoped and the session's other tests need it: a test that installs it with a release gives it
back as the fixtures install it (tests run one at a time; release names and namespaces are unique per test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kompress_api.worker_protocol import PlannerResult
from kompress_testing.cluster.client import ApiStatusError
from kompress_testing.cluster.controlplane import free_port
from kompress_testing.pytest_plugin import CRD_NAME, install_crd, load_kompress_crd

from operator_cluster import PLAN, RESULT, Cluster, Kubelet, jobs_of, tiny, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kompress"
HELM = ROOT / ".tools" / "helm"
CRD_URL = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
# The field a newer chart's CRD adds (tests only: the product has no such field).
NEW_FIELD, NEW_FIELD_DOC = "upgradeNote", "upgradeNote: a field that only the upgraded chart's CRD has."


class Helm:
    """The helm binary as the cluster's admin, with its own config, cache and release storage per test."""

    def __init__(self, apiserver: Any, home: Path) -> None:
        if not HELM.exists():
            pytest.fail(f"{HELM} is missing: run `make tools`")
        self.env = dict(apiserver.env(), HELM_CONFIG_HOME=str(home / "config"), HELM_CACHE_HOME=str(home / "cache"),
                        HELM_DATA_HOME=str(home / "data"))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(HELM), *args], env=self.env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result


def give_the_crd_back(apiserver: Any) -> None:
    """The CRD as the fixtures install it: the committed schema, owned by no release (no Helm labels or annotations)."""
    crd = load_kompress_crd()
    current = apiserver.client.get_or_none(CRD_URL)
    if current is not None:
        apiserver.client.put(CRD_URL, {**crd, "metadata": {**crd["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}})
    install_crd(apiserver.plane, crd)


@pytest.fixture
def no_crd(apiserver: Any) -> Iterator[None]:
    """A cluster that never had Kompress: the CRD the fixtures installed is deleted first, and given back after."""
    apiserver.client.delete(CRD_URL)
    wait_for("the CRD to be deleted", lambda: apiserver.client.get_or_none(CRD_URL) is None, timeout=60, interval=0.2)
    try:
        yield
    finally:
        give_the_crd_back(apiserver)


def start_operator_as_deployed(apiserver: Any, release_ns: str, deployment_name: str, log: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """`python -m kompress_operator` with the Deployment's args and environment, as its ServiceAccount (a real
    token); returns the process, the user name the API server knows it by, and its environment."""
    deployment = yaml.safe_load(apiserver.kubectl("get", "deployment", deployment_name, "-n", release_ns, "-o", "yaml").stdout)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # Only the ports move (this machine is shared); everything else is what the chart says.
    env |= {"KOMPRESS_HEALTH_PORT": str(free_port()), "KOMPRESS_METRICS_PORT": str(free_port())}
    account = pod["serviceAccountName"]
    kubeconfig = apiserver.kubeconfig_for(apiserver.service_account_token(release_ns, account, create=False), release_ns)
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the operator
        process = subprocess.Popen([sys.executable, "-m", "kompress_operator", *container["args"]], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env, "KUBECONFIG": str(kubeconfig)})
    return process, f"system:serviceaccount:{release_ns}:{account}", env


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    assert process.returncode in (0, -15), log.read_text(errors="replace")[-3000:]


def chart_with_a_new_crd_field(dest: Path) -> Path:
    """The next chart version: the same chart, its CRD with one more optional, documented spec field."""
    chart = shutil.copytree(CHART, dest)
    crd_file = chart / "files" / "crds" / "kompress.dev_compressionjobs.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"][NEW_FIELD] = {"type": "string", "maxLength": 256, "description": NEW_FIELD_DOC}
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.1.1-upgrade-test"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return chart


def run_the_job_to_success(cluster: Cluster, kubelet: Kubelet, env: dict[str, str]) -> None:
    """A user's job, planned and run on the played Node; `kubectl wait` returns when the operator says Succeeded."""
    cluster.apply(tiny().manifest())
    plan_job = wait_for("the planning Job", lambda: jobs_of(cluster, "plan"), timeout=30)[0]
    plan_pod = plan_job["spec"]["template"]["spec"]
    # The planning pod runs the chart's worker image under the chart's worker ServiceAccount.
    assert plan_pod["containers"][0]["image"] == env["KOMPRESS_WORKER_IMAGE"]
    assert plan_pod["serviceAccountName"] == env["KOMPRESS_WORKER_SERVICE_ACCOUNT"]
    kubelet.run_to_end(plan_job["metadata"]["name"], lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)))
    worker = wait_for("the worker Job", lambda: jobs_of(cluster, "worker"), timeout=30)[0]
    waiting = subprocess.Popen([str(ROOT / ".tools" / "kubectl"), "wait", "--for=condition=Succeeded", "cjob/tiny", "--timeout=60s"],
                               env=cluster.api.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        assert waiting.poll() is None, f"kubectl wait returned before the job ended: {waiting.communicate()[0]}"
        kubelet.run_to_end(worker["metadata"]["name"], lambda p: p.succeeded(RESULT))
        out, _ = waiting.communicate(timeout=70)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0 and "compressionjob.kompress.dev/tiny condition met" in out, out
    assert cluster.status("tiny")["phase"] == "Succeeded"


def test_helm_install_run_a_job_upgrade_the_crd_and_uninstall(apiserver, no_crd, tmp_path):
    helm = Helm(apiserver, tmp_path / "helm")
    cluster = Cluster(apiserver)
    release, release_ns = f"kompress-{apiserver.namespace[-6:]}", f"{apiserver.namespace}-sys"
    installed = False
    try:
        # 1. Install on a cluster without Kompress: the release namespace is created, the CRD comes with the release.
        helm("install", release, str(CHART), "-n", release_ns, "--create-namespace", "--set", f"watchNamespaces={{{cluster.namespace}}}")
        installed = True
        crd = apiserver.client.get(CRD_URL)
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        wait_for("the CRD served", lambda: apiserver.kubectl("get", "cjob", check=False).returncode == 0, timeout=30)

        # 2. The operator as its pod would run it, and a job to the end with nothing refused by the chart's RBAC.
        kubelet = Kubelet(cluster, f"gpu-node-{cluster.namespace[-6:]}")
        kubelet.register()
        log = tmp_path / "operator.log"
        operator, user, env = start_operator_as_deployed(apiserver, release_ns, f"{release}-operator", log)
        try:
            run_the_job_to_success(cluster, kubelet, env)
        finally:
            stop(operator, log)
            kubelet.remove()
        assert apiserver.denied(user) == [], "the chart's RBAC refused the operator something"

        # 3. Upgrade to a chart whose CRD has a new field: the server now serves it, and the jobs are still there.
        assert NEW_FIELD not in apiserver.kubectl("explain", "compressionjob.spec").stdout
        helm("upgrade", release, str(chart_with_a_new_crd_field(tmp_path / "chart-next")), "-n", release_ns, "--reuse-values")
        explained = wait_for(f"kubectl explain to show spec.{NEW_FIELD}", lambda: (r := apiserver.kubectl(
            "explain", f"compressionjob.spec.{NEW_FIELD}", check=False)).returncode == 0 and r.stdout, timeout=30, interval=0.5)
        assert NEW_FIELD_DOC in " ".join(explained.split())
        assert apiserver.client.get(CRD_URL)["metadata"]["labels"]["helm.sh/chart"] == "kompress-0.1.1-upgrade-test"
        assert cluster.status("tiny")["phase"] == "Succeeded"

        # 4. Uninstall: the release's objects go; the CRD stays (resource policy), and with it every job.
        out = helm("uninstall", release, "-n", release_ns).stdout
        installed = False
        assert "kept due to the resource policy" in out and CRD_NAME in out, out
        assert apiserver.client.get_or_none(f"/apis/apps/v1/namespaces/{release_ns}/deployments/{release}-operator") is None
        assert apiserver.client.get_or_none(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{cluster.namespace}/roles/{release}-operator") is None
        assert apiserver.client.get_or_none(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{release}-view") is None
        assert cluster.status("tiny")["phase"] == "Succeeded"
    finally:
        if installed:
            helm("uninstall", release, "-n", release_ns, check=False)
        _delete_namespace(apiserver, release_ns)


def _delete_namespace(apiserver: Any, name: str) -> None:
    try:
        apiserver.client.delete(f"/api/v1/namespaces/{name}")
    except ApiStatusError:
        pass


def test_users_of_the_builtin_view_and_edit_roles_get_compressionjob_rights(apiserver, tmp_path):
    helm = Helm(apiserver, tmp_path / "helm")
    release, release_ns, ns = f"kompress-{apiserver.namespace[-6:]}", f"{apiserver.namespace}-sys", apiserver.namespace
    try:
        # The CRD is already there, applied by other means (here: the fixtures): a release that would own it stops
        # before creating anything, saying why; a release without it (a second one, or self-managed CRDs) installs.
        refused = helm("install", release, str(CHART), "-n", release_ns, "--create-namespace", check=False)
        assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr, refused.stderr
        assert helm("status", release, "-n", release_ns, check=False).returncode != 0
        assert apiserver.client.get_or_none(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{release}-view") is None
        helm("install", release, str(CHART), "-n", release_ns, "--create-namespace", "--set", "crds.install=false")

        tokens = {}
        for user, role in (("viewer", "view"), ("editor", "edit")):
            tokens[user] = apiserver.service_account_token(ns, user)
            apiserver.kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--serviceaccount={ns}:{user}")
        # kube-controller-manager's clusterrole-aggregation controller folds kompress-view/-edit into view/edit.
        for user, verb in (("viewer", "get"), ("editor", "create")):
            wait_for(f"{user} may {verb} compressionjobs", lambda: apiserver.kubectl(
                "auth", "can-i", verb, "compressionjobs.kompress.dev", f"--as=system:serviceaccount:{ns}:{user}", check=False).stdout.strip() == "yes",
                timeout=30, interval=0.3)

        job = yaml.safe_dump({**tiny().manifest(), "metadata": {"name": "tiny", "namespace": ns}})
        refused = apiserver.kubectl("create", "-f", "-", input=job, token=tokens["viewer"], check=False)
        assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
        assert apiserver.denied(f"system:serviceaccount:{ns}:viewer") == [f"system:serviceaccount:{ns}:viewer create compressionjobs"]
        apiserver.kubectl("create", "-f", "-", input=job, token=tokens["editor"])
        assert apiserver.kubectl("get", "cjob", "-o", "name", token=tokens["viewer"]).stdout.split() == ["compressionjob.kompress.dev/tiny"]
        # Only the operator writes status: an editor cannot forge a Succeeded.
        forged = apiserver.kubectl("patch", "cjob", "tiny", "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Succeeded"}}',
                                   token=tokens["editor"], check=False)
        assert forged.returncode != 0 and "forbidden" in forged.stderr, forged.stderr
        helm("uninstall", release, "-n", release_ns)
    finally:
        helm("uninstall", release, "-n", release_ns, check=False)
        _delete_namespace(apiserver, release_ns)
