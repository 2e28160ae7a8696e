"""The resync loop (progress polling, pending timeouts) is supervised: a failure is logged and the loop
restarted; a loop that keeps failing is left dead and the operator's liveness probe fails, so the kubelet
restarts the operator instead of leaving it green and deaf."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import urllib.error
import urllib.request

import pytest
from kompress_operator import handlers
from kompress_operator.supervisor import Supervised

from operator_cluster import OperatorThread, wait_for


def _run(coro):
    return asyncio.run(coro)


@pytest.mark.unit
def test_a_failed_task_is_logged_and_restarted(caplog):
    calls = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError(f"boom {len(calls)}")
        await asyncio.sleep(3600)

    async def scenario() -> Supervised:
        supervised = Supervised("resync", flaky).start()
        for _ in range(50):
            await asyncio.sleep(0.01)
        supervised.cancel()
        return supervised

    with caplog.at_level(logging.ERROR, logger="kompress.operator"):
        supervised = _run(scenario())
    assert len(calls) == 3 and supervised.restarts == 2 and supervised.failure is None
    assert [r.getMessage() for r in caplog.records if "failed" in r.getMessage()][:2] == [
        "the resync task failed: ValueError('boom 1')", "the resync task failed: ValueError('boom 2')"]


@pytest.mark.unit
def test_a_task_that_keeps_failing_is_given_up_and_says_why():
    async def broken() -> None:
        raise KeyError("status")

    async def scenario() -> Supervised:
        supervised = Supervised("resync", broken, max_failures=3, window_s=60).start()
        for _ in range(20):
            await asyncio.sleep(0.01)
        return supervised

    supervised = _run(scenario())
    assert supervised.restarts == 2
    assert supervised.failure == "the resync task failed 3 times in 60s, last with KeyError('status')"


@pytest.mark.unit
def test_failures_spread_over_time_are_each_restarted():
    now = [0.0]

    async def broken() -> None:
        now[0] += 100  # one failure every 100 s: never 3 within 60 s
        if now[0] < 1000:
            raise KeyError("status")
        await asyncio.sleep(3600)

    async def scenario() -> Supervised:
        supervised = Supervised("resync", broken, max_failures=3, window_s=60, clock=lambda: now[0]).start()
        for _ in range(50):
            await asyncio.sleep(0.01)
        supervised.cancel()
        return supervised

    supervised = _run(scenario())
    assert supervised.failure is None and supervised.restarts == 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _operator(cluster, clock, port: int) -> OperatorThread:
    op = OperatorThread(cluster, clock)
    op.config = dataclasses.replace(op.config, health_port=port)  # the /healthz endpoint, off by default in tests
    return op.start()


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError:
        return 0  # not listening (yet)


@pytest.mark.integration
def test_liveness_fails_when_the_resync_loop_cannot_be_kept_running(cluster, clock, monkeypatch):
    healthy_port = _free_port()
    healthy = _operator(cluster, clock, healthy_port)
    try:
        wait_for("the liveness probe to answer", lambda: _healthz(healthy_port) == 200, timeout=15)
    finally:
        healthy.stop()

    async def broken(*_args) -> None:
        raise RuntimeError("index went away")

    monkeypatch.setattr(handlers, "resync_forever", broken)
    port = _free_port()
    op = _operator(cluster, clock, port)
    try:
        wait_for("the liveness probe to fail", lambda: _healthz(port) == 500, timeout=15)
    finally:
        op.stop()
