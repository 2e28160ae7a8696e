"""The queue of reconciles: a job named many times before its turn is reconciled once, one named while being
reconciled is reconciled once more afterwards, a new job's turn comes before the others', and a failing reconcile
does not stop the queue."""

from __future__ import annotations

import asyncio

import pytest

from kompress_operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def test_names_given_before_the_turn_are_one_reconcile_and_urgent_ones_go_first():
    done: list[str] = []

    async def work(key: str) -> None:
        done.append(key)

    async def scenario() -> None:
        queue = WorkQueue(work, workers=1)
        for key in ("a", "b", "a", "a", "b"):
            queue.add(key)
        queue.add("new", urgent=True)
        queue.start()
        while len(queue) or len(done) < 3:
            await asyncio.sleep(0)
        queue.cancel()

    asyncio.run(scenario())
    assert done == ["new", "a", "b"]


def test_a_name_given_during_its_reconcile_is_reconciled_once_more_and_a_failure_stops_nothing():
    done: list[str] = []

    async def scenario() -> None:
        running, go = asyncio.Event(), asyncio.Event()

        async def work(key: str) -> None:
            done.append(key)
            if len(done) == 1:
                running.set()
                await go.wait()
                raise RuntimeError("the API went away")

        queue = WorkQueue(work, workers=2).start()
        queue.add("a")
        await running.wait()
        queue.add("a")
        queue.add("a")
        go.set()
        while len(done) < 2:
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        queue.cancel()

    asyncio.run(scenario())
    assert done == ["a", "a"]
