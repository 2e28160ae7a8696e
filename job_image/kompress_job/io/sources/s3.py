"""A model under an S3 prefix (s3://BUCKET/PREFIX): parallel ranged downloads, resumable, verified.

The resolved revision is a digest of every fetched object's key and ETag, so the manifest names
exactly which bytes were compressed and a changed object gives a different revision.
Must not: download anything outside the allow-list (sources.select).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from kompress_api.v1alpha1 import ModelSource

from kompress_job.io.checksums import VerifiedFiles
from kompress_job.errors import ModelNotFound
from kompress_job.io.s3client import make_client, parse_s3_uri, raise_storage_error
from kompress_job.io.sources import ByteCallback, FetchedConfig, FetchedModel, prune_extras
from kompress_job.io.sources.select import check_complete, wanted
from kompress_job.io.download import DownloadItem
from kompress_job.io.s3objects import head_object, list_objects, TransferSettings
from kompress_job.io.transfer import S3Transfer


def etag_revision(objects: list[tuple[str, str]]) -> str:
    """A name for one version of a set of objects: sha256 over sorted "relative-path etag" lines."""
    lines = "".join(f"{rel} {etag}\n" for rel, etag in sorted(objects))
    return "etags-sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def fetch_model(source: ModelSource, dest: Path, env: Mapping[str, str], *, on_bytes: ByteCallback | None = None) -> FetchedModel:
    from botocore.exceptions import BotoCoreError, ClientError

    loc = parse_s3_uri(source.uri)
    client = make_client(source.s3, env, "model")
    prefix = f"{loc.key}/" if loc.key else ""
    try:
        listing = list_objects(client, loc.bucket, prefix)
        keys = {obj["Key"][len(prefix):]: obj["Key"] for obj in listing if not obj["Key"].endswith("/")}
        files = sorted(rel for rel in keys if wanted(rel, source.trust_remote_code))
        problem = check_complete(files, source.uri, list(keys))
        if problem:
            raise ModelNotFound(problem)
        with S3Transfer(client, TransferSettings.from_env(dict(env))) as transfer:
            items = []
            for rel in files:
                remote = head_object(client, loc.bucket, keys[rel], want_part_size=True)
                if remote is None:
                    raise ModelNotFound(f"s3://{loc.bucket}/{keys[rel]} vanished while the model was being fetched")
                items.append(DownloadItem(loc.bucket, remote, dest / rel, rel))
            dest.mkdir(parents=True, exist_ok=True)
            results = transfer.download_objects(items, verified=VerifiedFiles(dest), on_bytes=on_bytes)
    except (ClientError, BotoCoreError) as exc:
        raise_storage_error(exc, what="model", uri=source.uri, not_found=ModelNotFound, endpoint=source.s3.endpoint if source.s3 else None)
        raise  # unreachable: raise_storage_error always raises
    prune_extras(dest, files)
    revision = etag_revision([(item.rel, item.remote.etag or "") for item in items])
    return FetchedModel(
        model_dir=dest,
        resolved_revision=revision,
        bytes=sum(r.size for r in results),
        files=files,
        reused_bytes=sum(r.size for r in results if r.reused),
    )


def fetch_config(source: ModelSource, dest: Path, env: Mapping[str, str]) -> FetchedConfig:
    from botocore.exceptions import BotoCoreError, ClientError

    loc = parse_s3_uri(source.uri)
    client = make_client(source.s3, env, "model")
    key = loc.child("config.json")
    try:
        remote = head_object(client, loc.bucket, key)
        if remote is None:
            raise ModelNotFound(f"no config.json at {source.uri}: the URI must point at the model's folder (the prefix holding config.json)")
        dest.mkdir(parents=True, exist_ok=True)
        with S3Transfer(client, TransferSettings(workers=1)) as transfer:
            transfer.download_objects([DownloadItem(loc.bucket, remote, dest / "config.json", "config.json")])
    except (ClientError, BotoCoreError) as exc:
        raise_storage_error(exc, what="model", uri=source.uri, not_found=ModelNotFound, endpoint=source.s3.endpoint if source.s3 else None)
        raise
    return FetchedConfig(path=dest / "config.json", resolved_revision=None)


def fetch_index(source: ModelSource, dest: Path, env: Mapping[str, str]) -> Path | None:
    """model.safetensors.index.json under the prefix, or None when there is none (one shard)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from kompress_job.io.safetensors_files import INDEX

    loc = parse_s3_uri(source.uri)
    client = make_client(source.s3, env, "model")
    try:
        remote = head_object(client, loc.bucket, loc.child(INDEX))
        if remote is None:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        with S3Transfer(client, TransferSettings(workers=1)) as transfer:
            transfer.download_objects([DownloadItem(loc.bucket, remote, dest / INDEX, INDEX)])
    except (ClientError, BotoCoreError) as exc:
        raise_storage_error(exc, what="model", uri=source.uri, not_found=ModelNotFound, endpoint=source.s3.endpoint if source.s3 else None)
        raise
    return dest / INDEX
