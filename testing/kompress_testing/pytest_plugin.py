"""Pytest fixtures for tests that need a Kubernetes API: a fresh emulated server per test.

Register with `pytest_plugins = ["kompress_testing.pytest_plugin"]` (tests/conftest.py does).

    def test_something(apiserver):
        apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml")
        job = apiserver.client.get(apiserver.path("compressionjobs", "default", "tiny-laptop"))

`@pytest.mark.apiserver(rbac=True, crd=False)` tunes it: enforce RBAC for non-admin tokens; skip
installing the generated CompressionJob CRD. `node_agent` adds the local node agent (Jobs get pods that
run as local processes). Owns: fixtures and the `Cluster` handle. Must not: hold
API behaviour (apiserver/) or product logic.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import yaml

from kompress_testing.apiserver import ADMIN_TOKEN, ApiServer, KubeClient, ServerThread, write_kubeconfig

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "kompress.dev_compressionjobs.yaml"
KUBECTL = "/usr/bin/kubectl"
T = TypeVar("T")


@dataclass
class Cluster:
    """A running emulated API server and the ways to talk to it."""

    thread: ServerThread
    url: str
    kubeconfig: pathlib.Path
    client: KubeClient
    workdir: pathlib.Path

    @property
    def server(self) -> ApiServer:
        assert self.thread.server is not None
        return self.thread.server

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn in the server's event loop (to read or change server state safely)."""
        return self.thread.call(fn)

    def env(self, kubeconfig: pathlib.Path | None = None) -> dict[str, str]:
        """Environment for a process that should use this server (kubectl, an operator, a CLI)."""
        return dict(os.environ, KUBECONFIG=str(kubeconfig or self.kubeconfig), KUBECACHEDIR=str(self.workdir / "kubectl-cache"))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, token: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run /usr/bin/kubectl against this server (as the admin, or as the owner of `token`)."""
        kubeconfig = self.kubeconfig_for(token) if token else self.kubeconfig
        result = subprocess.run([KUBECTL, *args], env=self.env(kubeconfig), input=input, capture_output=True,
                                text=True, timeout=timeout, cwd=REPO_ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def kubeconfig_for(self, token: str, namespace: str = "default") -> pathlib.Path:
        path = self.workdir / f"kubeconfig-{abs(hash(token))}"
        if not path.exists():
            write_kubeconfig(path, self.url, token, namespace)
        return path

    def client_for(self, token: str | None) -> KubeClient:
        return KubeClient(self.url, token)

    def service_account_token(self, namespace: str, name: str) -> str:
        return self.call(lambda: self.server.service_account_token(namespace, name))

    def path(self, plural: str = "compressionjobs", namespace: str | None = "default", name: str | None = None,
             subresource: str | None = None, api_version: str = "kompress.dev/v1alpha1") -> str:
        return self.client.path(api_version, plural, namespace, name, subresource)

    def apply_crd(self, crd: dict[str, Any]) -> dict[str, Any]:
        return self.client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)


def load_kompress_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="session")
def kompress_crd() -> dict[str, Any]:
    """The committed CompressionJob CRD (crds/), as a dict."""
    return load_kompress_crd()


@contextlib.contextmanager
def running_cluster(workdir: pathlib.Path, crd: dict[str, Any] | None, **options: Any) -> Iterator[Cluster]:
    """A started emulated API server (with `crd` installed if given), stopped on exit."""
    rbac = options.pop("rbac", False)
    with ServerThread(rbac_enforced=rbac, **options) as thread:
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", thread.url, ADMIN_TOKEN)
        cluster = Cluster(thread=thread, url=thread.url, kubeconfig=kubeconfig, client=KubeClient(thread.url), workdir=workdir)
        if crd is not None:
            cluster.apply_crd(crd)
        yield cluster
        crashes = cluster.call(lambda: cluster.server.internal_errors)
        if crashes:
            pytest.fail(f"the emulated API server failed while serving these tests (answered 500): {crashes!r}")


@pytest.fixture
def apiserver(request: pytest.FixtureRequest, tmp_path: pathlib.Path, kompress_crd: dict[str, Any]) -> Iterator[Cluster]:
    """A fresh emulated API server with the CompressionJob CRD installed, its URL, kubeconfig, admin client."""
    marker = request.node.get_closest_marker("apiserver")
    options = dict(marker.kwargs) if marker else {}
    install_crd = options.pop("crd", True)
    with running_cluster(tmp_path, kompress_crd if install_crd else None, **options) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def module_apiserver(tmp_path_factory: pytest.TempPathFactory, kompress_crd: dict[str, Any]) -> Iterator[Cluster]:
    """One server for a whole module, for tests that leave nothing behind (e.g. requests that are refused);
    kubectl's discovery cache is shared too, so each kubectl call is quicker."""
    with running_cluster(tmp_path_factory.mktemp("apiserver"), kompress_crd) as cluster:
        yield cluster


def start_node_agent(cluster: Cluster, state_dir: pathlib.Path, **options: Any) -> Any:
    """The node agent (kompress_testing.node_agent) on `cluster`, with its own ServiceAccount identity and
    test-friendly timings (short pod failure back-off and grace periods); stop it with `.stop()`."""
    from kompress_testing.node_agent import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, AgentConfig, AgentThread

    token = cluster.service_account_token(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT)
    settings = {"backoff_base_s": 0.1, "max_grace_s": 2.0, "resync_s": 0.5, **options}
    return AgentThread(AgentConfig(kubeconfig=cluster.kubeconfig_for(token), state_dir=state_dir, **settings)).start()


@pytest.fixture
def node_agent(apiserver: Cluster, tmp_path: pathlib.Path) -> Iterator[Any]:
    """A node agent on the `apiserver` fixture's server: Jobs get pods, and pods run as local processes
    (state, volumes and logs under tmp_path/node). The test fails if the agent hit an unexpected error."""
    agent = start_node_agent(apiserver, tmp_path / "node")
    yield agent
    agent.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "apiserver(rbac=False, crd=True, **options): configure the emulated API server fixture")
