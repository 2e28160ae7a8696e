"""The model card README.md published with every checkpoint, in the style of compressed models on the Hub.

Owns: turning a manifest (manifest.build_manifest) into Markdown with Hub front matter (base_model,
base_model_relation, the lm-eval scores as model-index): what was done and by which recipe, sizes, evaluation
figures and task scores, how to serve it (or why it can't be served
by vLLM today), and how to reproduce it. A rejected model's card says so first.
What a preset is (its line, Hub tags, whether vLLM serves it) comes from its PresetRule (kompress_job.recipe.presets).
Must not: do I/O, or state anything the manifest and the preset's rule do not hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from kompress_job.outputs.manifest import read as read_manifest
from kompress_job.recipe.presets import rule_named

# Published beside the checkpoint by the evaluate stage (kompress_job.stages.evaluate); linked when present.
PLOT = "fidelity.png"
REPORT = "fidelity.json"


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
    data["tags"] = ["kompress", "llm-compressor", "compressed-tensors", *(rule.tags if (rule := rule_named(preset)) else ()), *(["vllm"] if servable else [])]
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


@dataclass(frozen=True)
class _Card:
    """What the card's sections share, read once from the manifest (and the preset's rule)."""

    preset: str | None
    description: str
    servable: bool | None
    serving: str | None  # what serves it, or why nothing does: the resolved recipe's line, else its preset's
    hub_id: str | None  # the source's Hub repository, when it came from the Hub
    title: str
    effective: dict[str, Any]  # the resolved recipe's summary
    tasks: dict[str, Any]  # the lm-eval scores
    mtp: dict[str, Any] | None


def _card(manifest: dict[str, Any]) -> _Card:
    source, recipe = manifest["source"], manifest["recipe"]
    preset = recipe.get("preset")
    hub_id = source["uri"][len("hf://"):] if source["uri"].startswith("hf://") else None
    name = (manifest.get("job") or {}).get("name") or "compressed-model"
    rule = rule_named(preset)
    description, servable = (rule.description, rule.servable) if rule else ("a custom llm-compressor recipe (see below)", None)
    effective = recipe.get("effective") or {}
    if effective.get("servable") is not None:
        servable = effective["servable"]  # the resolved recipe knows better than the preset's name
    serving = effective.get("serving") or (rule.serving if rule and not rule.servable else None)
    title = f"{hub_id.split('/')[-1] if hub_id else name}-{preset or 'custom'}"
    return _Card(preset, description, servable, serving, hub_id, title, effective, manifest["evaluation"].get("tasks") or {}, manifest.get("mtp"))


def render(manifest: dict[str, Any], *, output_uri: str, branch: str | None = None) -> str:
    """The card; `branch`: the Hub branch of an hf:// output (for its download line)."""
    manifest = read_manifest(manifest)
    card = _card(manifest)
    lines = _heading(manifest, card) + _what_was_done(manifest, card) + _sizes(manifest) + _evaluation(manifest, card.tasks)
    lines += _use(card, output_uri, branch) + _signature_lines(manifest, output_uri, branch) + _reproduce(manifest) + _files(manifest)
    return "\n".join(lines) + "\n"


def _heading(manifest: dict[str, Any], card: _Card) -> list[str]:
    """Front matter, title, the rejection notice of a rejected model, and what this is a compressed version of."""
    source = manifest["source"]
    lines = ["---", front_matter(card.hub_id, card.preset, card.servable, card.title, card.tasks.get("scores") or []).rstrip("\n"), "---", ""]
    lines += [f"# {card.title}", ""]
    if manifest.get("status") == "rejected":
        failures = manifest["evaluation"].get("gateFailures") or []
        lines += [
            "> **REJECTED: this checkpoint missed its quality gate and was not published as a finished model.**",
            "> It is kept here only for inspection." + (" Failed: " + "; ".join(failures) if failures else ""),
            "",
        ]
    base = f"[{card.hub_id}](https://huggingface.co/{card.hub_id})" if card.hub_id else f"`{source['uri']}`"
    revision = f" at revision `{source['resolvedRevision']}`" if source.get("resolvedRevision") else ""
    return lines + [
        f"A compressed version of {base}{revision}, made by [Kompress](https://kompress.dev) with "
        f"[llm-compressor](https://github.com/vllm-project/llm-compressor) and saved in the "
        f"[compressed-tensors](https://github.com/neuralmagic/compressed-tensors) format.",
    ]


def _what_was_done(manifest: dict[str, Any], card: _Card) -> list[str]:
    """The recipe, overrides, calibration data, what stayed 16-bit, the MTP layers, and the config groups."""
    recipe, effective = manifest["recipe"], card.effective
    lines = ["", "## What was done", ""]
    lines += [f"- **Recipe:** `{card.preset}` preset: {card.description}." if card.preset else f"- **Recipe:** {card.description}."]
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
    if card.mtp:
        lines += [f"- **Speculative decoding:** {_mtp_line(card.mtp)}"]
    return lines + _group_table(effective, manifest.get("groups"))


def _group_table(effective: dict[str, Any], groups: dict[str, int] | None) -> list[str]:
    """The config groups: with scheme and sparsity when the resolved recipe describes them, else only their sizes."""
    detailed = effective.get("groups") or []
    if detailed:
        lines = ["", "| config group | scheme | sparsity | modules |", "|---|---|---|---:|"]
        return lines + [f"| `{g['name']}` | {g.get('scheme') or '–'} | {g.get('sparsity') or '–'} | {(groups or {}).get(g['name'], '?')} |" for g in detailed]
    if groups:
        return ["", "| config group | modules |", "|---|---:|"] + [f"| `{g}` | {n} |" for g, n in groups.items()]
    return []


def _sizes(manifest: dict[str, Any]) -> list[str]:
    source = manifest["source"]
    lines = ["", "## Sizes", "", "| | size |", "|---|---:|"]
    lines += [f"| original (as fetched) | {_gb(source.get('bytes'))} |", f"| this checkpoint | {_gb(manifest.get('checkpointBytes'))} |"]
    if source.get("bytes") and manifest.get("checkpointBytes"):
        lines += [f"| ratio | {source['bytes'] / manifest['checkpointBytes']:.2f}× |"]
    return lines


def _evaluation(manifest: dict[str, Any], tasks: dict[str, Any]) -> list[str]:
    """The fidelity figures and the gate's verdict (with the plot and report when published), then the lm-eval scores."""
    evaluation = manifest["evaluation"]
    metrics = evaluation.get("metrics")
    lines = ["", "## Evaluation", ""]
    if metrics and metrics.get("perplexityOriginal") is not None:
        lines += _fidelity_table(metrics)
        gate = evaluation.get("gate")
        if gate:
            verdict = "passed" if evaluation.get("gatePassed") else "**missed**"
            lines += ["", f"Quality gate ({_gate(gate)}): {verdict}."]
        lines += _fidelity_files({f["path"] for f in manifest.get("files", [])})
    elif not tasks.get("scores"):
        lines += ["Not evaluated (spec.evaluation.enabled was false, or evaluation did not run)."]
    return lines + task_table(tasks, evaluation.get("gate") or {})


def _fidelity_table(metrics: dict[str, Any]) -> list[str]:
    return [
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


def _fidelity_files(published: set[str]) -> list[str]:
    """The per-layer plot and the full report, linked when the evaluate stage published them."""
    lines = []
    if PLOT in published:
        lines += [
            "",
            "Where the compressed model drifts from the original, layer by layer (relative error of each block's output on the same tokens):",
            "",
            f"![Relative error per layer of the attention, MLP and layer outputs]({PLOT})",
        ]
    if REPORT in published:
        lines += ["", f"Every figure, per layer, and how each is computed (the KL divergence uses the original's top-k tokens): [`{REPORT}`]({REPORT})."]
    return lines


def _use(card: _Card, output_uri: str, branch: str | None) -> list[str]:
    """How to fetch and serve it with vLLM (and with its MTP layer as the draft), or why vLLM cannot."""
    lines = ["", "## Use", ""]
    if card.servable is False:
        why = card.serving or "its schemes have no vLLM kernel"
        return lines + [
            f"vLLM cannot serve this checkpoint today ({why.rstrip('.')}). Load it with llm-compressor / "
            "compressed-tensors for research, or use the servable `w4a16-w8a8` preset.",
        ]
    fetch, served = _fetch_line(output_uri, card.title, branch)
    lines += [
        "Copy the folder locally, then serve it with [vLLM](https://github.com/vllm-project/vllm):",
        "",
        "```sh",
        fetch,
        f"vllm serve {served}",
        "```",
    ]
    if card.mtp and card.mtp.get("handling") == "keep" and card.mtp.get("tensors"):
        lines += [
            "",
            "With its multi-token-prediction layer as the draft (speculative decoding; vLLM's MTP method):",
            "",
            "```sh",
            f"vllm serve {served} --speculative-config '{{\"method\":\"mtp\",\"num_speculative_tokens\":1}}'",
            "```",
        ]
    return lines


def _reproduce(manifest: dict[str, Any]) -> list[str]:
    """How to make it again, and the library versions that made it."""
    lines = [
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
    return lines + [f"| {lib} | {ver} |" for lib, ver in manifest.get("libraries", {}).items()]


def _files(manifest: dict[str, Any]) -> list[str]:
    lines = ["", "## Files", "", "| file | size | sha256 |", "|---|---:|---|"]
    return lines + [f"| `{f['path']}` | {f['size']:,} | `{f['sha256'][:16]}…` |" for f in manifest.get("files", [])]
