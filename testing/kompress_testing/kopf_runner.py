"""Running a Kopf operator against the emulated API server from a synchronous test.

Owns: a thread with its own event loop running `kopf.operator()` on a given registry, logged in to a
given server with a bearer token, stopped and joined on exit. Must not: define handlers (tests and the
product do), nor patch Kopf or any API client.

Why a thread with its own loop: at shutdown `kopf.operator()` cancels every task created after it
started, which would include an in-loop server's handlers (see /work/shared/notes/kubernetes-testing.md).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf


class KopfThread:
    """`with KopfThread(registry, url, token): ...` runs the operator for the duration of the block."""

    def __init__(self, registry: kopf.OperatorRegistry, url: str, token: str, namespaces: list[str] | None = None,
                 settings: dict[str, Any] | None = None, startup_timeout: float = 30) -> None:
        self.registry = registry
        self.url = url
        self.token = token
        self.namespaces = namespaces
        self.settings = settings or {}
        self.startup_timeout = startup_timeout
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kopf-operator", daemon=True)

        @kopf.on.login(registry=registry)
        def _login(**_: Any) -> kopf.ConnectionInfo:
            from kompress_testing.apiserver.tls import certificates

            ca_path = str(certificates().ca_path) if self.url.startswith("https://") else None
            return kopf.ConnectionInfo(server=self.url, scheme="Bearer", token=self.token, ca_path=ca_path,
                                       default_namespace="default")

        @kopf.on.startup(registry=registry)
        def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.posting.level = 0  # post every event, so tests can look for them
            settings.watching.server_timeout = 30
            settings.networking.request_timeout = 10
            settings.watching.reconnect_backoff = 0.2
            for path, value in self.settings.items():
                target: Any = settings
                *parents, leaf = path.split(".")
                for parent in parents:
                    target = getattr(target, parent)
                setattr(target, leaf, value)

    def __enter__(self) -> KopfThread:
        self._thread.start()
        if not self._ready.wait(self.startup_timeout):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the Kopf operator did not get ready: {self._error!r}")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._error is not None and exc_info[0] is None:
            raise RuntimeError("the Kopf operator failed") from self._error

    def _main(self) -> None:
        try:
            asyncio.run(kopf.operator(
                registry=self.registry, standalone=True, namespaces=self.namespaces or [],
                clusterwide=not self.namespaces, stop_flag=self._stop, ready_flag=self._ready,
            ))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._error = exc
            self._ready.set()
