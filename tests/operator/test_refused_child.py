"""A worker Job the API server finds invalid (422: a pod anti-affinity the CRD still passes through) fails the CompressionJob once with the server's message: the
reconcile that met the refusal writes Failed, and the next ones (every resync) create nothing more."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from kompress_api import v1alpha1 as api
from kompress_api.worker_protocol import PlannerResult
from kompress_operator import children
from kompress_operator.config import OperatorConfig
from kompress_operator.kube import ApiError
from kompress_operator.metrics import Metrics
from kompress_operator.reconciler import Runtime, reconcile
from kompress_testing.wrappers import JobWrapper, make_cjob, pod_for

from operator_cluster import PLAN

pytestmark = pytest.mark.unit

INVALID = ('Job.batch "tiny-0a1b2-worker" is invalid: spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]'
           '.topologyKey: Required value: can not be empty')


class RefusingKube:
    """The API as far as one reconcile uses it: creating the worker Job is refused as the API server refuses it."""

    def __init__(self) -> None:
        self.creates: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[Any] = []

    async def create_job(self, manifest: dict[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        self.creates.append(manifest["metadata"]["name"])
        raise ApiError(422, "POST", "/apis/batch/v1/namespaces/ml/jobs", json.dumps({"kind": "Status", "reason": "Invalid", "message": INVALID}))

    async def write_status(self, cjob: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        written = copy.deepcopy(cjob)
        written["status"] = status
        written["metadata"]["resourceVersion"] = str(int(cjob["metadata"]["resourceVersion"]) + 1)
        return written

    async def post_event(self, cjob: dict[str, Any], event: Any) -> None:
        self.events.append(event)

    async def get_job(self, namespace: str, name: str) -> None:
        return None

    async def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return []


def test_an_invalid_worker_job_fails_the_job_once_with_the_servers_message():
    config = OperatorConfig(worker_image="registry.example/kompress-job:1.0")
    # Pod anti-affinity is still passed through unchecked: the API server is the first to look at it.
    wrapper = make_cjob().with_spec(scheduling={"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": ""}]}}})
    cjob = wrapper.obj()
    # Planned: the plan Job finished and left its plan; the worker Job is next.
    plan_job = JobWrapper(children.build_plan_job(api.parse(cjob), config)).created().started().complete().obj()
    plan_pod = pod_for(plan_job).succeeded(PlannerResult(ok=True, plan=PLAN)).obj()
    kube = RefusingKube()
    rt = Runtime(config=config, kube=kube, progress=None, metrics=Metrics())  # type: ignore[arg-type]
    uid = cjob["metadata"]["uid"]

    async def resyncs(n: int) -> None:
        current = cjob
        for _ in range(n):  # each resync sees what the last status write left
            await reconcile(rt, current, {uid: [plan_job]}, {uid: [plan_pod]}, poll=False)
            current = rt.freshest(current)

    asyncio.run(resyncs(5))
    assert len(kube.creates) == 1 and kube.creates[0].endswith("-worker")
    failed = next(c for c in kube.statuses[-1]["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "ChildRefused"
    assert "refused to create the worker Job" in failed["message"] and "HTTP 422" in failed["message"]
    assert INVALID in failed["message"]  # the server's words, whole
    assert [e.reason for e in kube.events].count("ChildRefused") == 1
