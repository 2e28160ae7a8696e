"""An emulated Kubernetes API server for tests, built on KMock: see README.md for what is faithful.

    from kompress_testing.apiserver import ServerThread, KubeClient
    with ServerThread() as api:
        client = KubeClient(api.url)
"""

from kompress_testing.apiserver.runner import ApiStatusError, KubeClient, ServerThread, kubeconfig, write_kubeconfig
from kompress_testing.apiserver.server import ADMIN_TOKEN, ApiServer

__all__ = ["ADMIN_TOKEN", "ApiServer", "ApiStatusError", "KubeClient", "ServerThread", "kubeconfig", "write_kubeconfig"]
