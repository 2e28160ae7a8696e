"""Events the operator posts: a name the API server accepts for any CompressionJob name, and the times of
the operator's own clock (the one its conditions use), not the wall clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import kubernetes.client
import pytest
from kompress_api._model import re2_search
from kompress_api.podspec import DNS_SUBDOMAIN_RE
from kompress_operator.kube import Kube, event_name
from kompress_operator.observed import Event

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["tiny", "a" * 199 + "-" + "b" * 53, "a" * 199 + "." + "b" * 53, "x" * 198 + "-." + "y" * 53, "n" * 253])
def test_an_event_name_is_a_dns_subdomain_for_any_job_name(name):
    event = event_name(name, 0x18A2B3C4D5E6F708)
    assert len(event) <= 253 and re2_search(DNS_SUBDOMAIN_RE, event), event
    assert event.startswith(name[:150])


def test_an_event_carries_the_operators_clock():
    moment = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    kube = Kube(kubernetes.client.Configuration(), clock=lambda: moment)
    posted: list[dict[str, Any]] = []

    async def request(method: str, path: str, body: Any = None, **_: Any) -> Any:
        posted.append(body)
        return body

    kube._request = request  # type: ignore[method-assign] - no server: the body is what is under test
    try:
        cjob = {"metadata": {"name": "tiny", "namespace": "ml", "uid": "u-1"}}
        asyncio.run(kube.post_event(cjob, Event("Warning", "ChildRefused", "refused")))
    finally:
        kube.close()
    (body,) = posted
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2031-05-06T07:08:09Z"
