"""What the real control plane and the played kubelet add to a pod's life: a Job of `python -c pass`,
created to Complete, against the same command run directly.

Starts the real control plane (`kompress_testing.cluster`: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler; `make cluster` builds them) and the node agent (`python -m kompress_testing.node_agent`,
its own process), creates N one-pod Jobs one after the other, and prints:

    bare process                        `python -c pass` run with subprocess (the floor)
    API server GET latency p50          one request's round trip (the floor of every step below)
    job create to pod Succeeded p50/p95 Job controller (pod create), kube-scheduler (bind), kubelet (run, status)
    job create to Complete p50 / p95    the above, plus the Job controller counting the pod and finishing the Job
    overhead p50                        Complete minus the bare run, and its ratio to the bare run
    agent CPU per job                   the agent process's CPU time divided by N

Usage: python bench/bench_node_agent.py [N]   (default 20)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kompress_testing.cluster.client import KubeClient
from kompress_testing.cluster.controlplane import ControlPlane
from kompress_testing.node_agent.access import agent_kubeconfig

JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[max(0, int(len(values) * q + 0.5) - 1)]


def run_job(client: KubeClient, name: str) -> tuple[float, float]:
    """Seconds from the Job's create to its pod Succeeded, and to the Job Complete."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["python", "-c", "pass"]}]}}}}
    start = time.monotonic()
    client.post(JOBS, job)
    succeeded = None
    while True:
        if succeeded is None and any(p["status"].get("phase") == "Succeeded" for p in client.get(PODS, labelSelector=f"job-name={name}")["items"]):
            succeeded = time.monotonic() - start
        if any(c["type"] == "Complete" for c in (client.get(f"{JOBS}/{name}").get("status") or {}).get("conditions") or []):
            done = time.monotonic() - start
            return (succeeded if succeeded is not None else done), done
        time.sleep(0.01)


def main(n: int) -> int:
    bare = []
    for _ in range(5):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.monotonic() - t)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp, ControlPlane.running(Path(tmp) / "cluster") as plane:
        kubeconfig = agent_kubeconfig(plane, Path(tmp) / "agent.kubeconfig")
        agent = subprocess.Popen([sys.executable, "-m", "kompress_testing.node_agent", "--kubeconfig", str(kubeconfig),
                                  "--state-dir", tmp + "/node", "--node-name", "bench-node"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert agent.stdout is not None and "ready" in agent.stdout.readline()
        client = plane.admin()
        gets = []
        for _ in range(50):
            t = time.monotonic()
            client.get(f"{JOBS}")
            gets.append(time.monotonic() - t)
        cpu_before = cpu_seconds(agent.pid)
        runs = [run_job(client, f"j{i}") for i in range(n)]
        cpu = cpu_seconds(agent.pid) - cpu_before
        agent.terminate()
        agent.wait(30)
    floor = statistics.median(bare)
    to_pod = [r[0] for r in runs]
    to_complete = [r[1] for r in runs]
    p50 = statistics.median(to_complete)
    print(f"bare process: {floor * 1000:.0f} ms")
    print(f"API server GET latency p50: {statistics.median(gets) * 1000:.1f} ms")
    print(f"job create to pod Succeeded p50: {statistics.median(to_pod) * 1000:.0f} ms")
    print(f"job create to pod Succeeded p95: {percentile(to_pod, 0.95) * 1000:.0f} ms")
    print(f"job create to Complete p50: {p50 * 1000:.0f} ms")
    print(f"job create to Complete p95: {percentile(to_complete, 0.95) * 1000:.0f} ms")
    print(f"overhead p50: {(p50 - floor) * 1000:.0f} ms (ratio to the bare run: {p50 / floor:.1f})")
    print(f"agent CPU per job: {cpu / n * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
