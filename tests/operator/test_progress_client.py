"""Polling a worker's /progress over real HTTP: the port from the pod, short timeouts, failures are "no news"."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kompress_testing.wrappers import JobWrapper, make_cjob, pod_for
from kompress_api import v1alpha1 as api

from kompress_operator import children
from kompress_operator.config import OperatorConfig
from kompress_operator.progress_client import ProgressClient, progress_url

pytestmark = pytest.mark.integration

PROGRESS = {"stage": "compress", "percent": 42, "message": "layer 12 of 46"}


class _Worker(BaseHTTPRequestHandler):
    delay = 0.0
    body = json.dumps(PROGRESS).encode()

    def do_GET(self):  # noqa: N802 - http.server's name
        time.sleep(self.delay)
        if self.path != "/progress":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            self.wfile.write(self.body)
        except BrokenPipeError:
            pass  # the poller gave up first, as it should

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@pytest.fixture
def worker_server():
    server = _Server(("127.0.0.1", 0), _Worker)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def running_pod(port: int) -> dict:
    config = OperatorConfig(progress_port=port)
    job = JobWrapper(children.build_worker_job(api.parse(make_cjob().obj()), None, config)).created().obj()
    return pod_for(job).running(ip="127.0.0.1").obj()


def poll(pod, timeout=1.0):
    async def go():
        client = ProgressClient(timeout_s=timeout, default_port=8080)
        try:
            return await client.poll(pod)
        finally:
            await client.close()

    return asyncio.run(go())


def test_the_port_declared_on_the_pod_is_polled(worker_server):
    pod = running_pod(worker_server.server_address[1])
    assert progress_url(pod, 8080) == f"http://127.0.0.1:{worker_server.server_address[1]}/progress"
    assert poll(pod) == PROGRESS


def test_a_pod_without_an_ip_is_not_polled():
    pod = running_pod(8080)
    pod["status"].pop("podIP")
    assert progress_url(pod, 8080) is None and poll(pod) is None


def test_ipv6_addresses_are_bracketed():
    pod = running_pod(8080)
    pod["status"]["podIP"] = "fd00::7"
    assert progress_url(pod, 8080) == "http://[fd00::7]:8080/progress"


def test_a_slow_worker_is_no_news_within_the_timeout(worker_server):
    _Worker.delay = 1.0
    try:
        started = time.monotonic()
        assert poll(running_pod(worker_server.server_address[1]), timeout=0.2) is None
        assert time.monotonic() - started < 0.9
    finally:
        _Worker.delay = 0.0


def test_nothing_listening_is_no_news(worker_server):
    port = worker_server.server_address[1]
    worker_server.shutdown()
    worker_server.server_close()
    assert poll(running_pod(port)) is None


def test_garbage_is_no_news(worker_server):
    _Worker.body = b"<html>not json</html>"
    try:
        assert poll(running_pod(worker_server.server_address[1])) is None
    finally:
        _Worker.body = json.dumps(PROGRESS).encode()
