"""`python -m kompress_testing.cluster --kubeconfig PATH [--crd FILE] [--workdir DIR] [--node-agent-kubeconfig PATH]`

Starts the real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler; `make cluster`
builds them), installs the CRD if given, writes an admin kubeconfig, prints one line

    Kubernetes control plane v1.35.4 at https://127.0.0.1:PORT

and serves until SIGTERM or SIGINT, then stops every process. With `--node-agent-kubeconfig`, the played
kubelet's rights (`kompress_testing.node_agent.rbac_manifests()`) are bound and a kubeconfig with its
ServiceAccount's token is written, for `python -m kompress_testing.node_agent --kubeconfig PATH`.
Exit codes: 0 stopped by a signal, 1 a component exited while serving, 2 the control plane could not start or
the CRD was refused (one line on stderr).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from kompress_testing.cluster.controlplane import ControlPlane


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kompress_testing.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write the admin's kubeconfig")
    parser.add_argument("--crd", type=Path, help="a CustomResourceDefinition to install (and wait for) before serving")
    parser.add_argument("--workdir", type=Path, help="logs, certificates and the audit log (default: a temporary folder, removed on exit)")
    parser.add_argument("--node-agent-kubeconfig", type=Path, help="bind the node agent's RBAC and write its kubeconfig here")
    return parser.parse_args(argv)


class CrdRefused(Exception):
    """kubectl's words for why the CRD was not installed."""


def install_crd(plane: ControlPlane, admin: Path, crd: Path) -> None:
    """kubectl apply, then wait until the API server serves it (Established)."""
    applied = plane.kubectl("apply", "--server-side", "-f", str(crd), "-o", "name", kubeconfig=admin, check=False)
    if applied.returncode == 0:
        applied = plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *applied.stdout.split(), kubeconfig=admin, check=False)
    if applied.returncode != 0:
        raise CrdRefused(" ".join(applied.stderr.split()))


def serve(args: argparse.Namespace, workdir: Path, stop: threading.Event) -> int:
    try:
        plane = ControlPlane.start(workdir)
    except RuntimeError as err:
        print(f"error: the control plane did not start: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        admin_path = plane.write_admin_kubeconfig(args.kubeconfig)
        if args.crd:
            try:
                install_crd(plane, admin_path, args.crd)
            except CrdRefused as err:
                print(f"error: the CRD {args.crd} was not installed: {err}", file=sys.stderr)
                return 2
        if args.node_agent_kubeconfig:
            from kompress_testing.node_agent.access import agent_kubeconfig

            agent_kubeconfig(plane, args.node_agent_kubeconfig)
        print(f"Kubernetes control plane {plane.version()} at {plane.url}", flush=True)
        while not stop.wait(1):
            plane.check_alive()
        return 0
    except RuntimeError as err:  # a component exited under us
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        plane.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.workdir:
        return serve(args, args.workdir, stop)
    with tempfile.TemporaryDirectory(prefix="kompress-cluster-") as tmp:
        return serve(args, Path(tmp), stop)


if __name__ == "__main__":
    sys.exit(main())
