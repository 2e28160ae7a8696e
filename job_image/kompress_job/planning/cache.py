"""What the plan says about the cache: "cached: X of Y bytes", and a refusal when what is missing cannot fit.

    assess(job, env) -> CacheView | None   one listing of the source; None without a cache (or for a volume folder)
    plan_inputs(job, env, tmp, view)       config.json and the index's tensor names for the plan: from the cache entry
                                           when they are verified there; else from the source, then kept in the entry
                                           (under its lock), so the next plan, the worker's plan stage and its fetch
                                           read them from the cache: a job started beside this one reads them once
    apply(plan, view)                      the view on the plan, a CacheTooSmall error among its problems

Called by the planning pod, `kompress plan` (where $KOMPRESS_CACHE_DIR names a mounted cache) and the worker's
plan stage, so a job the volume cannot hold fails before any GPU is asked for.
Must not: download anything but config.json and the index, or evict anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import CompressionJob, PlanCache
from kompress_api.worker_protocol import ENV_CACHE_CLAIM

from kompress_api.v1alpha1 import model_uri_scheme

from kompress_job.errors import ModelNotFound
from kompress_job.io.cache.fetch import adopt, cache_for, too_small
from kompress_job.io.cache.keys import describe
from kompress_job.io.cache.lock import new_owner
from kompress_job.io.safetensors_files import INDEX
from kompress_job.planning import problems


@dataclass(frozen=True)
class CacheView:
    total: int
    cached: int
    problem: str | None = None
    on_volume: int | None = None  # bytes every entry takes on the volume
    claim: str | None = None  # the claim's name, where the operator says it ($KOMPRESS_CACHE_CLAIM)
    planning_folder: Path | None = None  # the entry, when what the plan reads is verified there
    store: Any = None  # the ModelCache
    listing: Any = None  # the source's listing (keys.Listing): files, sizes, tags, revision

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


def assess(job: CompressionJob, env: Mapping[str, str], *, revision: str | None = None) -> CacheView | None:
    """`revision`: the commit a Hub model is pinned to (the worker's, from preflight), instead of spec.model.revision."""
    cache = cache_for(job, env)
    if cache is None:
        return None
    source = job.spec.model
    if revision and model_uri_scheme(source.uri) == "hf":
        source = source.model_copy(update={"revision": revision})
    listing = describe(source, env)
    if listing is None:
        return None
    holdings = cache.holdings(listing)
    entry = cache.entry_dir(listing)
    problem = too_small(cache, holdings, job.spec.model.uri, entry)
    return CacheView(holdings.total, holdings.cached, problem, on_volume=cache.used_bytes(), claim=env.get(ENV_CACHE_CLAIM) or None,
                     planning_folder=entry if _holds_planning_files(entry, listing) else None, store=cache, listing=listing)


PLAN_LOCK_WAIT = 5.0  # seconds a plan waits for the entry's lock before reading from the source without keeping a copy


def plan_inputs(job: CompressionJob, env: Mapping[str, str], tmp: Path, view: CacheView | None, *, revision: str | None = None) -> tuple[dict[str, Any], list[str] | None, str | None]:
    """(config.json, the index's tensor names or None, the Hub commit or None) for make_plan."""
    from kompress_job.planning import config_source

    def from_source() -> tuple[dict[str, Any], list[str] | None, str | None]:
        config, resolved = config_source.fetch_config(job, env, tmp, revision=revision)
        return config, config_source.fetch_weight_names(job, env, tmp, revision=resolved or revision), resolved

    if view is None or view.listing is None or view.problem:
        return from_source()  # no cache, or one that cannot take this model: nothing of it is kept there
    listing, entry = view.listing, view.store.entry_dir(view.listing)
    commit = listing.revision if model_uri_scheme(job.spec.model.uri) == "hf" else None
    if revision is None and commit is not None:
        revision = commit  # the entry's commit: what the plan reads is what the worker will fetch
    if not _holds_planning_files(entry, listing):
        owner = new_owner()
        try:
            with view.store.lock(entry, owner).held(timeout=PLAN_LOCK_WAIT):
                if not _holds_planning_files(entry, listing):  # another plan may have kept them meanwhile
                    got = from_source()
                    for rel in ("config.json", INDEX):
                        adopt(view.store, listing, rel, tmp / rel, job.spec.model.uri, owner)
                    return got
        except (TimeoutError, PermissionError):  # a worker holds it for its download (or the volume is read-only)
            return from_source()
    try:
        return config_source.read_config(entry / "config.json"), _index_names(entry), commit
    except (OSError, ModelNotFound):  # the entry went away (evicted) while we read
        return from_source()


def _index_names(folder: Path) -> list[str] | None:
    """What fetch_weight_names answers for a Hub or S3 model, from the cached copy: the index's names, else None."""
    from kompress_job.io.safetensors_files import names_in_index

    index = folder / INDEX
    return names_in_index(index.read_text()) if index.is_file() else None


def _holds_planning_files(entry: Path, listing: Any) -> bool:
    from kompress_job.io.checksums import VerifiedFiles

    wanted = ["config.json"] + ([INDEX] if INDEX in listing.sizes else [])
    verified = VerifiedFiles(entry)
    return all(rel in listing.tags and verified.get(rel, entry / rel, listing.tags[rel]) is not None for rel in wanted)


def apply(plan: Any, view: CacheView | None) -> Any:
    if view is None:
        return plan
    plan.cache = view
    if view.problem:
        plan.problems.append(
            problems.error(problems.CACHE_TOO_SMALL, view.problem + ".", "give the model cache a larger volume (chart cache.size), empty it, or set spec.model.cache.enabled: false")
        )
    return plan
