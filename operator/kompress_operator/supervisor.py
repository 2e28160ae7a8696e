"""A background task that must live as long as the operator: restarted when it fails, reported when it can't be.

The resync loop is the only thing that polls progress and times out pending pods; no watch event would
tell that it died. So when it ends with an exception it is logged and started again, and after too many
failures in a short time it is left dead and `failure` says why: the liveness probe then fails, and the
kubelet restarts the operator (a fresh process, which a loop failing at once cannot be worked around in).
Owns: restarting and the restart budget. Must not: know what the task does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("kompress.operator")


class Supervised:
    def __init__(
        self,
        name: str,
        factory: Callable[[], Coroutine[Any, Any, None]],
        *,
        max_failures: int = 5,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._factory = factory
        self._max_failures = max_failures
        self._window_s = window_s
        self._clock = clock
        self._failures: deque[float] = deque()
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0
        # Why the task is dead for good, else None (what the liveness probe reports).
        self.failure: str | None = None

    def start(self) -> Supervised:
        self.task = asyncio.get_running_loop().create_task(self._factory(), name=self.name)
        self.task.add_done_callback(self._ended)
        return self

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # the operator is stopping
        error = task.exception() or RuntimeError(f"the {self.name} task returned; it must run for the operator's life")
        now = self._clock()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self._window_s:
            self._failures.popleft()
        log.error("the %s task failed: %r", self.name, error, exc_info=error)
        if len(self._failures) >= self._max_failures:
            self.failure = f"the {self.name} task failed {len(self._failures)} times in {self._window_s:.0f}s, last with {error!r}"
            log.error("%s: not restarting it; the liveness probe now fails", self.failure)
            return
        try:
            self.start()
        except RuntimeError as err:  # the loop is closing: nothing to restart in
            self.failure = f"the {self.name} task could not be restarted: {err!r}"
            log.error("%s", self.failure)
            return
        self.restarts += 1
        log.warning("the %s task was restarted (%d restart(s) so far)", self.name, self.restarts)
