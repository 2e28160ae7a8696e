"""The chart's RBAC is enough and no more: the operator, holding exactly the rights `helm template` renders
for it, runs every scenario with no request refused; and taking away any single permission (one verb of one
rule) makes some scenario visibly fail. kube-apiserver's own RBAC authorizer judges, and its audit log says
what it refused."""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kompress_api import v1alpha1 as api
from kompress_api.worker_protocol import PlannerResult
from kompress_operator import children
from kompress_operator.config import OperatorConfig
from kompress_testing.wrappers import make_cjob

from operator_cluster import PLAN, RESULT, Clock, Cluster, Kubelet, OperatorThread, jobs_of, tiny, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "helm"
RELEASE_NAMESPACE = "kompress-system"
# Long enough for a healthy operator on a loaded 2-core machine; a scenario that lost a permission fails here.
PATIENCE_S = 6.0


def chart_rbac() -> list[dict[str, Any]]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`")
    out = subprocess.run([str(HELM), "template", "kompress", str(ROOT / "charts" / "kompress"), "--namespace", RELEASE_NAMESPACE], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]


def operator_rules() -> list[dict[str, Any]]:
    (role,) = [d for d in chart_rbac() if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")]
    return role["rules"]


def without(rules: list[dict[str, Any]], index: int, verb: str) -> list[dict[str, Any]]:
    rules = copy.deepcopy(rules)
    rules[index]["verbs"].remove(verb)
    return [r for r in rules if r["verbs"]]


# --- scenarios: what a user does and sees -------------------------------------------------------------------


def lifecycle(cluster: Cluster, controller: Kubelet, clock: Clock, start_operator: Callable[[], None]) -> None:
    """Plan, run, suspend, resume, succeed; Events for the transitions."""
    start_operator()
    cluster.apply(tiny().manifest())
    plan_job = wait_for("a plan Job", lambda: jobs_of(cluster, "plan"), PATIENCE_S)[0]
    controller.run_to_end(plan_job["metadata"]["name"], lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)))
    worker = wait_for("a worker Job", lambda: jobs_of(cluster, "worker"), PATIENCE_S)[0]
    wait_for("Planning events", lambda: {"Planning", "PlanSucceeded"} <= {e["reason"] for e in cluster.events("tiny")}, PATIENCE_S)
    name = worker["metadata"]["name"]
    cluster.kubectl("patch", "compressionjob", "tiny", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for("the worker Job suspended", lambda: cluster.job(name)["spec"]["suspend"] is True, PATIENCE_S)
    cluster.kubectl("patch", "compressionjob", "tiny", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("the worker Job resumed", lambda: cluster.job(name)["spec"]["suspend"] is False, PATIENCE_S)
    controller.run_to_end(name, lambda p: p.succeeded(RESULT))
    cluster.wait_phase("tiny", "Succeeded", timeout=PATIENCE_S)


def worker_job_deleted_by_someone(cluster: Cluster, controller: Kubelet, clock: Clock, start_operator: Callable[[], None]) -> None:
    """Someone deletes the worker Job: the status says so within seconds (by watch, not at the next resync). The job
    waits for Kueue (suspended, so it has no pod whose events could tell the operator instead)."""
    start_operator()
    cluster.apply(tiny().with_queue("gpu-batch").manifest())
    plan_job = wait_for("a plan Job", lambda: jobs_of(cluster, "plan"), PATIENCE_S)[0]
    controller.run_to_end(plan_job["metadata"]["name"], lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)))
    worker = wait_for("a worker Job", lambda: jobs_of(cluster, "worker"), PATIENCE_S)[0]
    cluster.wait_phase("tiny", "Queued", timeout=PATIENCE_S)
    assert cluster.pods(worker["metadata"]["name"]) == []
    cluster.kubectl("delete", "job", worker["metadata"]["name"])
    cluster.wait_phase("tiny", "Failed", timeout=PATIENCE_S)
    assert cluster.condition("tiny", "Failed")["reason"] == "WorkerJobDeleted"


# The operator's own resync interval: this scenario must be answered by watch events, well before a resync.
worker_job_deleted_by_someone.resync_interval_s = OperatorConfig().resync_interval_s


def stuck_pod(cluster: Cluster, controller: Kubelet, clock: Clock, start_operator: Callable[[], None]) -> None:
    """A pod pending past spec.pendingTimeoutSeconds fails the job, and its Job is removed."""
    start_operator()
    cluster.apply(tiny().with_spec(pendingTimeoutSeconds=600).manifest())
    plan_job = wait_for("a plan Job", lambda: jobs_of(cluster, "plan"), PATIENCE_S)[0]
    controller.run_to_end(plan_job["metadata"]["name"], lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)))
    worker = wait_for("a worker Job", lambda: jobs_of(cluster, "worker"), PATIENCE_S)[0]
    pod = controller.start_pod(worker["metadata"]["name"])
    controller.pod_status(pod["metadata"]["name"], lambda p: p.unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."))
    wait_for("the waiting reason", lambda: (c := cluster.condition("tiny", "Queued")) and c["reason"] == "Unschedulable", PATIENCE_S)
    clock.advance(601)
    cluster.wait_phase("tiny", "Failed", timeout=PATIENCE_S)
    wait_for("the stuck worker Job deleted", lambda: jobs_of(cluster, "worker") == [], PATIENCE_S)


def name_taken(cluster: Cluster, controller: Kubelet, clock: Clock, start_operator: Callable[[], None]) -> None:
    """A Job of our name that is not ours is looked at, never adopted: the job fails with ChildNameTaken."""
    cluster.apply(make_cjob("tiny").manifest())
    squatter = children.build_plan_job(api.parse(cluster.cjob("tiny")), OperatorConfig())
    squatter["metadata"]["ownerReferences"] = []
    cluster.client.post(cluster.jobs_path, squatter)
    start_operator()  # only now: the squatter must be there before the operator's first look
    cluster.wait_phase("tiny", "Failed", timeout=PATIENCE_S)
    assert cluster.condition("tiny", "Failed")["reason"] == "ChildNameTaken"


def pod_not_created(cluster: Cluster, controller: Kubelet, clock: Clock, start_operator: Callable[[], None]) -> None:
    """A worker pod the Job controller cannot create (no such PriorityClass) is explained from its FailedCreate Event."""
    start_operator()
    cluster.apply(tiny().with_scheduling(priorityClassName="no-such-priority").manifest())
    plan_job = wait_for("a plan Job", lambda: jobs_of(cluster, "plan"), PATIENCE_S)[0]
    controller.run_to_end(plan_job["metadata"]["name"], lambda p: p.succeeded(PlannerResult(ok=True, plan=PLAN)))
    wait_for("FailedCreate", lambda: (c := cluster.condition("tiny", "Queued")) and c["reason"] == "FailedCreate", PATIENCE_S)


SCENARIOS: list[Callable[..., None]] = [lifecycle, name_taken, worker_job_deleted_by_someone, stuck_pod, pod_not_created]


def install_operator_identity(cluster: Cluster, rules: list[dict[str, Any]]) -> tuple[str, Path]:
    """The chart's ServiceAccount, ClusterRoles and bindings (with `rules` for the operator's role), named for
    this test so the session's other tests never share them; returns the operator's user name and kubeconfig."""
    admin = cluster.client
    release_ns = f"{cluster.namespace}-sys"
    cluster.api.create_namespace(release_ns)
    suffix = cluster.namespace
    account = None
    for doc in chart_rbac():
        original = doc["metadata"]["name"]
        doc["metadata"]["name"] = f"{original}-{suffix}"[:253]
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["namespace"] = release_ns
            admin.post(f"/api/v1/namespaces/{release_ns}/serviceaccounts", doc)
            continue
        if doc["kind"] == "ClusterRole" and original.endswith("-operator"):
            doc["rules"] = rules
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"[:253]
            for subject in doc["subjects"]:
                subject["name"], subject["namespace"] = f"{subject['name']}-{suffix}"[:253], release_ns
            account = doc["subjects"][0]["name"]
        admin.post(f"/apis/rbac.authorization.k8s.io/v1/{doc['kind'].lower()}s", doc)
    assert account is not None
    token = cluster.api.service_account_token(release_ns, account, create=False)
    return f"system:serviceaccount:{release_ns}:{account}", cluster.api.kubeconfig_for(token, release_ns)


def remove_operator_identity(cluster: Cluster) -> None:
    suffix = cluster.namespace
    for doc in chart_rbac():
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            cluster.client.delete(f"/apis/rbac.authorization.k8s.io/v1/{doc['kind'].lower()}s/{doc['metadata']['name']}-{suffix}"[:300])
    cluster.client.delete(f"/api/v1/namespaces/{cluster.namespace}-sys")


def run_scenario(scenario: Callable[..., None], rules: list[dict[str, Any]], apiserver: Any) -> list[str]:
    """Run one scenario with the operator holding `rules` (watching every namespace, as the chart installs it);
    return the requests the API server refused it."""
    cluster = Cluster(apiserver)
    user, operator_kubeconfig = install_operator_identity(cluster, rules)
    controller = Kubelet(cluster, f"gpu-node-{cluster.namespace[-6:]}")
    controller.register()
    clock = Clock()
    settings = {"resync_interval_s": scenario.resync_interval_s} if hasattr(scenario, "resync_interval_s") else {}
    settings["watch_namespaces"] = ()
    operators: list[OperatorThread] = []
    try:
        scenario(cluster, controller, clock,
                 lambda: operators.append(OperatorThread(cluster, clock, kubeconfig=operator_kubeconfig, **settings).start()))
    finally:
        for op in operators:
            op.stop()
        controller.remove()
        remove_operator_identity(cluster)
    return apiserver.denied(user)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_the_charts_rbac_is_enough_for_every_scenario(scenario, apiserver):
    denied = run_scenario(scenario, operator_rules(), apiserver)
    assert denied == [], f"the operator was refused: {denied}"


PERMISSIONS = [(i, verb) for i, rule in enumerate(operator_rules()) for verb in rule["verbs"]]


@pytest.mark.parametrize(("index", "verb"), PERMISSIONS, ids=[f"{'/'.join(operator_rules()[i]['resources'])}:{v}" for i, v in PERMISSIONS])
def test_taking_away_any_permission_breaks_a_scenario(index, verb, request):
    rules = without(operator_rules(), index, verb)
    for scenario in SCENARIOS:
        try:
            # a namespace of its own for each scenario: what one left behind must not help the next
            run_scenario(scenario, rules, request.getfixturevalue("fresh_namespace")())
        except AssertionError:
            return  # a user would notice: this permission is needed
    pytest.fail(f"every scenario passed without {verb} on {operator_rules()[index]['resources']}: the chart grants more than the operator needs")


# --- a child the API server refuses: Failed once, with the server's words, not a retry at every resync -------


def _without_creating_jobs(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (index,) = [i for i, rule in enumerate(rules) if "jobs" in rule["resources"] and "create" in rule["verbs"]]
    return without(rules, index, "create")


def test_a_refused_child_fails_the_job_once_with_the_servers_message(apiserver):
    resync_s = 0.3
    seen: dict[str, Any] = {}

    def refused(cluster: Cluster, controller: Kubelet, clock: Clock, start_operator: Callable[[], None]) -> None:
        start_operator()
        cluster.apply(tiny().manifest())
        cluster.wait_phase("tiny", "Failed", timeout=PATIENCE_S)
        time.sleep(10 * resync_s)  # ten resyncs: a loop would retry, and post, at each
        seen["failed"] = cluster.condition("tiny", "Failed")
        seen["events"] = [e for e in cluster.events("tiny") if e["reason"] == "ChildRefused"]
        seen["jobs"] = cluster.jobs()

    refused.resync_interval_s = resync_s
    denied = run_scenario(refused, _without_creating_jobs(operator_rules()), apiserver)

    failed = seen["failed"]
    assert failed["reason"] == "ChildRefused"
    assert "refused to create the plan Job" in failed["message"] and "HTTP 403" in failed["message"]
    assert 'cannot create resource "jobs"' in failed["message"]  # the server's own words
    assert len(seen["events"]) == 1 and seen["events"][0]["type"] == "Warning" and seen["events"][0].get("count", 1) == 1
    assert seen["jobs"] == []
    assert len([d for d in denied if d.endswith(" create jobs")]) == 1, denied
