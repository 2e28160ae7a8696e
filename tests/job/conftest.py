"""Shared fixtures for the worker's tests: tiny models built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


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


