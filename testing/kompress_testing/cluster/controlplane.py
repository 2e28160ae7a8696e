"""The real Kubernetes control plane for tests and the demo: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler as local processes, built from Go modules
(`testing/cluster/`, `make cluster`).

    with ControlPlane.start(workdir) as cp:
        cp.kubectl("get", "nodes")
        KubeClient.admin(cp)

Only the kubelet is played (`kompress_testing.node_agent`). Owns: the processes, their flags, ports,
readiness and logs, and kubeconfigs for the admin and for ServiceAccount tokens. Must not: know
anything of Kompress (the CRD is installed by the fixtures).
"""

from __future__ import annotations

import contextlib
import json
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from kompress_testing.cluster import pki as pki_mod
from kompress_testing.cluster.build import binaries_dir, kubectl_binary
from kompress_testing.cluster.client import KubeClient

# Controllers the tests and the demo rely on. Left out on purpose: the node lifecycle controller
# (played nodes stop heartbeating between tests and would be tainted), service/route controllers
# (no cloud), and everything that needs a real kubelet or network.
CONTROLLERS = tuple(f"{name}-controller" for name in (
    "job", "garbage-collector", "namespace", "serviceaccount", "serviceaccount-token", "pod-garbage-collector",
    "ttl-after-finished", "root-ca-certificate-publisher", "deployment", "replicaset", "clusterrole-aggregation",
    "persistentvolume-binder", "persistentvolume-protection", "persistentvolumeclaim-protection", "ephemeral-volume",
    "resourcequota", "disruption",
))
SERVICE_CIDR = "10.0.0.0/24"
READY_TIMEOUT_S = 120  # a busy 2-core CI machine took upstream's test server 30+ s to start

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a killed test run leaves no control plane behind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig(server: str, ca: Path, *, cert: tuple[Path, Path] | None = None, token: str | None = None,
               namespace: str = "default", user: str = "user") -> dict[str, Any]:
    credentials: dict[str, Any] = {"token": token} if token else {}
    if cert:
        credentials = {"client-certificate": str(cert[0]), "client-key": str(cert[1])}
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
    }


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")


@dataclass
class ControlPlane:
    workdir: Path
    url: str
    pki: pki_mod.Pki
    processes: list[Process] = field(default_factory=list)

    # -- start and stop -------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path | None = None) -> Iterator[ControlPlane]:
        plane = cls.start(workdir)
        try:
            yield plane
        finally:
            plane.stop()

    @classmethod
    def start(cls, workdir: Path | None = None) -> ControlPlane:
        bins = binaries_dir()
        workdir = workdir or Path(tempfile.mkdtemp(prefix="kompress-cluster-"))
        workdir.mkdir(parents=True, exist_ok=True)
        certs = pki_mod.create(workdir / "pki")
        port = free_port()
        plane = cls(workdir=workdir, url=f"https://127.0.0.1:{port}", pki=certs)
        try:
            plane._start_etcd(bins)
            plane._start_apiserver(bins, port)
            plane._wait_ready()
            plane._start_component(bins, "kube-controller-manager", "controller-manager", [
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--root-ca-file={certs.ca_cert}",
                # Each controller as its own ServiceAccount, bound by the bootstrap RBAC policy (as kubeadm runs it).
                "--use-service-account-credentials=true", "--leader-elect=false", "--secure-port=0",
                # A test's pods end in seconds; the default 12 500 terminated pods before podgc acts is for clusters.
                "--terminated-pod-gc-threshold=1000",
                "--concurrent-job-syncs=5", "--concurrent-gc-syncs=10",
            ])
            plane._start_component(bins, "kube-scheduler", "scheduler", ["--leader-elect=false", "--secure-port=0"])
            plane._wait_for_default_service_account()
        except BaseException:
            plane.stop()
            raise
        return plane

    def _spawn(self, name: str, argv: list[str]) -> Process:
        log = self.workdir / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509 - prctl only
        handle.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def _start_etcd(self, bins: Path) -> None:
        # tmpfs: etcd's writes are the floor of every API call's latency; durability is not wanted here.
        data = Path(tempfile.mkdtemp(prefix="kompress-etcd-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        self.etcd_data = data
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self._spawn("etcd", [str(bins / "etcd"), f"--data-dir={data}", f"--listen-client-url={self.etcd_url}",
                             f"--listen-peer-url=http://127.0.0.1:{free_port()}"])

    def _start_apiserver(self, bins: Path, port: int) -> None:
        p = self.pki
        kubelet_cert, kubelet_key = p.client("apiserver-kubelet-client")
        self._spawn("kube-apiserver", [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.service_account_pub}",
            f"--service-account-signing-key-file={p.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # Pod logs are proxied to the played kubelet on its node address, as on a cluster.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={kubelet_cert}", f"--kubelet-client-key={kubelet_key}",
            # Every request, who made it and the answer: tests read refusals from here (`denied`), as
            # an auditor would on a cluster, instead of asking the server's internals.
            f"--audit-policy-file={self._audit_policy()}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking",  # written before the answer is sent
            "--profiling=false", "--v=1",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
        ])

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_policy(self) -> Path:
        path = self.workdir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                                        "rules": [{"level": "Metadata"}]}))
        return path

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log so far (blocking mode: a request's event is written before its answer)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def _start_component(self, bins: Path, binary: str, who: str, flags: list[str]) -> None:
        path = self.workdir / f"{who}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(self.url, self.pki.ca_cert, cert=self.pki.client(who), user=who)))
        self._spawn(binary, [str(bins / binary), f"--kubeconfig={path}", *flags])

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.pki.ca_cert)
        session.cert = tuple(str(x) for x in self.pki.client("admin"))  # type: ignore[assignment]
        return session

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        session = self._session()
        last = ""
        while time.monotonic() < deadline:
            for process in self.processes:
                process.check_alive()
            try:
                response = session.get(f"{self.url}/readyz", timeout=5)
                if response.status_code == 200:
                    return
                last = response.text[-500:]
            except requests.RequestException as err:
                last = str(err)
            time.sleep(0.25)
        raise RuntimeError(f"kube-apiserver not ready after {READY_TIMEOUT_S}s: {last}")

    def _wait_for_default_service_account(self) -> None:
        """Pods can't be created in a namespace before its `default` ServiceAccount exists."""
        session = self._session()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for process in self.processes:
                process.check_alive()
            if session.get(f"{self.url}/api/v1/namespaces/default/serviceaccounts/default", timeout=5).status_code == 200:
                return
            time.sleep(0.25)
        raise RuntimeError("kube-controller-manager never created the default ServiceAccount")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.popen.wait(10)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(5)
        self.processes.clear()
        if getattr(self, "etcd_data", None):
            shutil.rmtree(self.etcd_data, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- ways in --------------------------------------------------------------------------------

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def admin(self) -> KubeClient:
        """A client with the admin's client certificate (group system:masters)."""
        return KubeClient(self.url, self.pki.ca_cert, cert=self.pki.client("admin"))

    def service_account_token(self, namespace: str, name: str, seconds: int = 86400) -> str:
        """A real token of the ServiceAccount, from the TokenRequest API (as kubectl create token asks for one)."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}}
        return str(self.admin().post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)["status"]["token"])

    def version(self) -> str:
        """What kube-apiserver's /version says (gitVersion), e.g. v1.35.4."""
        return str(self._session().get(f"{self.url}/version", timeout=5).json()["gitVersion"])

    def write_admin_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(yaml.safe_dump(kubeconfig(self.url, self.pki.ca_cert, cert=self.pki.client("admin"),
                                                  namespace=namespace, user="admin")))
        return path

    def write_token_kubeconfig(self, path: Path, token: str, namespace: str = "default") -> Path:
        path.write_text(yaml.safe_dump(kubeconfig(self.url, self.pki.ca_cert, token=token, namespace=namespace)))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or self.write_admin_kubeconfig(self.workdir / "admin.kubeconfig")
        env = dict(os.environ, KUBECONFIG=str(config), KUBECACHEDIR=str(self.workdir / "kubectl-cache"))
        result = subprocess.run([str(kubectl_binary()), *args], env=env, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result
