"""The cache volume: entries, what each holds, space, and least-recently-used eviction.

    root/models/<key>/                    one model version: its files, exactly as fetch lays out a model folder
    root/models/<key>/.kompress/entry.json  source, revision, size; its mtime is the entry's last use
    root/models/<key>/.kompress/verified.json  files verified against the source (checksums.VerifiedFiles)
    root/models/<key>/.kompress/users/*   in-use marks of running jobs (lock.InUse, heart-beating)
    root/locks/<digest>.lock              the downloader's lock of one entry (lock.SourceLock)
    root/data/<kind>/<key>/               what jobs derived from a model version (artifacts.py): the same
                                          .kompress/ files, so eviction and the sums cover them too

Eviction removes whole entries, least recently used first, and never one with a live lock or in-use mark.
Must not: download anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kompress_api.worker_protocol import ENV_CACHE_DIR, ENV_CACHE_MAX_BYTES, ENV_CACHE_STALE_SECONDS

from kompress_job.io.cache.keys import Listing
from kompress_job.io.cache.lock import STALE_AFTER, InUse, SourceLock, alive
from kompress_job.io.checksums import VerifiedFiles

# The environment (kompress_api.worker_protocol): ENV_CACHE_DIR where the operator mounted the claim,
# ENV_CACHE_MAX_BYTES the chart's size limit for eviction (0 or unset: the volume's size), ENV_CACHE_STALE_SECONDS
# after which a lock not refreshed is a dead pod's (default lock.STALE_AFTER).


# Folders whose entries the cache counts and evicts: model versions, and what jobs derived from them.
ENTRY_ROOTS = ("models", "data")


def disk_bytes(path: Path) -> int:
    """Bytes a file or folder takes on disk (allocated blocks: a sparse .partial counts what it holds)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Entry:
    path: Path
    last_used: float
    bytes: int


@dataclass(frozen=True)
class Holdings:
    """What the cache holds of one model version."""

    total: int
    cached: int
    files_cached: int
    files: int

    @property
    def missing(self) -> int:
        return self.total - self.cached


class ModelCache:
    def __init__(self, root: Path, max_bytes: int | None = None, stale_after: float = STALE_AFTER) -> None:
        self.root = root
        self.max_bytes = max_bytes or None
        self.stale_after = stale_after

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ) -> "ModelCache | None":
        root = env.get(ENV_CACHE_DIR)
        if not root:
            return None
        limit, stale = env.get(ENV_CACHE_MAX_BYTES, ""), env.get(ENV_CACHE_STALE_SECONDS, "")
        return cls(Path(root), int(limit) if limit.isdigit() else None, float(stale) if stale.replace(".", "", 1).isdigit() else STALE_AFTER)

    # -- entries ------------------------------------------------------------------------------------
    def entry_dir(self, listing: Listing) -> Path:
        return self.root / "models" / listing.key

    def lock(self, entry: Path, owner: str) -> SourceLock:
        digest = hashlib.sha256(str(entry.relative_to(self.root)).encode()).hexdigest()[:24]
        return SourceLock(self.root / "locks" / f"{digest}.lock", owner, heartbeat=self.stale_after / 6, stale_after=self.stale_after)

    def use(self, entry: Path, owner: str, uri: str, listing: Listing) -> InUse:
        """Mark the entry used now (its LRU time) and by this process (until it ends)."""
        meta = entry / ".kompress" / "entry.json"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"uri": uri, "revision": listing.revision, "bytes": listing.bytes, "used": time.time()}))
        return InUse(entry / ".kompress" / "users" / owner, owner, heartbeat=self.stale_after / 6)

    def use_folder(self, entry: Path, owner: str) -> InUse:
        """Mark an existing entry used by this process, under its lock (so eviction, which takes the lock, sees the
        mark or has already removed the entry); FileNotFoundError when it is gone."""
        with self.lock(entry, owner).held(timeout=self.stale_after * 2):
            if not (entry / ".kompress" / "entry.json").is_file():
                raise FileNotFoundError(entry)
            return InUse(entry / ".kompress" / "users" / owner, owner, heartbeat=self.stale_after / 6)

    def holdings(self, listing: Listing) -> Holdings:
        entry = self.entry_dir(listing)
        verified = VerifiedFiles(entry)
        done = [rel for rel in listing.sizes if verified.get(rel, entry / rel, listing.tags[rel]) is not None]
        return Holdings(listing.bytes, sum(listing.sizes[rel] for rel in done), len(done), len(listing.sizes))

    def entries(self) -> list[Entry]:
        found = []
        for top in ENTRY_ROOTS:
            for meta in (self.root / top).rglob(".kompress/entry.json") if (self.root / top).is_dir() else []:
                entry = meta.parent.parent
                try:
                    found.append(Entry(entry, meta.stat().st_mtime, disk_bytes(entry)))
                except OSError:
                    continue  # removed while we looked
        return sorted(found, key=lambda e: e.last_used)

    def in_use(self, entry: Path) -> bool:
        """Whether a live job reads the entry. Marks of dead pods (no heartbeat) are removed on the way."""
        users = entry / ".kompress" / "users"
        live = False
        for mark in list(users.iterdir()) if users.is_dir() else []:
            if alive(mark, self.stale_after):
                live = True
            else:
                mark.unlink(missing_ok=True)
        return live

    # -- space --------------------------------------------------------------------------------------
    def data_bytes(self, entry: Path) -> int:
        """Bytes an entry's files take on the volume (verified ones and partial downloads), its .kompress/ records aside."""
        if not entry.is_dir():
            return 0
        return sum(p.stat().st_blocks * 512 for p in entry.rglob("*") if p.is_file() and ".kompress" not in p.relative_to(entry).parts)

    def needed_bytes(self, entry: Path, holdings: Holdings) -> int:
        """What the volume must still take for the entry to hold all its model's bytes: the verified files and a killed
        download's partial ones are already on it (counted in used_bytes), so they are not asked for twice."""
        return max(0, holdings.total - max(holdings.cached, self.data_bytes(entry)))

    def used_bytes(self) -> int:
        return sum(disk_bytes(self.root / top) for top in ENTRY_ROOTS if (self.root / top).is_dir())

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        if self.max_bytes is not None:
            free = min(free, max(0, self.max_bytes - self.used_bytes()))
        return free

    def evictable(self, keep: Path | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.path != keep and not self.in_use(e.path) and not alive(self.lock(e.path, "-").path, self.stale_after)]

    def make_room(self, needed: int, keep: Path | None = None) -> list[Entry]:
        """Evict least recently used entries until `needed` bytes fit; returns what was evicted."""
        evicted = []
        for entry in self.evictable(keep):
            if self.free_bytes() >= needed:
                break
            lock = self.lock(entry.path, f"evict-{os.getpid()}")
            if not lock.try_acquire():
                continue  # a downloader took it meanwhile
            try:
                if self.in_use(entry.path):
                    continue
                shutil.rmtree(entry.path, ignore_errors=True)
                evicted.append(entry)
            finally:
                lock.release()
        return evicted
