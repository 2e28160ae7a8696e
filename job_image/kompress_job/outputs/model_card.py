"""The model card README.md published with every checkpoint, in the style of compressed models on the Hub.

Owns: turning a manifest (manifest.build_manifest) into Markdown with Hub front matter (base_model,
base_model_relation, the lm-eval scores as model-index): what was done and by which recipe, sizes, evaluation
figures and task scores, how to serve it (or why it can't be served
by vLLM today), and how to reproduce it. A rejected model's card says so first.
Must not: do I/O, or state anything the manifest does not hold.
"""

from __future__ import annotations

from typing import Any

import yaml

from kompress_job.outputs.manifest import read as read_manifest

# Published beside the checkpoint by the evaluate stage (kompress_job.stages.evaluate); linked when present.
PLOT = "fidelity.png"
REPORT = "fidelity.json"
# What each preset is, in one line, and whether vLLM serves it (docs/presets.md has the details).
PRESETS: dict[str, tuple[str, bool]] = {
    "sparse24-w4a16-w8a8": ("SparseGPT 2:4 sparsity, AWQ smoothing, INT4 weights (W4A16) on attention and dense MLP, INT8 W8A8 (static activations) on experts; router, gate_proj and lm_head kept in 16-bit", False),
    "w4a16-w8a8": ("INT4 weights (W4A16, AWQ) on attention and dense MLP, INT8 W8A8 (channel-wise weights, dynamic per-token activations) on experts", True),
    "w4a16": ("INT4 weights (W4A16) everywhere a group size fits; router and lm_head kept in 16-bit", True),
    "fp8-dynamic": ("FP8 weights and dynamic per-token FP8 activations; no calibration data needed", True),
}
TAGS = {
    "sparse24-w4a16-w8a8": ["int4", "int8", "w4a16", "w8a8", "sparse", "2:4"],
    "w4a16-w8a8": ["int4", "int8", "w4a16", "w8a8"],
    "w4a16": ["int4", "w4a16"],
    "fp8-dynamic": ["fp8"],
}


def _gb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{value * 100:+.2f} %"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _share(value: Any) -> str:
    return "–" if value is None else f"{value:.1%}"


def _gate(gate: dict[str, Any]) -> str:
    """spec.evaluation.gate in words: 'perplexity increase at most +5.0 %, top-1 agreement at least 90.0 %'."""
    limits = []
    if gate.get("maxPerplexityIncrease") is not None:
        limits.append(f"perplexity increase at most {gate['maxPerplexityIncrease'] * 100:+.1f} %")
    if gate.get("maxKlDivergence") is not None:
        limits.append(f"KL divergence at most {gate['maxKlDivergence']:.4g} nats")
    if gate.get("minTop1Agreement") is not None:
        limits.append(f"top-1 agreement at least {gate['minTop1Agreement'] * 100:.1f} %")
    if gate.get("maxTaskDrop") is not None:
        limits.append(f"lm-eval task metrics dropping at most {gate['maxTaskDrop']:.4g}")
    return ", ".join(limits) or "no limits set"


def _mtp_line(mtp: dict[str, Any]) -> str:
    """The manifest's MTP record in words: 'MTP kept, 404 tensors, 7.23 GB ...'."""
    n, size = mtp.get("tensors") or 0, _gb(mtp.get("bytes"))
    if mtp.get("handling") == "keep" and n:
        return (f"MTP kept, {n} tensors, {size}: the multi-token-prediction layer(s) as the source stores them (byte-identical, "
                "unquantized, listed in quantization_config.ignore), for vLLM's MTP speculative decoding.")
    if mtp.get("handling") == "keep":
        return "the source declares multi-token-prediction layer(s) but holds none of their tensors, so this checkpoint has none either."
    return f"MTP dropped (spec.recipe.mtp: {mtp.get('handling')}): the source's {n} multi-token-prediction tensors ({size}) are not in this checkpoint; MTP speculative decoding is not available."
def front_matter(hub_id: str | None, preset: str | None, servable: bool | None, title: str, scores: list[dict[str, Any]]) -> str:
    """The card's YAML metadata: the base model and how this one relates to it, and the compressed model's lm-eval
    scores as the Hub's model-index (built with huggingface_hub's own EvalResult), the original's in each metric's name."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    data: dict[str, Any] = {}
    if hub_id:
        # Every preset and a custom recipe's output are quantized checkpoints of the base model.
        data |= {"base_model": hub_id, "base_model_relation": "quantized"}
    data["library_name"] = "transformers"
    data["tags"] = ["kompress", "llm-compressor", "compressed-tensors", *TAGS.get(preset or "", []), *(["vllm"] if servable else [])]
    results = [
        EvalResult(
            task_type="text-generation",
            task_name="Text Generation",
            dataset_type=s["task"],
            dataset_name=s["task"],
            metric_type=s["metric"],
            metric_value=s["compressed"],
            metric_name=f"{s['metric']} (original {s['original']:.4f}, difference {s['difference']:+.4f})" if s.get("difference") is not None else s["metric"],
        )
        for s in scores
        if s.get("compressed") is not None
    ]
    if results:
        data["model-index"] = eval_results_to_model_index(title, results)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def task_table(tasks: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    """The lm-eval scores of both models, in Markdown."""
    scores = tasks.get("scores") or []
    if not scores:
        return []

    def cell(value: Any, stderr: Any = None) -> str:
        return "–" if value is None else f"{value:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "")

    lines = ["", f"lm-evaluation-harness tasks, both models scored by its `{tasks.get('backend', '?')}` backend (± the standard error lm-eval reports):", ""]
    lines += ["| task | metric | original | compressed | difference |", "|---|---|---:|---:|---:|"]
    for s in scores:
        difference = "–" if s.get("difference") is None else f"{s['difference']:+.4f}"
        lines += [f"| {s['task']} | {s['metric']} | {cell(s.get('original'), s.get('originalStderr'))} | {cell(s.get('compressed'), s.get('compressedStderr'))} | {difference} |"]
    if gate.get("maxTaskDrop") is not None:
        lines += ["", f"Largest drop allowed per task metric: {gate['maxTaskDrop']:.4g}."]
    return lines


def _fetch_line(output_uri: str, title: str, revision: str | None) -> tuple[str, str]:
    """How a user gets the checkpoint from where it was published (a Hub repository downloaded, an S3 prefix synced, an OCI
    image's /models taken out of it), and what to give vLLM."""
    if output_uri.startswith("hf://"):
        repo = output_uri[len("hf://") :]
        branch = f" --revision {revision}" if revision and revision != "main" else ""
        return f"hf download {repo}{branch} --local-dir ./{title}", f"./{title}"
    if output_uri.startswith("s3://"):
        return f"aws s3 sync {output_uri} ./{title}", f"./{title}"
    if output_uri.startswith("oci://"):
        image = output_uri[len("oci://"):]
        return (f"mkdir -p ./{title} && crane export {image} - | tar -x -C ./{title} --strip-components=1 models   "
                f"# KServe serves the image itself: storageUri {output_uri}"), f"./{title}"
    return f"# the checkpoint is at {output_uri}", f"./{title}"


def _signature_lines(manifest: dict[str, Any], output_uri: str, revision: str | None) -> list[str]:
    signature = manifest.get("signature")
    if not signature:
        return []
    where = output_uri + (f"@{revision}" if output_uri.startswith("hf://") and revision and revision != "main" else "")
    anchor = "--key public-key.pem" if signature.get("method") == "key" else "--certificate-chain root.pem"
    lines = [
        "",
        "## Signature",
        "",
        f"`{signature['path']}` is an [OpenSSF model signing](https://github.com/sigstore/model-transparency) signature "
        f"({signature.get('library', 'model-signing')}, method `{signature.get('method')}`) over every file here, this card "
        f"and `kompress.json` included. Public key SHA-256: `{signature.get('publicKeySha256')}`.",
    ]
    if signature.get("certificateSubject"):
        lines += ["", f"Signing certificate: `{signature['certificateSubject']}`."]
    lines += ["", "```sh", f"kompress verify {where} {anchor} --require-signature", "```"]
    return lines


def render(manifest: dict[str, Any], *, output_uri: str, branch: str | None = None) -> str:
    """The card; `branch`: the Hub branch of an hf:// output (for its download line)."""
    manifest = read_manifest(manifest)
    source = manifest["source"]
    recipe = manifest["recipe"]
    preset = recipe.get("preset")
    rejected = manifest.get("status") == "rejected"
    hub_id = source["uri"][len("hf://"):] if source["uri"].startswith("hf://") else None
    name = (manifest.get("job") or {}).get("name") or "compressed-model"
    description, servable = PRESETS.get(preset or "", ("a custom llm-compressor recipe (see below)", None))
    effective = recipe.get("effective") or {}
    if effective.get("servable") is not None:
        servable = effective["servable"]  # the resolved recipe knows better than the preset's name

    title = f"{hub_id.split('/')[-1] if hub_id else name}-{preset or 'custom'}"
    tasks = manifest["evaluation"].get("tasks") or {}
    lines: list[str] = ["---", front_matter(hub_id, preset, servable, title, tasks.get("scores") or []).rstrip("\n"), "---", ""]
    lines += [f"# {title}", ""]
    if rejected:
        failures = manifest["evaluation"].get("gateFailures") or []
        lines += [
            "> **REJECTED: this checkpoint missed its quality gate and was not published as a finished model.**",
            "> It is kept here only for inspection." + (" Failed: " + "; ".join(failures) if failures else ""),
            "",
        ]
    base = f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else f"`{source['uri']}`"
    revision = f" at revision `{source['resolvedRevision']}`" if source.get("resolvedRevision") else ""
    lines += [
        f"A compressed version of {base}{revision}, made by [Kompress](https://kompress.dev) with "
        f"[llm-compressor](https://github.com/vllm-project/llm-compressor) and saved in the "
        f"[compressed-tensors](https://github.com/neuralmagic/compressed-tensors) format.",
        "",
        "## What was done",
        "",
        f"- **Recipe:** `{preset}` preset: {description}." if preset else f"- **Recipe:** {description}.",
    ]
    if recipe.get("overrides"):
        lines += [f"- **Overrides:** `{recipe['overrides']}`"]
    cal = manifest["calibration"]
    if cal.get("samples"):
        at = f" at `{cal['resolvedRevision']}`" if cal.get("resolvedRevision") else ""
        lines += [f"- **Calibration:** {cal['samples']} samples of up to {cal['maxSequenceLength']} tokens from `{cal['uri']}`{at} (seed {cal['seed']})."]
    kept = effective.get("kept16bit")
    if kept and kept["ofParameters"]:
        share = 100 * kept["parameters"] / kept["ofParameters"]
        lines += [f"- **Kept in 16-bit:** {kept['modules']} modules ({share:.1f} % of parameters)."]
    mtp = manifest.get("mtp")
    if mtp:
        lines += [f"- **Speculative decoding:** {_mtp_line(mtp)}"]
    detailed = effective.get("groups") or []
    groups = manifest.get("groups")
    if detailed:
        lines += ["", "| config group | scheme | sparsity | modules |", "|---|---|---|---:|"]
        lines += [f"| `{g['name']}` | {g.get('scheme') or '–'} | {g.get('sparsity') or '–'} | {(groups or {}).get(g['name'], '?')} |" for g in detailed]
    elif groups:
        lines += ["", "| config group | modules |", "|---|---:|"]
        lines += [f"| `{g}` | {n} |" for g, n in groups.items()]
    lines += ["", "## Sizes", "", "| | size |", "|---|---:|"]
    lines += [f"| original (as fetched) | {_gb(source.get('bytes'))} |", f"| this checkpoint | {_gb(manifest.get('checkpointBytes'))} |"]
    if source.get("bytes") and manifest.get("checkpointBytes"):
        lines += [f"| ratio | {source['bytes'] / manifest['checkpointBytes']:.2f}× |"]

    metrics = manifest["evaluation"].get("metrics")
    lines += ["", "## Evaluation", ""]
    if metrics and metrics.get("perplexityOriginal") is not None:
        lines += [
            f"On {metrics.get('samples', '?')} held-out samples ({metrics.get('tokens', '?')} tokens) never used for calibration:",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| perplexity, original | {_fmt(metrics.get('perplexityOriginal'))} |",
            f"| perplexity, compressed | {_fmt(metrics.get('perplexityCompressed'))} |",
            f"| perplexity increase | {_fmt(metrics.get('perplexityIncrease'), pct=True)} |",
            f"| KL divergence (nats) | {_fmt(metrics.get('klDivergence'))} |",
            f"| top-1 agreement | {_share(metrics.get('top1Agreement'))} |",
        ]
        gate = manifest["evaluation"].get("gate")
        if gate:
            verdict = "passed" if manifest["evaluation"].get("gatePassed") else "**missed**"
            lines += ["", f"Quality gate ({_gate(gate)}): {verdict}."]
        published = {f["path"] for f in manifest.get("files", [])}
        if PLOT in published:
            lines += [
                "",
                "Where the compressed model drifts from the original, layer by layer (relative error of each block's output on the same tokens):",
                "",
                f"![Relative error per layer of the attention, MLP and layer outputs]({PLOT})",
            ]
        if REPORT in published:
            lines += ["", f"Every figure, per layer, and how each is computed (the KL divergence uses the original's top-k tokens): [`{REPORT}`]({REPORT})."]
    elif not tasks.get("scores"):
        lines += ["Not evaluated (spec.evaluation.enabled was false, or evaluation did not run)."]
    lines += task_table(tasks, manifest["evaluation"].get("gate") or {})

    lines += ["", "## Use", ""]
    if servable is False:
        why = effective.get("serving") or (
            "it removed its 2:4 sparse kernels, and its fused MoE kernels need dynamic per-token INT8 activations on experts"
        )
        lines += [
            f"vLLM cannot serve this checkpoint today ({why.rstrip('.')}). Load it with llm-compressor / "
            "compressed-tensors for research, or use the servable `w4a16-w8a8` preset.",
        ]
    else:
        fetch, served = _fetch_line(output_uri, title, branch)
        lines += [
            "Copy the folder locally, then serve it with [vLLM](https://github.com/vllm-project/vllm):",
            "",
            "```sh",
            fetch,
            f"vllm serve {served}",
            "```",
        ]
        if mtp and mtp.get("handling") == "keep" and mtp.get("tensors"):
            lines += [
                "",
                "With its multi-token-prediction layer as the draft (speculative decoding; vLLM's MTP method):",
                "",
                "```sh",
                f"vllm serve {served} --speculative-config '{{\"method\":\"mtp\",\"num_speculative_tokens\":1}}'",
                "```",
            ]
    lines += _signature_lines(manifest, output_uri, branch)
    lines += [
        "",
        "## Reproduce",
        "",
        "Apply the same `CompressionJob` (kompress.dev/v1alpha1), or run it locally with `kompress run job.yaml`. "
        "`kompress.json` beside this card records the exact source revision, recipe, library versions and the "
        "SHA-256 of every file.",
        "",
        "| library | version |",
        "|---|---|",
    ]
    lines += [f"| {lib} | {ver} |" for lib, ver in manifest.get("libraries", {}).items()]
    lines += ["", "## Files", "", "| file | size | sha256 |", "|---|---:|---|"]
    lines += [f"| `{f['path']}` | {f['size']:,} | `{f['sha256'][:16]}…` |" for f in manifest.get("files", [])]
    return "\n".join(lines) + "\n"
