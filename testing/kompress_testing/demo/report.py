"""What the demo prints at the end, as plain text: pure functions of the objects it read back.

Owns: the CompressionJob's status and conditions, the S3 listing, the manifest's summary, and the
plan-versus-actual comparison. Must not: read anything itself.
"""

from __future__ import annotations

import textwrap
from typing import Any

from kompress_testing.demo.flow import Published


def human(n: int | float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _wrap(text: str, indent: str, width: int = 100) -> str:
    return textwrap.fill(text, width=width, initial_indent="", subsequent_indent=indent) if text else ""


def status_report(cjob: dict[str, Any]) -> str:
    status = cjob.get("status") or {}
    lines = [f"CompressionJob {cjob['metadata']['name']}: {status.get('phase', '?')}"]
    lines.append("  conditions:")
    for cond in status.get("conditions") or []:
        head = f"    {cond['type']:<12} {cond['status']:<7} {cond.get('reason', ''):<22}"
        lines.append(head + _wrap(cond.get("message", ""), " " * (len(head) + 0)))
    result = status.get("result") or {}
    if result:
        lines.append("  result:")
        for key in ("outputUri", "manifestUri", "rejectedUri", "resolvedRevision"):
            if result.get(key):
                lines.append(f"    {key:<18} {result[key]}")
        destination = result.get("destination") or {}
        if destination:
            signed = f", signed ({destination['signature']})" if destination.get("signature") else ""
            lines.append(f"    {'destination':<18} {destination.get('kind')}: {destination.get('reference')}{signed}")
        if result.get("checkpointBytes") is not None:
            lines.append(f"    {'checkpoint':<18} {human(result['checkpointBytes'])} (source as fetched: {human(result.get('originalBytes'))}"
                         + (f", {result['compressionRatio']}x smaller than bf16)" if result.get("compressionRatio") else ")"))
        metrics = result.get("metrics") or {}
        figures = []
        if metrics.get("perplexityIncrease") is not None:
            figures.append(f"perplexity {metrics['perplexityIncrease'] * 100:+.2f}%")
        if metrics.get("klDivergence") is not None:
            figures.append(f"KL {metrics['klDivergence']:.4f}")
        if metrics.get("top1Agreement") is not None:
            figures.append(f"top-1 agreement {metrics['top1Agreement']:.3f}")
        if figures:
            lines.append(f"    {'quality':<18} {', '.join(figures)} on {metrics.get('samples', '?')} held-out samples")
        for score in metrics.get("tasks") or []:
            if score.get("original") is not None and score.get("compressed") is not None:
                lines.append(f"    {'task ' + score['task']:<18} {score['metric']} {score['original']:.3f} -> {score['compressed']:.3f} "
                             f"({score['compressed'] - score['original']:+.3f}; lm-eval, {metrics.get('taskBackend', '?')} backend)")
    return "\n".join(lines)


def workloads_report(jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> str:
    """Jobs and pods in a line each: what `kubectl get jobs,pods` would show a real cluster's user."""
    lines = ["jobs:"]
    for job in jobs:
        st = job.get("status") or {}
        conds = ",".join(f"{c['type']}({c.get('reason', '')})" for c in st.get("conditions") or [] if c.get("status") == "True")
        lines.append(f"  {job['metadata']['name']:<30} active {st.get('active', 0)} succeeded {st.get('succeeded', 0)} "
                     f"failed {st.get('failed', 0)} {conds}")
    lines.append("pods:")
    for pod in pods:
        st = pod.get("status") or {}
        states = []
        for cs in st.get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "terminated" in state:
                states.append(f"{cs['name']}: exit {state['terminated'].get('exitCode')} ({state['terminated'].get('reason')})")
            elif "waiting" in state:
                states.append(f"{cs['name']}: waiting ({state['waiting'].get('reason')}: {state['waiting'].get('message', '')})")
            else:
                states.append(f"{cs['name']}: running")
        scheduled = next((c for c in st.get("conditions") or [] if c["type"] == "PodScheduled" and c["status"] == "False"), None)
        if scheduled:
            states.append(f"unschedulable: {scheduled.get('message')}")
        lines.append(f"  {pod['metadata']['name']:<30} {st.get('phase', 'Pending'):<10} {st.get('podIP', '-'):<16} {'; '.join(states)}")
    return "\n".join(lines)


def listing_report(published: Published, output_uri: str) -> str:
    lines = [f"{output_uri}/"]
    for key, size in sorted(published.objects.items()):
        lines.append(f"  {human(size):>10}  {key}")
    manifest = published.manifest
    if manifest is None:
        lines.append("  (no manifest: not a finished model)")
    else:
        # the view outputs.manifest.read gives (flow.read_published): every part there, whatever the format written
        lines.append(f"manifest kompress.json: {manifest['kind']} format {manifest['format']}, status {manifest['status']}")
        source = manifest["source"]
        lines.append(f"  source      {source['uri']} ({human(source['bytes'])}, revision {source['resolvedRevision']})")
        lines.append(f"  recipe      preset {manifest['recipe']['preset']}; modules per group: {manifest['groups']}")
        calibration = manifest["calibration"]
        lines.append(f"  calibration {calibration['uri']}, {calibration['requestedSamples']} samples of ≤ {calibration['maxSequenceLength']} tokens")
        lines.append("  libraries   " + ", ".join(f"{k} {v}" for k, v in manifest["libraries"].items() if k in ("llmcompressor", "compressed-tensors", "transformers", "torch")))
        if published.checksum_problems:
            lines.append("  checksums   PROBLEMS:")
            lines += [f"    {p}" for p in published.checksum_problems]
        else:
            lines.append(f"  checksums   {published.files_checked}/{published.files_checked} files in S3 match the manifest's size and SHA-256")
    return "\n".join(lines)


def plan_vs_actual(cjob: dict[str, Any], containers: list[dict[str, Any]], published: Any = None) -> str:
    """The plan's figures next to what happened: the weights' size, and the worker's memory (the node agent's record)."""
    status = cjob.get("status") or {}
    plan, result = status.get("plan") or {}, status.get("result") or {}
    lines = ["plan vs actual:"]
    planned = plan.get("estimatedCheckpointBytes")
    # The plan estimates the weight files (safetensors and their index); the rest (card, picture, tokenizer) is small.
    objects = published.objects if published is not None else {}
    weights = sum(size for key, size in objects.items() if key.endswith(".safetensors") or key.endswith(".safetensors.index.json"))
    actual = weights or result.get("checkpointBytes")
    change = f" ({(actual - planned) / planned * 100:+.2f}%)" if planned and actual else ""
    lines.append(f"  weight files    planned {human(planned):>10}   published {human(actual):>10}{change}")
    if result.get("checkpointBytes") is not None:
        lines.append(f"  whole folder                         published {human(result['checkpointBytes']):>10} (with tokenizer, card, fidelity picture)")
    worker_pod = (status.get("children") or {}).get("workerPod")
    runs = [c for c in containers if c.get("pod") == worker_pod] or [c for c in containers if "-worker-" in c.get("pod", "")]
    if runs:
        run = runs[-1]
        memory = plan.get("hostMemoryBytes")
        limit = f", limit {human(run['memoryLimitBytes'])}" if run.get("memoryLimitBytes") else ""
        lines.append(f"  worker memory   planned {human(memory):>10}   peak      {human(run['peakMemoryBytes']):>10}{limit}"
                     f" (ran {run['seconds']:.0f}s, exit {run['exitCode']})")
    return "\n".join(lines)
