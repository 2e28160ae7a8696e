"""The cache's figures for the progress server's /metrics: hits, bytes saved, bytes on the volume, and the
derived artifacts (calibration samples, baseline record) reused or made.

One process-wide record, filled by cache.fetch and the stages that use cache.artifacts, read at scrape time
(progress_server).
Must not: touch the volume at scrape time (a walk of a 1 TB cache per scrape would be slow).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class CacheStats:
    enabled: bool = False
    hits: int = 0  # files found complete and verified in the cache
    misses: int = 0  # files downloaded into the cache
    bytes_saved: int = 0  # bytes not downloaded because the cache held them
    bytes_on_volume: int = 0  # every entry's bytes after the last fetch or eviction
    evicted_entries: int = 0
    artifact_hits: dict[str, int] = field(default_factory=dict)  # kind -> reused from the cache
    artifact_misses: dict[str, int] = field(default_factory=dict)  # kind -> made here (and stored)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def record_artifact(self, kind: str, *, hit: bool, on_volume: int | None = None) -> None:
        with self._lock:
            self.enabled = True
            tally = self.artifact_hits if hit else self.artifact_misses
            tally[kind] = tally.get(kind, 0) + 1
            self.artifact_hits.setdefault(kind, 0)
            self.artifact_misses.setdefault(kind, 0)
            if on_volume is not None:
                self.bytes_on_volume = on_volume

    def record(self, *, hits: int, misses: int, saved: int, on_volume: int, evicted: int) -> None:
        with self._lock:
            self.enabled = True
            self.hits += hits
            self.misses += misses
            self.bytes_saved += saved
            self.bytes_on_volume = on_volume
            self.evicted_entries += evicted

    def families(self, names: list[str], values: list[str]) -> list:
        """Prometheus metric families (empty when this process used no cache)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if not self.enabled:
            return []
        with self._lock:
            figures = [
                (CounterMetricFamily, "kompress_cache_hits", "model files found verified in the cache", self.hits),
                (CounterMetricFamily, "kompress_cache_misses", "model files downloaded into the cache", self.misses),
                (CounterMetricFamily, "kompress_cache_bytes_saved", "bytes not downloaded thanks to the cache", self.bytes_saved),
                (CounterMetricFamily, "kompress_cache_evicted_entries", "model versions evicted to make room", self.evicted_entries),
                (GaugeMetricFamily, "kompress_cache_bytes_on_volume", "bytes the cache's entries take on its volume", self.bytes_on_volume),
            ]
            artifacts = [
                ("kompress_cache_artifact_hits", "derived artifacts (calibration, baseline) reused from the cache", dict(self.artifact_hits)),
                ("kompress_cache_artifact_misses", "derived artifacts (calibration, baseline) made by this worker", dict(self.artifact_misses)),
            ]
        out = []
        for kind, name, doc, value in figures:
            family = kind(name, doc, labels=names)
            family.add_metric(values, float(value))
            out.append(family)
        for name, doc, tally in artifacts:
            family = CounterMetricFamily(name, doc, labels=[*names, "artifact"])
            for artifact, n in sorted(tally.items()):
                family.add_metric([*values, artifact], float(n))
            out.append(family)
        return out


STATS = CacheStats()
