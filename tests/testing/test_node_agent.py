"""The played kubelet (kompress_testing.node_agent) on the real control plane: kube-controller-manager's Job
controller makes the pods, kube-scheduler binds them to the agent's Node, and the agent runs them as local
processes and reports them as a kubelet does. Each test runs small `python -c` Jobs in its own namespace.
(The agent's own life, its identity and its CLI: test_node_agent_life.py.)"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kompress_testing.pytest_plugin import start_node_agent

from .node_agent_views import Node, condition, job_manifest, node, script, wait_for  # noqa: F401 - node is a fixture

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------------------------
# A pod's life, as the Job controller and the scheduler see it
# ---------------------------------------------------------------------------------------------


def test_a_job_runs_its_pod_on_the_node_to_completion(node: Node) -> None:
    job = node.create_job(job_manifest("hello", script("""
        import os
        print("hello from", os.environ["HOSTNAME"])
        open(os.environ["KOMPRESS_TERMINATION_LOG"], "w").write('{"ok": true}')
    """)))
    done = node.wait_job("hello", "Complete")

    (pod,) = node.pods("hello")
    name, ns = pod["metadata"]["name"], node.api.namespace
    assert re.fullmatch(r"hello-[a-z0-9]{5}", name)
    assert pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert pod["spec"]["nodeName"] == node.name
    status = done["status"]
    assert (status["succeeded"], status.get("failed", 0), status.get("active", 0)) == (1, 0, 0)
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]

    assert pod["status"]["phase"] == "Succeeded"
    (container,) = pod["status"]["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (0, "Completed", '{"ok": true}')
    assert node.log(pod) == f"hello from {name}\n"
    assert node.api.kubectl("logs", name).stdout == f"hello from {name}\n", "kube-apiserver proxies logs to the played kubelet"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]} == {
        "PodReadyToStartContainers": "False", "Initialized": "True", "Ready": "False", "ContainersReady": "False", "PodScheduled": "True"}
    assert ("default-scheduler", "Scheduled", f"Successfully assigned {ns}/{name} to {node.name}") in node.events(name)
    assert ("kubelet", "Started", "Started container main") in node.events(name)
    assert ("job-controller", "SuccessfulCreate", f"Created pod: {name}") in node.events("hello")
    assert ("job-controller", "Completed", "Job completed") in node.events("hello")


def test_a_failing_pod_fails_the_job_with_its_log_as_message(node: Node) -> None:
    node.create_job(job_manifest("crash", script("""
        import sys
        print("loading the model")
        sys.exit("could not read config.json")
    """), container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    failed = node.wait_job("crash", "Failed")

    (pod,) = node.pods("crash")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], terminated["exitCode"], terminated["reason"]) == ("Failed", 1, "Error")
    assert terminated["message"] == "loading the model\ncould not read config.json"
    assert (condition(failed, "Failed") or {}).get("reason") == "BackoffLimitExceeded"


def test_the_exit_code_the_node_reports_is_what_a_pod_failure_policy_matches(node: Node) -> None:
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [10, 11]}}]}
    node.create_job(job_manifest("bad-input", script("import sys; sys.exit(10)"), backoffLimit=6, podFailurePolicy=policy))
    failed = node.wait_job("bad-input", "Failed")

    (pod,) = node.pods("bad-input")
    cond = condition(failed, "Failed")
    assert cond["reason"] == "PodFailurePolicy"
    assert cond["message"] == (f"Container main for pod {node.api.namespace}/{pod['metadata']['name']} "
                               "failed with exit code 10 matching FailJob rule at index 1")


def test_a_pod_asking_for_a_gpu_the_node_lacks_stays_unschedulable(node: Node, apiserver: Any, tmp_path: Path) -> None:
    node.create_job(job_manifest("gpu", script("pass"), container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}))
    (pod,) = wait_for("kube-scheduler to give up on the pod", lambda: [p for p in node.pods("gpu") if condition(p, "PodScheduled")])
    cond = condition(pod, "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert re.match(r"0/\d+ nodes are available: \d+ Insufficient nvidia\.com/gpu\.", cond["message"]), cond["message"]
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")

    gpu_node = start_node_agent(apiserver, tmp_path / "gpu-node", gpus=1)
    try:
        done = wait_for("the pod to run on the GPU node", lambda: node.job("gpu") if condition(node.job("gpu"), "Complete") else None)
        (ran,) = node.pods("gpu")
        assert ran["spec"]["nodeName"] == gpu_node.config.node_name
        assert done["status"]["succeeded"] == 1
        node_obj = apiserver.client.get(apiserver.path("nodes", namespace=None, name=gpu_node.config.node_name, api_version="v1"))
        assert node_obj["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    finally:
        gpu_node.stop()


# ---------------------------------------------------------------------------------------------
# What a container sees
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
        assert condition(pod, "Ready")["status"] == "True"


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return response.read().decode()
    except OSError:
        return None


def test_environment_comes_from_the_pod_spec_secrets_and_config_maps(node: Node) -> None:
    node.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
                            "stringData": {"AWS_ACCESS_KEY_ID": "key-id", "AWS_SECRET_ACCESS_KEY": "secret-key"}})
    node.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub"}, "stringData": {"token": "hf_abc"}})
    node.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"MODE": "fast"}})
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "EXPANDED", "value": "$(GREETING) world"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
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
    assert seen["POD_NAMESPACE"] == node.api.namespace
    assert seen["POD_IP"] == pod["status"]["podIP"]
    assert "OPTIONAL" not in seen
    assert "AWS_ACCESS_KEY_ID" not in seen and "KUBECONFIG" not in seen, "nothing of the agent's own environment leaks into pods"
    assert f"{seen['KUBERNETES_SERVICE_HOST']}:{seen['KUBERNETES_SERVICE_PORT']}" == node.api.url.removeprefix("https://")
    assert Path(seen["PATH"].split(os.pathsep)[0]) == Path(sys.executable).parent, "programs resolve in the repository's venv first"


def test_a_missing_secret_keeps_the_pod_pending_until_it_exists(node: Node) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    node.create_job(job_manifest("waits", script("import os; open(os.environ['KOMPRESS_TERMINATION_LOG'], 'w').write(os.environ['TOKEN'])"),
                                 container={"env": env}))
    (pod,) = wait_for("the pod to wait", lambda: [p for p in node.pods("waits")
                                                    if (p["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"])
    name = pod["metadata"]["name"]
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == 'secret "late" not found'
    assert ("kubelet", "Failed", 'Error: secret "late" not found') in node.events(name)
    refused = node.api.kubectl("logs", name, check=False)
    assert f'container "main" in pod "{name}" is waiting to start: CreateContainerConfigError' in refused.stderr

    node.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"}, "data": {}})
    wait_for("the missing key to be reported", lambda: node.pod(name)["status"]["containerStatuses"][0]["state"]
             .get("waiting", {}).get("message") == f"couldn't find key token in Secret {node.api.namespace}/late")
    node.client.patch(node.url("secrets", "late"), {"stringData": {"token": "t0k"}})
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
    assert any(reason == "FailedMount" and 'configmap "cfg" not found' in message
               for _, reason, message in node.events(waiting["metadata"]["name"]))
    node.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"mode": "x"}})
    node.wait_job("scratch", "Complete")

    (pod,) = node.pods("scratch")
    scratch, mode = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"].split("|")
    assert Path(scratch).is_relative_to(node.state_dir) and (Path(scratch) / "weights.bin").read_text() == "w"
    assert mode == "x"


def test_a_claim_is_the_folder_of_the_persistent_volume_it_is_bound_to(node: Node, tmp_path: Path) -> None:
    from kompress_testing.volumes import delete_volume, hostpath_claim

    command = script("import os, sys; open(os.path.join(sys.argv[1], sys.argv[2]), 'w').write(sys.argv[3])")
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    volumes = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}]}
    node.create_job(job_manifest("writer", command + ["/data", "greeting", "hello"], container=mount, pod=volumes))
    # No claim yet: kube-scheduler (not the agent) holds the pod back.
    (pending,) = wait_for("the pod to be unschedulable", lambda: [p for p in node.pods("writer")
                                                                    if (condition(p, "PodScheduled") or {}).get("reason") == "Unschedulable"])
    assert 'persistentvolumeclaim "shared" not found' in condition(pending, "PodScheduled")["message"]
    folder = tmp_path / "pv-folder"
    pv = hostpath_claim(node.client, node.api.namespace, "shared", folder)
    try:
        node.wait_job("writer", "Complete", timeout=60)
        assert (folder / "greeting").read_text() == "hello"  # in the PV's hostPath, where a kubelet mounts it
        node.create_job(job_manifest("reader", script("""
            import os, sys
            open(os.environ["KOMPRESS_TERMINATION_LOG"], "w").write(open(os.path.join(sys.argv[1], "greeting")).read())
        """) + ["/data"], container=mount, pod=volumes))
        node.wait_job("reader", "Complete")
        (read,) = node.pods("reader")
        assert read["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "hello"  # shared by the pods
    finally:
        delete_volume(node.client, pv)


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


# ---------------------------------------------------------------------------------------------
# Deletion and logs
# ---------------------------------------------------------------------------------------------


def test_deleting_a_pod_stops_its_process_gracefully_then_it_leaves_the_api(node: Node) -> None:
    node.create_job(job_manifest("stoppable", script("""
        import os, signal, sys, time
        def bye(*_):
            print("stopped by SIGTERM", flush=True); sys.exit(143)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(60)
    """)))
    (pod,) = node.wait_pod_phase("stoppable", "Running")
    wait_for("the program to be ready", lambda: "ready" in node.log(pod))
    node.api.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")

    failed = node.wait_job("stoppable", "Failed")
    assert failed["status"]["failed"] == 1
    wait_for("the pod to leave the API", lambda: node.pods("stoppable") == [])
    assert node.processes() == []
    assert node.log(pod) == "ready\nstopped by SIGTERM\n", "SIGTERM first, within the grace period"
    assert ("kubelet", "Killing", "Stopping container main") in node.events(pod["metadata"]["name"])


def test_an_evicted_pod_keeps_the_api_servers_disruption_condition_so_the_job_retries_it(node: Node, tmp_path: Path) -> None:
    # kube-apiserver marks an evicted pod DisruptionTarget before deleting it; the kubelet's own status
    # writes must keep it, or the Job controller counts the eviction as the pod's failure.
    marker = tmp_path / "evicted-once"
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
    node.create_job(job_manifest("evictable", script(f"""
        import os, sys, time
        if os.path.exists({str(marker)!r}): sys.exit(0)
        open({str(marker)!r}, "w").close()
        time.sleep(60)
    """), podFailurePolicy=policy))
    (pod,) = node.wait_pod_phase("evictable", "Running")
    name = pod["metadata"]["name"]
    node.client.post(node.url("pods", name) + "/eviction", {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}})

    done = node.wait_job("evictable", "Complete", timeout=60)  # the Job controller's pod failure back-off: 10 s
    assert (done["status"]["succeeded"], done["status"].get("failed", 0)) == (1, 0), "an eviction is ignored, not counted"


def test_deleting_a_job_deletes_its_pods_and_stops_their_processes(node: Node) -> None:
    node.create_job(job_manifest("doomed", script("import time; time.sleep(60)")))
    node.wait_pod_phase("doomed", "Running")
    assert len(node.processes()) == 1
    node.api.kubectl("delete", "job", "doomed", "--wait=false")  # background deletion: the garbage collector takes the pods

    wait_for("the pod to be gone", lambda: node.pods("doomed") == [])
    wait_for("its process to end", lambda: node.processes() == [])


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
    assert node.api.kubectl("logs", "job/chatty").stdout.splitlines()[-1] == "last line"
    refused = node.api.kubectl("logs", name, "-c", "other", check=False)
    assert refused.returncode != 0 and f"container other is not valid for pod {name}" in refused.stderr
