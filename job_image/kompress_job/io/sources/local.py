"""A model in a folder on a mounted volume (file:///PATH or /PATH): used in place, never copied.

Must not: write into the folder (volumes are mounted read-only by default).
"""

from __future__ import annotations

from pathlib import Path

from kompress_api.v1alpha1 import ModelSource

from kompress_job.errors import ModelNotFound
from kompress_job.io.sources import FetchedConfig, FetchedModel, local_path
from kompress_job.io.sources.select import check_complete, wanted


def _folder(source: ModelSource) -> Path:
    folder = local_path(source.uri)
    if not folder.is_dir():
        hint = " (is the volume mounted? see spec.model.volume)" if not folder.exists() else " (it is a file: point at its folder)"
        raise ModelNotFound(f"no model folder at {folder}{hint}")
    return folder


def fetch_model(source: ModelSource) -> FetchedModel:
    folder = _folder(source)
    everything = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = [f for f in everything if wanted(f, source.trust_remote_code)]
    problem = check_complete(files, str(folder), everything)
    if problem:
        raise ModelNotFound(problem)
    size = sum((folder / f).stat().st_size for f in files)
    # No revision: a folder has no version we could name without hashing every byte of it.
    return FetchedModel(model_dir=folder, resolved_revision=None, bytes=size, files=files, reused_bytes=size)


def fetch_config(source: ModelSource) -> FetchedConfig:
    config = _folder(source) / "config.json"
    if not config.is_file():
        raise ModelNotFound(f"no config.json in {config.parent}: the URI must point at the model's folder")
    return FetchedConfig(path=config, resolved_revision=None)
