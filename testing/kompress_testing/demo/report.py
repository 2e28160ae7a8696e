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
    return "\n".join(lines)


def listing_report(published: Published, output_uri: str) -> str:
    lines = [f"{output_uri}/"]
    for key, size in sorted(published.objects.items()):
        lines.append(f"  {human(size):>10}  {key}")
    manifest = published.manifest
    if manifest is None:
        lines.append("  (no manifest: not a finished model)")
    else:
        lines.append(f"manifest kompress.json: {manifest.get('kind')} format {manifest.get('format')}, status {manifest.get('status')}")
        source = manifest.get("source") or {}
        lines.append(f"  source      {source.get('uri')} ({human(source.get('bytes'))}, revision {source.get('resolvedRevision')})")
        recipe = manifest.get("recipe") or {}
        lines.append(f"  recipe      preset {recipe.get('preset')}; modules per group: {manifest.get('groups')}")
        calibration = manifest.get("calibration") or {}
        lines.append(f"  calibration {calibration.get('uri')}, {calibration.get('requestedSamples')} samples of ≤ {calibration.get('maxSequenceLength')} tokens")
        libraries = manifest.get("libraries") or {}
        lines.append("  libraries   " + ", ".join(f"{k} {v}" for k, v in libraries.items() if k in ("llmcompressor", "compressed-tensors", "transformers", "torch")))
        if published.checksum_problems:
            lines.append("  checksums   PROBLEMS:")
            lines += [f"    {p}" for p in published.checksum_problems]
        else:
            lines.append(f"  checksums   {published.files_checked}/{published.files_checked} files in S3 match the manifest's size and SHA-256")
    return "\n".join(lines)


def plan_vs_actual(cjob: dict[str, Any]) -> str:
    status = cjob.get("status") or {}
    plan, result = status.get("plan") or {}, status.get("result") or {}
    planned, actual = plan.get("estimatedCheckpointBytes"), result.get("checkpointBytes")
    if planned is None or actual is None:
        return f"plan vs actual: planned {human(planned)}, published {human(actual)}"
    change = (actual - planned) / planned * 100 if planned else 0.0
    lines = [f"plan vs actual: checkpoint planned {human(planned)}, published {human(actual)} ({change:+.1f}%)"]
    if plan.get("hostMemoryBytes") is not None:
        lines.append(f"  the plan also sized the worker pod: host RAM {human(plan['hostMemoryBytes'])}, scratch {human(plan.get('diskBytes'))}")
    return "\n".join(lines)
