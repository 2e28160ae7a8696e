"""The one progress reporter every stage uses.

Owns: the current stage, step and byte counts, overall percent (stages weighted by their usual share
of wall time) and the ETA. Sinks (the HTTP progress server, the log) receive a snapshot on every
change; the reporter itself does no I/O.
Must not: know what a stage does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from kompress_api.worker_protocol import DONE, STAGES, WorkerProgress

# Each stage's rough share of a job's wall time (kompress_api.stages), used only to turn stage progress into an
# overall percent. Unknown stages weigh 1.
STAGE_WEIGHTS: dict[str, float] = {stage.name: stage.weight for stage in STAGES}

Sink = Callable[[WorkerProgress], None]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProgressReporter:
    def __init__(self, stages: list[str], *, clock: Callable[[], float] = time.time, sinks: list[Sink] | None = None) -> None:
        self.stages = list(stages)
        self._clock = clock
        self._sinks: list[Sink] = list(sinks or [])
        self._lock = threading.Lock()
        self._started = clock()
        self._stage: str | None = None
        self._stage_index = 0
        self._step = 0
        self._total: int | None = None
        self._message: str | None = None
        self._bytes_done: int | None = None
        self._bytes_total: int | None = None
        self._done = False

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    @contextmanager
    def stage(self, name: str, *, total_steps: int | None = None, message: str | None = None) -> Iterator["ProgressReporter"]:
        """Enter a stage; leaving it (normally) counts it as complete."""
        with self._lock:
            self._stage = name
            self._stage_index = self.stages.index(name) + 1 if name in self.stages else self._stage_index
            self._step = 0
            self._total = total_steps
            self._message = message
            self._bytes_done = self._bytes_total = None
        self._emit()
        yield self
        with self._lock:
            if self._total is not None:
                self._step = self._total

    def set_steps(self, step: int, total: int | None = None, *, message: str | None = None) -> None:
        with self._lock:
            self._step = step
            if total is not None:
                self._total = total
            if message is not None:
                self._message = message
        self._emit()

    def message(self, text: str) -> None:
        with self._lock:
            self._message = text
        self._emit()

    def transfer(self, done: int, total: int | None) -> None:
        """Bytes moved in the current stage's transfer (download or upload)."""
        with self._lock:
            self._bytes_done = done
            self._bytes_total = total
        self._emit()

    def finish(self, message: str = "done") -> None:
        with self._lock:
            self._stage = DONE
            self._stage_index = len(self.stages)
            self._message = message
            self._done = True
        self._emit()

    def _stage_fraction(self) -> float:
        if self._bytes_total:
            return min(1.0, (self._bytes_done or 0) / self._bytes_total)
        if self._total:
            return min(1.0, self._step / self._total)
        return 0.0

    def _percent(self) -> float:
        if self._done:
            return 100.0
        weights = [STAGE_WEIGHTS.get(s, 1.0) for s in self.stages]
        total = sum(weights) or 1.0
        index = max(0, self._stage_index - 1)
        done = sum(weights[:index]) + (weights[index] * self._stage_fraction() if index < len(weights) else 0)
        return min(99.0, 100.0 * done / total)

    def snapshot(self) -> WorkerProgress:
        with self._lock:
            now = self._clock()
            percent = self._percent()
            elapsed = now - self._started
            eta = None
            if 1.0 <= percent < 100.0 and elapsed > 0:
                eta = int(elapsed * (100.0 - percent) / percent)
            elif self._done:
                eta = 0
            return WorkerProgress(
                stage=self._stage,
                stage_index=self._stage_index,
                stage_count=len(self.stages),
                step=self._step,
                total_steps=self._total,
                percent=int(percent),
                message=self._message,
                bytes_done=self._bytes_done,
                bytes_total=self._bytes_total,
                eta_seconds=eta,
                started_at=_iso(self._started),
                updated_at=_iso(now),
            )

    def _emit(self) -> None:
        if not self._sinks:
            return
        snap = self.snapshot()
        for sink in list(self._sinks):
            sink(snap)
