"""`python -m kompress_testing.cluster` runs the real control plane as a process for kubectl, until SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import psutil
import pytest

from kompress_testing.cluster.build import kubectl_binary, kubernetes_version
from kompress_testing.pytest_plugin import CRD_PATH, REPO_ROOT

pytestmark = pytest.mark.integration


def test_the_control_plane_runs_as_a_process_for_kubectl_until_sigterm(tmp_path):
    kubeconfig, agent_kubeconfig = tmp_path / "kubeconfig", tmp_path / "agent-kubeconfig"
    process = subprocess.Popen([sys.executable, "-m", "kompress_testing.cluster", "--crd", str(CRD_PATH), "--kubeconfig", str(kubeconfig),
                                "--workdir", str(tmp_path / "cluster"), "--node-agent-kubeconfig", str(agent_kubeconfig)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = process.stdout.readline()
        assert re.fullmatch(rf"Kubernetes control plane {re.escape(kubernetes_version())} at https://127\.0\.0\.1:\d+\n", banner), banner
        components = process_names(process.pid)
        assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} <= components

        def kubectl(*args, config=kubeconfig):
            env = dict(os.environ, KUBECONFIG=str(config), KUBECACHEDIR=str(tmp_path / "cache"))
            return subprocess.run([str(kubectl_binary()), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

        version = json.loads(kubectl("version", "-o", "json").stdout)
        assert version["serverVersion"]["gitVersion"] == kubernetes_version()
        applied = kubectl("apply", "-f", "examples/tiny-laptop.yaml")
        assert applied.stdout.strip() == "compressionjob.kompress.dev/tiny-laptop created", applied.stderr
        assert kubectl("get", "cjob", "tiny-laptop", "-o", "name").stdout.strip() == "compressionjob.kompress.dev/tiny-laptop"
        # The node agent's kubeconfig carries its ServiceAccount, with a kubelet's rights and no more.
        assert kubectl("auth", "can-i", "patch", "pods", "--subresource=status", "-A", config=agent_kubeconfig).stdout.strip() == "yes"
        assert kubectl("auth", "can-i", "create", "jobs", "-A", config=agent_kubeconfig).stdout.strip() == "no"
    finally:
        children = [p for p in psutil.Process(process.pid).children(recursive=True)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "every component stopped"


def process_names(pid: int) -> set[str]:
    return {p.name() for p in psutil.Process(pid).children(recursive=True)}


def test_a_crd_the_api_server_refuses_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad-crd.yaml"
    bad.write_text("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: things.example.dev}\n"
                   "spec: {group: example.dev, scope: Namespaced, names: {plural: things, kind: Thing}, versions: []}\n")
    done = subprocess.run([sys.executable, "-m", "kompress_testing.cluster", "--crd", str(bad), "--kubeconfig", str(tmp_path / "kubeconfig")],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: the CRD {bad} was not installed: ") and "spec.versions: Invalid value" in line, line
