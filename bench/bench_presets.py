"""What each preset costs on the trained test model (kompress_testing.trained_model: a 1.2 M-parameter
GLM4-MoE trained on chatterbot-corpus English): checkpoint size, perplexity increase, KL divergence, top-1
agreement on held-out conversations, and time; plus the two references that show the algorithms work
(SparseGPT against magnitude pruning of the same layers, AWQ against round-to-nearest at the same groups).

Every run goes through the worker's own stages in this process (calibration, load-model, baseline, compress,
save, verify, evaluate; kompress_testing.compute_runs), 64 calibration and 96 evaluation conversations of
at most 128 tokens, none of them seen in training, one CPU thread.

    python bench/bench_presets.py [--markdown] [--tasks]

Prints `figure: value` lines (ratios against the original and against the references), then, with
--markdown, the README table. --tasks also scores each preset on the local lm-eval task
(kompress_testing.lmeval_task: 48 four-choice items, chance 25 %), original and compressed, and adds its column.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

PRESETS = ["fp8-dynamic", "fp8-block", "nvfp4a16", "mxfp4a16", "nvfp4", "w4a16-w8a8", "w4a16", "sparse24-w4a16-w8a8"]

def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def run(name: str, recipe: dict, root: Path, tasks: list[dict] | None = None) -> dict:
    from kompress_testing import compute_runs

    started = time.monotonic()
    ctx = compute_runs.run_stages(compute_runs.trained_job(recipe, tasks=tasks), root / name)
    wall = time.monotonic() - started
    m = ctx.metrics
    return {
        "name": name,
        "ctx": ctx,
        "bytes": weights_bytes(ctx.checkpoint_dir),
        "ppl_original": m.perplexity_original,
        "ppl": m.perplexity_compressed,
        "increase": m.perplexity_increase,
        "kl": m.kl_divergence,
        "top1": m.top1_agreement,
        "compress_s": ctx.timings["compress"],
        "evaluation_s": ctx.timings["baseline"] + ctx.timings["evaluate"],
        "wall_s": wall,
        "task_acc": next(((t.original, t.compressed) for t in m.tasks or [] if t.metric == "acc"), None),
    }


def magnitude_reference(sparsegpt_ctx) -> dict:
    """Magnitude 2:4 of exactly the layers SparseGPT pruned, compared with the same baseline record."""
    from kompress_job.model import fidelity_comparison, modelio
    from kompress_testing import compute_runs, trained_model

    model = modelio.load_causal_lm(trained_model.folder(), dtype="float32")
    compute_runs.magnitude_24(model, [n for n, a in sparsegpt_ctx.recipe.assignment.items() if a.sparsity == "2:4"])
    c = fidelity_comparison.compare(model, sparsegpt_ctx.baseline)
    return {"name": "magnitude 2:4", "increase": c.perplexity_increase, "kl": c.kl_divergence, "top1": c.top1_agreement, "ppl": c.perplexity_compressed}


def rtn_recipe(awq_ctx) -> str:
    import yaml

    from kompress_testing import compute_runs

    return yaml.safe_dump(compute_runs.round_to_nearest(yaml.safe_load((awq_ctx.checkpoint_dir / "recipe.yaml").read_text())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the README table too")
    parser.add_argument("--tasks", action="store_true", help="score every preset on the local lm-eval task too")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from kompress_testing import compute_runs, trained_model

    provenance = json.loads((trained_model.folder() / trained_model.PROVENANCE).read_text())
    parameters = provenance["model"]["parameters"]
    original_bytes = weights_bytes(trained_model.folder())
    with tempfile.TemporaryDirectory(prefix="kompress-bench-presets-") as tmp:
        root = Path(tmp)
        from kompress_testing import lmeval_task

        tasks = [{"name": lmeval_task.TASK}] if args.tasks else None
        rows = [run(p, {"preset": p}, root, tasks) for p in PRESETS]
        by_name = {r["name"]: r for r in rows}
        sparsegpt = run("sparsegpt-2:4", {"custom": compute_runs.SPARSEGPT_24}, root)
        magnitude = magnitude_reference(sparsegpt["ctx"])
        rtn = run("w4a16-rtn", {"custom": rtn_recipe(by_name["w4a16"]["ctx"])}, root)

    print(f"model: {trained_model.NAME}, {parameters:,} parameters, fp32 {original_bytes / 1e6:.2f} MB")
    print(f"held_out_perplexity_original: {rows[0]['ppl_original']:.3f}")
    for r in rows:
        key = r["name"]
        print(f"{key}_checkpoint_mb: {r['bytes'] / 1e6:.3f}")
        print(f"{key}_smaller_than_original: {original_bytes / r['bytes']:.2f}x")
        print(f"{key}_perplexity_increase: {r['increase']:+.4%}")
        print(f"{key}_kl_divergence: {r['kl']:.5f}")
        print(f"{key}_top1_agreement: {r['top1']:.4f}")
        print(f"{key}_compress_seconds: {r['compress_s']:.1f}")
        print(f"{key}_evaluation_seconds: {r['evaluation_s']:.1f}")
        print(f"{key}_evaluation_over_compress: {r['evaluation_s'] / r['compress_s']:.2f}")
        if r["task_acc"]:
            print(f"{key}_task_acc_original: {r['task_acc'][0]:.4f}")
            print(f"{key}_task_acc: {r['task_acc'][1]:.4f}")
            print(f"{key}_task_acc_over_original: {r['task_acc'][1] / r['task_acc'][0]:.3f}")
    print(f"sparsegpt_24_perplexity_increase: {sparsegpt['increase']:+.4%}")
    print(f"magnitude_24_perplexity_increase: {magnitude['increase']:+.4%}")
    print(f"sparsegpt_over_magnitude_increase: {sparsegpt['increase'] / magnitude['increase']:.2f}")
    print(f"sparsegpt_over_magnitude_kl: {sparsegpt['kl'] / magnitude['kl']:.2f}")
    print(f"awq_w4_perplexity_increase: {by_name['w4a16']['increase']:+.4%}")
    print(f"rtn_w4_perplexity_increase: {rtn['increase']:+.4%}")
    print(f"awq_over_rtn_increase: {by_name['w4a16']['increase'] / rtn['increase']:.2f}")
    print(f"awq_over_rtn_kl: {by_name['w4a16']['kl'] / rtn['kl']:.2f}")

    if args.markdown:
        print()
        task = args.tasks and rows[0]["task_acc"] is not None
        print("| preset | weights | smaller | perplexity | increase | KL (nats) | top-1 agreement |" + (" task acc |" if task else "") + " compress | evaluate |")
        print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if task else "") + "---:|---:|")
        print(f"| original (fp32) | {original_bytes / 1e6:.2f} MB | | {rows[0]['ppl_original']:.2f} | | | |" + (f" {rows[0]['task_acc'][0]:.1%} |" if task else "") + " | |")
        for r in rows:
            print(
                f"| `{r['name']}` | {r['bytes'] / 1e6:.2f} MB | {original_bytes / r['bytes']:.2f}x | {r['ppl']:.2f} | {r['increase']:+.1%} | "
                f"{r['kl']:.4f} | {r['top1']:.1%} |" + (f" {r['task_acc'][1]:.1%} |" if task else "") + f" {r['compress_s']:.1f} s | {r['evaluation_s']:.1f} s |"
            )
        print()
        print("| reference (same layers, same held-out rows) | perplexity increase | KL (nats) | top-1 agreement |")
        print("|---|---:|---:|---:|")
        for name, r in (("SparseGPT 2:4", sparsegpt), ("magnitude 2:4", magnitude), ("AWQ + W4 (`w4a16`)", by_name["w4a16"]), ("round-to-nearest W4", rtn)):
            print(f"| {name} | {r['increase']:+.1%} | {r['kl']:.4f} | {r['top1']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
