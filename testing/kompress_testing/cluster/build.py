"""Where the built control plane and the client binaries live (`make cluster`, `make tools`).

Owns: the paths and the pinned Kubernetes version (read from testing/cluster/go.mod, its one home).
Must not: build anything (the Makefile does, so a fresh machine pays the build once).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
GO_MODULE = REPO_ROOT / "testing" / "cluster"
TOOLS = REPO_ROOT / ".tools"


@functools.lru_cache(maxsize=1)
def kubernetes_version() -> str:
    """The k8s.io/kubernetes version go.mod pins, e.g. 'v1.35.4'."""
    found = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (GO_MODULE / "go.mod").read_text(), re.MULTILINE)
    if not found:
        raise RuntimeError(f"no k8s.io/kubernetes requirement in {GO_MODULE / 'go.mod'}")
    return found.group(1)


def binaries_dir() -> Path:
    path = TOOLS / f"k8s-{kubernetes_version()}"
    if not (path / "kube-apiserver").exists():
        raise RuntimeError(f"the test control plane is not built ({path}): run `make cluster`")
    return path


def kubectl_binary() -> Path:
    path = TOOLS / "kubectl"
    if not path.exists():
        raise RuntimeError(f"kubectl is not installed ({path}): run `make tools`")
    return path


def helm_binary() -> Path:
    path = TOOLS / "helm"
    if not path.exists():
        raise RuntimeError(f"helm is not installed ({path}): run `make tools`")
    return path
