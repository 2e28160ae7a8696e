"""Prometheus metrics of the operator: CompressionJobs by phase, reconcile errors, time to first child, and the model
cache as the plans found it (hits, bytes saved, bytes on the volume: the operator is what Prometheus scrapes; the
short-lived worker pods have their own /metrics too).

Owns: the metric names and one registry per operator instance (tests run several in one process).
Must not: hold any state but the metrics' own.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from kompress_api.v1alpha1 import Phase
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _PhaseCollector(Collector):
    def __init__(self, phases: dict[str, str]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("kompress_compressionjobs", "CompressionJobs by phase, as last written by this operator", labels=["phase"])
        counts = Tally(self._phases.values())
        for phase in Phase:
            family.add_metric([phase.value], counts.get(phase.value, 0))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # uid -> phase of every CompressionJob this operator has reconciled
        self.phases: dict[str, str] = {}
        self.registry.register(_PhaseCollector(self.phases))
        self.reconciles = Counter("kompress_reconciles", "reconciles run", registry=self.registry)
        self.reconcile_errors = Counter("kompress_reconcile_errors", "reconciles that raised an error (retried by the next event or resync)", registry=self.registry)
        self.status_writes = Counter("kompress_status_writes", "status writes (one per reconcile at most, only on change)", registry=self.registry)
        self.time_to_first_child = Histogram(
            "kompress_time_to_first_child_seconds",
            "seconds from a CompressionJob's creation to its planning Job's creation",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

        self.cache_hits = Counter("kompress_cache_hits", "planned CompressionJobs whose whole model the model cache already held", registry=self.registry)
        self.cache_misses = Counter("kompress_cache_misses", "planned CompressionJobs with bytes of their model still to download into the cache", registry=self.registry)
        self.cache_bytes_saved = Counter("kompress_cache_bytes_saved", "bytes of models the plans found in the model cache: not downloaded again", registry=self.registry)
        self.cache_bytes_on_volume = Gauge(
            "kompress_cache_bytes_on_volume", "bytes the model cache's entries take on its volume, as the latest plan found it",
            labelnames=["namespace", "claim"], registry=self.registry,
        )

    def record_cache(self, namespace: str, cache: dict) -> None:
        """One job's plan's status.plan.cache, counted once (when the plan is first stored)."""
        cached, total = int(cache.get("cachedBytes") or 0), int(cache.get("totalBytes") or 0)
        (self.cache_hits if total and cached >= total else self.cache_misses).inc()
        self.cache_bytes_saved.inc(cached)
        if cache.get("volumeBytes") is not None:
            self.cache_bytes_on_volume.labels(namespace, cache.get("claimName") or "").set(int(cache["volumeBytes"]))

    def record_phase(self, uid: str, phase: str | None) -> None:
        if phase:
            self.phases[uid] = phase

    def forget(self, uid: str) -> None:
        self.phases.pop(uid, None)
