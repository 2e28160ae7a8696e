"""What the operator remembers between reconciles stays bounded and right: the deleted Jobs of a CompressionJob are
forgotten with it, the echo of its own status write is known as such (and nothing newer is), the newest version
wins over the one a queued reconcile was called with, and the spec is parsed once per generation, never reused
across one. The API client's queue sends a child's creation before the requests already waiting."""

from __future__ import annotations

import copy
import threading

import pytest
from kompress_testing.wrappers import make_cjob

from kompress_operator.config import OperatorConfig
from kompress_operator.metrics import Metrics
from kompress_operator.priority_pool import Priority, PriorityPool
from kompress_operator.runtime import Runtime

pytestmark = pytest.mark.unit


def runtime() -> Runtime:
    return Runtime(config=OperatorConfig(), kube=None, progress=None, metrics=Metrics())  # type: ignore[arg-type]


def written(cjob: dict, version: str, **status: object) -> dict:
    newer = copy.deepcopy(cjob)
    newer["metadata"]["resourceVersion"] = version
    newer["status"] = dict(status)
    return newer


def test_the_jobs_a_compression_job_deleted_are_forgotten_with_it():
    rt = runtime()
    mine, other = make_cjob("a").obj(), make_cjob("b").obj()
    rt.deleted({"metadata": {"uid": "job-1"}}, mine["metadata"]["uid"])
    rt.deleted({"metadata": {"uid": "job-2"}}, other["metadata"]["uid"])
    assert rt.as_seen({"metadata": {"uid": "job-1", "name": "a-plan"}})["metadata"]["deletionTimestamp"]
    rt.forget(mine["metadata"]["uid"])
    assert rt.deleted_jobs == {"job-2": other["metadata"]["uid"]}
    assert "deletionTimestamp" not in rt.as_seen({"metadata": {"uid": "job-1", "name": "a-plan"}})["metadata"]
    rt.gone("job-2")
    assert rt.deleted_jobs == {}


def test_the_echo_of_our_own_write_is_known_and_a_newer_version_is_not():
    rt = runtime()
    cjob = make_cjob().obj()  # resourceVersion 1
    ours = written(cjob, "2", phase="Planning")
    rt.wrote(cjob, ours)
    # until the echo comes, the replaced version is read as what the write returned
    assert rt.freshest(cjob)["status"] == {"phase": "Planning"}
    assert not rt.own_echo(written(cjob, "3", phase="Queued"))  # someone else's change after ours
    assert rt.own_echo(ours)
    assert rt.written == {}  # the index holds it now: nothing kept
    assert not rt.own_echo(ours)  # told once


def test_a_queued_reconcile_reads_the_newest_version_not_the_one_it_was_called_with():
    rt = runtime()
    cjob = make_cjob().obj()
    newest = written(cjob, "7", phase="Queued")
    rt.cjobs = {("ml", "tiny"): [newest]}
    assert rt.current(cjob) is newest
    # another object of the same name (re-created: a new uid) is not taken for it
    rt.cjobs = {("ml", "tiny"): [make_cjob().obj()]}
    assert rt.current(cjob) is cjob


def test_the_spec_is_parsed_once_per_generation_and_again_when_it_changes():
    rt = runtime()
    cjob = make_cjob().obj()
    first = rt.typed(cjob)
    again = rt.typed(written(cjob, "2", phase="Planning"))  # a status write: same generation
    assert again.spec is first.spec and again.metadata.uid == cjob["metadata"]["uid"]
    suspended = copy.deepcopy(cjob)
    suspended["spec"]["suspend"] = True
    suspended["metadata"]["generation"] = 2
    assert rt.typed(suspended).spec.suspend is True and not first.spec.suspend
    rt.forget(cjob["metadata"]["uid"])
    assert rt.specs == {}


def test_a_childs_creation_is_sent_before_the_requests_already_waiting():
    pool = PriorityPool(1, "test")
    release, busy = threading.Event(), threading.Event()
    done: list[str] = []

    def blocker() -> None:
        busy.set()
        release.wait(10)

    pool.submit(Priority.NORMAL, blocker)
    busy.wait(10)
    futures = [pool.submit(priority, done.append, name) for priority, name in
               [(Priority.NORMAL, "status a"), (Priority.NORMAL, "event a"), (Priority.CREATE, "create b"), (Priority.NORMAL, "status b"), (Priority.NORMAL, "event b")]]
    release.set()
    for future in futures:
        future.result(10)
    pool.shutdown()
    assert done == ["create b", "status a", "event a", "status b", "event b"]
