"""Shared fixtures for the worker's tests: tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One compute thread per process. This machine's 2 cores are shared: with torch's default (a thread per
# core) OpenMP workers spin against each other and other jobs, and a 5 s compression takes 100 s.
# Subprocesses (distributed ranks, the planner check) inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """name -> folder of a saved tiny model (built lazily, once per session)."""
    from kompress_testing import models

    root = tmp_path_factory.mktemp("tiny-models")

    class _Lazy(dict):
        def __missing__(self, name: str) -> Path:
            self[name] = models.write_model(name, root / name)
            return self[name]

    return _Lazy()


