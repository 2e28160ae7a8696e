"""What keeping a multi-token-prediction layer costs the save and verify stages: kompress_job.model.mtp.carry against
the least the job could do with the same bytes.

    .venv/bin/python bench/bench_mtp_carry.py [--size-mib 512] [--tensors 64] [--rounds 2]

A source checkpoint whose MTP layer (`model.layers.2.*`, bf16) is one shard of `--size-mib`, and a compressed
checkpoint without it. Ours: carry.apply (the tensors copied byte for byte into a new shard, shards renumbered,
index and quantization_config.ignore written), then carry.check (every tensor's bytes hashed on both sides).
Baseline: shutil.copyfile of the shard (in the kernel), then SHA-256 of both files (the same bytes moved and
read). Best of `--rounds`. Prints `figure: value` lines with the ratios, and what GLM-4.5-Air's 7.23 GB layer adds
to its save and verify stages at these rates (the figure that matters beside hours of compression). Files are
deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from kompress_job.model.mtp import carry, layers

MiB = 1 << 20
CONFIG = {"model_type": "glm4_moe", "num_hidden_layers": 2, "num_nextn_predict_layers": 1}


def build(root: Path, size_mib: int, tensors: int) -> tuple[Path, Path]:
    source, compressed = root / "source", root / "compressed"
    source.mkdir()
    compressed.mkdir()
    per = size_mib * MiB // tensors // 2  # bf16 values per tensor
    generator = torch.Generator().manual_seed(0)
    mtp = {f"model.layers.2.mlp.experts.{i}.up_proj.weight": torch.randn(per, generator=generator).to(torch.bfloat16).reshape(-1, 64) for i in range(tensors)}
    save_file({"model.norm.weight": torch.ones(64)}, str(source / "model-00001-of-00002.safetensors"))
    save_file(mtp, str(source / "model-00002-of-00002.safetensors"))
    weight_map = {"model.norm.weight": "model-00001-of-00002.safetensors", **{n: "model-00002-of-00002.safetensors" for n in mtp}}
    (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (source / "config.json").write_text(json.dumps(CONFIG))
    save_file({"model.norm.weight": torch.ones(64)}, str(compressed / "model.safetensors"))
    (compressed / "config.json").write_text(json.dumps({**CONFIG, "quantization_config": {"ignore": ["lm_head"]}}))
    return source, compressed


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(64 * MiB):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    declared = layers.declared(CONFIG)
    best = {"carry": float("inf"), "check": float("inf"), "copy": float("inf"), "hash": float("inf")}
    with tempfile.TemporaryDirectory(prefix="kompress-bench-mtp-") as tmp:
        source, compressed = build(Path(tmp), args.size_mib, args.tensors)
        shard = source / "model-00002-of-00002.safetensors"
        size = shard.stat().st_size
        for r in range(args.rounds):
            out = Path(tmp) / f"out-{r}"
            shutil.copytree(compressed, out)
            started = time.perf_counter()
            carry.apply(source, out, declared, "keep")
            best["carry"] = min(best["carry"], time.perf_counter() - started)
            started = time.perf_counter()
            assert carry.check(source, out, declared, "keep") == []
            best["check"] = min(best["check"], time.perf_counter() - started)
            copy = Path(tmp) / f"copy-{r}.safetensors"
            started = time.perf_counter()
            shutil.copyfile(shard, copy)
            best["copy"] = min(best["copy"], time.perf_counter() - started)
            started = time.perf_counter()
            sha256(shard), sha256(copy)
            best["hash"] = min(best["hash"], time.perf_counter() - started)
            shutil.rmtree(out)
            copy.unlink()
    print(f"mtp_shard: {size / MiB:.0f} MiB, {args.tensors} tensors")
    print(f"carry_MBps: {size / best['carry'] / 1e6:.0f} (copyfile {size / best['copy'] / 1e6:.0f}): ratio {best['carry'] / best['copy']:.2f}")
    print(f"check_MBps: {size / best['check'] / 1e6:.0f} (sha256 of both files {size / best['hash'] / 1e6:.0f}): ratio {best['check'] / best['hash']:.2f}")
    glm = 7.233e9
    print(f"glm_4_5_air_seconds: save +{glm / (size / best['carry']):.0f} s, verify +{glm / (size / best['check']):.0f} s")


if __name__ == "__main__":
    main()
