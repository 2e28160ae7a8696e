"""Where models come from: the Hugging Face Hub, an S3 prefix, or a folder on a mounted volume.

    fetch_model(source, dest, env)   every file the worker needs -> a local folder, resumable, verified
    fetch_config(source, dest, env)  config.json alone (the planner's view of the model)
    fetch_weight_names(source, ...)  the checkpoint's tensor names, from its safetensors index (the planner's view
                                     of which multi-token-prediction layers it holds)

Each returns what was fetched and the exact version (Hub commit, digest of the S3 ETags). Failures
are the worker's errors: ModelNotFound, AccessDenied, StorageUnreachable.
Must not: import torch or transformers (the planner imports this package on a CPU-only pod).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kompress_api.v1alpha1 import ModelSource, model_uri_scheme

ByteCallback = Callable[[int, int], None]


@dataclass
class FetchedModel:
    model_dir: Path
    resolved_revision: str | None
    bytes: int
    files: list[str] = field(default_factory=list)
    reused_bytes: int = 0  # complete and verified before this run (a resumed job)


@dataclass
class FetchedConfig:
    path: Path
    resolved_revision: str | None


def local_path(uri: str) -> Path:
    """The folder a file:///PATH or /PATH URI names."""
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def prune_extras(dest: Path, keep: list[str]) -> list[str]:
    """Delete files in our own download folder that the source no longer has (a re-run after the model changed),
    so a loader globbing *.safetensors never sees a stale shard. Returns what was deleted."""
    wanted = set(keep)
    removed = []
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in wanted and not rel.startswith((".cache/", ".kompress/")) and not rel.endswith((".partial", ".partial.json")):
            path.unlink()
            removed.append(rel)
    return removed


def fetch_model(source: ModelSource, dest: Path, env: Mapping[str, str], *, on_bytes: ByteCallback | None = None) -> FetchedModel:
    scheme = model_uri_scheme(source.uri)
    if scheme == "hf":
        from kompress_job.io.sources import hub

        return hub.fetch_model(source, dest, env, on_bytes=on_bytes)
    if scheme == "s3":
        from kompress_job.io.sources import s3

        return s3.fetch_model(source, dest, env, on_bytes=on_bytes)
    from kompress_job.io.sources import local

    return local.fetch_model(source)


def fetch_config(source: ModelSource, dest: Path, env: Mapping[str, str], *, revision: str | None = None) -> FetchedConfig:
    """config.json alone. `revision`: a Hub commit already resolved (ctx.resolved_revision), so plan and weights agree."""
    if revision and model_uri_scheme(source.uri) == "hf":
        source = source.model_copy(update={"revision": revision})
    scheme = model_uri_scheme(source.uri)
    if scheme == "hf":
        from kompress_job.io.sources import hub

        return hub.fetch_config(source, dest, env)
    if scheme == "s3":
        from kompress_job.io.sources import s3

        return s3.fetch_config(source, dest, env)
    from kompress_job.io.sources import local

    return local.fetch_config(source)


def fetch_weight_names(source: ModelSource, dest: Path, env: Mapping[str, str], *, revision: str | None = None) -> list[str] | None:
    """Every tensor name of the source checkpoint, from model.safetensors.index.json (one more small file, no
    weights); a folder on a volume without an index answers from its safetensors headers. None: not known (a
    one-file checkpoint on the Hub or S3)."""
    from kompress_job.io.safetensors_files import names_in_index, weight_names

    if revision and model_uri_scheme(source.uri) == "hf":
        source = source.model_copy(update={"revision": revision})
    scheme = model_uri_scheme(source.uri)
    if scheme == "hf":
        from kompress_job.io.sources import hub

        index = hub.fetch_index(source, dest, env)
    elif scheme == "s3":
        from kompress_job.io.sources import s3

        index = s3.fetch_index(source, dest, env)
    else:
        return weight_names(local_path(source.uri))
    return names_in_index(index.read_text()) if index is not None else None


def check_model(source: ModelSource, env: Mapping[str, str]) -> str | None:
    """Cheap existence and credential check for preflight; returns the Hub commit when there is one."""
    scheme = model_uri_scheme(source.uri)
    if scheme == "hf":
        from kompress_job.errors import ModelNotFound
        from kompress_job.io.sources.hub import hub_api, hub_call, hub_settings, repo_id_of, resolve_commit

        settings = hub_settings(source.hugging_face, env)
        api = hub_api(settings)
        return hub_call(
            lambda: resolve_commit(api, repo_id_of(source.uri), source.revision),
            uri=source.uri,
            what="model",
            settings=settings,
            not_found=ModelNotFound,
            revision=source.revision,
        )
    if scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        from kompress_job.errors import ModelNotFound
        from kompress_job.io.s3client import make_client, missing_object_message, parse_s3_uri, raise_storage_error
        from kompress_job.io.s3objects import head_object

        loc = parse_s3_uri(source.uri)
        client = make_client(source.s3, env, "model", max_attempts=2, connect_timeout=5)
        try:
            if head_object(client, loc.bucket, loc.child("config.json")) is None:
                reason = missing_object_message(client, source.uri, "model")
                if reason.startswith("nothing"):
                    reason = f"no config.json at {source.uri}: the URI must point at the model's folder (the prefix holding config.json)"
                raise ModelNotFound(reason)
        except (ClientError, BotoCoreError) as exc:
            raise_storage_error(exc, what="model", uri=source.uri, not_found=ModelNotFound, endpoint=source.s3.endpoint if source.s3 else None)
        return None
    from kompress_job.io.sources import local

    local.fetch_config(source)
    return None
