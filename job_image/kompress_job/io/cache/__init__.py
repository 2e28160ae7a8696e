"""The model cache: a ReadWriteMany volume shared by every job, so no model version is downloaded twice.

    fetch.fetch_cached   fetch into the cache under a per-entry lock (lock.py), making room by LRU (store.py)
    plan.assess          what the cache holds for a job, and whether the volume can hold the rest
    keys.describe        the source's exact version: the cache key
    metrics.STATS        hits, bytes saved, bytes on the volume (the progress server's /metrics)

The operator mounts the claim at $KOMPRESS_CACHE_DIR in planning and worker pods; without it nothing changes.
See docs/install.md ("Model cache") for the volume, its size and its permissions.
"""
