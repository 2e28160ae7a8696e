"""Getting the inputs of a plan: the model's config.json and the source checkpoint's tensor names, nothing else.

    read_config(path)                   a local config.json (or the folder holding one), or ModelNotFound
    fetch_config(job, env, dest)        config.json from spec.model.uri with the job's credentials, and the Hub
                                        revision it came from
    fetch_weight_names(job, env, dest)  the source's tensor names from its safetensors index (which MTP layers it
                                        holds); local_weight_names(path) for a config.json on disk

Owns: turning a model URI or a path into the parsed config.json and the tensor names make_plan takes.
Must not: download weights (kompress_job.io.sources fetches only config.json and the index), or plan anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import CompressionJob

from kompress_job.errors import ModelNotFound


def read_config(path: Path | str) -> dict[str, Any]:
    """A config.json (or a folder holding one) as a dict; ModelNotFound (exit 11) when it is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text()
    except OSError as err:
        raise ModelNotFound(f"cannot read the model's config {path}: {err.strerror or err}") from None
    try:
        config = json.loads(text)
    except ValueError as err:
        raise ModelNotFound(f"{path} is not JSON: {err}") from None
    if not isinstance(config, dict):
        raise ModelNotFound(f"{path} is not a model config (a JSON object)")
    return config


def fetch_weight_names(job: CompressionJob, env: Mapping[str, str], dest: Path, *, revision: str | None = None) -> list[str] | None:
    """The source checkpoint's tensor names from its safetensors index (None when it has none), for make_plan."""
    from kompress_job.io import sources

    try:
        return sources.fetch_weight_names(job.spec.model, dest, env, revision=revision)
    except ValueError:  # an index that is not one: planned as if unseen; the worker reads the files themselves
        return None


def local_weight_names(config_path: Path | str) -> list[str] | None:
    """The tensor names of the checkpoint beside a local config.json (its index or its headers), if any."""
    from kompress_job.io.safetensors_files import weight_names

    path = Path(config_path)
    return weight_names(path if path.is_dir() else path.parent)


def fetch_config(job: CompressionJob, env: Mapping[str, str], dest: Path, *, revision: str | None = None) -> tuple[dict[str, Any], str | None]:
    """config.json from spec.model.uri (Hub, S3 or a volume), with the job's credentials from `env`; nothing else is
    downloaded. Returns the config and the Hub revision it came from (None elsewhere)."""
    from kompress_job.io import sources

    dest.mkdir(parents=True, exist_ok=True)
    fetched = sources.fetch_config(job.spec.model, dest, env, revision=revision)
    return read_config(fetched.path), fetched.resolved_revision
