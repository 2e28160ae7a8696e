"""Pytest fixtures for tests that need Kubernetes: one real control plane for the whole session
(`kompress_testing.cluster`), and a namespace of its own for each test.

Register with `pytest_plugins = ["kompress_testing.pytest_plugin"]` (tests/conftest.py does).

    def test_something(apiserver):
        apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml")      # into the test's namespace
        job = apiserver.client.get(apiserver.path("compressionjobs", name="tiny-laptop"))

`node_agent` adds the played kubelet (pods bound to its Node run as local processes); `oci_registry` a real OCI
registry for the whole session (kompress_testing.registry). Owns: fixtures
and the `Cluster` view. Must not: hold control-plane mechanics (cluster/) or product logic.
"""

from __future__ import annotations

import os
import pathlib
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from kompress_testing.cluster.build import kubectl_binary
from kompress_testing.cluster.client import ApiStatusError, KubeClient
from kompress_testing.cluster.controlplane import ControlPlane

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "kompress.dev_compressionjobs.yaml"
CRD_NAME = "compressionjobs.kompress.dev"


@dataclass
class Cluster:
    """The session's control plane as one test sees it: its own namespace, an admin client, kubectl."""

    plane: ControlPlane
    namespace: str
    workdir: pathlib.Path

    @property
    def url(self) -> str:
        return self.plane.url

    @property
    def client(self) -> KubeClient:
        return self.plane.admin()

    @property
    def kubeconfig(self) -> pathlib.Path:
        """The admin's kubeconfig, with this test's namespace as the default."""
        path = self.workdir / f"kubeconfig-admin-{self.namespace}"
        if not path.exists():
            self.plane.write_admin_kubeconfig(path, self.namespace)
        return path

    def env(self, kubeconfig: pathlib.Path | None = None) -> dict[str, str]:
        """Environment for a process that should use this cluster (kubectl, an operator, a CLI)."""
        return dict(os.environ, KUBECONFIG=str(kubeconfig or self.kubeconfig), KUBECACHEDIR=str(self.workdir / "kubectl-cache"))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, token: str | None = None,
                timeout: float = 60, kubeconfig: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl (.tools/kubectl, the pinned version) as the admin, or as the owner of `token`."""
        config = kubeconfig or (self.kubeconfig_for(token) if token else self.kubeconfig)
        result = subprocess.run([str(kubectl_binary()), *args], env=self.env(config), input=input, capture_output=True,
                                text=True, timeout=timeout, cwd=REPO_ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def kubeconfig_for(self, token: str, namespace: str | None = None) -> pathlib.Path:
        path = self.workdir / f"kubeconfig-{secrets.token_hex(4)}"
        return self.plane.write_token_kubeconfig(path, token, namespace or self.namespace)

    def client_for(self, token: str) -> KubeClient:
        return KubeClient(self.plane.url, self.plane.pki.ca_cert, token=token)

    def service_account_token(self, namespace: str, name: str, *, create: bool = True) -> str:
        """A real token for the ServiceAccount (TokenRequest API), creating the account if asked."""
        client = self.client
        if create and client.get_or_none(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}") is None:
            try:
                client.post(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
            except ApiStatusError as err:
                if err.code != 409:
                    raise
        return self.plane.service_account_token(namespace, name)

    def path(self, plural: str = "compressionjobs", namespace: str | None = "", name: str | None = None,
             subresource: str | None = None, api_version: str = "kompress.dev/v1alpha1") -> str:
        """An API path; the namespace defaults to the test's (None: cluster-scoped)."""
        return KubeClient.path(api_version, plural, self.namespace if namespace == "" else namespace, name, subresource)

    def denied(self, user: str | None = None) -> list[str]:
        """Requests the API server refused with 403 in this test's namespace (or cluster-wide ones), from its
        audit log, as `user verb resource`; only those of `user` if given."""
        out = []
        for event in self.plane.audit_events():
            if (event.get("responseStatus") or {}).get("code") != 403:
                continue
            ref = event.get("objectRef") or {}
            if ref.get("namespace") not in (None, self.namespace):
                continue
            who = (event.get("user") or {}).get("username", "")
            if user is None or who == user:
                resource = ref.get("resource", event.get("requestURI", ""))
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                out.append(f"{who} {event.get('verb')} {resource}")
        return out

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the API server makes of `obj` (a CompressionJob) without storing it: the defaulted, pruned object,
        or ApiStatusError (422 Invalid, 400 strict decoding) with its causes. With `old`, `old` is created for
        real first and `obj` is a dry-run update of it (transition rules such as immutability need the stored one)."""
        obj = {**obj, "metadata": {**obj.get("metadata", {}), "namespace": self.namespace}}
        params = {"dryRun": "All", "fieldValidation": "Strict"}
        if old is None:
            return self.client.post(self.path(), obj, **params)
        stored = self.client.post(self.path(), {**old, "metadata": {**old.get("metadata", {}), "namespace": self.namespace}})
        obj["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        try:
            return self.client.put(self.path(name=stored["metadata"]["name"]), obj, **params)
        finally:
            self.client.delete(self.path(name=stored["metadata"]["name"]))

    def create_namespace(self, name: str) -> None:
        try:
            self.client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiStatusError as err:
            if err.code != 409:
                raise


def load_kompress_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def install_crd(plane: ControlPlane, crd: dict[str, Any]) -> None:
    """Create or replace the CRD and wait until it is Established (served)."""
    import time

    client = plane.admin()
    url = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
    current = client.get_or_none(url)
    if current is None:
        client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    elif current["spec"] != crd["spec"]:
        client.put(url, {**crd, "metadata": {**crd["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = client.get(url).get("status") or {}
        if any(c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions") or []):
            return
        time.sleep(0.1)
    raise RuntimeError(f"CRD {crd['metadata']['name']} never became Established")


@pytest.fixture(scope="session")
def kompress_crd() -> dict[str, Any]:
    """The committed CompressionJob CRD (crds/), as a dict."""
    return load_kompress_crd()


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's OCI registry (kompress_testing.registry: the CNCF distribution registry on loopback, htpasswd
    auth with a real password). Tests keep apart by repository name."""
    from kompress_testing.registry import LocalRegistry

    with LocalRegistry(tmp_path_factory.mktemp("oci-registry")) as registry:
        yield registry


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The session's one control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)."""
    from kompress_testing.node_agent.access import grant

    with ControlPlane.running(tmp_path_factory.mktemp("control-plane")) as plane:
        grant(plane.admin())  # the played kubelet's rights
        yield plane
        plane.check_alive()


def _namespace_for(node: pytest.Item) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


def _leave_namespace(cluster: Cluster) -> None:
    """Delete the test's namespace without waiting. CompressionJobs lose their finalizers and go first: the
    operator that put the finalizers there is gone, and a cluster-wide operator of a later test must not find them."""
    client = cluster.client
    try:
        for item in client.get(cluster.path())["items"]:
            if item["metadata"].get("finalizers"):
                client.patch(cluster.path(name=item["metadata"]["name"]), {"metadata": {"finalizers": None}})
        # Gone now, not when the namespace controller gets to them: a later test's cluster-wide operator must
        # not reconcile them into a namespace that refuses new content.
        client.request("DELETE", cluster.path(), params={"propagationPolicy": "Background"})
        client.delete(f"/api/v1/namespaces/{cluster.namespace}")
    except ApiStatusError:
        pass


@pytest.fixture
def fresh_namespace(request: pytest.FixtureRequest, control_plane: ControlPlane, tmp_path: pathlib.Path,
                    kompress_crd: dict[str, Any]) -> Iterator[Any]:
    """A factory of `Cluster` views, each with a new namespace (removed at the end of the test)."""
    install_crd(control_plane, kompress_crd)
    made: list[Cluster] = []

    def make() -> Cluster:
        cluster = Cluster(control_plane, _namespace_for(request.node), tmp_path)
        cluster.create_namespace(cluster.namespace)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        _leave_namespace(cluster)
    control_plane.check_alive()


@pytest.fixture(scope="module")
def module_apiserver(request: pytest.FixtureRequest, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory,
                     kompress_crd: dict[str, Any]) -> Iterator[Cluster]:
    """One namespace for a whole module, for tests that leave nothing behind (e.g. requests that are refused)."""
    install_crd(control_plane, kompress_crd)
    cluster = Cluster(control_plane, _namespace_for(request.node), tmp_path_factory.mktemp("module-apiserver"))
    cluster.create_namespace(cluster.namespace)
    yield cluster
    _leave_namespace(cluster)


@pytest.fixture
def apiserver(fresh_namespace: Any) -> Cluster:
    """The session's control plane with the CompressionJob CRD installed, seen from a fresh namespace
    (deleted afterwards; Kubernetes' namespace controller removes what the test left in it)."""
    return fresh_namespace()


def start_node_agent(cluster: Cluster, state_dir: pathlib.Path, **options: Any) -> Any:
    """The played kubelet (kompress_testing.node_agent) on `cluster`, with its own ServiceAccount identity, a
    Node of its own name and test-friendly timings; stop it with `.stop()` (which deletes its Node)."""
    from kompress_testing.node_agent import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, AgentConfig, AgentThread

    token = cluster.service_account_token(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, create=False)
    settings = {"max_grace_s": 2.0, "resync_s": 0.5, "node_name": f"node-{cluster.namespace[-6:]}-{secrets.token_hex(2)}", **options}
    return AgentThread(AgentConfig(kubeconfig=cluster.kubeconfig_for(token), state_dir=state_dir, **settings)).start()


@pytest.fixture
def node_agent(apiserver: Cluster, tmp_path: pathlib.Path) -> Iterator[Any]:
    """A played kubelet on the session's cluster: pods bound to its Node run as local processes (state,
    volumes and logs under tmp_path/node). The test fails if the agent hit an unexpected error."""
    agent = start_node_agent(apiserver, tmp_path / "node")
    yield agent
    agent.stop()
