"""The whole product on one machine, as processes: S3, the real Kubernetes control plane (installed with
the chart by `helm install`), the played kubelet (node agent), the operator.

    with running_stack(workdir) as stack:
        stack.kubectl("apply", "-f", "examples/demo.yaml")

Owns: starting each part the way it runs for real (the chart installed with helm: CRD, RBAC,
ServiceAccounts; the operator with the chart's KOMPRESS_* settings and the chart's ServiceAccount's
token, as a process rather than the Deployment's pod, whose in-cluster credentials sit at fixed paths
a process can't be given; the node agent with its own identity; moto's S3 server with real
credential checks), waiting until each is ready, their log files under `<workdir>/logs/`, and stopping
everything it started, in reverse order, whatever happened. Used by `make demo` and the e2e test.
Must not: decide what to compress or print a narrative (demo/__main__.py does).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kompress_testing.cluster.build import helm_binary, kubectl_binary
from kompress_testing.cluster.client import KubeClient
from kompress_testing.cluster.controlplane import ControlPlane
from kompress_testing.node_agent import rbac_manifests

REPO_ROOT = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
RELEASE, RELEASE_NAMESPACE = "kompress", "kompress-system"
OPERATOR_ACCOUNT = (RELEASE_NAMESPACE, "kompress")  # the chart's (templates/serviceaccount.yaml)
AGENT_ACCOUNT = ("kube-system", "kompress-node-agent")
WORKER_IMAGE = "ghcr.io/kompress-dev/kompress-worker:0.1.0"  # the chart's default (values.yaml worker.image)

_libc = ctypes.CDLL(None, use_errno=True)


class StackError(Exception):
    """A part of the stack did not start or stopped early; the message says which and shows its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a killed demo leaves nothing running


@dataclass
class Service:
    """One long-running process of the stack, its output in a log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                          env=dict(self.env), start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
        return self

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise StackError(f"{self.name} exited with code {self.popen.returncode}; the end of {self.log_path}:\n{tail(self.log_path)}")

    def wait_for(self, what: str, ready: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            result = ready()
            if result:
                return result
            time.sleep(0.1)
        raise StackError(f"{self.name} was not {what} after {timeout:.0f}s; the end of {self.log_path}:\n{tail(self.log_path)}")

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        return self.wait_for(f"ready (no line matching {pattern!r})",
                             lambda: regex.search(self.log_path.read_text(errors="replace")) if self.log_path.exists() else None, timeout)

    def stop(self, timeout: float = 20) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class Stack:
    workdir: Path
    plane: ControlPlane
    kubeconfig: Path  # the admin's: what a user's kubectl uses
    s3: Any  # kompress_testing.s3.MotoS3
    services: dict[str, Service]

    @property
    def api_url(self) -> str:
        return self.plane.url

    @property
    def client(self) -> KubeClient:
        return self.plane.admin()

    @property
    def node_logs(self) -> Path:
        return self.workdir / "node" / "logs"

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), KUBECACHEDIR=str(self.workdir / "kubectl-cache"))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(kubectl_binary()), *args], env=self.env(), input=input, capture_output=True, text=True,
                                timeout=timeout, cwd=REPO_ROOT)
        if check and result.returncode != 0:
            raise StackError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result

    def helm(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(helm_binary()), *args], env=self.env(), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        if result.returncode != 0:
            raise StackError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result

    def service_account_kubeconfig(self, account: tuple[str, str], path: Path) -> Path:
        """A kubeconfig with a real token of the ServiceAccount (TokenRequest API, one day)."""
        namespace, name = account
        token = self.plane.service_account_token(namespace, name)
        return self.plane.write_token_kubeconfig(path, token, namespace)

    def check_alive(self) -> None:
        self.plane.check_alive()
        for service in self.services.values():
            service.check_alive()


def _python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the stack's processes: no proxies, nothing of the user's cloud credentials."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_s3(port: int) -> Any:
    from kompress_testing.s3 import MotoS3

    s3 = MotoS3(auth=True)
    s3.port, s3.endpoint = port, f"http://127.0.0.1:{port}"
    return s3.start()


@contextlib.contextmanager
def running_stack(workdir: Path, *, s3_port: int | None = None, operator_settings: Mapping[str, str] | None = None,
                  agent_args: Sequence[str] = (), helm_values: Sequence[str] = (),
                  progress: Callable[[str], None] = lambda _: None) -> Iterator[Stack]:
    """Start S3, the API server, the node agent and the operator (in that order); stop them all on exit.
    `helm_values`: `--set` values of the chart (e.g. cache.enabled=true); the operator process gets the KOMPRESS_*
    settings the chart's Deployment then carries, as its container would."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("logs", "node", "kubectl-cache"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    logs = workdir / "logs"
    services: dict[str, Service] = {}
    with contextlib.ExitStack() as cleanup:
        s3 = start_s3(s3_port or free_port())
        cleanup.callback(s3.stop)
        progress(f"S3 (moto) at {s3.endpoint}")

        plane = ControlPlane.start(workdir / "cluster")
        cleanup.callback(plane.stop)
        stack = Stack(workdir=workdir, plane=plane, kubeconfig=plane.write_admin_kubeconfig(workdir / "kubeconfig"), s3=s3, services=services)
        progress(f"Kubernetes {plane.version()} at {plane.url} (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)")
        # The chart as a platform team installs it: CRD, RBAC, ServiceAccounts. Its Deployment is scaled to 0:
        # the operator runs below as a local process, with the chart's ServiceAccount's identity.
        stack.helm("install", RELEASE, str(REPO_ROOT / "charts" / "kompress"), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
                   *(arg for value in helm_values for arg in ("--set", value)))
        stack.kubectl("scale", "deployment", "kompress-operator", "--namespace", RELEASE_NAMESPACE, "--replicas=0")
        stack.kubectl("wait", "--for=condition=Established", "crd/compressionjobs.kompress.dev", "--timeout=60s")
        progress("chart installed with helm (CRD, RBAC, ServiceAccounts)")
        for manifest in rbac_manifests():
            stack.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        operator_kc = stack.service_account_kubeconfig(OPERATOR_ACCOUNT, workdir / "operator.kubeconfig")
        agent_kc = stack.service_account_kubeconfig(AGENT_ACCOUNT, workdir / "node-agent.kubeconfig")

        agent = Service("the node agent", [PYTHON, "-m", "kompress_testing.node_agent", "--kubeconfig", str(agent_kc),
                                           "--state-dir", str(workdir / "node"), *agent_args], logs / "node-agent.log", _python_env()).start()
        services["node-agent"] = agent
        cleanup.callback(agent.stop)
        agent.wait_for_line(r"node agent: node \S+ ready", 60)
        progress("node agent ready (the played kubelet: pods run as local processes)")

        health = free_port()
        # The chart's settings (charts/kompress/templates/deployment.yaml), plus a quicker resync so progress shows live.
        settings = {
            **_chart_settings(stack),
            "KOMPRESS_WATCH_NAMESPACES": "", "KOMPRESS_WORKER_IMAGE": WORKER_IMAGE, "KOMPRESS_GPU_RESOURCE_NAME": "nvidia.com/gpu",
            "KOMPRESS_WORKER_SERVICE_ACCOUNT": "kompress-worker", "KOMPRESS_LOG_FORMAT": "text", "KOMPRESS_HEALTH_PORT": str(health),
            "KOMPRESS_METRICS_PORT": "0", "KOMPRESS_KUBECONFIG": str(operator_kc), "KOMPRESS_RESYNC_INTERVAL": "1",
            **(operator_settings or {}),
        }
        operator = Service("the operator", [PYTHON, "-m", "kompress_operator"], logs / "operator.log", _python_env(settings)).start()
        services["operator"] = operator
        cleanup.callback(operator.stop)
        operator.wait_for("healthy", lambda: _http_ok(f"http://127.0.0.1:{health}/healthz"), 90)
        progress("operator ready")

        yield stack


def _chart_settings(stack: Stack) -> dict[str, str]:
    """The KOMPRESS_* values of the installed chart's operator Deployment (its container's env)."""
    deployment = stack.client.get(f"/apis/apps/v1/namespaces/{RELEASE_NAMESPACE}/deployments/kompress-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env") or [] if e["name"].startswith("KOMPRESS_") and "value" in e}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:
        return False
