"""How long planning GLM-4.5-Air takes from its config.json, per preset, against the goal of 5 s on this CPU, and
proof that it touches no weights.

    warm   make_plan in a process that has imported torch and transformers already (what the planning pod
           spends after start-up, and the worker's plan stage): median of RUNS
    cold   `kompress plan JOB --model-config config.json --json` as a new process: Python start, imports, plan
    pod    `kompress plan-pod` as a new process against a local Hub stand-in whose repository holds config.json
           and a weight file, with the job's token: what the planning pod does

No weights: (1) the Hub stand-in records every file served: only config.json; (2) every parameter of the model
the plan is made on is on the meta device (no storage); (3) the planning process's peak RSS is a few hundred MB
for a model of 214 GB in bf16.

    python bench/bench_plan.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from child_process import measure

GOAL_SECONDS = 5.0
PRESETS = ["sparse24-w4a16-w8a8", "w4a16-w8a8", "w4a16", "fp8-dynamic"]
TOKEN = "hf_bench_plan_token"


def job_doc(preset: str, model: dict | None = None) -> dict:
    return {
        "apiVersion": "kompress.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "glm-plan", "namespace": "bench", "uid": "0"},
        "spec": {"model": model or {"uri": "hf://zai-org/GLM-4.5-Air"}, "recipe": {"preset": preset}, "output": {"uri": "s3://bench/glm"}},
    }


def ratio(seconds: float) -> str:
    return f"{seconds / GOAL_SECONDS:.2f}x the {GOAL_SECONDS:.0f} s goal"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    from kompress_api.v1alpha1 import CompressionJob

    from kompress_job.planning.plan import make_plan, read_config
    from kompress_job.planning.model import meta_model
    from kompress_testing.models import config_dir

    config_path = config_dir("glm-4.5-air") / "config.json"
    config = read_config(config_path)
    print(f"cpu_count: {os.cpu_count()}")
    print(f"load_average_1min: {os.getloadavg()[0]:.2f}")

    # Warm: imports done, as in a running planning pod or the worker's plan stage.
    started = time.monotonic()
    model = meta_model(config, "bfloat16")
    print(f"first_model_build_seconds (imports transformers' model code): {time.monotonic() - started:.2f}")
    on_meta = sum(p.numel() for p in model.parameters() if p.device.type == "meta")
    print(f"parameters_on_meta_device: {on_meta} of {sum(p.numel() for p in model.parameters())}")
    for preset in PRESETS:
        job = CompressionJob.model_validate(job_doc(preset))
        times = []
        for _ in range(args.runs):
            started = time.monotonic()
            plan = make_plan(job, config)
            times.append(time.monotonic() - started)
        warm = statistics.median(times)
        print(f"plan_warm_seconds[{preset}]: {warm:.2f} ({ratio(warm)}; checkpoint {plan.estimated_checkpoint_bytes / 1e9:.1f} GB)")

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        root = Path(tmp)
        # Cold: a new `kompress plan` process per preset.
        for preset in PRESETS:
            manifest = root / f"{preset}.json"
            manifest.write_text(json.dumps(job_doc(preset)))
            wall, rss, out = measure([sys.executable, "-m", "kompress_job.cli", "plan", str(manifest), "--model-config", str(config_path), "--json"])
            assert json.loads(out)["total_parameters"] == on_meta
            print(f"plan_cold_seconds[{preset}]: {wall:.2f} ({ratio(wall)}; Python start and imports included)")
            print(f"plan_cold_peak_rss_mb[{preset}]: {rss:.0f} (the model is {on_meta * 2 / 1e6:.0f} MB in bf16)")

        # The planning pod against a Hub stand-in holding config.json and a weight file.
        from kompress_testing.hub import LocalHub

        repo = root / "repo"
        repo.mkdir()
        shutil.copy(config_path, repo / "config.json")
        (repo / "model-00001-of-00047.safetensors").write_bytes(b"\0" * (1 << 20))
        with LocalHub() as hub:
            hub.add_repo("zai-org/GLM-4.5-Air", repo, token=TOKEN)
            doc = job_doc("w4a16-w8a8", {"uri": "hf://zai-org/GLM-4.5-Air", "huggingFace": {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf", "key": "token"}}})
            env = {"KOMPRESS_JOB": json.dumps(doc), "HF_TOKEN": TOKEN, "KOMPRESS_TERMINATION_LOG": str(root / "termination-log")}
            wall, rss, _ = measure([sys.executable, "-m", "kompress_job.cli", "plan-pod"], env)
            served = sorted({p.rsplit("/", 1)[-1] for p in hub.downloaded()})
        result = json.loads((root / "termination-log").read_text())
        print(f"plan_pod_seconds[w4a16-w8a8]: {wall:.2f} ({ratio(wall)}; config.json over HTTP included)")
        print(f"plan_pod_peak_rss_mb: {rss:.0f} (the operator gives the planning pod 2Gi)")
        print(f"plan_pod_files_downloaded: {len(served)} ({', '.join(served)}; the repository also holds a weight file)")
        print(f"plan_pod_termination_bytes: {len(json.dumps(result, separators=(',', ':')).encode())} (limit 4096; ok={result['ok']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
