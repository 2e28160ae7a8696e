"""An emulated Kubernetes API server for tests, built on KMock: see README.md for what is faithful.

    from kompress_testing.apiserver import ServerThread, KubeClient
    with ServerThread() as api:
        client = KubeClient(api.url)

Names are loaded lazily, so `kompress_testing.crdschema` can use `apiserver.errors` without
importing the server.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ADMIN_TOKEN": "server", "ApiServer": "server",
    "ApiStatusError": "runner", "KubeClient": "runner", "ServerThread": "runner", "kubeconfig": "runner",
    "write_kubeconfig": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"kompress_testing.apiserver.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
