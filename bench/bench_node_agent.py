"""What the node agent adds to a pod's life: a Job of `python -c pass`, created to Complete, against the
same command run directly.

Starts the emulated API server (in this process) and the node agent (`python -m kompress_testing.node_agent`,
its own process), creates N one-pod Jobs one after the other, and prints:

    bare process            `python -c pass` run with subprocess (the floor)
    job create to Complete p50 / p95   what the Job controller, scheduler and kubelet add on top
    overhead p50            the difference, and its ratio to the bare run
    agent CPU per job       the agent process's CPU time divided by N

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

from kompress_testing.apiserver.runner import KubeClient, ServerThread, write_kubeconfig

JOBS = "/apis/batch/v1/namespaces/default/jobs"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(n: int) -> int:
    bare = []
    for _ in range(5):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.monotonic() - t)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp, ServerThread() as api:
        token = api.call(lambda: api.server.service_account_token("kube-system", "kompress-node-agent"))
        kubeconfig = write_kubeconfig(Path(tmp) / "agent", api.url, token)
        agent = subprocess.Popen([sys.executable, "-m", "kompress_testing.node_agent", "--kubeconfig", str(kubeconfig), "--state-dir", tmp + "/node"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert agent.stdout is not None and "ready" in agent.stdout.readline()
        client = KubeClient(api.url)
        cpu_before = cpu_seconds(agent.pid)
        latencies = []
        for i in range(n):
            job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"j{i}"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["python", "-c", "pass"]}]}}}}
            t = time.monotonic()
            client.post(JOBS, job)
            while not any(c["type"] == "Complete" for c in (client.get(f"{JOBS}/j{i}").get("status") or {}).get("conditions") or []):
                time.sleep(0.01)
            latencies.append(time.monotonic() - t)
        cpu = cpu_seconds(agent.pid) - cpu_before
        agent.terminate()
        agent.wait(30)
    floor = statistics.median(bare)
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[max(0, int(len(latencies) * 0.95) - 1)]
    print(f"bare process: {floor * 1000:.0f} ms")
    print(f"job create to Complete p50: {p50 * 1000:.0f} ms")
    print(f"job create to Complete p95: {p95 * 1000:.0f} ms")
    print(f"overhead p50: {(p50 - floor) * 1000:.0f} ms (ratio to the bare run: {p50 / floor:.1f})")
    print(f"agent CPU per job: {cpu / n * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
