"""The data-free path against the loaded path, for fp8-dynamic on a GLM4-MoE of a few GB made here (random bf16
weights, GLM-4.5-Air's layout, saved in 500 MB safetensors files; no hub).

Each side is the worker's own stages (load-model, compress, save) in a child process of its own, with
spec.recipe.path data-free or loaded: wall time and peak RSS (wait4). "runtime base" is a child that only
imports what the worker imports (torch, transformers, llm-compressor) and builds the model's meta structure.
Goals (issue #17): data-free peak RSS <= 2 x the largest shard + the runtime base; wall <= 0.5 x loaded. A third
child runs the data-free path with evaluation (baseline, verify and evaluate, both models disk-offloaded): its peak
RSS against the same bound.

    python bench/bench_data_free.py [--layers N] [--experts N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from child_process import measure

HERE = Path(__file__).resolve().parent
PRESET = "fp8-dynamic"
EVALUATION = "+evaluation"
EVALUATION_ROWS, EVALUATION_LENGTH = 4, 128  # held-out rows for the baseline and evaluate stages


def build(folder: Path, layers: int, experts: int) -> Path:
    """A GLM4-MoE with random bf16 weights, saved in 500 MB files (fused sets split wherever a file ends)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from kompress_testing import models

    config = AutoConfig.for_model(
        "glm4_moe",
        hidden_size=1024,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=128,
        num_hidden_layers=layers,
        first_k_dense_replace=1,
        intermediate_size=2816,
        moe_intermediate_size=512,
        n_routed_experts=experts,
        n_shared_experts=1,
        num_experts_per_tok=4,
        n_group=1,
        topk_group=1,
        vocab_size=32000,
        attention_bias=True,
        tie_word_embeddings=False,
    )
    config.dtype = "bfloat16"
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="500MB")
    models.build_tokenizer().save_pretrained(folder)
    del model
    return folder


def child(model_dir: str, path: str, workdir: str) -> None:
    """The worker's load-model, compress and save stages, as the pipeline runs them; path `data-free+evaluation`:
    also baseline, verify and evaluate (the original and the reload disk-offloaded) on a few held-out rows."""
    import logging

    from kompress_api.v1alpha1 import CompressionJob

    from kompress_job import pipeline
    from kompress_job.context import RunContext
    from kompress_job.progress import ProgressReporter

    job = CompressionJob.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "model": {"uri": f"file://{model_dir}", "dtype": "bfloat16"},
                "recipe": {"preset": PRESET, "path": path.removesuffix(EVALUATION)},
                "output": {"uri": f"file://{workdir}/published"},
                "resources": {"gpus": 0},
                "evaluation": {"enabled": path.endswith(EVALUATION)},
            },
        }
    )
    stages = ["load-model", "baseline", "compress", "save", "verify", "evaluate"] if path.endswith(EVALUATION) else ["load-model", "compress", "save"]
    ctx = RunContext(job=job, workdir=Path(workdir), progress=ProgressReporter(stages), env={}, log=logging.getLogger("bench"))
    ctx.model_dir = Path(model_dir)
    if path.endswith(EVALUATION):
        from kompress_job.model import modelio
        from kompress_testing import models

        ctx.tokenizer = modelio.load_tokenizer(model_dir)
        ctx.holdout = models.calibration_dataset(ctx.tokenizer, EVALUATION_ROWS, EVALUATION_LENGTH, offset=200)
    for name in stages:
        with ctx.progress.stage(name):
            pipeline.stage_function(name)(ctx)
    print(json.dumps({"path": ctx.recipe_path, "checkpoint_bytes": sum(p.stat().st_size for p in ctx.checkpoint_dir.glob("*.safetensors"))}))


def base(model_dir: str) -> None:
    import llmcompressor  # noqa: F401

    from kompress_job.model import modelio

    modelio.load_tokenizer(model_dir)
    modelio.meta_model(model_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=14)
    parser.add_argument("--experts", type=int, default=48)
    parser.add_argument("--keep", help="keep (and reuse) the model in this folder")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "PATH", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--base", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--build", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(Path(args.build), args.layers, args.experts)
        return 0
    if args.child:
        child(*args.child)
        return 0
    if args.base:
        base(args.base)
        return 0

    root = Path(tempfile.mkdtemp(prefix="kompress-bench-df-"))
    model_dir = Path(args.keep) if args.keep else root / "model"
    me = [sys.executable, str(Path(__file__).resolve())]
    if not (model_dir / "config.json").exists():
        # in a child: a parent that held the model would lend its resident pages to every child it forks, whose
        # peak RSS (wait4) would then count them
        measure(me + ["--build", str(model_dir), "--layers", str(args.layers), "--experts", str(args.experts)])
    shards = sorted(model_dir.glob("*.safetensors"))
    total, largest = sum(p.stat().st_size for p in shards), max(p.stat().st_size for p in shards)
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    try:
        _, base_mb, _ = measure(me + ["--base", str(model_dir)], env)
        results = {}
        for path in ("data-free", "loaded", "data-free" + EVALUATION):
            work = root / path
            wall, rss, out = measure(me + ["--child", str(model_dir), path, str(work)], env)
            results[path] = (wall, rss, json.loads(out.strip().splitlines()[-1]))
            shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (df_wall, df_rss, df_out), (ld_wall, ld_rss, ld_out) = results["data-free"], results["loaded"]
    ev_wall, ev_rss, ev_out = results["data-free" + EVALUATION]
    assert df_out["path"] == ev_out["path"] == "data-free" and ld_out["path"] == "loaded"
    mb = 1024**2
    print(f"model: {total / 1e9:.2f} GB in {len(shards)} safetensors files, largest {largest / 1e9:.2f} GB")
    print(f"runtime base RSS: {base_mb:.0f} MB")
    print(f"data-free wall: {df_wall:.1f} s")
    print(f"loaded wall: {ld_wall:.1f} s")
    print(f"wall ratio data-free / loaded: {df_wall / ld_wall:.2f}x (goal <= 0.5x)")
    print(f"data-free peak RSS: {df_rss:.0f} MB")
    print(f"loaded peak RSS: {ld_rss:.0f} MB")
    print(f"peak RSS ratio data-free / loaded: {df_rss / ld_rss:.2f}x")
    print(f"data-free (peak RSS - base) / largest shard: {(df_rss - base_mb) * mb / largest:.2f}x (goal <= 2x)")
    print(f"loaded (peak RSS - base) / largest shard: {(ld_rss - base_mb) * mb / largest:.2f}x")
    print(f"checkpoint bytes data-free vs loaded: {df_out['checkpoint_bytes']} vs {ld_out['checkpoint_bytes']}")
    print(f"data-free with evaluation (baseline, verify, evaluate disk-offloaded; {EVALUATION_ROWS} x {EVALUATION_LENGTH} tokens) wall: {ev_wall:.1f} s")
    print(f"data-free with evaluation peak RSS: {ev_rss:.0f} MB ({ev_rss * mb / total:.2f}x the model's {total / mb:.0f} MB)")
    print(f"data-free with evaluation (peak RSS - base) / largest shard: {(ev_rss - base_mb) * mb / largest:.2f}x (goal <= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
