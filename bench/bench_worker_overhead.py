"""What Kompress costs on top of llm-compressor: the founding recipe on the same tiny GLM4-MoE, with the same
calibration rows and the same recipe, through `kompress run` and through a bare llm-compressor script of
the tutorial's shape (bench/bare_llmcompressor.py). Goal: both ratios <= 1.05.

Each side runs as its own process, alternating, RUNS times; the figures are medians of wall time and of
peak RSS (the process's max resident set, from wait4). `kompress run` also verifies the checkpoint (a
reload, a forward pass, a short generation) and publishes it to a local folder; evaluation is off, as the
bare script evaluates nothing.

    python bench/bench_worker_overhead.py [--runs N] [--samples N] [--length N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path

from child_process import measure

HERE = Path(__file__).resolve().parent
PRESET = "sparse24-w4a16-w8a8"


def prepare(root: Path, samples: int, length: int) -> dict[str, Path]:
    from kompress_api.v1alpha1 import Recipe

    from kompress_job.recipe import resolve
    from kompress_testing import models

    model_dir = models.write_model("glm4-moe", root / "model")
    tokenizer = models.build_tokenizer()
    data = root / "calibration.jsonl"
    with data.open("w") as handle:
        for index, turns in enumerate(models.corpus_conversations()):
            if index == samples:
                break
            messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
            handle.write(json.dumps({"text": tokenizer.apply_chat_template(messages, tokenize=False)}) + "\n")
    meta = models.meta_model("glm4-moe")
    recipe = root / "recipe.yaml"
    recipe.write_text(resolve(Recipe(preset=PRESET), meta).recipe_yaml())
    job = root / "job.yaml"
    job.write_text(
        json.dumps(
            {
                "apiVersion": "kompress.dev/v1alpha1",
                "kind": "CompressionJob",
                "metadata": {"name": "bench"},
                "spec": {
                    "model": {"uri": f"file://{model_dir}", "dtype": "float32"},
                    "calibration": {"uri": f"file://{data}", "format": "text", "samples": samples, "maxSequenceLength": length},
                    "recipe": {"preset": PRESET},
                    "output": {"uri": f"file://{root / 'published'}", "overwrite": True},
                    "resources": {"gpus": 0},
                    "evaluation": {"enabled": False},
                },
            }
        )
    )
    return {"model": model_dir, "data": data, "recipe": recipe, "job": job}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both sides (1: stable figures on a shared machine)")
    args = parser.parse_args(argv)
    has_runner = importlib.util.find_spec("kompress_job.runner") is not None

    with tempfile.TemporaryDirectory(prefix="kompress-bench-") as tmp:
        root = Path(tmp)
        files = prepare(root, args.samples, args.length)
        env = {"OMP_NUM_THREADS": str(args.threads)}
        bare: list[tuple[float, float]] = []
        kompress: list[tuple[float, float]] = []
        for run in range(args.runs):
            out = root / f"bare-{run}"
            bare.append(measure([sys.executable, str(HERE / "bare_llmcompressor.py"), str(files["model"]), str(files["data"]), str(files["recipe"]), str(out), str(args.length)], env)[:2])
            if has_runner:
                work = root / f"work-{run}"
                kompress.append(measure([sys.executable, "-m", "kompress_job.cli", "run", str(files["job"]), "--workdir", str(work), "--log-format", "json"], env)[:2])

    bare_wall, bare_rss = statistics.median(w for w, _ in bare), statistics.median(r for _, r in bare)
    print(f"runs: {args.runs}")
    print(f"calibration: {args.samples}x{args.length} tokens")
    print(f"threads: {args.threads}")
    print(f"bare_wall_s: {bare_wall:.2f}")
    print(f"bare_peak_rss_mb: {bare_rss:.0f}")
    if not kompress:
        print("kompress_run: unavailable (kompress_job.runner is not in this tree yet); only the baseline was measured")
        return 0
    k_wall, k_rss = statistics.median(w for w, _ in kompress), statistics.median(r for _, r in kompress)
    print(f"kompress_wall_s: {k_wall:.2f}")
    print(f"kompress_peak_rss_mb: {k_rss:.0f}")
    print(f"wall_ratio: {k_wall / bare_wall:.3f}")
    print(f"rss_ratio: {k_rss / bare_rss:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
