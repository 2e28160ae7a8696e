"""The played kubelet's own life on the real control plane: stopping and restarting it, the rights it
needs (judged by the real authorizer, from the audit log), its CLI, and a token the API server refuses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kompress_testing.cluster.build import kubernetes_version
from kompress_testing.node_agent import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, AgentConfig, AgentThread, rbac_manifests
from kompress_testing.pytest_plugin import start_node_agent
from kompress_testing.volumes import delete_volume, hostpath_claim

from .node_agent_views import Node, condition, job_manifest, script, wait_for

pytestmark = pytest.mark.integration


def test_stopping_the_agent_ends_every_process_and_a_restarted_agent_carries_on(apiserver: Any, tmp_path: Path) -> None:
    marker = tmp_path / "second-run"
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
    command = script(f"""
        import os, subprocess, sys, time
        if os.path.exists({str(marker)!r}): sys.exit(0)
        open({str(marker)!r}, "w").close()
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a child of the container
        time.sleep(60)
    """)
    first = start_node_agent(apiserver, tmp_path / "node", delete_node_on_stop=False)
    node = Node(apiserver, first, tmp_path / "node")
    node_url = apiserver.path("nodes", namespace=None, name=node.name, api_version="v1")
    node.create_job(job_manifest("survivor", command, podFailurePolicy=policy))
    wait_for("the container and its child", lambda: len(node.processes()) >= 2)
    first.stop()

    assert node.processes() == [], "no process outlives the agent"
    (stopped,) = [p for p in node.pods("survivor") if condition(p, "DisruptionTarget")]
    assert stopped["status"]["phase"] == "Failed"
    disruption = condition(stopped, "DisruptionTarget")
    assert (disruption["status"], disruption["reason"]) == ("True", "TerminationByKubelet")
    assert condition(apiserver.client.get(node_url), "Ready")["status"] == "Unknown"

    second = start_node_agent(apiserver, tmp_path / "node", node_name=node.name)
    try:
        done = node.wait_job("survivor", "Complete", timeout=60)  # the Job controller's pod failure back-off: 10 s
        assert (done["status"]["succeeded"], done["status"].get("failed", 0)) == (1, 0), "a disruption is ignored, not counted"
        assert condition(apiserver.client.get(node_url), "Ready")["status"] == "True"
    finally:
        second.stop()
    assert apiserver.client.get_or_none(node_url) is None, "a stopped agent deletes its Node: nothing is bound to it again"


def _bind_agent_role(apiserver: Any, account: str, drop: dict[str, Any] | None = None) -> list[str]:
    """A copy of the agent's own ClusterRole (less `drop`), bound to `account` in the test's namespace;
    returns the cluster-scoped URLs to delete afterwards."""
    role_name = f"{apiserver.namespace}-{account}"
    urls = []
    for manifest in rbac_manifests(apiserver.namespace, account):
        manifest = json.loads(json.dumps(manifest))
        if manifest["kind"] == "ServiceAccount":
            apiserver.client.post(apiserver.path("serviceaccounts", api_version="v1"), manifest)
            continue
        manifest["metadata"]["name"] = role_name
        if manifest["kind"] == "ClusterRole":
            manifest["rules"] = [rule for rule in manifest["rules"] if rule != drop]
        else:
            manifest["roleRef"]["name"] = role_name
        plural = manifest["kind"].lower() + "s"
        apiserver.client.post(f"/apis/rbac.authorization.k8s.io/v1/{plural}", manifest)
        urls.append(f"/apis/rbac.authorization.k8s.io/v1/{plural}/{role_name}")
    return urls


def _run_one_job_as(apiserver: Any, account: str, tmp_path: Path, drop: dict[str, Any] | None = None) -> tuple[bool, list[str]]:
    """Run one Job on an agent signed in as `account`: whether it completed, and the requests the API server refused it."""
    cleanup = _bind_agent_role(apiserver, account, drop)
    completed = False
    pv = hostpath_claim(apiserver.client, apiserver.namespace, f"data-{account}", tmp_path / f"pv-{account}")
    try:
        token = apiserver.service_account_token(apiserver.namespace, account, create=False)
        node_name = f"node-{apiserver.namespace[-6:]}-{account}"
        agent = AgentThread(AgentConfig(kubeconfig=apiserver.kubeconfig_for(token), state_dir=tmp_path / account, max_grace_s=2.0,
                                        resync_s=0.5, node_name=node_name))
        try:
            agent.start()
        except RuntimeError:
            pass  # refused before it was ready (the Node)
        else:
            node = Node(apiserver, agent, tmp_path / account)
            try:
                # A pod that mounts a claim (bound to a hostPath PV), so the claim and PV rights are needed too.
                node.create_job(job_manifest(account, script("pass"), container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                                             pod={"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-{account}"}}]}))
                node.wait_job(account, "Complete", timeout=20 if drop is None else 8)
                completed = True
            except AssertionError:
                pass
            finally:
                agent.stop()
        assert apiserver.client.get_or_none(apiserver.path("nodes", namespace=None, name=node_name, api_version="v1")) is None, \
            "a stopped agent leaves no Node behind, even one that failed to start"
    finally:
        for url in cleanup:
            apiserver.client.delete(url)
        delete_volume(apiserver.client, pv)
    return completed, apiserver.denied(f"system:serviceaccount:{apiserver.namespace}:{account}")


def test_the_agent_needs_only_the_rights_of_its_own_rbac_manifests(apiserver: Any, tmp_path: Path) -> None:
    assert _run_one_job_as(apiserver, "agent", tmp_path) == (True, [])


AGENT_RULES = next(m for m in rbac_manifests() if m["kind"] == "ClusterRole")["rules"]


@pytest.mark.parametrize("rule", AGENT_RULES, ids=["+".join(r["resources"]) for r in AGENT_RULES])
def test_each_rule_of_the_agents_role_is_needed(apiserver: Any, tmp_path: Path, rule: dict[str, Any]) -> None:
    # The counter-test of the one above: the real authorizer judges a copy of the role less one rule.
    _, denied = _run_one_job_as(apiserver, "weak", tmp_path, drop=rule)
    user = f"system:serviceaccount:{apiserver.namespace}:weak"
    assert denied, f"nothing was refused without {rule}"
    assert {entry.removeprefix(user).split()[1] for entry in denied} <= set(rule["resources"]), denied


def test_the_cli_runs_the_agent_until_terminated(apiserver: Any, tmp_path: Path) -> None:
    token = apiserver.service_account_token(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, create=False)
    node_name = f"node-{apiserver.namespace[-6:]}-cli"
    proc = subprocess.Popen([sys.executable, "-m", "kompress_testing.node_agent", "--kubeconfig", str(apiserver.kubeconfig_for(token)),
                             "--state-dir", str(tmp_path / "node"), "--node-name", node_name],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node_url = apiserver.path("nodes", namespace=None, name=node_name, api_version="v1")
    jobs = apiserver.path("jobs", api_version="batch/v1")
    try:
        assert f"node {node_name} ready" in proc.stdout.readline()
        (row,) = apiserver.kubectl("get", "node", node_name, "--no-headers").stdout.splitlines()
        assert row.split()[1::3] == ["Ready", f"{kubernetes_version()}-kompress-node-agent"], row  # NAME STATUS ROLES AGE VERSION
        apiserver.client.post(jobs, job_manifest("cli", script("pass")))
        wait_for("the Job to complete", lambda: condition(apiserver.client.get(f"{jobs}/cli"), "Complete"))
        assert apiserver.client.get(f"{apiserver.path('pods', api_version='v1')}", labelSelector="job-name=cli")["items"][0]["spec"]["nodeName"] == node_name
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert apiserver.client.get_or_none(node_url) is None


def test_an_unknown_token_is_refused(apiserver: Any, tmp_path: Path) -> None:
    kubeconfig = apiserver.kubeconfig_for("not-a-token")
    with pytest.raises(RuntimeError) as failure:
        AgentThread(AgentConfig(kubeconfig=kubeconfig, state_dir=tmp_path / "node")).start()
    assert str(failure.value.__cause__) == "401: Unauthorized"
