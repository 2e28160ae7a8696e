"""The local node agent (kompress_testing.node_agent) behaves as a Job controller, a scheduler and a kubelet
would, seen through the API: each test runs small `python -c` pods against the emulated API server."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from kompress_testing.node_agent import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, AgentConfig, AgentThread, rbac_manifests
from kompress_testing.pytest_plugin import start_node_agent

pytestmark = pytest.mark.integration

JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (KeyError, IndexError, StopIteration) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def script(code: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(code)]


def job_manifest(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "registry.example/tool:1", "command": command}
    container.update(spec.pop("container", {}))
    pod_spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [container]}
    pod_spec.update(spec.pop("pod", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": pod_spec}}}


class Node:
    """The agent with the views these tests need."""

    def __init__(self, api: Any, thread: AgentThread, state_dir: Path) -> None:
        self.api = api
        self.thread = thread
        self.state_dir = state_dir

    @property
    def client(self) -> Any:
        return self.api.client

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.client.post(JOBS, manifest)

    def job(self, name: str) -> dict[str, Any]:
        return self.client.get(f"{JOBS}/{name}")

    def pods(self, job: str) -> list[dict[str, Any]]:
        return self.client.get(PODS, labelSelector=f"job-name={job}")["items"]

    def pod(self, name: str) -> dict[str, Any]:
        return self.client.get(f"{PODS}/{name}")

    def condition(self, obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)

    def wait_job(self, name: str, ctype: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(f"Job {name} {ctype}", lambda: (j := self.job(name)) and (self.condition(j, ctype) or {}).get("status") == "True" and j, timeout)

    def wait_pod_phase(self, job: str, phase: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_for(f"{count} {phase} pod(s) of {job}",
                        lambda: len(pods := [p for p in self.pods(job) if p["status"].get("phase") == phase]) >= count and pods)

    def events(self, name: str) -> list[tuple[str, str]]:
        items = self.client.get("/api/v1/namespaces/default/events")["items"]
        return [(e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]

    def log(self, pod: dict[str, Any], container: str = "main") -> str:
        return (self.state_dir / "logs" / f"default_{pod['metadata']['name']}_{container}.log").read_text()

    def processes(self) -> list[psutil.Process]:
        """The pods' processes this agent runs (children of this test process started by the agent)."""
        return [p for p in psutil.Process().children(recursive=True) if self._is_pod(p)]

    def _is_pod(self, proc: psutil.Process) -> bool:
        try:
            return any(str(self.state_dir) in (arg or "") for arg in proc.environ().values())
        except psutil.Error:
            return False


def start_agent(apiserver: Any, state_dir: Path, **options: Any) -> AgentThread:
    return start_node_agent(apiserver, state_dir, **options)


@pytest.fixture
def node(apiserver: Any, node_agent: AgentThread, tmp_path: Path) -> Node:
    return Node(apiserver, node_agent, tmp_path / "node")


# ---------------------------------------------------------------------------------------------
# The Job controller
# ---------------------------------------------------------------------------------------------


def test_a_job_runs_one_pod_from_its_template_to_completion(node: Node) -> None:
    job = node.create_job(job_manifest("hello", script("""
        import os
        print("hello from", os.environ["HOSTNAME"])
        open(os.environ["KOMPRESS_TERMINATION_LOG"], "w").write('{"ok": true}')
    """)))
    done = node.wait_job("hello", "Complete")

    (pod,) = node.pods("hello")
    meta = pod["metadata"]
    assert re.fullmatch(r"hello-[bcdfghjklmnpqrstvwxz2456789]{5}", meta["name"])
    uid = job["metadata"]["uid"]
    assert {"job-name": "hello", "batch.kubernetes.io/job-name": "hello", "controller-uid": uid,
            "batch.kubernetes.io/controller-uid": uid}.items() <= meta["labels"].items()
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "hello", "uid": uid,
                                        "controller": True, "blockOwnerDeletion": True}]
    assert not meta.get("finalizers"), "the tracking finalizer goes once the pod is counted"
    assert pod["spec"]["nodeName"] == "kompress-node"

    status = done["status"]
    assert (status["succeeded"], status["failed"], status["active"]) == (1, 0, 0)
    assert status["startTime"] <= status["completionTime"]
    assert [(c["type"], c["reason"], c["message"]) for c in status["conditions"]] == [
        ("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
        ("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
    ]
    assert status["uncountedTerminatedPods"] == {}

    assert pod["status"]["phase"] == "Succeeded"
    (container,) = pod["status"]["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (0, "Completed", '{"ok": true}')
    assert node.log(pod) == f"hello from {meta['name']}\n"
    assert {"PodScheduled", "Ready", "Initialized"} <= {c["type"] for c in pod["status"]["conditions"]}
    assert ("SuccessfulCreate", f"Created pod: {meta['name']}") in node.events("hello")
    assert ("Completed", "Job completed") in node.events("hello")
    assert ("Scheduled", f"Successfully assigned default/{meta['name']} to kompress-node") in node.events(meta["name"])


def test_a_failing_pod_fails_the_job_past_its_backoff_limit_with_its_log_as_message(node: Node) -> None:
    node.create_job(job_manifest("crash", script("""
        import sys
        print("loading the model")
        sys.exit("could not read config.json")
    """), backoffLimit=1, container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    failed = node.wait_job("crash", "Failed")

    pods = node.pods("crash")
    assert len(pods) == 2, "backoffLimit 1: one retry"
    for pod in pods:
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (pod["status"]["phase"], terminated["exitCode"], terminated["reason"]) == ("Failed", 1, "Error")
        assert terminated["message"] == "loading the model\ncould not read config.json"
    status = failed["status"]
    assert (status["failed"], status["succeeded"], status["active"]) == (2, 0, 0)
    assert [(c["type"], c["reason"]) for c in status["conditions"]] == [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert status["conditions"][1]["message"] == "Job has reached the specified backoff limit"
    assert "completionTime" not in status
    assert ("BackoffLimitExceeded", "Job has reached the specified backoff limit") in node.events("crash")


def test_pod_failure_policy_fails_the_job_at_once_on_a_listed_exit_code(node: Node) -> None:
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [10, 11]}}]}
    node.create_job(job_manifest("bad-input", script("import sys; sys.exit(10)"), backoffLimit=6, podFailurePolicy=policy))
    failed = node.wait_job("bad-input", "Failed")

    (pod,) = node.pods("bad-input")
    message = f"Container main for pod default/{pod['metadata']['name']} failed with exit code 10 matching FailJob rule at index 1"
    assert [(c["type"], c["reason"], c["message"]) for c in failed["status"]["conditions"]] == [
        ("FailureTarget", "PodFailurePolicy", message), ("Failed", "PodFailurePolicy", message)]
    assert failed["status"]["failed"] == 1


def test_pod_failure_policy_ignore_and_count_decide_what_counts_towards_the_backoff_limit(node: Node, tmp_path: Path) -> None:
    # The pod exits 42 (ignored), then 43 (counted), then succeeds: with backoffLimit 1 the Job completes.
    attempts = tmp_path / "attempts"
    policy = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [42]}},
                        {"action": "Count", "onExitCodes": {"operator": "In", "values": [43]}}]}
    node.create_job(job_manifest("flaky", script(f"""
        import sys
        with open({str(attempts)!r}, "a+") as f:
            f.write("x"); f.seek(0); n = len(f.read())
        sys.exit({{1: 42, 2: 43}}.get(n, 0))
    """), backoffLimit=1, podFailurePolicy=policy))
    done = node.wait_job("flaky", "Complete")

    assert (done["status"]["succeeded"], done["status"]["failed"]) == (1, 1)
    codes = sorted(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in node.pods("flaky"))
    assert codes == [0, 42, 43]


def test_suspend_stops_the_pod_and_resume_starts_a_new_one(node: Node) -> None:
    node.create_job(job_manifest("pausable", script("import time; time.sleep(60)")))
    (running,) = node.wait_pod_phase("pausable", "Running")
    pid = int(running["status"]["containerStatuses"][0]["containerID"].removeprefix("kompress://"))

    node.client.patch(f"{JOBS}/pausable", {"spec": {"suspend": True}})
    suspended = node.wait_job("pausable", "Suspended")
    cond = node.condition(suspended, "Suspended")
    assert (cond["reason"], cond["message"]) == ("JobSuspended", "Job suspended")
    wait_for("the suspended pod's process to end", lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    wait_for("the suspended pod to be gone", lambda: node.pods("pausable") == [])
    assert node.job("pausable")["status"]["active"] == 0

    node.client.patch(f"{JOBS}/pausable", {"spec": {"suspend": False}})
    (new,) = node.wait_pod_phase("pausable", "Running")
    assert new["metadata"]["uid"] != running["metadata"]["uid"]
    resumed = node.job("pausable")
    cond = node.condition(resumed, "Suspended")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "JobResumed", "Job resumed")
    assert resumed["status"].get("failed", 0) == 0, "pods removed by suspend are not failures"
    assert {("Suspended", "Job suspended"), ("Resumed", "Job resumed")} <= set(node.events("pausable"))


def test_active_deadline_fails_the_job_and_stops_its_pod(node: Node) -> None:
    node.create_job(job_manifest("slow", script("import time; time.sleep(60)"), activeDeadlineSeconds=1, backoffLimit=3))
    failed = node.wait_job("slow", "Failed")

    assert [(c["type"], c["reason"], c["message"]) for c in failed["status"]["conditions"]] == [
        ("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline"),
        ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]
    assert failed["status"]["active"] == 0
    wait_for("the pod to be gone (graceful deletion done)", lambda: node.pods("slow") == [])
    assert node.processes() == []


def test_a_finished_job_is_deleted_with_its_pods_after_its_ttl(node: Node) -> None:
    node.create_job(job_manifest("short-lived", script("pass"), ttlSecondsAfterFinished=1))
    node.wait_job("short-lived", "Complete")
    wait_for("the Job to be deleted", lambda: not any(j["metadata"]["name"] == "short-lived" for j in node.client.get(JOBS)["items"]), timeout=10)
    wait_for("its pod to be deleted", lambda: node.pods("short-lived") == [])


# ---------------------------------------------------------------------------------------------
# The kubelet
# ---------------------------------------------------------------------------------------------


def test_each_pod_gets_its_own_loopback_ip_and_serves_there(node: Node) -> None:
    server = script("""
        import http.server, os
        host, port = os.environ["KOMPRESS_PROGRESS_BIND"].rsplit(":", 1)
        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(os.environ["HOSTNAME"].encode())
        http.server.HTTPServer((host, int(port)), Hello).serve_forever()
    """)
    for name in ("web-a", "web-b"):
        node.create_job(job_manifest(name, server, container={
            "ports": [{"containerPort": 8080}], "env": [{"name": "KOMPRESS_PROGRESS_BIND", "value": "0.0.0.0:8080"}]}))
    pods = [node.wait_pod_phase(name, "Running")[0] for name in ("web-a", "web-b")]

    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 2 and all(ip.startswith("127.") for ip in ips)
    assert all(p["status"]["podIPs"] == [{"ip": p["status"]["podIP"]}] for p in pods)
    for pod in pods:
        url = f"http://{pod['status']['podIP']}:8080/progress"
        answer = wait_for(f"{url} to answer", lambda url=url: _get(url))
        assert answer == pod["metadata"]["name"]
        assert pod["status"]["containerStatuses"][0]["ready"] is True
        assert node.condition(pod, "Ready")["status"] == "True"


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return response.read().decode()
    except OSError:
        return None


def test_environment_comes_from_the_pod_spec_secrets_and_config_maps(node: Node) -> None:
    node.client.post("/api/v1/namespaces/default/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": "key-id", "AWS_SECRET_ACCESS_KEY": "secret-key"}})
    node.client.post("/api/v1/namespaces/default/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub"}, "stringData": {"token": "hf_abc"}})
    node.client.post("/api/v1/namespaces/default/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"MODE": "fast"}})
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "EXPANDED", "value": "$(GREETING) world"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}}},
    ]
    env_from = [{"prefix": "KOMPRESS_OUTPUT_S3_", "secretRef": {"name": "s3"}}, {"configMapRef": {"name": "settings"}}]
    node.create_job(job_manifest("env", script("""
        import json, os
        json.dump(dict(os.environ), open(os.environ["KOMPRESS_TERMINATION_LOG"], "w"))
    """), container={"env": env, "envFrom": env_from}))
    node.wait_job("env", "Complete")

    (pod,) = node.pods("env")
    seen = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert seen["GREETING"] == "hello" and seen["EXPANDED"] == "hello world"
    assert seen["HF_TOKEN"] == "hf_abc"
    assert seen["KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID"] == "key-id"
    assert seen["KOMPRESS_OUTPUT_S3_AWS_SECRET_ACCESS_KEY"] == "secret-key"
    assert seen["MODE"] == "fast"
    assert seen["POD_NAME"] == seen["HOSTNAME"] == pod["metadata"]["name"]
    assert seen["POD_IP"] == pod["status"]["podIP"]
    assert "OPTIONAL" not in seen
    assert "AWS_ACCESS_KEY_ID" not in seen, "nothing of the agent's own environment leaks into pods"
    assert Path(seen["PATH"].split(os.pathsep)[0]) == Path(sys.executable).parent, "programs resolve in the repository's venv first"


def test_a_missing_secret_keeps_the_pod_pending_until_it_exists(node: Node) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    node.create_job(job_manifest("waits", script("import os; open(os.environ['KOMPRESS_TERMINATION_LOG'], 'w').write(os.environ['TOKEN'])"),
                                 container={"env": env}))
    (pod,) = wait_for("the pod to wait", lambda: [p for p in node.pods("waits")
                                                    if (p["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"])
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == 'secret "late" not found'
    assert ("Failed", 'Error: secret "late" not found') in node.events(pod["metadata"]["name"])
    refused = node.api.kubectl("logs", pod["metadata"]["name"], check=False)
    assert f'container "main" in pod "{pod["metadata"]["name"]}" is waiting to start: CreateContainerConfigError' in refused.stderr

    node.client.post("/api/v1/namespaces/default/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"}, "data": {}})
    wait_for("the missing key to be reported", lambda: node.pod(pod["metadata"]["name"])["status"]["containerStatuses"][0]["state"]
             .get("waiting", {}).get("message") == "couldn't find key token in Secret default/late")
    node.client.patch("/api/v1/namespaces/default/secrets/late", {"stringData": {"token": "t0k"}})
    node.wait_job("waits", "Complete")
    (done,) = node.pods("waits")
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "t0k"


def test_volumes_are_folders_and_values_under_their_mount_paths_are_mapped(node: Node) -> None:
    node.create_job(job_manifest("scratch", script("""
        import os, sys
        scratch = os.environ["KOMPRESS_SCRATCH"]
        open(os.path.join(scratch, "weights.bin"), "w").write("w")
        mode = open(sys.argv[1]).read()
        open(os.environ["KOMPRESS_TERMINATION_LOG"], "w").write(scratch + "|" + mode)
    """) + ["/config/mode"], container={
        "env": [{"name": "KOMPRESS_SCRATCH", "value": "/scratch"}],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "config", "mountPath": "/config"}]},
        pod={"volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "config", "configMap": {"name": "cfg"}}]}))
    (waiting,) = wait_for("the pod to wait for its ConfigMap", lambda: [p for p in node.pods("scratch") if p["status"].get("containerStatuses")])
    assert waiting["status"]["phase"] == "Pending"
    assert waiting["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    assert any(reason == "FailedMount" and 'configmap "cfg" not found' in message for reason, message in node.events(waiting["metadata"]["name"]))
    node.client.post("/api/v1/namespaces/default/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"mode": "x"}})
    node.wait_job("scratch", "Complete")

    (pod,) = node.pods("scratch")
    scratch, mode = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"].split("|")
    assert Path(scratch).is_relative_to(node.state_dir) and (Path(scratch) / "weights.bin").read_text() == "w"
    assert mode == "x"


def test_deleting_a_pod_stops_its_process_gracefully_then_it_leaves_the_api(node: Node) -> None:
    node.create_job(job_manifest("stoppable", script("""
        import os, signal, sys, time
        def bye(*_):
            open(os.environ["KOMPRESS_TERMINATION_LOG"], "w").write("stopped by SIGTERM"); sys.exit(143)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(60)
    """), backoffLimit=0))
    (pod,) = node.wait_pod_phase("stoppable", "Running")
    wait_for("the program to be ready", lambda: "ready" in node.log(pod))
    node.api.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")

    failed = node.wait_job("stoppable", "Failed")
    assert failed["status"]["failed"] == 1
    wait_for("the pod to leave the API", lambda: node.pods("stoppable") == [])
    assert node.processes() == []


def test_deleting_a_job_deletes_its_pods_and_stops_their_processes(node: Node) -> None:
    node.create_job(job_manifest("doomed", script("import time; time.sleep(60)")))
    node.wait_pod_phase("doomed", "Running")
    assert len(node.processes()) == 1
    node.api.kubectl("delete", "job", "doomed", "--wait=false")  # kubectl deletes Jobs in the background: the GC takes the pods

    wait_for("the pod to be gone", lambda: node.pods("doomed") == [])
    wait_for("its process to end", lambda: node.processes() == [])


def test_a_container_over_its_memory_limit_is_oom_killed(node: Node) -> None:
    node.create_job(job_manifest("hungry", script("""
        import time
        hog = bytearray(400 * 1024 * 1024)
        time.sleep(30)
    """), container={"resources": {"limits": {"memory": "100Mi"}}}))
    node.wait_job("hungry", "Failed")

    (pod,) = node.pods("hungry")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")
    (record,) = [json.loads(line) for line in (node.state_dir / "containers.jsonl").read_text().splitlines()]
    assert (record["pod"], record["reason"], record["memoryLimitBytes"]) == (pod["metadata"]["name"], "OOMKilled", 100 * 2**20)
    assert record["peakMemoryBytes"] > 100 * 2**20


def test_a_program_that_does_not_exist_fails_to_start(node: Node) -> None:
    node.create_job(job_manifest("typo", ["kompresss", "worker"]))
    node.wait_job("typo", "Failed")
    (pod,) = node.pods("typo")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert 'exec: "kompresss": executable file not found in $PATH' in terminated["message"]


def test_a_pod_asking_for_a_gpu_the_node_lacks_stays_pending_unschedulable(node: Node) -> None:
    node.create_job(job_manifest("gpu", script("pass"), container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}))
    (pod,) = wait_for("the pod to be unschedulable", lambda: [p for p in node.pods("gpu") if node.condition(p, "PodScheduled")])
    cond = node.condition(pod, "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


# ---------------------------------------------------------------------------------------------
# The agent's own life
# ---------------------------------------------------------------------------------------------


def test_stopping_the_agent_ends_every_process_and_a_new_agent_carries_on(apiserver: Any, tmp_path: Path) -> None:
    marker = tmp_path / "second-run"
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
    command = script(f"""
        import os, subprocess, sys, time
        if os.path.exists({str(marker)!r}): sys.exit(0)
        open({str(marker)!r}, "w").close()
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a child of the container
        time.sleep(60)
    """)
    first = start_agent(apiserver, tmp_path / "node")
    node = Node(apiserver, first, tmp_path / "node")
    node.create_job(job_manifest("survivor", command, podFailurePolicy=policy))
    wait_for("the container and its child", lambda: len(node.processes()) >= 2)
    first.stop()

    assert node.processes() == [], "no process outlives the agent"
    (stopped,) = node.pods("survivor")
    assert stopped["status"]["phase"] == "Failed"
    disruption = node.condition(stopped, "DisruptionTarget")
    assert (disruption["status"], disruption["reason"]) == ("True", "TerminationByKubelet")
    assert apiserver.client.get("/api/v1/nodes/kompress-node")["status"]["conditions"][0]["status"] == "Unknown"

    second = start_agent(apiserver, tmp_path / "node")
    try:
        done = node.wait_job("survivor", "Complete")
        assert (done["status"]["succeeded"], done["status"].get("failed", 0)) == (1, 0), "a disruption is ignored, not counted"
        assert apiserver.client.get("/api/v1/nodes/kompress-node")["status"]["conditions"][0]["status"] == "True"
    finally:
        second.stop()


@pytest.mark.apiserver(rbac=True)
def test_the_agent_needs_only_the_rights_of_its_own_rbac_manifests(apiserver: Any, tmp_path: Path) -> None:
    for manifest in rbac_manifests():
        apiserver.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    thread = start_agent(apiserver, tmp_path / "node")
    try:
        node = Node(apiserver, thread, tmp_path / "node")
        node.create_job(job_manifest("rbac", script("pass")))
        node.wait_job("rbac", "Complete")
    finally:
        thread.stop()
    denied = apiserver.call(lambda: [d.attributes.describe() for d in apiserver.server.denied])
    assert denied == []


def test_the_cli_runs_the_agent_until_terminated(apiserver: Any, tmp_path: Path) -> None:
    import subprocess

    token = apiserver.service_account_token(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT)
    proc = subprocess.Popen([sys.executable, "-m", "kompress_testing.node_agent", "--kubeconfig", str(apiserver.kubeconfig_for(token)),
                             "--state-dir", str(tmp_path / "node")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "ready" in proc.stdout.readline()
        apiserver.client.post(JOBS, job_manifest("cli", script("pass")))
        wait_for("the Job to complete", lambda: any(c["type"] == "Complete" for c in apiserver.client.get(f"{JOBS}/cli")["status"].get("conditions", [])))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_an_unknown_token_is_refused(apiserver: Any, tmp_path: Path) -> None:
    kubeconfig = apiserver.kubeconfig_for("not-a-token")
    with pytest.raises(RuntimeError) as failure:
        AgentThread(AgentConfig(kubeconfig=kubeconfig, state_dir=tmp_path / "node")).start()
    assert "401" in str(failure.value.__cause__)


def test_kubectl_logs_reads_a_pods_log_through_the_api_server(node: Node) -> None:
    node.create_job(job_manifest("chatty", script("""
        import time
        for i in range(5):
            print("line", i, flush=True)
        time.sleep(1.5)
        print("last line", flush=True)
    """)))
    (pod,) = node.wait_pod_phase("chatty", "Running")
    name = pod["metadata"]["name"]
    wait_for("the first lines", lambda: "line 4" in node.log(pod))
    assert node.api.kubectl("logs", name, "--tail=2").stdout == "line 3\nline 4\n"
    followed = node.api.kubectl("logs", "-f", name, timeout=30).stdout
    assert followed.splitlines() == [*(f"line {i}" for i in range(5)), "last line"], "-f follows until the container ends"
    refused = node.api.kubectl("logs", name, "-c", "other", check=False)
    assert refused.returncode != 0 and f"container other is not valid for pod {name}" in refused.stderr
