"""What the operator asks of the API server, read from kube-apiserver's own audit log: it watches only the Jobs and
pods it made (selected by the server, not every pod of the namespace sent and filtered here), it writes nothing to a
CompressionJob but its status (Kopf keeps no progress, diff base or finalizer on it), and it reads the Events of a Job
only when the Job controller could not make its pod."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from operator_cluster import Cluster, plan, tiny, wait_for

pytestmark = pytest.mark.integration

OPERATOR_AGENTS = ("kopf/", "kompress-operator/")
SELECTOR = "app.kubernetes.io/managed-by=kompress-operator"


def query(event: dict[str, Any], name: str) -> list[str]:
    return parse_qs(urlsplit(event["requestURI"]).query).get(name, [])


def operator_requests(cluster: Cluster) -> list[dict[str, Any]]:
    return [e for e in cluster.api.plane.audit_events()
            if (e.get("objectRef") or {}).get("namespace") == cluster.namespace and (e.get("userAgent") or "").startswith(OPERATOR_AGENTS)]


def test_the_operator_watches_only_its_children_and_writes_only_status(cluster, operator, controller):
    cluster.apply(tiny().manifest())
    plan(cluster, controller)
    cluster.wait_phase("tiny", "Queued")
    requests = operator_requests(cluster)
    children = [e for e in requests if e["verb"] in ("list", "watch") and e["objectRef"].get("resource") in ("jobs", "pods")]
    assert {e["objectRef"]["resource"] for e in children} == {"jobs", "pods"}
    assert all(query(e, "labelSelector") == [SELECTOR] for e in children), [e["requestURI"] for e in children]
    writes = {(e["verb"], e["objectRef"].get("subresource")) for e in requests
              if e["objectRef"].get("resource") == "compressionjobs" and e["verb"] in ("create", "update", "patch", "delete")}
    assert writes == {("patch", "status")}
    # Both pods were made: there was never a pod whose absence an Event would explain.
    assert [e["requestURI"] for e in requests if e["objectRef"].get("resource") == "events" and e["verb"] == "list"] == []


def test_the_events_of_a_job_are_read_when_its_pod_could_not_be_made(cluster, operator):
    cluster.apply(tiny().with_scheduling(serviceAccountName="nobody").manifest())
    wait_for("FailedCreate", lambda: (p := cluster.condition("tiny", "Planned")) and p["reason"] == "FailedCreate")
    listed = [e for e in operator_requests(cluster) if e["objectRef"].get("resource") == "events" and e["verb"] == "list"]
    assert listed and all("reason=FailedCreate" in query(e, "fieldSelector")[0] for e in listed)
