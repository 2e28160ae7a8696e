"""Builders of CompressionJob manifests for the API tests."""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def example_jobs() -> list[tuple[str, dict[str, Any]]]:
    """Every CompressionJob document under examples/ (other kinds, e.g. Secrets, are skipped)."""
    found = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "CompressionJob":
                found.append((f"{path.relative_to(ROOT)}:{document['metadata']['name']}", document))
    return found


def tiny_job() -> dict[str, Any]:
    return copy.deepcopy(dict(example_jobs())["examples/tiny-laptop.yaml:tiny-laptop"])


def with_spec(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    job = tiny_job()
    change(job["spec"])
    return job


@pytest.fixture
def job() -> dict[str, Any]:
    return tiny_job()
