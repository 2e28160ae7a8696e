"""Checksums of local files, in the forms the stores speak, and a record of files already verified.

Owns: SHA-256 of a whole file; S3's composite checksums (the hash of the part hashes, for SHA-256
and for the MD5 ETag of multipart uploads); git's blob id (the Hub's id for small files); and
`VerifiedFiles`, a small JSON record so a resumed job does not hash gigabytes it already checked.
Must not: know where a file came from or goes to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

BLOCK = 8 << 20


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """The id git (and the Hub, for files not in LFS) gives a file's content."""
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileDigests:
    size: int
    sha256: str  # hex, of the whole file
    part_size: int | None = None
    # base64 SHA-256 of the concatenated part SHA-256s (S3's COMPOSITE checksum), when part_size is set
    composite_sha256: str | None = None
    parts: int = 1


def file_digests(path: Path, part_size: int | None = None) -> FileDigests:
    """One read of the file: its SHA-256, and its S3 composite SHA-256 for `part_size` parts."""
    whole = hashlib.sha256()
    part_digests: list[bytes] = []
    part = hashlib.sha256()
    in_part = 0
    size = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            whole.update(block)
            size += len(block)
            if part_size is None:
                continue
            view = memoryview(block)
            while view:
                take = min(len(view), part_size - in_part)
                part.update(view[:take])
                in_part += take
                view = view[take:]
                if in_part == part_size:
                    part_digests.append(part.digest())
                    part, in_part = hashlib.sha256(), 0
    if part_size is None:
        return FileDigests(size=size, sha256=whole.hexdigest())
    if in_part or not part_digests:
        part_digests.append(part.digest())
    return FileDigests(
        size=size,
        sha256=whole.hexdigest(),
        part_size=part_size,
        composite_sha256=composite(part_digests),
        parts=len(part_digests),
    )


def composite(part_digests: list[bytes]) -> str:
    """S3's COMPOSITE checksum value (base64, without the -N suffix) from raw part digests."""
    return b64(hashlib.sha256(b"".join(part_digests)).digest())


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives a multipart upload (unencrypted or SSE-S3): md5 of the part md5s, -N."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def strip_parts(value: str | None) -> str | None:
    """A checksum or ETag without quotes and without its -N part count."""
    if value is None:
        return None
    return value.strip('"').split("-", 1)[0]


class VerifiedFiles:
    """Files verified earlier in this folder, keyed by relative path, valid while size and mtime hold.

    Lives in the folder it describes (.kompress/verified.json) so it moves and vanishes with it.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / ".kompress" / "verified.json"
        self._lock = threading.Lock()
        try:
            self._entries: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    def get(self, rel: str, file: Path, tag: str) -> dict | None:
        """The record for `rel` if the file is unchanged since and came from the same source version `tag`."""
        entry = self._entries.get(rel)
        try:
            st = file.stat()
        except OSError:
            return None
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("tag") == tag:
            return entry
        return None

    def put(self, rel: str, file: Path, tag: str, **facts: object) -> None:
        st = file.stat()
        with self._lock:
            self._entries[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "tag": tag, **facts}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
