"""Worker threads for the API client that take the most urgent request first.

Why: under load every request waits for a free thread, and with a single FIFO queue the request that makes a new
CompressionJob's first child waited behind the status writes and Events of every job before it (a thousand jobs
created at once: seconds). Here a child's creation goes first; everything else keeps its order (Events were tried
last, but then a reconcile holding its job's turn waited for them while status writes kept coming).
Owns: the queue and the threads. Must not: know what a request is.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from enum import IntEnum
from typing import Any, TypeVar

T = TypeVar("T")


class Priority(IntEnum):
    CREATE = 0  # a child Job: what a new CompressionJob waits for
    NORMAL = 1  # status writes, Events, reads, suspend and delete


class PriorityPool:
    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, priority: Priority, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                future.set_exception(err)

        self._queue.put((int(priority), next(self._order), run))
        return future

    def _work(self) -> None:
        while True:
            _, _, run = self._queue.get()
            if run is None:
                return
            run()

    def shutdown(self) -> None:
        """Stop the threads once they are idle; what is still queued is dropped (its callers are gone with the loop)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put((len(Priority) + 1, next(self._order), None))
