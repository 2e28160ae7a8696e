"""Who is using a cache entry: a lock file with an owner and a heartbeat, on the shared cache volume itself.

    SourceLock(path, owner)   exclusive: one downloader per model version; `with lock.held(on_wait=...)`
    InUse(path, owner)        shared: "a running job reads this entry", so eviction leaves it alone
    alive(path)               whether a lock or in-use file is held by a live owner (heartbeat fresh)

Why a file and not a Lease in the API server: the worker and planning pods have no Kubernetes API rights
(children.py sets automountServiceAccountToken false), and the volume is the one thing every user of the
cache shares anyway; a lock on it cannot outlive the data it guards or disagree with it.
A holder refreshes its file's mtime every HEARTBEAT seconds from a daemon thread; a file not refreshed for
STALE_AFTER seconds belongs to a dead pod (killed, evicted, node lost) and is broken by the next waiter.
Creation is O_CREAT|O_EXCL, atomic on local file systems and on NFSv3+ (RWX volumes).
Must not: know what an entry holds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HEARTBEAT = 10.0
STALE_AFTER = 60.0
POLL = 0.5


def new_owner() -> str:
    """A name for this process, unique across pods: HOSTNAME (the pod's name), pid and a random tail."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def alive(path: Path, stale_after: float = STALE_AFTER) -> bool:
    try:
        return time.time() - path.stat().st_mtime < stale_after
    except OSError:
        return False


def holder(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text()).get("owner"))
    except (OSError, ValueError):
        return None


class _Heartbeat:
    """Touches `path` every `interval` seconds until stopped."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{path.name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except OSError:
                return  # broken by a waiter who took us for dead: nothing left to refresh

    def start(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _record(owner: str) -> str:
    return json.dumps({"owner": owner, "pid": os.getpid(), "since": time.time()})


class SourceLock:
    """One downloader per cache entry. A second process waits (calling `on_wait(holder)` once) until the holder
    releases the lock or stops heart-beating, then takes it."""

    def __init__(self, path: Path, owner: str, *, heartbeat: float = HEARTBEAT, stale_after: float = STALE_AFTER) -> None:
        self.path, self.owner, self.heartbeat, self.stale_after = path, owner, heartbeat, stale_after
        self._beat: _Heartbeat | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o664)
        except FileExistsError:
            if not alive(self.path, self.stale_after):
                self._break_stale()
            return False
        with os.fdopen(fd, "w") as f:
            f.write(_record(self.owner))
        self._beat = _Heartbeat(self.path, self.heartbeat).start()
        return True

    def _break_stale(self) -> None:
        # Renaming first makes the break atomic: of two waiters that both see it stale, one moves it, the other gets ENOENT.
        grave = self.path.with_name(f"{self.path.name}.stale-{self.owner}")
        try:
            os.rename(self.path, grave)
            grave.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def acquire(self, *, on_wait: Callable[[str | None], None] | None = None, timeout: float | None = None) -> None:
        waited, deadline = False, None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if not waited and on_wait is not None:
                on_wait(holder(self.path))
            waited = True
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.path} is held by {holder(self.path)}")
            time.sleep(POLL)

    def release(self) -> None:
        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        if holder(self.path) == self.owner:
            self.path.unlink(missing_ok=True)

    @contextmanager
    def held(self, **kwargs: object) -> Iterator["SourceLock"]:
        self.acquire(**kwargs)  # type: ignore[arg-type]
        try:
            yield self
        finally:
            self.release()


class InUse:
    """A shared mark: this process reads the entry (until `release()` or the process ends)."""

    def __init__(self, path: Path, owner: str, *, heartbeat: float = HEARTBEAT) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_record(owner))
        self._beat = _Heartbeat(path, heartbeat).start()

    def release(self) -> None:
        self._beat.stop()
        self.path.unlink(missing_ok=True)
