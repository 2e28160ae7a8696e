"""A local stand-in for the Hugging Face Hub: the HTTP endpoints huggingface_hub uses, serving local folders.

Owns: repositories (models and datasets) as folders, each revision a commit id; the endpoints that
resolve a revision (`/api/{type}s/{repo}/revision/{rev}`), list files (`/api/{type}s/{repo}/tree/{rev}`,
with LFS SHA-256 and git blob ids as the Hub gives them) and serve files
(`/{repo}/resolve/{rev}/{path}`, `/datasets/{repo}/resolve/...`, HEAD and ranged GET, with the
X-Repo-Commit / X-Linked-Etag / X-Linked-Size headers); private repositories that answer 401 without
the right token and gated ones that answer 403, with the Hub's X-Error-Code headers; a log of
every request (method, path, Authorization and Range headers) so tests can check what was sent; and
`cut_once`, a connection dropped partway through a file, as a flaky network does.
The write side, as huggingface_hub's commit API uses it (`HfApi.create_repo`, `create_branch`, `preupload_lfs_files`,
`create_commit`): repository creation (`/api/repos/create`, private or public, with the Hub's initial `.gitattributes`
commit), refs and branches, README metadata validation, `preupload` (regular or LFS, with the remote oid of files
already there), the LFS batch API (`/{repo}.git/info/lfs/objects/batch`: an upload action only for objects the store
lacks), LFS uploads (basic PUT, kept only when the whole body arrived with the SHA-256 it was announced with) and their
verify call, and the NDJSON `commit` endpoint (regular files, LFS files the store holds, deletions; `parentCommit` checked),
each commit a new snapshot folder. Writes need `write_token`. `hold_upload` stops an LFS upload halfway until released, so
a test can kill the uploader mid-file; `commits` lists what was committed.
Must not: be imported by product code, or reach the real Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

# Files the Hub keeps in LFS (and so reports with a SHA-256); everything else is a plain git blob.
LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow", ".model", ".gguf")
# What the Hub puts in a new repository's first commit (and so what a "fresh" repository holds).
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
# Files from this size up go to LFS whatever their name, as on the Hub.
LFS_THRESHOLD = 10 * 1024 * 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str  # model or dataset
    revisions: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    snapshots: dict[str, Path] = field(default_factory=dict)  # commit -> folder
    token: str | None = None  # private: only this token may read
    gated: bool = False


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None
    range: str | None = None


@dataclass(frozen=True)
class Commit:
    repo_id: str
    branch: str
    oid: str
    parent: str | None
    summary: str
    added: tuple[str, ...]
    deleted: tuple[str, ...]


class _Hold:
    """An LFS upload stopped halfway: `reached` is set when it is, `release()` lets it go on."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._go = threading.Event()

    def release(self) -> None:
        self._go.set()

    def wait(self, timeout: float) -> bool:
        return self._go.wait(timeout)


class LocalHub:
    """`with LocalHub() as hub:` an endpoint at `hub.endpoint`; add repositories with `add_repo`."""

    def __init__(self, *, write_token: str | None = None, root: Path | None = None) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.cuts: dict[str, int] = {}  # filename -> bytes to send before dropping the connection, once
        self.write_token = write_token  # writes need `Authorization: Bearer <write_token>`; None: no write is accepted
        self.commits: list[Commit] = []
        self.holds: dict[str, _Hold] = {}  # LFS oid -> an upload to stop halfway
        self.lfs_uploads: list[str] = []  # oids whose whole body arrived and was kept, in order
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="local-hub-")) if root is None else root
        self._lock = threading.Lock()
        self._connections: set[Any] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    def add_repo(self, repo_id: str, folder: Path, *, repo_type: str = "model", revision: str = "main", token: str | None = None, gated: bool = False) -> str:
        """Serve `folder` as `revision` of `repo_id`; returns the commit id it resolves to."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        listing = "".join(f"{p.relative_to(folder)} {git_blob_id(p.read_bytes())}\n" for p in files)
        commit = hashlib.sha1(f"{repo_type}/{repo_id}\n{listing}".encode()).hexdigest()
        repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type))
        repo.revisions[revision] = commit
        repo.snapshots[commit] = folder
        repo.token = token
        repo.gated = gated
        return commit

    # -- the write side's store ---------------------------------------------------------------------

    @property
    def lfs_dir(self) -> Path:
        return self.root / "lfs"

    def lfs_object(self, oid: str) -> Path:
        return self.lfs_dir / oid

    def hold_upload(self, oid: str) -> _Hold:
        """The next LFS upload of `oid` stops after half its body until `.release()` (or the uploader dies)."""
        hold = self.holds[oid] = _Hold()
        return hold

    def head(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str | None:
        repo = self.repos.get((repo_type, repo_id))
        return None if repo is None else repo.revisions.get(branch)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Every file of `repo_id` at `revision` (a branch or a commit), by path."""
        repo = self.repos[(repo_type, repo_id)]
        folder = repo.snapshots[repo.revisions.get(revision, revision)]
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    def _new_snapshot(self) -> Path:
        folder = self.root / "snapshots" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def _create_repo(self, repo_type: str, repo_id: str, *, private: bool, token: str | None) -> Repo:
        repo = Repo(repo_id, repo_type, token=token if private else None)
        folder = self._new_snapshot()
        (folder / ".gitattributes").write_text(GITATTRIBUTES)
        commit = hashlib.sha1(f"{repo_type}/{repo_id}\ninitial commit\n{uuid.uuid4()}".encode()).hexdigest()
        repo.revisions["main"] = commit
        repo.snapshots[commit] = folder
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def _commit(self, repo: Repo, branch: str, parent: str, summary: str, adds: dict[str, Path | bytes], deletes: list[str], folders: list[str]) -> str:
        """A new snapshot: the parent's files, less the deleted ones, plus the added ones (LFS objects linked from the store)."""
        source = repo.snapshots[parent]
        folder = self._new_snapshot()
        for path in source.rglob("*"):
            if path.is_file():
                target = folder / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
        for name in deletes:
            (folder / name).unlink(missing_ok=True)
        for name in folders:
            shutil.rmtree(folder / name.rstrip("/"), ignore_errors=True)
        for name, content in adds.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            if isinstance(content, Path):
                os.link(content, target)
            else:
                target.write_bytes(content)
        listing = "".join(f"{p.relative_to(folder)} {git_blob_id(p.read_bytes())}\n" for p in sorted(folder.rglob("*")) if p.is_file())
        oid = hashlib.sha1(f"{parent}\n{summary}\n{listing}".encode()).hexdigest()
        repo.snapshots[oid] = folder
        repo.revisions[branch] = oid
        self.commits.append(Commit(repo.repo_id, branch, oid, parent, summary, tuple(sorted(adds)), tuple(sorted(deletes + folders))))
        return oid

    # -- server -----------------------------------------------------------------------------------

    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # Kept-alive connections would go on being served by their handler threads: cut them, as a real outage would.
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()
        for hold in self.holds.values():
            hold.release()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cut_once(self, filename: str, after_bytes: int) -> None:
        """The next GET of `filename` promises the whole body, sends `after_bytes` of it and drops the connection."""
        self.cuts[filename] = after_bytes

    def downloaded(self) -> list[str]:
        """Paths of files served by GET (not HEAD), in order."""
        return [r.path for r in self.requests if r.method == "GET" and "/resolve/" in r.path]


def _tree_entry(folder: Path, path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    rel = str(path.relative_to(folder))
    entry: dict[str, Any] = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": rel}
    if rel.endswith(LFS_SUFFIXES):
        sha = hashlib.sha256(data).hexdigest()
        entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        entry["oid"] = git_blob_id(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode())
    return entry


class _Handler(BaseHTTPRequestHandler):
    owner: LocalHub
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: tests read hub.requests instead
        return

    # Routing ------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_POST(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_PUT(self) -> None:  # noqa: N802
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        url = urlparse(self.path)
        # Each segment unquoted on its own: huggingface_hub quotes a revision with its slashes (v1%2Fx is one segment).
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        path = unquote(url.path)
        with self.owner._lock:
            self.owner.requests.append(Request(self.command, path, self.headers.get("Authorization"), self.headers.get("Range")))
        try:
            if self.command in ("POST", "PUT"):
                return self._write(parts, parse_qs(url.query))
            if parts[:1] == ["api"] and len(parts) == 4 and parts[1] in ("models", "datasets"):
                return self._revision(parts[1][:-1], f"{parts[2]}/{parts[3]}", "main", head)
            if parts[:1] == ["api"] and len(parts) >= 5 and parts[1] in ("models", "datasets") and parts[4] == "refs":
                return self._refs(parts[1][:-1], f"{parts[2]}/{parts[3]}", head)
            if parts[:1] == ["api"] and len(parts) >= 6 and parts[1] in ("models", "datasets"):
                repo_type = parts[1][:-1]
                repo_id = f"{parts[2]}/{parts[3]}"
                action, rest = parts[4], parts[5:]
                if action == "revision":
                    return self._revision(repo_type, repo_id, "/".join(rest), head)
                if action == "tree":
                    return self._tree(repo_type, repo_id, rest[0], "/".join(rest[1:]), parse_qs(url.query), head)
            if parts[:1] == ["api"] and len(parts) in (5, 6) and parts[1] in ("models", "datasets") and parts[4] == "auth-check":
                return self._auth_check(parts[1][:-1], f"{parts[2]}/{parts[3]}", write=parts[5:] == ["write"], head=head)
            if parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
                return self._resolve("dataset", f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:]), head)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("model", f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
        except _Refused as refused:
            return self._send(refused.status, refused.body, refused.headers, head)
        self._send(404, b"Not Found", {}, head)

    def _write(self, parts: list[str], query: dict) -> None:
        if parts == ["api", "repos", "create"]:
            return self._create_repo()
        if parts == ["api", "validate-yaml"]:
            return self._validate_yaml()
        if parts[:1] == ["lfs-upload"] and len(parts) == 4:
            return self._lfs_put(f"{parts[1]}/{parts[2]}", parts[3])
        if parts[:1] == ["lfs-verify"] and len(parts) == 3:
            return self._lfs_verify()
        if len(parts) == 6 and parts[2:] == ["info", "lfs", "objects", "batch"] and parts[1].endswith(".git"):
            return self._lfs_batch("model", f"{parts[0]}/{parts[1][: -len('.git')]}")
        if parts[:1] == ["api"] and len(parts) >= 6 and parts[1] in ("models", "datasets"):
            repo_type, repo_id, action, rest = parts[1][:-1], f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            if action == "preupload":
                return self._preupload(repo_type, repo_id, rest)
            if action == "commit":
                return self._commit(repo_type, repo_id, rest)
            if action == "branch":
                return self._create_branch(repo_type, repo_id, rest)
        self._drain()
        raise _Refused(404, {}, b"Not Found")

    # Endpoints ----------------------------------------------------------------------------------

    def _repo(self, repo_type: str, repo_id: str, revision: str) -> tuple[Repo, str, Path]:
        repo = self.owner.repos.get((repo_type, repo_id))
        if repo is None:
            raise _Refused(401 if not self.headers.get("Authorization") else 404, {"X-Error-Code": "RepoNotFound"})
        auth = self.headers.get("Authorization")
        if repo.token is not None and auth != f"Bearer {repo.token}":
            if auth:
                raise _Refused(401, {"X-Error-Message": "Invalid credentials in Authorization header"})
            raise _Refused(401, {"X-Error-Code": "RepoNotFound"})
        if repo.gated:
            raise _Refused(403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted"})
        commit = repo.revisions.get(revision, revision if revision in repo.snapshots else None)
        if commit is None:
            raise _Refused(404, {"X-Error-Code": "RevisionNotFound"})
        return repo, commit, repo.snapshots[commit]

    def _revision(self, repo_type: str, repo_id: str, revision: str, head: bool) -> None:
        repo, commit, folder = self._repo(repo_type, repo_id, revision)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        body = {
            "id": repo_id,
            "_id": commit[:24],
            "sha": commit,
            "private": repo.token is not None,
            "gated": False,
            "disabled": False,
            "siblings": [{"rfilename": str(p.relative_to(folder))} for p in files],
            "tags": [],
        }
        self._json(body, head)

    def _tree(self, repo_type: str, repo_id: str, revision: str, sub: str, query: dict, head: bool) -> None:
        _, _, folder = self._repo(repo_type, repo_id, revision)
        base = folder / sub if sub else folder
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries: list[dict[str, Any]] = []
        paths = sorted(base.rglob("*") if recursive else base.iterdir())
        for p in paths:
            if p.is_dir():
                entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": str(p.relative_to(folder))})
            else:
                entries.append(_tree_entry(folder, p))
        self._json(entries, head)

    def _resolve(self, repo_type: str, repo_id: str, revision: str, filename: str, head: bool) -> None:
        _, commit, folder = self._repo(repo_type, repo_id, revision)
        path = folder / filename
        if not path.is_file():
            raise _Refused(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        data = path.read_bytes()
        entry = _tree_entry(folder, path)
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "ETag": f'"{entry["oid"]}"'}
        if "lfs" in entry:
            headers["X-Linked-Etag"] = f'"{entry["lfs"]["oid"]}"'
            headers["X-Linked-Size"] = str(len(data))
        status = 200
        requested = self.headers.get("Range")
        if requested and requested.startswith("bytes=") and not head:
            start_s, _, end_s = requested[len("bytes="):].partition("-")
            start = int(start_s or 0)
            end = int(end_s) if end_s else len(data) - 1
            if start >= len(data):
                raise _Refused(416, {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        cut = None if head else self.owner.cuts.pop(filename, None)
        if cut is not None:
            return self._send_cut(status, data, headers, cut)
        self._send(status, data, headers, head)

    def _auth_check(self, repo_type: str, repo_id: str, *, write: bool, head: bool) -> None:
        self._repo(repo_type, repo_id, "main")  # readable, or the Hub's refusal
        if write and self.headers.get("Authorization") != f"Bearer {self.owner.write_token}":
            raise _Refused(403, {"X-Error-Message": "You don't have the rights to write to this repository"}, b'{"error": "forbidden"}')
        self._json({"accessRequest": None}, head)

    def _refs(self, repo_type: str, repo_id: str, head: bool) -> None:
        repo, _, _ = self._repo(repo_type, repo_id, "main")
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit} for name, commit in sorted(repo.revisions.items())]
        self._json({"branches": branches, "tags": [], "converts": []}, head)

    # The write side -----------------------------------------------------------------------------

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _drain(self) -> None:
        if self.headers.get("Content-Length"):
            self._body()

    def _writer(self) -> str:
        """The write token, or 401 (no write without it)."""
        auth = self.headers.get("Authorization") or ""
        token = self.owner.write_token
        if token is None or auth != f"Bearer {token}":
            self._drain()
            raise _Refused(401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b'{"error": "Invalid username or password."}')
        return token

    def _writable(self, repo_type: str, repo_id: str, revision: str) -> tuple[Repo, str]:
        """The repository and the branch's head commit, for a writer."""
        repo = self.owner.repos.get((repo_type, repo_id))
        if repo is None:
            self._drain()
            raise _Refused(404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}')
        commit = repo.revisions.get(revision)
        if commit is None:
            self._drain()
            raise _Refused(404, {"X-Error-Code": "RevisionNotFound"}, json.dumps({"error": f"Invalid rev id: {revision}"}).encode())
        return repo, commit

    def _create_repo(self) -> None:
        token = self._writer()
        doc = json.loads(self._body() or b"{}")
        repo_type = doc.get("type") or "model"
        repo_id = f"{doc['organization']}/{doc['name']}" if doc.get("organization") else doc["name"]
        url = f"{self.owner.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        with self.owner._lock:
            if (repo_type, repo_id) in self.owner.repos:
                raise _Refused(409, {"Content-Type": "application/json"}, json.dumps({"error": "You already created this model repo", "url": url}).encode())
            private = doc.get("visibility") == "private" or bool(doc.get("private"))
            self.owner._create_repo(repo_type, repo_id, private=private, token=token)
        self._json({"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]}, False)

    def _create_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        self._writer()
        doc = json.loads(self._body() or b"{}")
        with self.owner._lock:
            repo, start = self._writable(repo_type, repo_id, "main")
            if doc.get("startingPoint"):
                start = repo.revisions.get(doc["startingPoint"], doc["startingPoint"])
                if start not in repo.snapshots:
                    raise _Refused(404, {"X-Error-Code": "RevisionNotFound"}, b'{"error": "Invalid rev id"}')
            if branch in repo.revisions:
                raise _Refused(409, {}, json.dumps({"error": f"Reference already exists: refs/heads/{branch}"}).encode())
            repo.revisions[branch] = start
        self._json({}, False)

    def _validate_yaml(self) -> None:
        import yaml

        doc = json.loads(self._body() or b"{}")
        content = doc.get("content") or ""
        errors = []
        if content.startswith("---"):
            front = content.split("---", 2)[1] if content.count("---") >= 2 else ""
            try:
                if not isinstance(yaml.safe_load(front) or {}, dict):
                    errors.append({"message": "metadata is not a mapping"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"metadata is not YAML: {exc}"})
        status = 400 if errors else 200
        self._send(status, json.dumps({"errors": errors, "warnings": []}).encode(), {"Content-Type": "application/json"}, False)

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        self._writer()
        doc = json.loads(self._body() or b"{}")
        with self.owner._lock:
            repo, commit = self._writable(repo_type, repo_id, revision)
            folder = repo.snapshots[commit]
        answers = []
        for f in doc.get("files") or []:
            sample = base64.b64decode(f.get("sample") or "")
            lfs = f["path"].endswith(LFS_SUFFIXES) or int(f.get("size") or 0) >= LFS_THRESHOLD or b"\0" in sample
            existing = folder / f["path"]
            oid = None
            if existing.is_file():
                data = existing.read_bytes()
                oid = hashlib.sha256(data).hexdigest() if lfs else git_blob_id(data)
            answers.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": answers, "commitOid": commit}, False)

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        self._writer()
        doc = json.loads(self._body() or b"{}")
        with self.owner._lock:
            self._writable(repo_type, repo_id, (doc.get("ref") or {}).get("name") or "main")
        objects = []
        for obj in doc.get("objects") or []:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if not self.owner.lfs_object(obj["oid"]).is_file():
                entry["actions"] = {
                    "upload": {"href": f"{self.owner.endpoint}/lfs-upload/{repo_id}/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.owner.endpoint}/lfs-verify/{repo_id}", "header": {}},
                }
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), {"Content-Type": "application/vnd.git-lfs+json"}, False)

    def _lfs_put(self, repo_id: str, oid: str) -> None:
        """A basic LFS upload: the body streams to a temporary file, kept under its oid only if whole and of that SHA-256."""
        length = int(self.headers.get("Content-Length") or 0)
        self.owner.lfs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.owner.lfs_dir / f".{oid}.{uuid.uuid4().hex[:8]}.partial"
        hold = self.owner.holds.pop(oid, None)
        h = hashlib.sha256()
        received = 0
        try:
            with open(tmp, "wb") as out:
                while received < length:
                    if hold is not None and received >= length // 2:
                        hold.reached.set()
                        hold.wait(120)
                        hold = None
                    block = self.rfile.read(min(1 << 16, length - received))
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    received += len(block)
            if received != length or h.hexdigest() != oid:
                raise _Refused(400, {}, json.dumps({"error": f"the body was {received} of {length} bytes, SHA-256 {h.hexdigest()}, not {oid}"}).encode())
            os.replace(tmp, self.owner.lfs_object(oid))
            with self.owner._lock:
                self.owner.lfs_uploads.append(oid)
        except (OSError, ConnectionError):
            self.close_connection = True
            return
        finally:
            tmp.unlink(missing_ok=True)
        self._send(200, b"", {}, False)

    def _lfs_verify(self) -> None:
        doc = json.loads(self._body() or b"{}")
        if not self.owner.lfs_object(doc.get("oid", "")).is_file():
            raise _Refused(404, {}, b'{"error": "object not found"}')
        self._json({"message": "ok"}, False)

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        self._writer()
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        adds: dict[str, Path | bytes] = {}
        deletes: list[str] = []
        folders: list[str] = []
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                adds[value["path"]] = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
            elif key == "lfsFile":
                stored = self.owner.lfs_object(value["oid"])
                if not stored.is_file():
                    raise _Refused(422, {}, json.dumps({"error": f"LFS object {value['oid']} of {value['path']} was never uploaded"}).encode())
                adds[value["path"]] = stored
            elif key == "deletedFile":
                deletes.append(value["path"])
            elif key == "deletedFolder":
                folders.append(value["path"])
        with self.owner._lock:
            repo, head = self._writable(repo_type, repo_id, revision)
            parent = header.get("parentCommit")
            if parent is not None and parent != head:
                raise _Refused(412, {}, json.dumps({"error": f"A commit has happened since. Please refresh and try again. ({parent} is not the head {head})"}).encode())
            missing = [name for name in deletes if not (repo.snapshots[head] / name).is_file()]
            if missing:
                raise _Refused(404, {"X-Error-Code": "EntryNotFound"}, json.dumps({"error": f"A file with this name doesn't exist: {missing[0]}"}).encode())
            oid = self.owner._commit(repo, revision, head, header.get("summary") or "", adds, deletes, folders)
        prefix = f"{self.owner.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        self._json({"success": True, "commitOid": oid, "commitUrl": f"{prefix}/commit/{oid}", "pullRequestUrl": None}, False)

    # Plumbing -----------------------------------------------------------------------------------

    def _json(self, body: Any, head: bool) -> None:
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

    def _send_headers(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, data: bytes, headers: dict[str, str], head: bool) -> None:
        self._send_headers(status, headers, len(data))
        if not head:
            self.wfile.write(data)

    def _send_cut(self, status: int, data: bytes, headers: dict[str, str], sent: int) -> None:
        self._send_headers(status, headers, len(data))  # the whole body is promised...
        self.wfile.write(data[:sent])  # ...and only part of it is sent
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class _Refused(Exception):
    def __init__(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body
