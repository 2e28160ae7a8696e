"""The node agent's way into a cluster: its RBAC bound, and a kubeconfig with its ServiceAccount's token.

    path = agent_kubeconfig(plane, workdir / "agent.kubeconfig")   # then: python -m kompress_testing.node_agent --kubeconfig path

Owns: applying `rbac_manifests()` as the admin and asking the TokenRequest API for a token, as one would
on any cluster. Must not: be used by the agent itself (it only has its own credentials).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kompress_testing.cluster.client import ApiStatusError, KubeClient
from kompress_testing.node_agent.agent import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, rbac_manifests

TOKEN_SECONDS = 7 * 24 * 3600  # a laptop session or a benchmark; the server's default (1 h) is too short for a day


def grant(admin: KubeClient) -> None:
    """Create the agent's ServiceAccount, ClusterRole and binding (those that exist are left as they are)."""
    for manifest in rbac_manifests():
        kind = manifest["kind"]
        if kind == "ServiceAccount":
            url = f"/api/v1/namespaces/{manifest['metadata']['namespace']}/serviceaccounts"
        else:
            url = f"/apis/rbac.authorization.k8s.io/v1/{kind.lower()}s"
        try:
            admin.post(url, manifest)
        except ApiStatusError as err:
            if err.code != 409:
                raise


def agent_kubeconfig(plane: Any, path: Path) -> Path:
    """Grant the agent's rights on `plane` (a kompress_testing.cluster ControlPlane) and write its kubeconfig."""
    grant(plane.admin())
    token = plane.service_account_token(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, TOKEN_SECONDS)
    return plane.write_token_kubeconfig(path, token, AGENT_NAMESPACE)
