"""Run the worker's own stages in this process on a local model folder, for tests and benchmarks that want
the figures (metrics, the record, the checkpoint) without the I/O around them (no preflight, no publish).

    trained_job(recipe, ...)        a CompressionJob on the trained test model (kompress_testing.trained_model),
                                    calibrating and evaluating on its held-out conversations
    run_stages(job, workdir, ...)   calibration, load-model, baseline, compress, save, verify, evaluate, in
                                    order, through the progress reporter as the pipeline runs them; returns
                                    the RunContext with each stage's wall time in ctx.timings

Development harness, not product: product code never imports this module.
"""

from __future__ import annotations

import copy

import logging
import time
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import CompressionJob

COMPUTE_STAGES = ["calibration", "load-model", "baseline", "compress", "save", "verify", "evaluate"]
CALIBRATION_SAMPLES = 64
EVALUATION_SAMPLES = 96
MAX_SEQUENCE_LENGTH = 128


def trained_job(
    recipe: dict[str, Any],
    *,
    model_dir: Path | None = None,
    gate: dict[str, float] | None = None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    evaluation_samples: int = EVALUATION_SAMPLES,
    output_uri: str = "file:///tmp/kompress-fidelity-out",
    tasks: list[dict[str, Any]] | None = None,
) -> CompressionJob:
    """`tasks`: spec.evaluation.tasks, read from the local lm-eval task folder (kompress_testing.lmeval_task)."""
    from kompress_testing import lmeval_task, trained_model

    folder = model_dir or trained_model.folder()
    evaluation: dict[str, Any] = {"samples": evaluation_samples}
    if tasks:
        evaluation |= {"tasks": tasks, "taskSource": {"uri": f"file://{lmeval_task.FOLDER}"}}
    if gate:
        evaluation["gate"] = gate
    return CompressionJob.model_validate(
        {
            "metadata": {"name": "trained", "namespace": "default", "uid": "0000-2222"},
            "spec": {
                "model": {"uri": f"file://{folder}", "dtype": "float32"},
                "calibration": {"uri": f"file://{folder / trained_model.HELDOUT}", "samples": calibration_samples, "maxSequenceLength": MAX_SEQUENCE_LENGTH},
                "evaluation": evaluation,
                "recipe": recipe,
                "output": {"uri": output_uri},
                "resources": {"gpus": 0},
            },
        }
    )


def run_stages(job: CompressionJob, workdir: Path, *, stages: list[str] | None = None, log: logging.Logger | None = None) -> Any:
    """The RunContext after running `stages` (default: every compute stage) of `job` in this process."""
    from kompress_job import pipeline
    from kompress_job.context import RunContext
    from kompress_job.progress import ProgressReporter

    names = stages or COMPUTE_STAGES
    uri = job.spec.model.uri
    ctx = RunContext(job=job, workdir=workdir, progress=ProgressReporter(names), env={}, log=log or logging.getLogger("kompress.compute"))
    ctx.model_dir = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    for name in names:
        started = time.monotonic()
        with ctx.progress.stage(name):
            pipeline.stage_function(name)(ctx)
        ctx.timings[name] = round(time.monotonic() - started, 3)
    return ctx


def pod_run(
    doc: dict[str, Any], workdir: Path, env: dict[str, str] | None = None, timeout: float = 600, worker_args: tuple[str, ...] = ("--real-compute",)
) -> tuple[Any, str]:
    """The worker pod's entry point in a child process, with the pod's environment and nothing of this process's
    KOMPRESS_/AWS_/HF_ variables: (the finished process, its termination message). `worker_args`: those of
    kompress_testing.worker_run (by default every stage the product has, running for real)."""
    import json
    import os
    import subprocess
    import sys

    termination = workdir / "termination-log"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KOMPRESS_", "AWS_", "HF_"))}
    full.update(env or {})
    full.update(
        {
            "KOMPRESS_JOB": json.dumps({"metadata": doc["metadata"], "spec": doc["spec"]}),
            "KOMPRESS_TERMINATION_LOG": str(termination),
            "KOMPRESS_PROGRESS_BIND": "127.0.0.1:0",
            "KOMPRESS_SCRATCH": str(workdir / "scratch"),
            "KOMPRESS_LOG_FORMAT": "json",
            "OMP_NUM_THREADS": "1",
        }
    )
    done = subprocess.run([sys.executable, "-m", "kompress_testing.worker_run", *worker_args], env=full, capture_output=True, text=True, timeout=timeout)
    return done, termination.read_text() if termination.exists() else ""


# --- references the presets are compared with (tests/job/test_fidelity_algorithms.py, bench/bench_presets.py) ---

# SparseGPT 2:4 on every Linear layer of the decoder (attention, dense MLP, shared and routed experts);
# router and lm_head untouched.
SPARSEGPT_24 = r"""
sparsity_stage:
  sparsity_modifiers:
    SparseGPTModifier:
      sparsity: 0.5
      mask_structure: "2:4"
      targets:
        - 're:model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj$'
        - 're:model\.layers\.\d+\.mlp\.(gate|up|down)_proj$'
        - 're:model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj$'
        - 're:model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj$'
"""


def magnitude_24(model: Any, modules: list[str]) -> None:
    """Plain magnitude 2:4 pruning: in every 4 consecutive input weights, zero the 2 smallest |w|."""
    import torch

    with torch.no_grad():
        for name in modules:
            weight = model.get_submodule(name).weight
            groups = weight.view(weight.shape[0], -1, 4)
            groups.scatter_(-1, groups.abs().argsort(dim=-1)[..., :2], 0.0)


def round_to_nearest(awq_recipe: dict[str, Any]) -> dict[str, Any]:
    """The w4a16 preset's recipe without AWQ's smoothing: the same QuantizationModifier alone rounds to nearest."""
    recipe = copy.deepcopy(awq_recipe)
    (stage,) = recipe.values()
    del stage["smoothing_modifiers"]
    return recipe
