"""A local stand-in for the Hugging Face Hub: the HTTP endpoints huggingface_hub uses, serving local folders.

Owns: repositories (models and datasets) as folders, each revision a commit id; the endpoints that
resolve a revision (`/api/{type}s/{repo}/revision/{rev}`), list files (`/api/{type}s/{repo}/tree/{rev}`,
with LFS SHA-256 and git blob ids as the Hub gives them) and serve files
(`/{repo}/resolve/{rev}/{path}`, `/datasets/{repo}/resolve/...`, HEAD and ranged GET, with the
X-Repo-Commit / X-Linked-Etag / X-Linked-Size headers); private repositories that answer 401 without
the right token and gated ones that answer 403, with the Hub's X-Error-Code headers; a log of
every request (method, path, Authorization and Range headers) so tests can check what was sent; and
`cut_once`, a connection dropped partway through a file, as a flaky network does.
Must not: be imported by product code, or reach the real Hub.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

# Files the Hub keeps in LFS (and so reports with a SHA-256); everything else is a plain git blob.
LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow", ".model", ".gguf")


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


class LocalHub:
    """`with LocalHub() as hub:` an endpoint at `hub.endpoint`; add repositories with `add_repo`."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.cuts: dict[str, int] = {}  # filename -> bytes to send before dropping the connection, once
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

    def _route(self, *, head: bool) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        with self.owner._lock:
            self.owner.requests.append(Request(self.command, path, self.headers.get("Authorization"), self.headers.get("Range")))
        parts = path.strip("/").split("/")
        try:
            if parts[:1] == ["api"] and len(parts) >= 6 and parts[1] in ("models", "datasets"):
                repo_type = parts[1][:-1]
                repo_id = f"{parts[2]}/{parts[3]}"
                action, rest = parts[4], parts[5:]
                if action == "revision":
                    return self._revision(repo_type, repo_id, "/".join(rest), head)
                if action == "tree":
                    return self._tree(repo_type, repo_id, rest[0], "/".join(rest[1:]), parse_qs(url.query), head)
            if parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
                return self._resolve("dataset", f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:]), head)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("model", f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
        except _Refused as refused:
            return self._send(refused.status, b"", refused.headers, head)
        self._send(404, b"Not Found", {}, head)

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
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
