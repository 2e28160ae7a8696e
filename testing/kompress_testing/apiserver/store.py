"""The object store: current objects with history, a global resourceVersion, an event log and watchers.

Owns: assigning resourceVersions (one counter for all writes, as etcd's revision), keeping every
object's versions in KMock's `ObjectsArray` (so tests can assert on `server.objects[...]` as with
KMock), the uid index used by garbage collection, and delivery of events to watchers. Writes are
synchronous (no `await` inside), so in the server's single event loop each write is atomic and a
watcher that subscribes and snapshots in one step misses nothing and sees nothing twice.
Must not: apply API semantics (validation, status isolation, finalizers); the server does.
"""

from __future__ import annotations

import asyncio
import collections
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kmock

Storage = tuple[str, str]  # (group, plural): all versions of a resource share it
Key = tuple[Storage, str | None, str]  # (storage, namespace, name)


@dataclass(frozen=True)
class Event:
    """One write as watchers see it. `old` is the previous state (None on ADDED)."""

    rv: int
    storage: Storage
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]
    old: dict[str, Any] | None


class Store:
    def __init__(self, log_size: int = 10000, version_of: Callable[[Storage], str] = lambda storage: "") -> None:
        self.objects = kmock.ObjectsArray()
        self._version_of = version_of
        self.rv = 1
        self.log: collections.deque[Event] = collections.deque(maxlen=log_size)
        self.compacted = 0  # events at or below this resourceVersion may be gone from the log
        self.watchers: dict[Storage, set[asyncio.Queue[Event]]] = collections.defaultdict(set)
        self.uids: dict[str, Key] = {}
        self._current: dict[Key, dict[str, Any]] = {}

    def _resource(self, storage: Storage) -> kmock.resource:
        # KMock keys objects by resource: the storage version's, e.g. kompress.dev/v1alpha1/compressionjobs.
        return kmock.resource(storage[0], self._version_of(storage), storage[1])

    def get(self, storage: Storage, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = self._current.get((storage, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def items(self, storage: Storage | None = None, namespace: str | None = None) -> Iterator[tuple[Key, dict[str, Any]]]:
        """Current objects, sorted by namespace and name as etcd returns them (copies)."""
        for key in sorted(self._current, key=lambda k: (k[0], k[1] or "", k[2])):
            if (storage is None or key[0] == storage) and (namespace is None or key[1] == namespace):
                yield key, copy.deepcopy(self._current[key])

    def peek(self, storage: Storage, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The current object without a copy: read-only."""
        return self._current.get((storage, namespace, name))

    def peek_items(self) -> list[tuple[Key, dict[str, Any]]]:
        """Current objects without copying them, for read-only scans (the controllers' passes): copying
        every object after every write made a pass O(objects) deep copies, and 500 jobs O(n^2)."""
        return list(self._current.items())

    def by_uid(self, uid: str) -> Key | None:
        return self.uids.get(uid)

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def write(self, key: Key, obj: dict[str, Any], event_type: str) -> dict[str, Any]:
        """Store a new version of the object at the next resourceVersion and tell the watchers."""
        storage, namespace, name = key
        old = self._current.get(key)
        rv = self.next_rv()
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = str(rv)
        self._current[key] = stored
        self.uids[stored["metadata"]["uid"]] = key
        history_key = (self._resource(storage), namespace, name)
        if history_key in self.objects:
            self.objects[history_key].history.append(copy.deepcopy(stored))
        else:
            self.objects[history_key] = copy.deepcopy(stored)
        self._publish(Event(rv, storage, event_type, copy.deepcopy(stored), copy.deepcopy(old) if old else None))
        return copy.deepcopy(stored)

    def delete(self, key: Key) -> dict[str, Any]:
        """Remove the object; the DELETED event carries its last state at the deletion's resourceVersion."""
        storage, namespace, name = key
        old = self._current.pop(key)
        rv = self.next_rv()
        last = copy.deepcopy(old)
        last["metadata"]["resourceVersion"] = str(rv)
        self.uids.pop(old["metadata"].get("uid", ""), None)
        self.objects[self._resource(storage), namespace, name].delete()
        self._publish(Event(rv, storage, "DELETED", copy.deepcopy(last), copy.deepcopy(old)))
        return last

    def _publish(self, event: Event) -> None:
        if len(self.log) == self.log.maxlen:
            self.compacted = self.log[0].rv
        self.log.append(event)
        for queue in list(self.watchers.get(event.storage, ())):
            queue.put_nowait(event)

    def subscribe(self, storage: Storage) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.watchers[storage].add(queue)
        return queue

    def unsubscribe(self, storage: Storage, queue: asyncio.Queue[Event]) -> None:
        self.watchers[storage].discard(queue)

    def events_since(self, storage: Storage, rv: int) -> list[Event] | None:
        """Logged events after rv, or None when the log no longer reaches back that far (410 Gone)."""
        if rv < self.compacted:
            return None
        return [event for event in self.log if event.rv > rv and event.storage == storage]
