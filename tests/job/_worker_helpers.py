"""Helpers for the worker's tests: jobs, run contexts, a stage runner (imported by the tests of tests/job)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import CompressionJob

from kompress_job.context import RunContext
from kompress_job.progress import ProgressReporter
from kompress_testing.models import meta_model  # noqa: F401 - re-exported for the tests

CALIBRATION_SAMPLES = 16
CALIBRATION_LENGTH = 64


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
    import importlib

    from kompress_testing.models import calibration_dataset

    for name in names:
        if name == "compress" and ctx.calibration is None:
            ctx.calibration = calibration_dataset(ctx.tokenizer, CALIBRATION_SAMPLES, CALIBRATION_LENGTH)
        module = importlib.import_module(f"kompress_job.stages.{STAGE_MODULES[name]}")
        with ctx.progress.stage(name):
            module.run(ctx)
    return ctx
