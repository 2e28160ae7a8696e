"""A model through the cache: one downloader per model version, every other job reads what it verified.

    cache_for(job, env)                          the ModelCache this job uses, or None (no volume, or opted out)
    fetch_cached(source, cache, env, ...)        describe -> lock the entry -> make room -> fetch into the entry

The fetch itself is sources.fetch_model with the entry as its destination, so everything it guarantees holds
in the cache: each file checked against the source's checksum, S3 ranges in DEST.partial + state renamed into
place only when verified (a killed pod's verified ranges are kept: the next attempt resumes per byte), Hub
files kept per file. Only the lock holder writes into an entry, and a job uses an entry only after holding
its lock once, so nobody reads a file being written. A job's in-use mark outlives the fetch (until the process
ends) so eviction leaves alone what a running job loads.
Must not: load the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kompress_api.v1alpha1 import CompressionJob, ModelSource, model_uri_scheme

from kompress_job.io import sources
from kompress_job.io.cache.keys import Listing, describe
from kompress_job.io.cache.lock import InUse, new_owner
from kompress_job.io.cache.metrics import STATS
from kompress_job.io.cache.store import Holdings, ModelCache
from kompress_job.errors import KompressError, PlanRejected


def cache_for(job: CompressionJob, env: Mapping[str, str]) -> ModelCache | None:
    setting = getattr(job.spec.model, "cache", None)
    if setting is not None and not setting.enabled:
        return None
    if model_uri_scheme(job.spec.model.uri) == "file":
        return None  # a volume folder is used in place
    return ModelCache.from_env(env)  # type: ignore[arg-type]


def too_small(cache: ModelCache, holdings: Holdings, uri: str, entry: Path) -> str | None:
    """Why the cache cannot hold what is missing of this model even after evicting every unused entry (but its
    own, `entry`, whose files on the volume, verified or partial, are already there: a retry of a killed download is
    not asked for room for the bytes it kept), or None."""
    if cache.max_bytes is not None and holdings.total > cache.max_bytes:
        return f"the model cache's size limit is {holdings_gb(cache.max_bytes)}, {uri} alone needs {holdings_gb(holdings.total)}"
    room = cache.free_bytes() + sum(e.bytes for e in cache.evictable(keep=entry))
    if cache.needed_bytes(entry, holdings) > room:
        return (
            f"the model cache cannot hold {uri}: {holdings_gb(holdings.missing)} to download "
            f"({holdings_gb(holdings.cached)} of {holdings_gb(holdings.total)} cached), {holdings_gb(room)} free or evictable"
        )
    return None


def holdings_gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB ({n:,} bytes)"


@dataclass
class CachedFetch:
    fetched: sources.FetchedModel
    before: Holdings
    use: InUse
    listing: Listing


def fetch_cached(
    source: ModelSource,
    cache: ModelCache,
    env: Mapping[str, str],
    *,
    on_bytes: sources.ByteCallback | None = None,
    on_wait: Callable[[str | None], None] | None = None,
    owner: str | None = None,
) -> CachedFetch:
    listing = describe(source, env)
    if listing is None:
        raise KompressError(f"{source.uri} is a folder on a volume: it is used in place, not cached")
    if model_uri_scheme(source.uri) == "hf":
        source = source.model_copy(update={"revision": listing.revision})  # the entry's commit, nothing newer
    entry = cache.entry_dir(listing)
    owner = owner or new_owner()
    with cache.lock(entry, owner).held(on_wait=on_wait):
        use = cache.use(entry, owner, source.uri, listing)
        try:
            before = cache.holdings(listing)
            problem = too_small(cache, before, source.uri, entry)
            if problem:
                raise PlanRejected(f"CacheTooSmall: {problem}. Fix: give the cache a larger volume (cache.size in the chart) or disable it for this job (spec.model.cache.enabled: false)")
            evicted = cache.make_room(cache.needed_bytes(entry, before), keep=entry)
            fetched = sources.fetch_model(source, entry, env, on_bytes=on_bytes)
        except BaseException:
            use.release()
            raise
    if fetched.resolved_revision and fetched.resolved_revision != listing.revision:
        use.release()
        raise KompressError(f"{source.uri} changed while it was being fetched ({listing.revision} -> {fetched.resolved_revision}); the next attempt fetches the new version")
    STATS.record(
        hits=before.files_cached,
        misses=before.files - before.files_cached,
        saved=before.cached,
        on_volume=cache.used_bytes(),
        evicted=len(evicted),
    )
    return CachedFetch(fetched, before, use, listing)


def adopt(cache: ModelCache, listing: Listing, rel: str, file: Path, uri: str, owner: str) -> bool:
    """Put `file`, fetched outside the cache (the planner's config.json), into the listing's entry as `rel` and record
    it verified, if its content is what the listing says (Hub: SHA-256 or git blob id; S3: the MD5 of a single-part
    ETag, else the size). The caller holds the entry's lock. Whether it was taken in."""
    import hashlib
    import shutil

    from kompress_job.io.checksums import VerifiedFiles, git_blob_id, sha256_file

    tag = listing.tags.get(rel)
    if tag is None or not file.is_file() or file.stat().st_size != listing.sizes.get(rel):
        return False
    if model_uri_scheme(uri) == "hf":
        verified_by = "sha256" if sha256_file(file) == tag else "git-blob" if git_blob_id(file) == tag else None
    elif len(tag) == 32 and "-" not in tag:
        verified_by = "md5" if hashlib.md5(file.read_bytes()).hexdigest() == tag else None
    else:
        verified_by = "size"
    if verified_by is None:
        return False
    entry = cache.entry_dir(listing)
    cache.use(entry, owner, uri, listing).release()  # the entry exists (entry.json: its last use) without a user left
    target = entry / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".adopt-{owner}")
    shutil.copyfile(file, partial)
    partial.replace(target)
    VerifiedFiles(entry).put(rel, target, tag, verified_by=verified_by)
    return True
