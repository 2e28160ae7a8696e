"""Watches as a real API server serves them: from a resourceVersion, bounded by timeoutSeconds, filtered by
selectors (objects entering and leaving the selection), with bookmarks, initial events and 410 Gone."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from .conftest import JOBS, tiny_job

pytestmark = pytest.mark.integration


class Watcher:
    """Collects a watch's events in a thread until the server ends the stream (timeoutSeconds)."""

    def __init__(self, client, path: str, **params):
        self.events: list[dict] = []
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, path, params), daemon=True)
        self._thread.start()

    def _run(self, client, path, params):
        with client.session.get(client.url + path, params={"watch": "true", **params}, stream=True, timeout=10) as response:
            self.content_type = response.headers.get("Content-Type")
            self.opened.set()
            for line in response.iter_lines():
                if line:
                    self.events.append(json.loads(line))

    def wait(self, count: int, timeout: float = 3.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.events

    def join(self) -> list[dict]:
        self._thread.join(10)
        return self.events


def take(client, path: str, count: int, **params) -> list[dict]:
    """The first `count` events of a watch (the stream is closed after them; timeoutSeconds is a safety net)."""
    return list(itertools.islice(client.watch(path, timeoutSeconds=5, **params), count))


def summary(events):
    return [(e["type"], e["object"]["metadata"].get("name")) for e in events]


def test_a_watch_from_the_list_version_sees_exactly_what_happened_after_the_list(apiserver):
    apiserver.client.post(JOBS, tiny_job("before"))
    listed = apiserver.client.get(JOBS)
    # Changes between the list and the watch connecting are not lost, and nothing before the list is replayed.
    apiserver.client.post(JOBS, tiny_job("between"))
    events = list(apiserver.client.watch(JOBS, resourceVersion=listed["metadata"]["resourceVersion"], timeoutSeconds=1))
    assert summary(events) == [("ADDED", "between")]


def test_a_watch_without_a_version_starts_with_the_current_objects_then_streams(apiserver):
    apiserver.client.post(JOBS, tiny_job("existing"))
    watcher = Watcher(apiserver.client, JOBS, timeoutSeconds=1)
    watcher.wait(1)
    apiserver.client.patch(f"{JOBS}/existing", {"metadata": {"labels": {"a": "b"}}})
    apiserver.client.delete(f"{JOBS}/existing")
    assert summary(watcher.join()) == [("ADDED", "existing"), ("MODIFIED", "existing"), ("DELETED", "existing")]
    assert watcher.content_type == "application/json"


def test_resource_versions_in_events_grow(apiserver):
    listed = apiserver.client.get(JOBS)
    for name in ("a", "b"):
        apiserver.client.post(JOBS, tiny_job(name))
    events = take(apiserver.client, JOBS, 2, resourceVersion=listed["metadata"]["resourceVersion"])
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(listed["metadata"]["resourceVersion"])


def test_timeout_seconds_ends_the_stream(apiserver):
    started = time.monotonic()
    assert list(apiserver.client.watch(JOBS, resourceVersion=apiserver.client.get(JOBS)["metadata"]["resourceVersion"],
                                       timeoutSeconds=1)) == []
    assert 0.9 < time.monotonic() - started < 3


def test_label_selector_turns_entering_and_leaving_into_added_and_deleted(apiserver):
    listed = apiserver.client.get(JOBS)
    apiserver.client.post(JOBS, tiny_job("a"))
    apiserver.client.patch(f"{JOBS}/a", {"metadata": {"labels": {"team": "ml"}}})
    apiserver.client.patch(f"{JOBS}/a", {"metadata": {"labels": {"team": "ml", "x": "y"}}})
    apiserver.client.patch(f"{JOBS}/a", {"metadata": {"labels": {"team": "infra"}}})
    apiserver.client.post(JOBS, tiny_job("b", team="infra"))
    events = take(apiserver.client, JOBS, 3, resourceVersion=listed["metadata"]["resourceVersion"], labelSelector="team=ml")
    assert summary(events) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_field_selector_on_name_and_namespace(apiserver):
    listed = apiserver.client.get("/apis/kompress.dev/v1alpha1/compressionjobs")
    apiserver.client.post("/api/v1/namespaces", {"metadata": {"name": "ml"}})
    apiserver.client.post(JOBS, tiny_job("a"))
    apiserver.client.post(JOBS, tiny_job("b"))
    apiserver.client.post("/apis/kompress.dev/v1alpha1/namespaces/ml/compressionjobs", tiny_job("a"))
    apiserver.client.post(JOBS, tiny_job("c"))
    apiserver.client.patch("/apis/kompress.dev/v1alpha1/namespaces/ml/compressionjobs/a", {"metadata": {"labels": {"x": "y"}}})
    events = take(apiserver.client, "/apis/kompress.dev/v1alpha1/compressionjobs", 2,
                  resourceVersion=listed["metadata"]["resourceVersion"], fieldSelector="metadata.name=a,metadata.namespace=ml")
    assert [(e["type"], e["object"]["metadata"]["namespace"]) for e in events] == [("ADDED", "ml"), ("MODIFIED", "ml")]


def test_removing_the_last_finalizer_is_seen_as_deleted(apiserver):
    job = tiny_job()
    job["metadata"]["finalizers"] = ["kompress.dev/cleanup"]
    apiserver.client.post(JOBS, job)
    listed = apiserver.client.get(JOBS)
    apiserver.client.delete(f"{JOBS}/tiny-laptop")
    apiserver.client.patch(f"{JOBS}/tiny-laptop", {"metadata": {"finalizers": None}})
    events = take(apiserver.client, JOBS, 2, resourceVersion=listed["metadata"]["resourceVersion"])
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[0]["object"]["metadata"]["deletionTimestamp"]


@pytest.mark.apiserver(bookmark_interval=0.1)
def test_bookmarks_carry_the_current_resource_version(apiserver):
    listed = apiserver.client.get(JOBS)
    apiserver.client.post(JOBS, tiny_job())
    events = take(apiserver.client, JOBS, 2, resourceVersion=listed["metadata"]["resourceVersion"], allowWatchBookmarks="true")
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"] == {"apiVersion": "kompress.dev/v1alpha1", "kind": "CompressionJob",
                                       "metadata": {"resourceVersion": events[0]["object"]["metadata"]["resourceVersion"]}}


def test_initial_events_end_with_a_bookmark(apiserver):
    apiserver.client.post(JOBS, tiny_job("a"))
    events = take(apiserver.client, JOBS, 2, sendInitialEvents="true", allowWatchBookmarks="true",
                  resourceVersionMatch="NotOlderThan")
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


@pytest.mark.apiserver(event_log_size=3)
def test_a_too_old_resource_version_is_410_gone(apiserver):
    listed = apiserver.client.get(JOBS)
    for name in "abcde":
        apiserver.client.post(JOBS, tiny_job(name))
    (event,) = list(apiserver.client.watch(JOBS, resourceVersion=listed["metadata"]["resourceVersion"], timeoutSeconds=5))
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_watch_of_a_single_object_by_name(apiserver):
    listed = apiserver.client.get(JOBS)
    apiserver.client.post(JOBS, tiny_job("a"))
    apiserver.client.post(JOBS, tiny_job("b"))
    apiserver.client.patch(f"{JOBS}/b", {"metadata": {"labels": {"x": "y"}}})
    events = take(apiserver.client, f"{JOBS}/b", 2, resourceVersion=listed["metadata"]["resourceVersion"])
    assert summary(events) == [("ADDED", "b"), ("MODIFIED", "b")]
