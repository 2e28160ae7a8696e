"""What the operator polls: GET /progress, /metrics, /healthz on the worker's progress port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from kompress_api.worker_protocol import WorkerProgress
from kompress_job.progress import ProgressReporter
from kompress_job.progress_server import ProgressServer, parse_bind

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


@pytest.mark.unit
@pytest.mark.parametrize(("bind", "expected"), [("0.0.0.0:8080", ("0.0.0.0", 8080)), (":9000", ("0.0.0.0", 9000)), ("[::]:8080", ("::", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0))])
def test_bind_addresses(bind, expected):
    assert parse_bind(bind) == expected


@pytest.mark.unit
def test_a_bind_without_a_port_is_refused():
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_bind("localhost")


def test_progress_metrics_and_health_follow_the_reporter():
    reporter = ProgressReporter(["preflight", "fetch-model", "publish"])
    timings = {}
    with ProgressServer(reporter, "127.0.0.1:0", timings=timings, labels={"job": "tiny"}) as server:
        with reporter.stage("preflight"):
            pass
        timings["preflight"] = 0.4
        with reporter.stage("fetch-model"):
            reporter.transfer(3_000, 12_000)

            status, ctype, body = get(server.url + "/progress")
            progress = WorkerProgress.model_validate(json.loads(body))
            assert status == 200 and ctype == "application/json"
            assert (progress.stage, progress.stage_index, progress.stage_count) == ("fetch-model", 2, 3)
            assert (progress.bytes_done, progress.bytes_total) == (3_000, 12_000)
            assert 0 < progress.percent < 100

            _, ctype, metrics = get(server.url + "/metrics")
            assert ctype.startswith("text/plain")
            assert 'kompress_stage{job="tiny",stage="fetch-model"} 1.0' in metrics
            assert 'kompress_stage{job="tiny",stage="preflight"} 0.0' in metrics
            assert f'kompress_progress_percent{{job="tiny"}} {float(progress.percent)}' in metrics
            assert 'kompress_transfer_bytes_done{job="tiny"} 3000.0' in metrics
            assert 'kompress_bytes_moved_total{job="tiny",stage="fetch-model"} 3000.0' in metrics
            assert 'kompress_stage_duration_seconds{job="tiny",stage="preflight"} 0.4' in metrics

        assert get(server.url + "/healthz")[2] == "ok\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            get(server.url + "/secrets")
        assert err.value.code == 404
