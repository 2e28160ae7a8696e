"""The worker's progress endpoint: what the operator polls, with no Kubernetes rights in the pod.

    GET /progress   WorkerProgress JSON (kompress_api.worker_protocol)
    GET /metrics    Prometheus text: stage, percent, ETA, bytes moved per stage, stage durations
    GET /healthz    200 ok while the process lives

Owns: a stdlib HTTP server on a daemon thread, bound to $KOMPRESS_PROGRESS_BIND (HOST:PORT, default
0.0.0.0:8080), reading the one ProgressReporter and the stage timings at request time.
Must not: change progress, or serve anything that could hold a secret (progress JSON passes the redactor).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kompress_api.worker_protocol import HEALTH_PATH, METRICS_PATH, PROGRESS_PATH, PROGRESS_PORT, WorkerProgress

from kompress_job.io.cache.metrics import STATS
from kompress_job.progress import ProgressReporter

DEFAULT_BIND = f"0.0.0.0:{PROGRESS_PORT}"


def parse_bind(bind: str) -> tuple[str, int]:
    """HOST:PORT, [v6]:PORT or :PORT (all interfaces)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"progress bind address must be HOST:PORT, got {bind!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class StageBytes:
    """A progress sink remembering the most bytes each stage moved (the reporter only knows the current one)."""

    def __init__(self) -> None:
        self.by_stage: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, snap: WorkerProgress) -> None:
        if snap.stage and snap.bytes_done is not None:
            with self._lock:
                self.by_stage[snap.stage] = max(self.by_stage.get(snap.stage, 0), snap.bytes_done)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_stage)


class _Collector:
    """Prometheus collector reading the reporter at scrape time (no state of its own to drift)."""

    def __init__(self, reporter: ProgressReporter, timings: Mapping[str, float], stage_bytes: StageBytes, labels: dict[str, str]) -> None:
        self.reporter, self.timings, self.stage_bytes, self.labels = reporter, timings, stage_bytes, labels

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.reporter.snapshot()
        names, values = list(self.labels), list(self.labels.values())
        gauges = [
            ("kompress_progress_percent", "overall percent done", snap.percent),
            ("kompress_stage_index", "1-based index of the current stage", snap.stage_index),
            ("kompress_stage_count", "number of stages", snap.stage_count),
            ("kompress_eta_seconds", "estimated seconds left", snap.eta_seconds),
            ("kompress_transfer_bytes_done", "bytes moved in the current transfer", snap.bytes_done),
            ("kompress_transfer_bytes_total", "bytes to move in the current transfer", snap.bytes_total),
        ]
        for name, doc, value in gauges:
            if value is not None:
                g = GaugeMetricFamily(name, doc, labels=names)
                g.add_metric(values, float(value))
                yield g
        stage = GaugeMetricFamily("kompress_stage", "1 for the stage running now", labels=[*names, "stage"])
        for name in self.reporter.stages + ["done"]:
            stage.add_metric([*values, name], 1.0 if snap.stage == name else 0.0)
        yield stage
        moved = CounterMetricFamily("kompress_bytes_moved", "bytes downloaded or uploaded, per stage", labels=[*names, "stage"])
        for name, n in sorted(self.stage_bytes.snapshot().items()):
            moved.add_metric([*values, name], float(n))
        yield moved
        durations = GaugeMetricFamily("kompress_stage_duration_seconds", "wall time of each finished stage", labels=[*names, "stage"])
        for name, seconds in sorted(dict(self.timings).items()):
            durations.add_metric([*values, name], float(seconds))
        yield durations
        yield from STATS.families(names, values)


class ProgressServer:
    """`with ProgressServer(reporter, bind, timings):` serves until the block ends."""

    def __init__(
        self,
        reporter: ProgressReporter,
        bind: str = DEFAULT_BIND,
        *,
        timings: Mapping[str, float] | None = None,
        labels: dict[str, str] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.reporter = reporter
        self.redact = redact or (lambda text: text)  # stage messages are free text: the last guard, as for logs
        self.host, self.port = parse_bind(bind)
        self.stage_bytes = StageBytes()
        reporter.add_sink(self.stage_bytes)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(reporter, timings if timings is not None else {}, self.stage_bytes, labels or {}))  # type: ignore[arg-type]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "ProgressServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the operator polls often; don't log each poll
                return

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == PROGRESS_PATH:
                    body, ctype = owner.redact(json.dumps(owner.reporter.snapshot().wire())).encode(), "application/json"
                elif path == METRICS_PATH:
                    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                    body, ctype = generate_latest(owner.registry), CONTENT_TYPE_LATEST
                elif path == HEALTH_PATH:
                    body, ctype = b"ok\n", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        family = ThreadingHTTPServer
        if ":" in self.host:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            family = V6
        self._server = family((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="progress-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "ProgressServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
