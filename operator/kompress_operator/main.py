"""The operator's entry point: settings, logging, metrics, probe, then Kopf.

    kompress-operator [--watch-namespaces=ml,research] [--log-format=json] ...   (see --help)

Kopf runs standalone (one replica, no peering; the chart's Deployment uses Recreate), watching the
given namespaces or all of them. /healthz on the health port answers once the operator is up (Kopf's
liveness endpoint, used as the readiness probe too); /metrics on the metrics port.
Owns: wiring the runtime and starting Kopf. Must not: hold operator logic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

import kopf
from prometheus_client import start_http_server

from kompress_operator import config as settings
from kompress_operator import handlers  # noqa: F401 - registers the Kopf handlers
from kompress_operator.config import OperatorConfig
from kompress_operator.kube import Kube
from kompress_operator.metrics import Metrics
from kompress_operator.progress_client import ProgressClient
from kompress_operator.runtime import Runtime, utcnow


def build_runtime(config: OperatorConfig, clock: Callable[[], datetime] | None = None) -> Runtime:
    return Runtime(
        config=config,
        kube=Kube.connect(config, clock or utcnow),
        progress=ProgressClient(timeout_s=config.progress_timeout_s, default_port=config.progress_port),
        metrics=Metrics(),
        clock=clock or utcnow,
    )


async def run(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    clock: Callable[[], datetime] | None = None,
    on_runtime: Callable[[Runtime], None] | None = None,
) -> None:
    """Run the operator until stop_flag is set (or forever). Usable from a test's own thread."""
    runtime = build_runtime(config, clock)
    if on_runtime is not None:
        on_runtime(runtime)
    metrics_server = None
    if config.metrics_port:
        metrics_server, _ = start_http_server(config.metrics_port, registry=runtime.metrics.registry)
    try:
        await kopf.operator(
            standalone=True,
            clusterwide=config.clusterwide,
            namespaces=list(config.watch_namespaces),
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
            memo=kopf.Memo(runtime=runtime),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        runtime.kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = settings.load(sys.argv[1:] if argv is None else argv, os.environ)
    except ValueError as err:
        print(f"kompress-operator: {err}", file=sys.stderr)
        return 2
    kopf.configure(verbose=config.verbose, log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL)
    if not config.verbose:
        # Kopf says "Handler ... succeeded" for every watch event; our own log says what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
