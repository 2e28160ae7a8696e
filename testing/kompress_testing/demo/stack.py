"""The whole product on one machine, as processes: S3, the Kubernetes API, the node agent, the operator.

    with running_stack(workdir) as stack:
        stack.kubectl("apply", "-f", "examples/demo.yaml")

Owns: starting each part the way it runs for real (the operator with the chart's KOMPRESS_* settings
and a ServiceAccount identity of its own; the node agent with its own; moto's S3 server with real
credential checks), waiting until each is ready, their log files under `<workdir>/logs/`, and stopping
everything it started, in reverse order, whatever happened. Used by `make demo` and the e2e test.
Must not: decide what to compress or print a narrative (demo/__main__.py does).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import importlib
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

from kompress_testing.apiserver import KubeClient

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD = REPO_ROOT / "crds" / "kompress.dev_compressionjobs.yaml"
KUBECTL = "/usr/bin/kubectl"
PYTHON = sys.executable
OPERATOR_ACCOUNT = ("kompress-system", "kompress-operator")
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
    api_url: str
    kubeconfig: Path  # the admin's: what a user's kubectl uses
    s3: Any  # kompress_testing.s3.MotoS3
    services: dict[str, Service]
    _client: KubeClient | None = None

    @property
    def client(self) -> KubeClient:
        """An admin client trusting the API server's CA (from its kubeconfig: the server made it in its own process)."""
        if self._client is None:
            ca = self.workdir / "apiserver-ca.pem"
            cluster = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            self._client = KubeClient(self.api_url)
            self._client.session.verify = str(ca)
        return self._client

    @property
    def node_logs(self) -> Path:
        return self.workdir / "node" / "logs"

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), KUBECACHEDIR=str(self.workdir / "kubectl-cache"))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([KUBECTL, *args], env=self.env(), input=input, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        if check and result.returncode != 0:
            raise StackError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result

    def check_alive(self) -> None:
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
                  agent_args: Sequence[str] = (), progress: Callable[[str], None] = lambda _: None) -> Iterator[Stack]:
    """Start S3, the API server, the node agent and the operator (in that order); stop them all on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("logs", "node", "kubectl-cache"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    logs = workdir / "logs"
    services: dict[str, Service] = {}
    with contextlib.ExitStack() as cleanup:
        s3 = start_s3(s3_port or free_port())
        cleanup.callback(s3.stop)
        progress(f"S3 (moto) at {s3.endpoint}")

        admin, operator_kc, agent_kc = workdir / "kubeconfig", workdir / "operator.kubeconfig", workdir / "node-agent.kubeconfig"
        api = Service("the API server", [PYTHON, "-m", "kompress_testing.apiserver", "--crd", str(CRD), "--kubeconfig", str(admin),
                                         "--service-account-kubeconfig", f"{'/'.join(OPERATOR_ACCOUNT)}={operator_kc}",
                                         "--service-account-kubeconfig", f"{'/'.join(AGENT_ACCOUNT)}={agent_kc}"],
                      logs / "apiserver.log", _python_env()).start()
        services["apiserver"] = api
        cleanup.callback(api.stop)
        url = api.wait_for_line(r"emulated Kubernetes API server at (\S+)", 60).group(1)
        api.wait_for("writing its kubeconfigs", lambda: agent_kc.exists() and operator_kc.exists(), 10)
        progress(f"Kubernetes API (emulated) at {url}")

        agent = Service("the node agent", [PYTHON, "-m", "kompress_testing.node_agent", "--kubeconfig", str(agent_kc),
                                           "--state-dir", str(workdir / "node"), *agent_args], logs / "node-agent.log", _python_env()).start()
        services["node-agent"] = agent
        cleanup.callback(agent.stop)
        agent.wait_for_line(r"node agent: node \S+ ready", 60)
        progress("node agent ready (Job controller, scheduler, kubelet: pods run as local processes)")

        health = free_port()
        # The chart's settings (charts/kompress/templates/deployment.yaml), plus a quicker resync so progress shows live.
        settings = {
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

        stack = Stack(workdir=workdir, api_url=url, kubeconfig=admin, s3=s3, services=services)
        yield stack


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:
        return False
