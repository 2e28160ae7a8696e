"""core/v1 Events (what Kopf posts) and events.k8s.io/v1 Events are two views of one store, as on a real server."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration
CORE = "/api/v1/namespaces/default/events"
NEW = "/apis/events.k8s.io/v1/namespaces/default/events"


def test_a_core_event_is_listed_by_the_events_api(apiserver):
    apiserver.client.post(CORE, {
        "metadata": {"generateName": "tiny-laptop."},
        "involvedObject": {"apiVersion": "kompress.dev/v1alpha1", "kind": "CompressionJob", "name": "tiny-laptop", "namespace": "default"},
        "reason": "Planned", "message": "plan made", "type": "Normal", "source": {"component": "kompress"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1,
    })
    (event,) = apiserver.client.get(NEW)["items"]
    assert event["apiVersion"] == "events.k8s.io/v1"
    assert (event["note"], event["reason"], event["regarding"]["name"]) == ("plan made", "Planned", "tiny-laptop")
    assert event["deprecatedSource"] == {"component": "kompress"}


def test_an_events_api_event_is_listed_as_a_core_event(apiserver):
    apiserver.client.post(NEW, {"metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "kompress",
                                "reportingInstance": "kompress-0", "action": "Plan", "reason": "Planned", "type": "Normal",
                                "note": "plan made", "regarding": {"kind": "CompressionJob", "name": "tiny-laptop"}})
    (event,) = apiserver.client.get(CORE)["items"]
    assert (event["message"], event["involvedObject"]["name"], event["reportingComponent"]) == ("plan made", "tiny-laptop", "kompress")


def test_events_can_be_selected_by_involved_object(apiserver):
    for name in ("a", "b"):
        apiserver.client.post(CORE, {"metadata": {"name": f"ev-{name}"}, "involvedObject": {"kind": "CompressionJob", "name": name},
                                     "reason": "Planned", "message": "m", "type": "Normal"})
    selected = apiserver.client.get(CORE, fieldSelector="involvedObject.name=b,involvedObject.kind=CompressionJob")["items"]
    assert [e["metadata"]["name"] for e in selected] == ["ev-b"]


def test_kubectl_get_events_shows_them(apiserver):
    apiserver.client.post(CORE, {"metadata": {"name": "ev"}, "involvedObject": {"kind": "CompressionJob", "name": "tiny-laptop"},
                                 "reason": "Planned", "message": "plan made", "type": "Normal"})
    assert "ev" in apiserver.kubectl("get", "events").stdout
