"""A model on the Hugging Face Hub or a mirror (hf://ORG/NAME): pinned to a commit, fetched resumably, verified.

Owns: resolving spec.model.revision to the commit once (every file then comes from that commit),
listing the repository and keeping only the allow-listed files, downloading them with
huggingface_hub, and checking each against the Hub's own ids: SHA-256 for LFS files, the git blob id
for the rest. Resumption is per file across processes (a re-run keeps every file verified before) and
per byte within one (huggingface_hub 1.x re-requests the rest of a file with a Range header when a
connection drops, but names its partial files per process, so a new process starts those files over).
The token comes from $HF_TOKEN, the endpoint from spec.*.huggingFace.endpoint or $HF_ENDPOINT.
Must not: log the token or pass it anywhere but to huggingface_hub.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import HubAccess, ModelSource
from kompress_api.worker_protocol import ENV_HF_ENDPOINT, ENV_HF_TOKEN

from kompress_job.io import credentials
from kompress_job.io.checksums import VerifiedFiles, git_blob_id, sha256_file
from kompress_job.errors import AccessDenied, KompressError, ModelNotFound, StorageUnreachable
from kompress_job.io.sources import ByteCallback, FetchedConfig, FetchedModel, prune_extras
from kompress_job.io.sources.select import check_complete, wanted

DOWNLOAD_WORKERS = 8


@dataclass(frozen=True)
class HubSettings:
    endpoint: str | None
    token: str | None

    @property
    def where(self) -> str:
        return self.endpoint or "huggingface.co"


def hub_settings(access: HubAccess | None, env: Mapping[str, str], what: str = "model") -> HubSettings:
    access = access or HubAccess()
    token = credentials.read(env, ENV_HF_TOKEN, where=f"the {what}'s huggingFace.tokenSecret")
    if access.token_secret is not None and token is None:
        raise AccessDenied(
            f"the {what}'s huggingFace.tokenSecret names Secret '{access.token_secret.name}' key '{access.token_secret.key}', "
            f"but {ENV_HF_TOKEN} is not set in the worker's environment"
        )
    endpoint = (access.endpoint or env.get(ENV_HF_ENDPOINT) or "").rstrip("/") or None
    return HubSettings(endpoint=endpoint, token=token)


def repo_id_of(uri: str) -> str:
    return uri[len("hf://"):].strip("/")


def hub_error(exc: BaseException, *, uri: str, what: str, where: str, not_found: type[KompressError], revision: str | None = None) -> KompressError | None:
    """The worker error a huggingface_hub/httpx failure means, or None if it means nothing specific."""
    import httpx
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return AccessDenied(f"{uri} is gated: accept its terms on the Hub with the account whose token the worker gets ({ENV_HF_TOKEN})")
    if isinstance(exc, errors.RevisionNotFoundError):
        return not_found(f"revision '{revision}' of {uri} does not exist at {where}")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return not_found(f"no {what} {uri} at {where}, or it is private and the token ({ENV_HF_TOKEN}) cannot see it")
    if isinstance(exc, (errors.RemoteEntryNotFoundError, errors.EntryNotFoundError)):
        return not_found(f"a file of {uri} is missing at {where}: {type(exc).__name__}")
    if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return AccessDenied(f"{where} refused the token for {uri} (HTTP {status}); check the Secret behind {ENV_HF_TOKEN}")
        if status == 429 or status >= 500:
            return StorageUnreachable(f"{where} answered HTTP {status} for {uri}; try again later")
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, httpx.TransportError)):
        return StorageUnreachable(f"cannot reach the Hub at {where} for {uri}: {type(exc).__name__}; check huggingFace.endpoint / {ENV_HF_ENDPOINT} and the network")
    return None


def hub_call(fn: Callable[[], Any], *, uri: str, what: str, settings: HubSettings, not_found: type[KompressError], revision: str | None = None) -> Any:
    try:
        return fn()
    except KompressError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped below or re-raised as is
        mapped = hub_error(exc, uri=uri, what=what, where=settings.where, not_found=not_found, revision=revision)
        if mapped is not None:
            raise mapped from None
        raise


def hub_api(settings: HubSettings) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=settings.endpoint, token=settings.token if settings.token else False)


def resolve_commit(api: Any, repo_id: str, revision: str | None, *, repo_type: str = "model") -> str:
    info = api.repo_info(repo_id=repo_id, repo_type=repo_type, revision=revision or "main")
    return str(info.sha)


@dataclass(frozen=True)
class RepoEntry:
    path: str
    size: int
    blob_id: str | None
    lfs_sha256: str | None

    @property
    def tag(self) -> str:
        """What identifies this content on the Hub (used to trust an earlier verification)."""
        return self.lfs_sha256 or self.blob_id or str(self.size)


def list_files(api: Any, repo_id: str, commit: str, *, repo_type: str = "model") -> list[RepoEntry]:
    from huggingface_hub.hf_api import RepoFile

    entries = []
    for item in api.list_repo_tree(repo_id=repo_id, repo_type=repo_type, revision=commit, recursive=True):
        if isinstance(item, RepoFile):
            lfs = item.lfs
            sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
            entries.append(RepoEntry(item.path, int(item.size or 0), item.blob_id, sha))
    return entries


def verify_file(path: Path, entry: RepoEntry) -> str | None:
    """Why `path` is not the Hub's `entry`, or None when it is."""
    size = path.stat().st_size
    if size != entry.size:
        return f"{entry.path}: {size} bytes, the Hub says {entry.size}"
    if entry.lfs_sha256:
        if sha256_file(path) != entry.lfs_sha256:
            return f"{entry.path}: SHA-256 differs from the Hub's"
    elif entry.blob_id and git_blob_id(path) != entry.blob_id:
        return f"{entry.path}: git blob id differs from the Hub's"
    return None


class _DiskMeter:
    """Reports bytes on disk under a folder (complete files + huggingface_hub's .incomplete ones) while downloads run."""

    def __init__(self, folder: Path, total: int, on_bytes: ByteCallback | None, interval: float = 1.0) -> None:
        self.folder, self.total, self.on_bytes, self.interval = folder, total, on_bytes, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-meter", daemon=True)

    def _bytes(self) -> int:
        total = 0
        for path in self.folder.rglob("*"):
            try:
                if path.is_file() and not path.name.endswith((".metadata", ".lock", ".json.tmp")) and ".kompress" not in path.parts:
                    total += path.stat().st_size
            except OSError:
                pass
        return min(total, self.total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.on_bytes is not None:
                self.on_bytes(self._bytes(), self.total)

    def __enter__(self) -> "_DiskMeter":
        if self.on_bytes is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def fetch_model(source: ModelSource, dest: Path, env: Mapping[str, str], *, on_bytes: ByteCallback | None = None) -> FetchedModel:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # the worker reports progress itself
    settings = hub_settings(source.hugging_face, env)
    repo_id = repo_id_of(source.uri)
    api = hub_api(settings)
    call = dict(uri=source.uri, what="model", settings=settings, not_found=ModelNotFound, revision=source.revision)
    commit = hub_call(lambda: resolve_commit(api, repo_id, source.revision), **call)
    listing = hub_call(lambda: list_files(api, repo_id, commit), **call)
    entries = [e for e in listing if wanted(e.path, source.trust_remote_code)]
    problem = check_complete([e.path for e in entries], f"{source.uri}@{commit}", [e.path for e in listing])
    if problem:
        raise ModelNotFound(problem)
    dest.mkdir(parents=True, exist_ok=True)
    drop_stale_partials(dest)
    verified = VerifiedFiles(dest)
    total = sum(e.size for e in entries)
    reused = 0

    def fetch_one(entry: RepoEntry) -> int:
        target = dest / entry.path
        if verified.get(entry.path, target, entry.tag) is not None:
            return entry.size
        for attempt in (1, 2):
            hub_call(
                lambda: hf_hub_download(
                    repo_id,
                    entry.path,
                    revision=commit,
                    local_dir=dest,
                    endpoint=settings.endpoint,
                    token=settings.token if settings.token else False,
                    force_download=attempt == 2,
                ),
                **call,
            )
            problem = verify_file(target, entry)
            if problem is None:
                verified.put(entry.path, target, entry.tag, verified_by="sha256" if entry.lfs_sha256 else "git-blob")
                return 0
            if attempt == 2:
                raise KompressError(f"{source.uri}@{commit}: {problem} (twice); the download is corrupted")
        return 0

    with _DiskMeter(dest, total, on_bytes), ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="hub") as pool:
        reused = sum(pool.map(fetch_one, entries))
    prune_extras(dest, [e.path for e in entries])
    if on_bytes is not None:
        on_bytes(total, total)
    return FetchedModel(model_dir=dest, resolved_revision=commit, bytes=total, files=[e.path for e in entries], reused_bytes=reused)


def drop_stale_partials(dest: Path) -> int:
    """Delete the partial files an earlier, killed process left in huggingface_hub's local_dir cache: their names are
    unique to the process that wrote them, so nothing will resume them, and on a 214 GB model they can hold tens of
    GB of scratch. Returns the bytes freed."""
    freed = 0
    for path in (dest / ".cache" / "huggingface" / "download").rglob("*.incomplete"):
        freed += path.stat().st_size
        path.unlink(missing_ok=True)
    return freed


def fetch_config(source: ModelSource, dest: Path, env: Mapping[str, str]) -> FetchedConfig:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    settings = hub_settings(source.hugging_face, env)
    repo_id = repo_id_of(source.uri)
    api = hub_api(settings)
    call = dict(uri=source.uri, what="model", settings=settings, not_found=ModelNotFound, revision=source.revision)
    commit = hub_call(lambda: resolve_commit(api, repo_id, source.revision), **call)
    dest.mkdir(parents=True, exist_ok=True)
    path = hub_call(
        lambda: hf_hub_download(repo_id, "config.json", revision=commit, local_dir=dest, endpoint=settings.endpoint, token=settings.token if settings.token else False),
        **call,
    )
    return FetchedConfig(path=Path(path), resolved_revision=commit)


def fetch_index(source: ModelSource, dest: Path, env: Mapping[str, str]) -> Path | None:
    """model.safetensors.index.json at the source's revision, or None when the repository has none (one shard)."""
    from huggingface_hub import errors, hf_hub_download

    from kompress_job.io.safetensors_files import INDEX

    settings = hub_settings(source.hugging_face, env)
    repo_id = repo_id_of(source.uri)
    api = hub_api(settings)
    call = dict(uri=source.uri, what="model", settings=settings, not_found=ModelNotFound, revision=source.revision)
    commit = hub_call(lambda: resolve_commit(api, repo_id, source.revision), **call)

    def download() -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, INDEX, revision=commit, local_dir=dest, endpoint=settings.endpoint, token=settings.token if settings.token else False))
        except (errors.RemoteEntryNotFoundError, errors.EntryNotFoundError):
            return None

    dest.mkdir(parents=True, exist_ok=True)
    return hub_call(download, **call)
