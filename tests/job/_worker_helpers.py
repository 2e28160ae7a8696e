"""Helpers for the worker-core tests: tiny models built once per session, jobs, run contexts, a stage runner.

Test modules import what they use, fixtures included (`from _worker_helpers import tiny_models`), so this
file can sit beside other conftest-based fixtures of tests/job without either overriding the other.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

# One compute thread per process. This machine's 2 cores are shared: with torch's default (a thread per
# core) OpenMP workers spin against each other and other jobs, and a 5 s compression takes 100 s.
# Subprocesses (distributed ranks, the planner check) inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from kompress_api.v1alpha1 import CompressionJob  # noqa: E402

torch.set_num_threads(1)

from kompress_job.context import RunContext  # noqa: E402
from kompress_job.progress import ProgressReporter  # noqa: E402
from kompress_testing.models import meta_model  # noqa: E402,F401 - re-exported for the tests

CALIBRATION_SAMPLES = 16
CALIBRATION_LENGTH = 64


class _TinyModels(dict):
    """name -> folder of a saved tiny model, built on first use."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        from kompress_testing import models

        # "glm4-moe+mtp": the tiny GLM4-MoE with a multi-token-prediction layer (models.add_mtp_layer)
        family, _, extra = name.partition("+")
        self[name] = models.write_model(family, self.root / name, mtp=extra == "mtp")
        return self[name]


_built: list[_TinyModels] = []


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny models, each built once per session however many test modules import this fixture."""
    if not _built:
        _built.append(_TinyModels(tmp_path_factory.mktemp("tiny-models")))
    return _built[0]


def make_job(model_dir: Path | str, *, preset: str | None = "sparse24-w4a16-w8a8", custom: str | None = None, overrides: dict | None = None, gpus: int = 0) -> CompressionJob:
    recipe: dict[str, Any] = {"custom": custom} if custom is not None else {"preset": preset}
    if overrides:
        recipe["overrides"] = overrides
    return CompressionJob.model_validate(
        {
            "metadata": {"name": "tiny", "namespace": "default", "uid": "0000-1111"},
            "spec": {
                "model": {"uri": f"file://{model_dir}", "dtype": "float32"},
                "calibration": {"samples": CALIBRATION_SAMPLES, "maxSequenceLength": CALIBRATION_LENGTH},
                "recipe": recipe,
                "output": {"uri": "file:///tmp/kompress-test-out"},
                "resources": {"gpus": gpus},
            },
        }
    )


# Every preset on every tiny model it applies to (the expert presets need a Mixture-of-Experts model).
RUNS = [
    ("glm4-moe", "sparse24-w4a16-w8a8"),
    ("glm4-moe", "w4a16-w8a8"),
    ("glm4-moe", "w4a16"),
    ("glm4-moe", "fp8-dynamic"),
    ("glm4-moe", "fp8-block"),
    ("glm4-moe", "nvfp4a16"),
    ("glm4-moe", "mxfp4a16"),
    ("glm4-moe", "nvfp4"),
    ("qwen3-moe", "sparse24-w4a16-w8a8"),
    ("qwen3-moe", "w4a16-w8a8"),
    ("qwen3-moe", "w4a16"),
    ("qwen3-moe", "fp8-dynamic"),
    ("llama", "w4a16"),
    ("llama", "fp8-dynamic"),
]
_compressed: dict = {}


@pytest.fixture(scope="session")
def compressed(tiny_models, tmp_path_factory):
    """(model, preset) -> (the context after load-model, compress, save, verify, its progress snapshots), each run
    once per session however many test modules import this fixture."""

    def get(model: str, preset: str):
        if (model, preset) not in _compressed:
            workdir = tmp_path_factory.mktemp(f"{model}-{preset}")
            ctx = make_ctx(make_job(tiny_models[model], preset=preset), tiny_models[model], workdir)
            snapshots = []
            ctx.progress.add_sink(snapshots.append)
            run_stages(ctx, "load-model", "compress", "save", "verify")
            _compressed[(model, preset)] = (ctx, snapshots)
        return _compressed[(model, preset)]

    return get


STAGE_MODULES = {"load-model": "load_model", "compress": "compress", "save": "save", "verify": "verify"}


def make_ctx(job: CompressionJob, model_dir: Path | None, workdir: Path, *, devices: int = 0) -> RunContext:
    ctx = RunContext(
        job=job,
        workdir=workdir,
        progress=ProgressReporter(list(STAGE_MODULES)),
        env={},
        log=logging.getLogger("kompress.test"),
        devices=devices,
    )
    ctx.model_dir = model_dir
    return ctx


def run_stages(ctx: RunContext, *names: str) -> RunContext:
    """Run stages in order as the pipeline does (inside the progress reporter's stage), with the calibration
    rows the calibration stage would leave, built once the tokenizer is known."""
    from kompress_job import pipeline
    from kompress_testing.models import calibration_dataset

    for name in names:
        if name == "compress" and ctx.calibration is None:
            ctx.calibration = calibration_dataset(ctx.tokenizer, CALIBRATION_SAMPLES, CALIBRATION_LENGTH)
        with ctx.progress.stage(name):
            pipeline.stage_function(name)(ctx)
    return ctx
