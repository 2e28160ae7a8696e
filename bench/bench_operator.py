"""How fast the operator answers 1,000 CompressionJobs, and how much memory it needs.

Starts the real control plane (`kompress_testing.cluster`: kube-apiserver, etcd on tmpfs, kube-controller-
manager, kube-scheduler) and the operator (`python -m kompress_operator`) as processes of their own, creates
N CompressionJobs as fast as one client can, and watches Jobs to see each job's first child (its planning
Job) appear. (The real Job controller then makes a pod for each planning Job, which stays Pending: no
node; that load on the API server is part of what is measured.) Prints:

    time to first child p50 / p95   from the create call's return to the planning Job in a watch
    total                           from the first create to the last CompressionJob in phase Planning
    operator peak RSS               VmHWM of the operator process

with their ratios to the goals (p95 < 500 ms, RSS < 200 MB), and what the API server alone costs per
request of the kinds the operator makes (the floor), since at full speed it, not the operator, is the
bottleneck.
Usage: python bench/bench_operator.py [N [CREATES_PER_SECOND]]   (default 1000, unpaced)
"""

from __future__ import annotations

import os
import socket
import urllib.request
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from kompress_api import v1alpha1
from kompress_testing.cluster.controlplane import ControlPlane
from kompress_testing.pytest_plugin import install_crd
from kompress_operator import children
from kompress_operator.config import OperatorConfig
from kompress_testing.wrappers import make_cjob

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "kompress.dev_compressionjobs.yaml"
NAMESPACE = "bench"
GOAL_P95_S = 0.5
GOAL_RSS_MB = 200.0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_floor_ms(samples: int = 40) -> dict[str, float]:
    """What the API server alone costs per request the operator makes (a fresh control plane, no operator)."""
    with ControlPlane.running() as plane:
        install_crd(plane, yaml.safe_load(CRD.read_text()))
        client = plane.admin()
        client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        base = f"/apis/kompress.dev/v1alpha1/namespaces/{NAMESPACE}/compressionjobs"
        costs: dict[str, float] = {}
        started = time.monotonic()
        for i in range(samples):
            client.post(base, make_cjob(f"floor-{i}", NAMESPACE).manifest())
        costs["POST compressionjob"] = (time.monotonic() - started) / samples * 1000
        started = time.monotonic()
        for i in range(samples):
            client.patch(f"{base}/floor-{i}/status", {"status": {"phase": "Planning", "conditions": [{"type": "Planned", "status": "Unknown", "reason": "Planning", "message": "m", "lastTransitionTime": "2026-11-26T10:00:00Z"}]}})
        costs["PATCH compressionjob/status"] = (time.monotonic() - started) / samples * 1000
        config = OperatorConfig(worker_image="registry.example/kompress-job:1.0")
        jobs = []
        for i in range(samples):
            obj = client.get(f"{base}/floor-{i}")
            jobs.append(children.build_plan_job(v1alpha1.parse(obj), config))
        started = time.monotonic()
        for job in jobs:
            client.post(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", job)
        costs["POST job"] = (time.monotonic() - started) / samples * 1000
        event = {"apiVersion": "v1", "kind": "Event", "involvedObject": {"apiVersion": "kompress.dev/v1alpha1", "kind": "CompressionJob", "name": "floor-0", "namespace": NAMESPACE},
                 "reason": "Planning", "message": "m", "type": "Normal", "source": {"component": "bench"}, "count": 1}
        started = time.monotonic()
        for i in range(samples):
            client.post(f"/api/v1/namespaces/{NAMESPACE}/events", event | {"metadata": {"name": f"floor-0.{i}"}})
        costs["POST event"] = (time.monotonic() - started) / samples * 1000
        return costs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in (line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#") and "{" not in line)}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(count: int = 1000, rate: float = 0.0) -> int:
    with ControlPlane.running() as plane:
        install_crd(plane, yaml.safe_load(CRD.read_text()))
        kubeconfig = plane.write_admin_kubeconfig(plane.workdir / "bench.kubeconfig")
        operator = None
        try:
            client = plane.admin()
            client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})

            # The watch of Jobs, as a user would see children appear.
            first_child: dict[str, float] = {}
            watching = threading.Event()

            def watch_jobs() -> None:
                watcher = plane.admin()
                watching.set()
                for event in watcher.watch(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", timeout=600, timeoutSeconds=600):
                    owner = (event["object"].get("metadata", {}).get("annotations") or {}).get("kompress.dev/compressionjob")
                    if event["type"] == "ADDED" and owner:
                        first_child.setdefault(owner, time.monotonic())
                    if len(first_child) >= count:
                        return

            threading.Thread(target=watch_jobs, daemon=True).start()
            watching.wait(5)

            env = {**os.environ, "KOMPRESS_LOG_FORMAT": "json"}
            metrics_port = free_port()
            args = [sys.executable, "-m", "kompress_operator", f"--kubeconfig={kubeconfig}", "--health-port=0", f"--metrics-port={metrics_port}", "--worker-image=registry.example/kompress-job:1.0"]
            operator = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2.0)  # the operator's start-up (imports, login, initial listings) is not what is measured
            cpu_at_start = cpu_seconds(operator.pid)
            created: dict[str, float] = {}
            started = time.monotonic()
            for i in range(count):
                if rate:
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                name = f"bench-{i:04d}"
                client.post(f"/apis/kompress.dev/v1alpha1/namespaces/{NAMESPACE}/compressionjobs", make_cjob(name, NAMESPACE).manifest())
                created[name] = time.monotonic()
            create_s = time.monotonic() - started

            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                items = client.get(f"/apis/kompress.dev/v1alpha1/namespaces/{NAMESPACE}/compressionjobs")["items"]
                if sum((item.get("status") or {}).get("phase") == "Planning" for item in items) >= count:
                    break
                time.sleep(0.1)
            total_s = time.monotonic() - started
            rss = peak_rss_mb(operator.pid)
            cpu = cpu_seconds(operator.pid) - cpu_at_start
            time.sleep(1.0)  # the operator may not have read the answers to its last writes yet
            counters = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            if operator is not None:
                operator.terminate()
                try:
                    operator.wait(30)
                except subprocess.TimeoutExpired:  # a loaded machine: what was measured is kept
                    operator.kill()
                    operator.wait(10)

    latencies = [first_child[name] - created[name] for name in created if name in first_child]
    missing = count - len(latencies)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(f"compressionjobs: {count}" + (f" at {rate:g}/s" if rate else " as fast as one client can create them"))
    print(f"create calls (one client): {create_s:.2f} s")
    print(f"time to first child p50: {p50 * 1000:.0f} ms")
    print(f"time to first child p95: {p95 * 1000:.0f} ms (goal < {GOAL_P95_S * 1000:.0f} ms, ratio {p95 / GOAL_P95_S:.2f})")
    print(f"time to first child max: {max(latencies) * 1000:.0f} ms, mean {statistics.fmean(latencies) * 1000:.0f} ms")
    print(f"total to all Planning: {total_s:.2f} s")
    print(f"operator peak RSS: {rss:.0f} MB (goal < {GOAL_RSS_MB:.0f} MB, ratio {rss / GOAL_RSS_MB:.2f})")
    print(f"operator CPU: {cpu:.1f} s ({cpu / count * 1000:.1f} ms per CompressionJob)")
    for metric in ("kompress_reconciles_total", "kompress_status_writes_total", "kompress_reconcile_errors_total"):
        print(f"operator {metric}: {counters.get(metric, float('nan')):.0f} ({counters.get(metric, float('nan')) / count:.2f} per CompressionJob)")
    floor = api_floor_ms()
    for what, ms in floor.items():
        print(f"API server alone, {what}: {ms:.1f} ms")
    # Per CompressionJob: the bench's create, and the operator's Job POST, status PATCH and Event POST.
    floor_s = count * sum(floor.values()) / 1000
    print(f"API server floor for {count} (those four requests each, nothing else): {floor_s:.1f} s; total / floor {total_s / floor_s:.2f}")
    print(f"jobs without a child: {missing}")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
