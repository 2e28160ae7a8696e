"""A published model read back from where it went, by the scheme of its URI (for `kompress verify`).

Owns: one reader per scheme, each listing every file at the destination, reading one as text and fetching files into a
local folder: file:///PATH (read in place), s3://BUCKET/PREFIX (the AWS credential chain, or KOMPRESS_OUTPUT_S3_AWS_*),
hf://ORG/NAME[@REVISION] (a branch, tag or commit, pinned to its commit once; HF_TOKEN or KOMPRESS_OUTPUT_HF_TOKEN),
oci://REGISTRY/REPOSITORY:TAG or @sha256:DIGEST (the image pinned to its digest once, its /models files by their layers'
annotations, each blob checked against its digest; the login from the dockerconfigjson $KOMPRESS_OUTPUT_OCI_AUTH names,
else $DOCKER_CONFIG/config.json or ~/.docker/config.json); and the table from scheme to reader, so another kind of
destination plugs in with `register_reader`.
Must not: write to a destination, or log a credential.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kompress_api.v1alpha1 import S3Access
from kompress_api.worker_protocol import ENV_HF_TOKEN, ENV_OUTPUT_HF_TOKEN

from kompress_job.errors import ModelNotFound
from kompress_job.io import credentials


@dataclass(frozen=True)
class ReaderOptions:
    env: Mapping[str, str] = field(default_factory=dict)
    s3: S3Access | None = None  # endpoint, region, path style of an S3-compatible store
    hf_endpoint: str | None = None
    oci_insecure: bool = False  # plain HTTP to the registry


class PublishedReader(Protocol):
    uri: str
    pinned: str | None  # the exact version read (a Hub commit, an image digest), when the URI may name a moving one
    own_files: frozenset[str]  # the destination's own files, not the model's (the Hub's .gitattributes)

    def names(self) -> list[str]:
        """Every file at the destination, / separated, relative to it."""
        ...

    def read_text(self, name: str) -> str | None:
        """The file `name`, or None when there is none."""
        ...

    def folder(self, names: list[str], scratch: Path) -> Path:
        """A local folder holding these files as they are at the destination (fetched into `scratch`, or in place)."""
        ...


ReaderFactory = Callable[[str, ReaderOptions], PublishedReader]
READERS: dict[str, ReaderFactory] = {}


def register_reader(scheme: str, factory: ReaderFactory) -> None:
    READERS[scheme] = factory


def open_reader(uri: str, options: ReaderOptions) -> PublishedReader:
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    factory = READERS.get(scheme)
    if factory is None:
        raise ValueError(f"cannot read {uri}: the scheme {scheme}:// is not one of {', '.join(sorted(READERS))}")
    return factory(uri, options)


class FolderReader:
    pinned = None
    own_files: frozenset[str] = frozenset()

    def __init__(self, uri: str, options: ReaderOptions) -> None:
        from kompress_job.io.sources import local_path

        self.uri = uri.rstrip("/")
        self.root = local_path(self.uri)
        if not self.root.is_dir():
            raise ModelNotFound(f"no folder at {uri}")

    def names(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read_text(self, name: str) -> str | None:
        path = self.root / name
        return path.read_text() if path.is_file() else None

    def folder(self, names: list[str], scratch: Path) -> Path:
        return self.root


class S3Reader:
    pinned = None
    own_files: frozenset[str] = frozenset()

    def __init__(self, uri: str, options: ReaderOptions) -> None:
        from kompress_job.io.s3client import make_client, parse_s3_uri

        self.uri = uri.rstrip("/")
        self.location = parse_s3_uri(self.uri)
        self.endpoint = options.s3.endpoint if options.s3 else None
        self.client = make_client(options.s3, options.env, "output")

    def _fail(self, exc: BaseException) -> None:
        from kompress_job.io.s3client import raise_storage_error

        raise_storage_error(exc, what="published model", uri=self.uri, endpoint=self.endpoint)

    def names(self) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        from kompress_job.io.s3objects import list_objects

        prefix = f"{self.location.key}/" if self.location.key else ""
        try:
            return sorted(obj["Key"][len(prefix) :] for obj in list_objects(self.client, self.location.bucket, prefix))
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
            raise

    def read_text(self, name: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        from kompress_job.io.s3client import is_not_found

        try:
            return self.client.get_object(Bucket=self.location.bucket, Key=self.location.child(name))["Body"].read().decode()
        except ClientError as exc:
            if is_not_found(exc):
                return None
            self._fail(exc)
            raise
        except BotoCoreError as exc:
            self._fail(exc)
            raise

    def folder(self, names: list[str], scratch: Path) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        for name in names:
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.client.download_file(self.location.bucket, self.location.child(name), str(target))
            except (ClientError, BotoCoreError) as exc:
                self._fail(exc)
        return scratch


class HubReader:
    """hf://ORG/NAME[@REVISION]: every read from the one commit the revision (default main) names when opened."""

    own_files = frozenset({".gitattributes"})  # the Hub's, in every repository: not part of the model

    def __init__(self, uri: str, options: ReaderOptions) -> None:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import disable_progress_bars

        from kompress_job.io.sources.hub import HubSettings

        disable_progress_bars()
        self.uri = uri.rstrip("/")
        repo, _, revision = self.uri[len("hf://") :].partition("@")
        self.repo_id, self.revision = repo, revision or "main"
        token = credentials.read(options.env, ENV_OUTPUT_HF_TOKEN) or credentials.read(options.env, ENV_HF_TOKEN)
        endpoint = (options.hf_endpoint or options.env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.settings = HubSettings(endpoint=endpoint, token=token)
        self.api = HfApi(endpoint=endpoint, token=token or False)
        self.commit = str(self._call(lambda: self.api.repo_info(self.repo_id, revision=self.revision).sha))
        self.pinned = self.commit

    def _call(self, fn: Callable[[], Any]) -> Any:
        from kompress_job.io.sources.hub import hub_call

        return hub_call(fn, uri=self.uri, what="published model", settings=self.settings, not_found=ModelNotFound, revision=self.revision)

    def names(self) -> list[str]:
        return sorted(self._call(lambda: self.api.list_repo_files(self.repo_id, revision=self.commit)))

    def read_text(self, name: str) -> str | None:
        if name not in self.names():
            return None
        return Path(self._download(name, None)).read_text()

    def _download(self, name: str, local_dir: Path | None) -> str:
        from huggingface_hub import hf_hub_download

        return self._call(
            lambda: hf_hub_download(self.repo_id, name, revision=self.commit, local_dir=local_dir, endpoint=self.settings.endpoint, token=self.settings.token or False)
        )

    def folder(self, names: list[str], scratch: Path) -> Path:
        download = scratch / ".download"
        for name in names:
            self._download(name, download)
        # huggingface_hub keeps its own records under local_dir/.cache: the folder checked holds the files alone.
        for name in names:
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(download / name, target)
        shutil.rmtree(download, ignore_errors=True)
        return scratch


class OciReader:
    """An image of a modelcar layout (kompress_job.io.oci_layout): the files under /models, one layer each, named by annotation."""

    own_files: frozenset[str] = frozenset()

    def __init__(self, uri: str, options: ReaderOptions) -> None:
        import os

        from kompress_job.io.credentials import registry_login
        from kompress_job.io.oci_layout import ANNOTATION_PATH
        from kompress_job.io.oci_registry import RegistryClient, parse_reference
        from kompress_api.worker_protocol import ENV_OUTPUT_OCI_AUTH

        ref = parse_reference(uri)
        candidates = [options.env.get(ENV_OUTPUT_OCI_AUTH), os.path.join(options.env.get("DOCKER_CONFIG") or "", "config.json") if options.env.get("DOCKER_CONFIG") else None,
                      os.path.join(options.env.get("HOME") or "~", ".docker", "config.json")]
        login = next((found for path in candidates if path and Path(path).is_file() and (found := registry_login(Path(path), ref.registry, where=path))), None)
        self.client = RegistryClient(ref, login, insecure=options.oci_insecure, where="the dockerconfigjson (KOMPRESS_OUTPUT_OCI_AUTH, DOCKER_CONFIG)")
        digest = ref.digest or self.client.manifest_digest(ref.tag or "latest")
        if digest is None:
            raise ModelNotFound(f"no image at {uri} (no such tag)")
        manifest, self.pinned = self.client.get_manifest(digest)
        self.uri = ref.at(self.pinned).uri
        self.layers = {layer["annotations"][ANNOTATION_PATH]: layer for layer in manifest.get("layers", []) if ANNOTATION_PATH in (layer.get("annotations") or {})}

    def names(self) -> list[str]:
        return sorted(self.layers)

    def read_text(self, name: str) -> str | None:
        from kompress_job.io.oci import read_layer_files
        from kompress_job.io.oci_layout import MODELS_DIR

        layer = self.layers.get(name)
        if layer is None:
            return None
        return read_layer_files(self.client.blob_chunks(layer["digest"])).get(f"{MODELS_DIR}/{name}", b"").decode()

    def folder(self, names: list[str], scratch: Path) -> Path:
        from kompress_job.io.oci import extract_models

        for name in names:
            extract_models(self.client.blob_chunks(self.layers[name]["digest"]), scratch)  # each blob checked against its digest
        return scratch


register_reader("file", FolderReader)
register_reader("s3", S3Reader)
register_reader("hf", HubReader)
register_reader("oci", OciReader)
