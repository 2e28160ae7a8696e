"""What a model source is, exactly: the cache key of one version of it, and its files with their sizes and tags.

    describe(source, env) -> Listing   one listing request (S3 ListObjectsV2, Hub tree at the resolved commit)

Keys: Hub models by endpoint, repository and commit (hf/<host>/<org>/<name>/<commit>); S3 by endpoint, bucket,
prefix and the digest of the wanted objects' ETags (s3/<host>/<bucket>/<prefix>/<digest>), the same digest the
worker records as the resolved revision. A changed object is a new entry, never a file rewritten under a reader.
A file's tag is what fetch records it verified against (S3 ETag, Hub LFS SHA-256 or git blob id).
Must not: download anything but the listing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from kompress_api.v1alpha1 import ModelSource, model_uri_scheme

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _segment(text: str) -> str:
    """One safe path segment (no '..', no slashes)."""
    cleaned = _UNSAFE.sub("_", text).strip(".") or "_"
    return cleaned[:200]


def _host(endpoint: str | None, default: str) -> str:
    return _segment(urlparse(endpoint).netloc or endpoint) if endpoint else default


@dataclass(frozen=True)
class Listing:
    key: str  # the entry's path under the cache's models/ folder
    revision: str  # Hub commit or S3 ETag digest
    sizes: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    tags: dict[str, str] = field(default_factory=dict)  # relative path -> what it is verified against

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def describe(source: ModelSource, env: Mapping[str, str]) -> Listing | None:
    """The listing of a Hub or S3 model; None for a folder on a volume (used in place, never cached)."""
    scheme = model_uri_scheme(source.uri)
    if scheme == "hf":
        return _describe_hub(source, env)
    if scheme == "s3":
        return _describe_s3(source, env)
    return None


def _describe_hub(source: ModelSource, env: Mapping[str, str]) -> Listing:
    from kompress_job.errors import ModelNotFound
    from kompress_job.io.sources.hub import hub_api, hub_call, hub_settings, list_files, repo_id_of, resolve_commit
    from kompress_job.io.sources.select import wanted

    settings = hub_settings(source.hugging_face, env)
    api, repo_id = hub_api(settings), repo_id_of(source.uri)
    call = dict(uri=source.uri, what="model", settings=settings, not_found=ModelNotFound, revision=source.revision)
    commit = hub_call(lambda: resolve_commit(api, repo_id, source.revision), **call)
    entries = [e for e in hub_call(lambda: list_files(api, repo_id, commit), **call) if wanted(e.path, source.trust_remote_code)]
    key = "/".join(["hf", _host(settings.endpoint, "huggingface.co"), *(_segment(p) for p in repo_id.split("/")), _segment(commit)])
    return Listing(key, commit, {e.path: e.size for e in entries}, {e.path: e.tag for e in entries})


def _describe_s3(source: ModelSource, env: Mapping[str, str]) -> Listing:
    from botocore.exceptions import BotoCoreError, ClientError

    from kompress_job.errors import ModelNotFound
    from kompress_job.io.s3client import make_client, parse_s3_uri, raise_storage_error
    from kompress_job.io.sources.s3 import etag_revision
    from kompress_job.io.sources.select import wanted
    from kompress_job.io.s3objects import list_objects

    loc = parse_s3_uri(source.uri)
    prefix = f"{loc.key}/" if loc.key else ""
    try:
        listing = list_objects(make_client(source.s3, env, "model"), loc.bucket, prefix)
    except (ClientError, BotoCoreError) as exc:
        raise_storage_error(exc, what="model", uri=source.uri, not_found=ModelNotFound, endpoint=source.s3.endpoint if source.s3 else None)
        raise
    objects = {o["Key"][len(prefix):]: o for o in listing if not o["Key"].endswith("/")}
    files = {rel: o for rel, o in objects.items() if wanted(rel, source.trust_remote_code)}
    # The tag fetch records: the ETag HEAD reports (the listing's is the same, quoted), else the size.
    tags = {rel: (o.get("ETag") or "").strip('"') or str(o["Size"]) for rel, o in files.items()}
    revision = etag_revision([(rel, (o.get("ETag") or "").strip('"')) for rel, o in files.items()])
    endpoint = source.s3.endpoint if source.s3 else None
    parts = ["s3", _host(endpoint, "aws"), _segment(loc.bucket), *(_segment(p) for p in loc.key.split("/") if p), _segment(revision.split(":")[-1][:32])]
    return Listing("/".join(parts), revision, {rel: int(o["Size"]) for rel, o in files.items()}, tags)
