"""How fast the operator answers 1,000 CompressionJobs, how much memory and CPU it needs, and what the API server costs.

Starts the real control plane (`kompress_testing.cluster`: kube-apiserver with its audit log, etcd on tmpfs,
kube-controller-manager, kube-scheduler) and the operator (`python -m kompress_operator`) as processes of their
own, then creates N CompressionJobs from several client threads (so one client's round trips are not what is
measured), and watches Jobs and CompressionJobs to see each job's first child (its planning Job) and its
Planning phase appear. (The real Job controller makes a pod for each planning Job; with no node it stays Pending
and the scheduler marks it Unschedulable: that load on the API server, and the operator's answer to it, are part
of what is measured.) Prints `figure: value` lines:

    time to first child p50 / p95   from each create call's return to the planning Job's ADDED event in a watch
                                    (and, as a cross-check, server side: the two POSTs' completion in the audit log)
    operator peak RSS, CPU per job  VmHWM and utime+stime of the operator process
    operator requests per job       from the audit log, by verb and resource (Kopf's watches apart)
    API server latency p50 / p99    of each request kind the operator and the bench make, from the audit log
                                    (exact) and from kube-apiserver's apiserver_request_duration_seconds (buckets)
    the floor                       what each request costs the API server alone (sequential, before the run), and
                                    what the CRD's CEL rules add to a create (the same objects against a copy of the
                                    CRD without its x-kubernetes-validations)
    machine                         load average, and the CPU other processes used during the run (a shared machine)

with the ratios to the goals (p95 < 500 ms, RSS < 200 MB).
Usage: python bench/bench_operator.py [N [CLIENT_THREADS [RATE]]]   (default 1000 jobs, 8 threads, a burst)
       RATE (jobs/s): the creates arrive at that steady rate instead of as fast as the threads can make them. A burst
       saturates this machine's 2 cores (the API server alone wants more than one), so its latencies are mostly
       queueing behind CPU; a steady rate measures how fast the operator answers while the machine keeps up.
       BENCH_OPERATOR_PROFILE=operator.prof ... runs the operator under cProfile
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kompress_api import v1alpha1
from kompress_testing.cluster.client import KubeClient
from kompress_testing.cluster.controlplane import ControlPlane
from kompress_testing.pytest_plugin import install_crd
from kompress_testing.wrappers import make_cjob

from kompress_operator import child_names, children
from kompress_operator.config import OperatorConfig

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "kompress.dev_compressionjobs.yaml"
NAMESPACE = "bench"
FLOOR_NAMESPACE = "floor"
GOAL_P95_S = 0.5
GOAL_RSS_MB = 200.0
FLOOR_SAMPLES = 40
CJOBS = f"/apis/kompress.dev/v1alpha1/namespaces/{{ns}}/compressionjobs"
# User agents of the operator's requests: Kopf's watches, and its own client (kube.py).
OPERATOR_AGENTS = ("kopf/", "kompress-operator/", "OpenAPI-Generator/")


# --- processes ----------------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in (line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#") and "{" not in line)}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --- the API server's own figures --------------------------------------------------------------------

_SAMPLE = re.compile(r'^apiserver_request_duration_seconds_bucket\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def apiserver_histograms(client: KubeClient) -> dict[tuple[str, str, str], dict[float, float]]:
    """(verb, resource, subresource) -> {le: cumulative count} of apiserver_request_duration_seconds."""
    text = client.get("/metrics")
    out: dict[tuple[str, str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        out[key][float(labels["le"])] += float(match["value"])
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / max(count - below, 1e-9))
        lower, below = bound, count
    return lower


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def audit_requests(plane: ControlPlane, since: float, until: float | None = None) -> list[dict[str, Any]]:
    """The audit log's finished requests received in [since, until] (wall clock), with their server-side seconds."""
    out = []
    for event in plane.audit_events():
        if event.get("stage") != "ResponseComplete":
            continue
        received = _when(event["requestReceivedTimestamp"])
        if received < since or (until is not None and received > until):
            continue
        event["_seconds"] = _when(event["stageTimestamp"]) - received
        event["_done"] = _when(event["stageTimestamp"])
        out.append(event)
    return out


def kind(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return f"{event['verb']} {resource}"


def by_agent(events: Iterable[dict[str, Any]], agents: tuple[str, ...]) -> list[dict[str, Any]]:
    return [e for e in events if (e.get("userAgent") or "").startswith(agents)]


# --- the floor -----------------------------------------------------------------------------------------


def cel_free(crd: dict[str, Any]) -> dict[str, Any]:
    """The same CRD under another group, with every x-kubernetes-validations (CEL) rule removed."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "x-kubernetes-validations"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    out = strip(copy.deepcopy(crd))
    out["metadata"]["name"] = f"{out['spec']['names']['plural']}.celfree.kompress.dev"
    out["spec"]["group"] = "celfree.kompress.dev"
    return out


def rich_cjob(name: str, namespace: str) -> dict[str, Any]:
    """A CompressionJob that meets most of the CRD's CEL rules: volumes, scheduling with node affinity, overrides with
    regexes, a GPU resource name, lm-eval tasks from a ConfigMap, a gate (the bench's plain one meets a few)."""
    manifest = make_cjob(name, namespace).with_spec(
        model={"uri": "/models/glm", "volume": {"claimName": "models", "mountPath": "/models", "subPath": "glm"}},
        output={"uri": "s3://models/out", "s3": {"endpoint": "https://minio.internal:9000", "credentialsSecret": "s3"}},
        resources={"gpus": 4, "gpuResourceName": "nvidia.com/gpu", "memory": "256Gi", "scratch": "500Gi"},
        scheduling={"nodeSelector": {"nvidia.com/gpu.family": "hopper", "topology.kubernetes.io/zone": "a"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "nvidia.com/gpu.count", "operator": "Gt", "values": ["3"]}]}]}}},
                    "queueName": "gpu-batch", "priorityClassName": "batch"},
        evaluation={"tasks": [{"name": "arc_easy"}, {"name": "gsm8k", "numFewshot": 5}], "taskSource": {"configMap": "tasks"},
                    "gate": {"maxPerplexityIncrease": 0.05, "maxTaskDrop": 0.02}},
    ).manifest()
    manifest["spec"]["recipe"] = {"preset": "w4a16", "overrides": {"ignore": ["re:.*mlp\\.gate$", "lm_head"], "experts": "re:.*experts\\.\\d+"}}
    v1alpha1.parse(manifest)  # what the API server refuses, the model refuses first
    return manifest


def measure_floor(plane: ControlPlane, crd: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(client round trip ms, server-side ms) per request kind, sequential, on an otherwise idle control plane."""
    client = plane.admin()
    free = cel_free(crd)
    install_crd(plane, free)
    client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FLOOR_NAMESPACE}})
    base, free_base = CJOBS.format(ns=FLOOR_NAMESPACE), f"/apis/celfree.kompress.dev/v1alpha1/namespaces/{FLOOR_NAMESPACE}/compressionjobs"
    rounds: dict[str, list[float]] = defaultdict(list)
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def timed(what: str, call: Any) -> Any:
        wall, started = time.time(), time.monotonic()
        result = call()
        rounds[what].append(time.monotonic() - started)
        windows[what].append((wall, time.time()))
        return result

    for i in range(FLOOR_SAMPLES):
        # Interleaved, so both CRDs meet the same load of the moment.
        for shape, manifest in (("", make_cjob(f"floor-{i}", FLOOR_NAMESPACE).manifest()), (" rich", rich_cjob(f"rich-{i}", FLOOR_NAMESPACE))):
            timed(f"POST compressionjobs{shape} (with the CRD's CEL rules)", lambda: client.post(base, manifest))
            timed(f"POST compressionjobs{shape} (same CRD, no CEL rules)", lambda: client.post(free_base, manifest | {"apiVersion": "celfree.kompress.dev/v1alpha1"}))
    status = {"status": {"phase": "Planning", "conditions": [{"type": "Planned", "status": "Unknown", "reason": "Planning", "message": "m", "lastTransitionTime": "2026-11-26T10:00:00Z"}]}}
    for i in range(FLOOR_SAMPLES):
        timed("PATCH compressionjobs/status", lambda: client.patch(f"{base}/floor-{i}/status", status))
    config = OperatorConfig(worker_image="registry.example/kompress-job:1.0")
    manifests = [children.build_plan_job(v1alpha1.parse(client.get(f"{base}/floor-{i}")), config) for i in range(FLOOR_SAMPLES)]
    for job in manifests:
        timed("POST jobs", lambda: client.post(f"/apis/batch/v1/namespaces/{FLOOR_NAMESPACE}/jobs", job))
    event = {"apiVersion": "v1", "kind": "Event", "involvedObject": {"apiVersion": "kompress.dev/v1alpha1", "kind": "CompressionJob", "name": "floor-0", "namespace": FLOOR_NAMESPACE},
             "reason": "Planning", "message": "m", "type": "Normal", "source": {"component": "bench"}, "count": 1}
    for i in range(FLOOR_SAMPLES):
        timed("POST events", lambda: client.post(f"/api/v1/namespaces/{FLOOR_NAMESPACE}/events", event | {"metadata": {"name": f"floor-0.{i}"}}))

    requests = audit_requests(plane, min(w[0] for ws in windows.values() for w in ws) - 1)
    out = {}
    for what, spans in windows.items():
        server = [e["_seconds"] for e in requests if e.get("objectRef", {}).get("namespace") == FLOOR_NAMESPACE
                  and any(start - 0.001 <= _when(e["requestReceivedTimestamp"]) <= end + 0.001 for start, end in spans)
                  and kind(e) == what.split(" (")[0].replace(" rich", "").replace("POST", "create").replace("PATCH", "patch")]
        out[what] = (statistics.median(rounds[what]) * 1000, (statistics.median(server) * 1000) if server else float("nan"))
    # The operator watches every namespace: nothing of the floor may be left for it.
    client.delete(CJOBS.format(ns=FLOOR_NAMESPACE))
    client.delete(f"/apis/batch/v1/namespaces/{FLOOR_NAMESPACE}/jobs", {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (client.get(CJOBS.format(ns=FLOOR_NAMESPACE))["items"] or client.get(f"/api/v1/namespaces/{FLOOR_NAMESPACE}/pods")["items"]):
        time.sleep(0.5)
    return out


# --- the run -------------------------------------------------------------------------------------------


class Watch(threading.Thread):
    """A watch of one collection, calling `seen(event, monotonic time)` for each event as it arrives."""

    def __init__(self, plane: ControlPlane, path: str, seen: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.path, self.seen = plane.admin(), path, seen
        self.ready = threading.Event()
        self.stop = False

    def run(self) -> None:
        version = self.client.get(self.path)["metadata"]["resourceVersion"]
        self.ready.set()
        while not self.stop:
            try:
                for event in self.client.watch(self.path, timeout=120, timeoutSeconds=60, resourceVersion=version, allowWatchBookmarks="true"):
                    now = time.monotonic()
                    version = event["object"].get("metadata", {}).get("resourceVersion") or version
                    if event["type"] != "BOOKMARK":
                        self.seen(event, now)
                    if self.stop:
                        return
            except Exception as err:  # noqa: BLE001 - a dropped watch resumes from the last version
                print(f"(watch of {self.path} restarted: {err})", file=sys.stderr)


def create_all(plane: ControlPlane, count: int, threads: int, rate: float | None = None) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """(name -> monotonic return, name -> wall return, errors) of `count` creates from `threads` client threads: as fast
    as they can, or the i-th at i / rate seconds after the start (open loop: a late create does not delay the next)."""
    start = time.monotonic()
    created: dict[str, float] = {}
    created_wall: dict[str, float] = {}
    errors: list[str] = []

    def one_thread(k: int) -> None:
        client = plane.admin()
        for i in range(k, count, threads):
            name = f"bench-{i:04d}"
            if rate:
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
            try:
                client.post(CJOBS.format(ns=NAMESPACE), make_cjob(name, NAMESPACE).manifest())
            except Exception as err:  # noqa: BLE001 - counted and printed
                errors.append(f"{name}: {err}")
                continue
            created[name] = time.monotonic()
            created_wall[name] = time.time()

    workers = [threading.Thread(target=one_thread, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return created, created_wall, errors


def main(count: int = 1000, threads: int = 8, rate: float | None = None) -> int:
    load_before = os.getloadavg()
    crd = yaml.safe_load(CRD.read_text())
    with ControlPlane.running() as plane:
        install_crd(plane, crd)
        client = plane.admin()
        floor = measure_floor(plane, crd)
        client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        kubeconfig = plane.write_admin_kubeconfig(plane.workdir / "bench.kubeconfig")

        first_child: dict[str, float] = {}
        planning: dict[str, float] = {}

        def job_seen(event: dict[str, Any], now: float) -> None:
            owner = (event["object"].get("metadata", {}).get("annotations") or {}).get(child_names.ANNOTATION_OWNER_NAME)
            if event["type"] == "ADDED" and owner:
                first_child.setdefault(owner, now)

        def cjob_seen(event: dict[str, Any], now: float) -> None:
            if (event["object"].get("status") or {}).get("phase") == "Planning":
                planning.setdefault(event["object"]["metadata"]["name"], now)

        watches = [Watch(plane, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", job_seen), Watch(plane, CJOBS.format(ns=NAMESPACE), cjob_seen)]
        for watch in watches:
            watch.start()
            watch.ready.wait(10)

        operator = None
        try:
            env = {**os.environ, "KOMPRESS_LOG_FORMAT": "json"}
            metrics_port, health_port = free_port(), free_port()
            # BENCH_OPERATOR_PROFILE=FILE: the operator runs under cProfile and writes its profile there when stopped.
            profile = ["-m", "cProfile", "-o", os.environ["BENCH_OPERATOR_PROFILE"]] if os.environ.get("BENCH_OPERATOR_PROFILE") else []
            args = [sys.executable, *profile, "-m", "kompress_operator", f"--kubeconfig={kubeconfig}", f"--health-port={health_port}",
                    f"--metrics-port={metrics_port}", "--worker-image=registry.example/kompress-job:1.0"]
            operator = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(plane.workdir / "operator.log", "wb"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the operator's start-up (imports, login, listings) is not what is measured
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(1.0)
            ours = {"operator": operator.pid, **{p.name: p.popen.pid for p in plane.processes}}
            cpu_before = {name: cpu_seconds(pid) for name, pid in ours.items()}
            bench_cpu_before, busy_before = time.process_time(), machine_busy_seconds()
            histograms_before = apiserver_histograms(client)
            wall_start, started = time.time(), time.monotonic()

            created, created_wall, create_errors = create_all(plane, count, threads, rate)
            create_s = time.monotonic() - started

            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and (len(first_child) < len(created) or len(planning) < len(created)):
                time.sleep(0.2)
            total_s = max(planning.values(), default=started) - started
            wall_s = time.monotonic() - started
            rss = peak_rss_mb(operator.pid)
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in ours.items()}
            bench_cpu, busy = time.process_time() - bench_cpu_before, machine_busy_seconds() - busy_before
            load_during = os.getloadavg()
            time.sleep(1.0)  # the operator may not have read the answers to its last writes yet
            histograms_after = apiserver_histograms(client)
            counters = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            wall_end = time.time()
        finally:
            for watch in watches:
                watch.stop = True
            if operator is not None:
                operator.terminate()
                try:
                    operator.wait(30)
                except subprocess.TimeoutExpired:  # a loaded machine: what was measured is kept
                    operator.kill()
                    operator.wait(10)
        requests = [e for e in audit_requests(plane, wall_start, wall_end) if (e.get("objectRef") or {}).get("namespace") in (NAMESPACE, None)]

    # --- figures ---
    latencies = [first_child[name] - created[name] for name in created if name in first_child]
    missing = len(created) - len(latencies)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    to_planning = [planning[name] - created[name] for name in created if name in planning]
    arrival = f"at a steady {rate:g}/s" if rate else "as fast as they can (a burst)"
    print(f"compressionjobs: {count}, created from {threads} client threads {arrival}")
    print(f"machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f}, at the end {load_during[0]:.2f}; "
          f"CPU used by processes other than these during the run: {max(0.0, busy - sum(cpu.values()) - bench_cpu):.1f} core-s of {wall_s * (os.cpu_count() or 1):.1f}")
    print(f"create calls: {create_s:.2f} s ({len(created) / create_s:.0f}/s), errors: {len(create_errors)}")
    print(f"time to first child p50: {p50 * 1000:.0f} ms")
    print(f"time to first child p95: {p95 * 1000:.0f} ms (goal < {GOAL_P95_S * 1000:.0f} ms, ratio {p95 / GOAL_P95_S:.2f})")
    print(f"time to first child max: {max(latencies, default=float('nan')) * 1000:.0f} ms, mean {statistics.fmean(latencies) * 1000 if latencies else float('nan'):.0f} ms")
    # Server side: each CompressionJob POST's completion to its planning Job POST's, in the audit log (microseconds),
    # split into the operator's part (until its Job POST reached the API server) and the API server's (that POST).
    cj_done = {e["objectRef"].get("name"): e["_done"] for e in requests if kind(e) == "create compressionjobs" and e["objectRef"].get("name")}
    # <name>-<uid5>-plan: the owner's name is what precedes the last two parts.
    job_posts = {e["objectRef"]["name"].rsplit("-", 2)[0]: e for e in by_agent(requests, OPERATOR_AGENTS)
                 if kind(e) == "create jobs" and (e.get("responseStatus") or {}).get("code") == 201 and e["objectRef"].get("name", "").endswith("-plan")}
    server_side, operator_part, post_part = [], [], []
    for name, done in cj_done.items():
        post = job_posts.get(name)
        if post is not None:
            server_side.append(post["_done"] - done)
            operator_part.append(_when(post["requestReceivedTimestamp"]) - done)
            post_part.append(post["_seconds"])
    print(f"time to first child, server side p50: {percentile(server_side, 50) * 1000:.0f} ms, p95: {percentile(server_side, 95) * 1000:.0f} ms "
          f"(the operator until its Job POST arrives p50 {percentile(operator_part, 50) * 1000:.0f} / p95 {percentile(operator_part, 95) * 1000:.0f} ms, "
          f"that POST in the API server p50 {percentile(post_part, 50) * 1000:.0f} / p95 {percentile(post_part, 95) * 1000:.0f} ms)")
    print(f"time to phase Planning p50: {percentile(to_planning, 50) * 1000:.0f} ms, p95: {percentile(to_planning, 95) * 1000:.0f} ms")
    print(f"total to all Planning: {total_s:.2f} s")
    print(f"operator peak RSS: {rss:.0f} MB (goal < {GOAL_RSS_MB:.0f} MB, ratio {rss / GOAL_RSS_MB:.2f})")
    print(f"operator CPU: {cpu['operator']:.1f} s ({cpu['operator'] / count * 1000:.1f} ms per CompressionJob)")
    print("CPU during the run: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])) + f", bench client {bench_cpu:.1f} s")
    for metric in ("kompress_reconciles_total", "kompress_status_writes_total", "kompress_reconcile_errors_total"):
        value = counters.get(metric, float("nan"))
        print(f"operator {metric}: {value:.0f} ({value / count:.2f} per CompressionJob)")

    operator_requests = by_agent(requests, OPERATOR_AGENTS)
    calls = Counter(kind(e) for e in operator_requests if e["verb"] != "watch")
    print(f"operator requests per CompressionJob: {sum(calls.values()) / count:.2f} (" + ", ".join(f"{what} {n / count:.2f}" for what, n in calls.most_common()) + ")")
    answers = Counter(f"{kind(e)} {(e.get('responseStatus') or {}).get('code')}" for e in operator_requests if (e.get("responseStatus") or {}).get("code", 200) >= 400)
    if answers:
        print("operator requests refused: " + ", ".join(f"{what} x{n}" for what, n in answers.most_common()))
    print(f"all API requests during the run: {len(requests)} ({len(requests) / count:.1f} per CompressionJob)")

    for what in ("create compressionjobs", "create jobs", "patch compressionjobs/status", "create events", "list events", "get jobs"):
        seconds = [e["_seconds"] for e in requests if kind(e) == what]
        if seconds:
            print(f"API server latency, {what}: p50 {percentile(seconds, 50) * 1000:.1f} ms, p99 {percentile(seconds, 99) * 1000:.1f} ms (audit log, {len(seconds)} requests)")
    for verb, resource, sub in (("POST", "compressionjobs", ""), ("POST", "jobs", ""), ("PATCH", "compressionjobs", "status"), ("POST", "events", ""), ("LIST", "events", "")):
        after, before = histograms_after.get((verb, resource, sub), {}), histograms_before.get((verb, resource, sub), {})
        delta = {le: after[le] - before.get(le, 0.0) for le in after}
        if delta and max(delta.values()) > 0:
            label = f"{verb} {resource}" + (f"/{sub}" if sub else "")
            print(f"apiserver_request_duration_seconds, {label}: p50 {histogram_quantile(0.5, delta) * 1000:.1f} ms, p99 {histogram_quantile(0.99, delta) * 1000:.1f} ms")

    for what, (client_ms, server_ms) in floor.items():
        print(f"API server alone, {what}: {client_ms:.1f} ms round trip, {server_ms:.1f} ms in the server")
    for shape, words in (("", "the bench's CompressionJob"), (" rich", "one meeting most rules")):
        with_cel = floor.get(f"POST compressionjobs{shape} (with the CRD's CEL rules)", (0, 0))[1]
        without = floor.get(f"POST compressionjobs{shape} (same CRD, no CEL rules)", (0, 0))[1]
        print(f"CEL rules' share of a create, {words}: {with_cel - without:.1f} ms of {with_cel:.1f} ms")
    print(f"jobs without a child: {missing}")
    for line in create_errors[:5]:
        print(f"create error: {line}")
    return 0 if missing == 0 and not create_errors else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 8,
                  float(sys.argv[3]) if len(sys.argv) > 3 else None))
