"""What the plan says about the cache: "cached: X of Y bytes", and a refusal when what is missing cannot fit.

    assess(job, env) -> CacheView | None   one listing of the source; None without a cache (or for a volume folder)
    view.planning_folder                   the cache entry, when it holds config.json (and the safetensors index, if
                                           the model has one) verified: the plan reads them there, not from the source
    apply(plan, view)                      the view on the plan, a CacheTooSmall error among its problems

Called by the planning pod, `kompress plan` (where $KOMPRESS_CACHE_DIR names a mounted cache) and the worker's
plan stage, so a job the volume cannot hold fails before any GPU is asked for.
Must not: download or evict anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import CompressionJob, PlanCache
from kompress_api.worker_protocol import ENV_CACHE_CLAIM

from kompress_job.io.cache.fetch import cache_for, too_small
from kompress_job.io.cache.keys import describe
from kompress_job.planning import problems as P


@dataclass(frozen=True)
class CacheView:
    total: int
    cached: int
    problem: str | None = None
    on_volume: int | None = None  # bytes every entry takes on the volume
    claim: str | None = None  # the claim's name, where the operator says it ($KOMPRESS_CACHE_CLAIM)
    planning_folder: Path | None = None  # the entry, when what the plan reads is verified there

    @property
    def to_download(self) -> int:
        return self.total - self.cached

    def line(self) -> str:
        return f"cached: {self.cached:,} of {self.total:,} bytes ({self.to_download:,} to download)"

    def summary(self) -> dict[str, Any]:
        return {"cached_bytes": self.cached, "total_bytes": self.total, "download_bytes": self.to_download, "problem": self.problem,
                "volume_bytes": self.on_volume, "claim": self.claim}

    def status(self) -> PlanCache:
        """What status.plan.cache says (through the planning pod's termination message)."""
        return PlanCache(claim_name=self.claim, cached_bytes=self.cached, total_bytes=self.total, download_bytes=self.to_download, volume_bytes=self.on_volume)


def assess(job: CompressionJob, env: Mapping[str, str]) -> CacheView | None:
    cache = cache_for(job, env)
    if cache is None:
        return None
    listing = describe(job.spec.model, env)
    if listing is None:
        return None
    holdings = cache.holdings(listing)
    entry = cache.entry_dir(listing)
    problem = too_small(cache, holdings, job.spec.model.uri, entry)
    return CacheView(holdings.total, holdings.cached, problem, on_volume=cache.used_bytes(), claim=env.get(ENV_CACHE_CLAIM) or None,
                     planning_folder=entry if _holds_planning_files(entry, listing) else None)


def _holds_planning_files(entry: Path, listing: Any) -> bool:
    from kompress_job.io.checksums import VerifiedFiles
    from kompress_job.io.safetensors_files import INDEX

    wanted = ["config.json"] + ([INDEX] if INDEX in listing.sizes else [])
    verified = VerifiedFiles(entry)
    return all(rel in listing.tags and verified.get(rel, entry / rel, listing.tags[rel]) is not None for rel in wanted)


def apply(plan: Any, view: CacheView | None) -> Any:
    if view is None:
        return plan
    plan.cache = view
    if view.problem:
        plan.problems.append(
            P.error(P.CACHE_TOO_SMALL, view.problem + ".", "give the model cache a larger volume (chart cache.size), empty it, or set spec.model.cache.enabled: false")
        )
    return plan
