"""`python -m kompress_testing.apiserver` serves until stopped, with the CRD installed and a kubeconfig written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from kompress_testing.pytest_plugin import CRD_PATH, KUBECTL, REPO_ROOT

pytestmark = pytest.mark.integration


def test_the_server_runs_as_a_process_for_kubectl(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen([sys.executable, "-m", "kompress_testing.apiserver", "--port", "0", "--crd", str(CRD_PATH),
                                "--kubeconfig", str(kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = process.stdout.readline()
        assert banner.startswith("emulated Kubernetes API server at https://127.0.0.1:"), banner
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), KUBECACHEDIR=str(tmp_path / "cache"))
        applied = subprocess.run([KUBECTL, "apply", "-f", "examples/tiny-laptop.yaml"], env=env, cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=30)
        assert applied.stdout.strip() == "compressionjob.kompress.dev/tiny-laptop created", applied.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
