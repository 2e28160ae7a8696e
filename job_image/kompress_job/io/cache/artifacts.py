"""What a job derives from a model version, kept in the model cache beside it: the calibration samples and the
original's baseline record, so a retry (or another preset on the same model and data) skips them.

    artifacts = for_job(job, env)               None without a model cache
    key = artifact_key("baseline", {...})       a digest of everything the artifact depends on
    found = artifacts.lookup("baseline", key)   the folder, marked in use until the process ends; or None
    folder = artifacts.store("baseline", key, build)   build(tmp) fills a folder; it is renamed into place

Layout: root/data/<kind>/<key>/ with .kompress/entry.json (its mtime is the last use) and .kompress/users/*
(in-use marks), exactly like a model entry, so the store's least-recently-used eviction and its sums cover
them. A folder is built under root/tmp/ and renamed into data/ only when complete, so a reader never sees half
of one; two jobs building the same artifact at once both build it, the first rename wins and the second keeps
the winner's (no lock: a wasted build, never a wrong one). Nothing is trusted that the key does not name: the
caller puts every input in it (data source and its exact version, model version, settings, format versions).
A full or unwritable volume is not a job's failure: `store` returns None and the job goes on with its own copy.
Must not: know what an artifact holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kompress_job.io.cache.lock import InUse, new_owner
from kompress_job.io.cache.store import ModelCache

DATA = "data"
TMP = "tmp"
TMP_MAX_AGE = 24 * 3600.0  # a build left by a killed pod is removed after this long
COMPLETE = ".kompress/entry.json"


def artifact_key(kind: str, parts: Mapping[str, Any]) -> str:
    """The digest of `parts` (JSON-able), canonically serialised: equal inputs, equal key."""
    text = json.dumps({"kind": kind, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def for_job(job: Any, env: Mapping[str, str]) -> "Artifacts | None":
    """The artifacts of this job's model cache; None without one (no volume, opted out, a model on a volume)."""
    from kompress_job.io.cache.fetch import cache_for

    cache = cache_for(job, env)
    return Artifacts(cache) if cache is not None else None


class Artifacts:
    def __init__(self, cache: ModelCache, owner: str | None = None) -> None:
        self.cache = cache
        self.owner = owner or new_owner()
        self.marks: list[InUse] = []  # this process's in-use marks, released when it ends (or by release())

    def folder(self, kind: str, key: str) -> Path:
        return self.cache.root / DATA / kind / key

    def lookup(self, kind: str, key: str) -> Path | None:
        folder = self.folder(kind, key)
        meta = folder / COMPLETE
        if not meta.is_file():
            return None
        try:
            self.marks.append(self.cache.use_folder(folder, self.owner))
            os.utime(meta)  # its last use, for eviction
        except (FileNotFoundError, TimeoutError):
            return None  # evicted between the check and the mark, or its lock never came free: build it again
        return folder

    def store(self, kind: str, key: str, build: Callable[[Path], None], *, describe: Mapping[str, Any] | None = None) -> Path | None:
        """Build the artifact in a temporary folder and move it into place; the folder in the cache (this build's,
        or another job's that got there first), marked in use; None when the volume would not take it."""
        tmp_root = self.cache.root / TMP
        self._sweep(tmp_root)
        tmp = tmp_root / f"{kind}-{key[:12]}-{uuid.uuid4().hex[:8]}"
        final = self.folder(kind, key)
        try:
            tmp.mkdir(parents=True)
            build(tmp)
            (tmp / ".kompress").mkdir(exist_ok=True)
            (tmp / COMPLETE).write_text(json.dumps({"kind": kind, "key": key, "made": time.time(), **(describe or {})}))
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / COMPLETE).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another job stored it first: theirs is the same artifact
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        return self.lookup(kind, key)

    def release(self) -> None:
        for mark in self.marks:
            mark.release()
        self.marks.clear()

    @staticmethod
    def _sweep(tmp_root: Path) -> None:
        if not tmp_root.is_dir():
            return
        now = time.time()
        for stale in tmp_root.iterdir():
            try:
                if now - stale.stat().st_mtime > TMP_MAX_AGE:
                    shutil.rmtree(stale, ignore_errors=True)
            except OSError:
                continue
