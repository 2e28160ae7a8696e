"""A queue of CompressionJobs to reconcile, each in it at most once (client-go's workqueue, in asyncio).

Why: a watch event used to be reconciled inside Kopf's handler, which then held the event's whole body while it
waited for the job's lock and for the API; a burst of a thousand jobs left thousands of those waiting, and every
event was reconciled even when the next one for the same job had already come. Now a handler only names the job
here and returns. A job named again before its turn is reconciled once; named while being reconciled, it is
reconciled once more afterwards (what changed meanwhile is seen); the reconcile reads the newest object there is
(runtime.Runtime.current), so no event's body is kept. A key added as urgent (a CompressionJob with no child yet)
goes before the others: the first child is what a new job waits for, the rest is status news.
Owns: the queue, its de-duplication and its workers. Must not: know what a reconcile does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("kompress.operator")


class WorkQueue:
    def __init__(self, work: Callable[[Hashable], Awaitable[None]], *, workers: int) -> None:
        self._work = work
        # (0 urgent | 1 other, order added, key)
        self._queue: asyncio.PriorityQueue[tuple[int, int, Hashable]] = asyncio.PriorityQueue()
        self._order = 0
        self._queued: set[Hashable] = set()  # waiting for a worker
        self._active: set[Hashable] = set()  # being worked on
        self._again: set[Hashable] = set()  # named again while being worked on
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> WorkQueue:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"reconcile-{i}") for i in range(self._workers)]
        return self

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    def add(self, key: Hashable, *, urgent: bool = False) -> None:
        if key in self._queued:
            return
        if key in self._active:
            self._again.add(key)
            return
        self._queued.add(key)
        self._order += 1
        self._queue.put_nowait((0 if urgent else 1, self._order, key))

    def __len__(self) -> int:
        return len(self._queued)

    async def _worker(self) -> None:
        while True:
            _, _, key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self._work(key)
            except Exception as err:  # noqa: BLE001 - a worker never dies: logged, counted by the reconcile, retried by the next event or resync
                log.warning("%s: reconcile failed: %s", key, err)
            finally:
                self._active.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
