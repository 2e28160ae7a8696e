"""A plan as a terminal reads it: the groups as a table, then memory, disk, time, and problems with fixes.

Must not: compute anything the plan does not already hold.
"""

from __future__ import annotations

from typing import Any

from kompress_job.planning.footprint import HEADROOM


def _gb(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 10**9:
        return f"{n / 1e9:.1f} GB"
    if n >= 10**6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 10**8 else f"{n / 1e6:.2f} M"


def _scheme(g: Any) -> str:
    s = g.scheme
    if s is None:
        text = "16-bit (untouched)" if g.sparsity is None else "16-bit"
    else:
        w, a = s.weights, s.activations
        weights = f"{w.type}{w.bits} {w.strategy}{f' {w.group_size}' if w.group_size else ''}{'' if w.symmetric else ' asym'}"
        acts = "16-bit" if a is None else f"{a.type}{a.bits} {a.strategy} {'dynamic' if a.dynamic else 'static'}"
        text = f"W {weights}, A {acts}"
    return text + (f", {g.sparsity} sparse" if g.sparsity else "")


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds} s"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def render(plan: Any) -> str:
    """The plan as text (kompress plan without --json; the planning pod's log)."""
    out = [
        f"Plan for {plan.job or 'job'}: {plan.model_uri} ({plan.architecture}, {plan.dtype}), {plan.recipe}",
        f"{_params(plan.total_parameters)} parameters as loaded, {_gb(plan.bf16_bytes)} in bf16"
        + (f" with the {_params(plan.mtp.parameters)} of the MTP layer(s) the checkpoint keeps" if plan.mtp is not None and plan.mtp.checkpoint_tensors else ""),
        "",
    ]
    if plan.groups:
        rows = [["group", "scheme", "format", "modules", "parameters", "checkpoint"]]
        for g in plan.groups:
            rows.append([g.name, _scheme(g), g.format, f"{g.modules:,}", _params(g.parameters), _gb(g.estimated_bytes)])
        rows.append(["other", "embeddings, norms, buffers", "dense", "", _params(plan.other_parameters), _gb(plan.other_bytes)])
        if plan.mtp is not None and plan.mtp.checkpoint_tensors:
            rows.append(["mtp", f"{plan.mtp.layers.count} MTP layer(s), as the source stores them", "dense", "", _params(plan.mtp.parameters), _gb(plan.mtp.bytes)])
        if plan.file_overhead_bytes:
            rows.append(["files", f"{plan.checkpoint_shards} shard(s), {plan.checkpoint_tensors:,} tensors: headers, index", "", "", "", _gb(plan.file_overhead_bytes)])
        rows.append(["total", "", "", "", "", _gb(plan.estimated_checkpoint_bytes)])
        out += _table(rows, right={3, 4, 5})
        out.append(f"checkpoint ≈ {_gb(plan.estimated_checkpoint_bytes)}: {plan.compression_ratio}x smaller than bf16; {_params(plan.kept_parameters)} parameters kept 16-bit")
    if plan.mtp is not None:
        m = plan.mtp
        if m.checkpoint_tensors:
            fate = f"kept: {len(m.checkpoint_tensors):,} tensors, {_gb(m.bytes)}, copied unchanged into a shard of their own (counted above)"
        elif m.handling == "keep" and m.in_source is None:
            fate = "kept if the source holds them (no index seen: not counted)"
        elif m.handling == "keep":
            fate = "none in the source" if m.layers.known else "layout unknown: not carried"
        else:
            fate = m.handling
        out.append(f"multi-token prediction: {m.layers.count} layer(s) {m.layers.where()}, not loaded for compression; {fate}")
    f = plan.footprint
    out += [
        "",
        f"path          {plan.recipe_path or '?'}" + ("  (safetensors file by file, the model never loaded to compress)" if plan.recipe_path == "data-free" else "  (the whole model in host memory, llm-compressor's oneshot)"),
        f"host RAM      {_gb(f.host_memory_bytes)}  (peak of: " + ", ".join(f"{k} {_gb(v)}" for k, v in f.host_phases.items()) + f"; +{round(100 * (HEADROOM - 1))} % headroom)",
        f"GPU memory    {_gb(f.gpu_memory_bytes)} per device on {plan.devices} device(s)"
        + (f"  (layer {_gb(f.gpu_parts['layer_weights'])}, Hessians {_gb(f.gpu_parts['hessians'])})" if plan.devices else ""),
        f"scratch disk  {_gb(f.disk_bytes)}  (" + ", ".join(f"{k} {_gb(v)}" for k, v in f.disk_parts.items() if v) + ")",
    ]
    if getattr(plan, "cache", None) is not None:
        out.append(f"model cache   {plan.cache.line()}")
    ev = f.evaluation
    if ev.get("enabled"):
        out.append(f"evaluation    adds {_duration(ev['seconds'])}, up to {_gb(ev['gpu_bytes'])} of free GPU memory for batched logits, and a "
                   f"{_gb(ev['disk_bytes'])} record on scratch, over {ev['tokens']:,} held-out tokens; no host RAM beyond verify's")
    if f.shm_needed_bytes:
        out.append(f"/dev/shm      {_gb(f.shm_needed_bytes)} to keep the model in memory across the ranks")
    verdict = "servable" if plan.servable else "NOT servable" if plan.servable is False else "unknown"
    serving = plan.serving or ""
    out.append(f"vLLM          {serving if serving.startswith('not servable') else verdict + (': ' + serving if serving else '')}")
    if plan.serving_verdict:
        out.append(f"serving       {plan.serving_verdict} ({plan.serving_target.basis})")
    out += ["", "time (estimates; basis in --json)"]
    for t in f.times:
        out.append(f"  {t.stage:<18} {_duration(t.seconds)}")
    if plan.problems:
        out += ["", f"problems: {len(plan.errors)} error(s), {len(plan.warnings)} warning(s)"]
        for p in plan.problems:
            out.append(f"  {p.severity.upper():<7} {p.code}: {p.message}")
            if p.fix:
                out.append(f"          fix: {p.fix}")
    return "\n".join(out) + "\n"
