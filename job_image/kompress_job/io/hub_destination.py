"""hf://ORG/NAME as a destination: every published file in one commit on one branch, made with huggingface_hub's commit API.

Owns: the output's Hub settings (spec.output.huggingFace: endpoint, default https://huggingface.co and never the model's
mirror; the write token from $KOMPRESS_OUTPUT_HF_TOKEN, else $HF_TOKEN on a laptop; private; the branch), proving in
preflight that the token may write there (the Hub's auth-check), refusing a repository whose branch already holds files
unless spec.output.overwrite, creating the repository (private by default) and a missing branch, sending large files
ahead of the commit through the Hub's LFS upload path (preupload, then the LFS batch API: only objects the Hub lacks are
sent, so a retried job re-sends only what is missing; Xet is not used, every Hub and mirror speaks LFS), and the commit,
which holds every file or none: nothing is visible in the repository before finish(). The commit names as its parent the
head seen when the destination was checked, so a job that committed there meanwhile is never overwritten, and it deletes
whatever else the branch held (the branch holds exactly the published files).
Must not: log the token or pass it anywhere but to huggingface_hub.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import HubOutput, Output, PublishedDestination
from kompress_api.worker_protocol import ENV_HF_TOKEN, ENV_OUTPUT_HF_TOKEN

from kompress_job.errors import AccessDenied, KompressError, OutputExists, StorageUnreachable
from kompress_job.io import credentials
from kompress_job.io.checksums import sha256_file
from kompress_job.io.sources.hub import HubSettings, hub_error, repo_id_of

DEFAULT_ENDPOINT = "https://huggingface.co"
# What the Hub itself puts in a new repository: not ours, never deleted, not a reason to refuse.
HUB_OWN_FILES = frozenset({".gitattributes"})
UPLOAD_WORKERS = 4
COMMIT_MESSAGE = "Kompress: the compressed checkpoint, its model card and its manifest kompress.json"

ByteCallback = Callable[[int, int], None]


def output_settings(output: Output, env: Mapping[str, str]) -> HubSettings:
    """The endpoint and write token of an hf:// output."""
    hub = output.hugging_face or HubOutput()
    token = credentials.read(env, ENV_OUTPUT_HF_TOKEN, where="spec.output.huggingFace.tokenSecret")
    if token is None and hub.token_secret is not None:
        raise AccessDenied(
            f"spec.output.huggingFace.tokenSecret names Secret '{hub.token_secret.name}' key '{hub.token_secret.key}', "
            f"but {ENV_OUTPUT_HF_TOKEN} is not set in the worker's environment"
        )
    if token is None:
        token = credentials.read(env, ENV_HF_TOKEN, where="the Hub token")
    return HubSettings(endpoint=(hub.endpoint or DEFAULT_ENDPOINT).rstrip("/"), token=token)


def _no_xet() -> None:
    # huggingface_hub 1.x sends every upload through Xet when hf_xet is installed, unless HF_HUB_DISABLE_XET; read at
    # each upload from its constants, set here rather than in the environment because huggingface_hub may be imported
    # already (fetch-model). Downloads are not affected: they follow what the server offers.
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_XET = True


class HubDestination:
    def __init__(self, output: Output, env: Mapping[str, str], uri: str, *, quick: bool = False, replaceable: bool = False) -> None:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the worker reports progress itself
        _no_xet()
        hub = output.hugging_face or HubOutput()
        self.uri = uri.rstrip("/")
        self.repo_id = repo_id_of(self.uri)
        self.branch = hub.revision
        # A rejected copy (replaceable: the `.rejected` sibling) may always be replaced, and is never public.
        self.private = True if replaceable else hub.private
        self.overwrite = output.overwrite or replaceable
        self.settings = output_settings(output, env)
        self.api = HfApi(endpoint=self.settings.endpoint, token=self.settings.token if self.settings.token else False)
        self.quick = quick
        self._checked = False
        self._repo_exists = False
        self._parent: str | None = None  # the branch's head when checked: the commit's parent
        self._existing: set[str] = set()  # files at that head
        self._adds: dict[str, Any] = {}  # path in the repository -> CommitOperationAdd
        self.commit: str | None = None

    # -- helpers ----------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except KompressError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped below or re-raised as is
            mapped = hub_error(exc, uri=self.uri, what="output repository", where=self.settings.where, not_found=AccessDenied)
            if mapped is not None:
                raise mapped from None
            raise

    def _head(self) -> str | None:
        """The branch's head commit, or None when the repository or the branch does not exist."""
        from huggingface_hub import errors

        try:
            refs = self.api.list_repo_refs(self.repo_id)
        except errors.RepositoryNotFoundError:
            self._repo_exists = False
            return None
        self._repo_exists = True
        return next((b.target_commit for b in refs.branches if b.name == self.branch), None)

    def _files_at(self, commit: str) -> set[str]:
        return set(self.api.list_repo_files(self.repo_id, revision=commit))

    # -- the Destination protocol -----------------------------------------------------------------

    def uri_of(self, name: str) -> str:
        return f"hf://{self.repo_id}@{self.commit or self.branch}/{name}"

    def check_writable(self) -> None:
        """A token, the right to write there (when the repository exists), and nothing published on the branch unless overwrite."""
        if not self.settings.token:
            raise AccessDenied(
                f"publishing to {self.uri} needs a Hub token with write access: set spec.output.huggingFace.tokenSecret "
                f"({ENV_OUTPUT_HF_TOKEN}; {ENV_HF_TOKEN} on a laptop)"
            )
        self._parent = self._call(self._head)
        if self._repo_exists:
            self._call(lambda: self.api.auth_check(self.repo_id, write=True))
        self._existing = self._call(lambda: self._files_at(self._parent)) if self._parent else set()
        ours = sorted(self._existing - HUB_OWN_FILES)
        if ours and not self.overwrite:
            shown = ", ".join(ours[:3]) + (f" and {len(ours) - 3} more" if len(ours) > 3 else "")
            raise OutputExists(
                f"{self.uri} already holds {len(ours)} files on branch {self.branch} ({shown}); set spec.output.overwrite: true "
                f"to replace them, or choose another spec.output.uri or spec.output.huggingFace.revision"
            )
        self._checked = True

    def read_text(self, name: str) -> str | None:
        if not self._checked:
            self.check_writable()
        if self._parent is None or name not in self._existing:
            return None
        from huggingface_hub import hf_hub_download

        path = self._call(
            lambda: hf_hub_download(self.repo_id, name, revision=self._parent, endpoint=self.settings.endpoint, token=self.settings.token or False)
        )
        return Path(path).read_text()

    def _prepare(self) -> None:
        """The repository and the branch exist (created as needed), and the commit's parent is known."""
        if not self._checked:
            self.check_writable()
        if not self._repo_exists:
            self._call(lambda: self.api.create_repo(self.repo_id, private=self.private, exist_ok=True))
            self._repo_exists = True
        if self._parent is None:
            self._call(lambda: self.api.create_branch(self.repo_id, branch=self.branch, exist_ok=True) if self.branch != "main" else None)
            self._parent = self._call(self._head)
            if not self._repo_exists:
                raise AccessDenied(f"{self.uri} exists at {self.settings.where} but the token cannot see it (a private repository of someone else?); check the Secret behind {ENV_OUTPUT_HF_TOKEN}")
            self._existing = self._call(lambda: self._files_at(self._parent)) if self._parent else set()
        if self._parent is None:
            raise StorageUnreachable(f"the Hub at {self.settings.where} shows no branch {self.branch} in {self.uri} after creating it; try again")

    def _preupload(self, name: str, content: Path | bytes) -> Any:
        """Send `content` ahead of the commit when the Hub keeps it in LFS (it is then stored, not yet in any commit)."""
        from huggingface_hub import CommitOperationAdd

        op = CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(content) if isinstance(content, Path) else content)
        self._call(lambda: self.api.preupload_lfs_files(self.repo_id, additions=[op], revision=self.branch, free_memory=False))
        self._adds[name] = op
        return op

    def upload(self, files: list[tuple[Path, str]], *, on_bytes: ByteCallback | None = None) -> list[Any]:
        from kompress_job.io.storage import StoredFile

        self._prepare()
        total = sum(p.stat().st_size for p, _ in files)
        done = [0]
        lock = threading.Lock()

        def one(pair: tuple[Path, str]) -> Any:
            path, name = pair
            sha = sha256_file(path)
            op = self._preupload(name, path)
            size = path.stat().st_size
            unchanged = op._remote_oid is not None and op._remote_oid == op._local_oid
            with lock:
                done[0] += size
                if on_bytes is not None:
                    on_bytes(done[0], total)
            return StoredFile(name, size, sha, None, unchanged, 0 if unchanged else size)

        with ThreadPoolExecutor(UPLOAD_WORKERS, thread_name_prefix="hub-upload") as pool:
            return list(pool.map(one, files))

    def put_text(self, name: str, text: str) -> Any:
        from kompress_job.io.storage import StoredFile

        self._prepare()
        data = text.encode()
        self._preupload(name, data)
        return StoredFile(name, len(data), hashlib.sha256(data).hexdigest(), sent=len(data))

    def delete(self, names: list[str]) -> None:
        """Nothing to do now: the commit deletes every file of the branch that is not published again."""

    def finish(self) -> None:
        """The one commit: every file sent or put, and the deletion of everything else the branch held."""
        from huggingface_hub import CommitOperationDelete, errors

        if not self._adds:
            return
        stale = sorted(self._existing - set(self._adds) - HUB_OWN_FILES)
        operations = [*self._adds.values(), *(CommitOperationDelete(path_in_repo=name) for name in stale)]
        description = f"{len(self._adds)} files" + (f"; {len(stale)} files of the previous model removed" if stale else "")

        def commit() -> Any:
            try:
                return self.api.create_commit(
                    self.repo_id, operations, commit_message=COMMIT_MESSAGE, commit_description=description, revision=self.branch, parent_commit=self._parent
                )
            except errors.HfHubHTTPError as exc:
                if exc.response is not None and exc.response.status_code in (409, 412):
                    raise OutputExists(
                        f"branch {self.branch} of {self.uri} moved while this job published (its head is no longer {self._parent}); "
                        "nothing was committed: check what was published there, then retry (with spec.output.overwrite to replace it)"
                    ) from None
                raise

        info = self._call(commit)
        self.commit = str(info.oid)

    def published(self) -> PublishedDestination:
        return PublishedDestination(kind="hf", reference=f"hf://{self.repo_id}@{self.commit or self.branch}", commit=self.commit, revision=self.branch)
