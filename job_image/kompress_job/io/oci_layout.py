"""The image an oci:// output pushes, as bytes: KServe's modelcar layout, built without a registry.

Owns: the OCI media types of the image; its layers: a base layer holding a static busybox (the `sh`, `ln` and `sleep`
that KServe's modelcar container runs) and an empty /models, then one uncompressed layer per file under /models, made
as the file is streamed (never written to disk as a tar) and byte-identical for an identical file at the same path, so
a registry stores it once across images; the image config and the manifest, which annotates each layer with its
file's path and SHA-256 and the image with kompress.json's SHA-256.
Must not: talk to a registry (kompress_job.io.oci_registry does) or decide the order of a push (kompress_job.io.oci).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kompress_api.worker_protocol import ENV_OCI_BUSYBOX, OCI_BUSYBOX

from kompress_job.errors import KompressError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MODELS_DIR = "models"
# Annotations: on each layer, the file it holds (relative to /models) and that file's own SHA-256; on the manifest,
# the SHA-256 of kompress.json (also a file of the image), so a reader can check the manifest file without the layers.
ANNOTATION_PATH = "dev.kompress.path"
ANNOTATION_SHA256 = "dev.kompress.sha256"
ANNOTATION_MANIFEST = "dev.kompress.manifest.sha256"
ANNOTATION_BASE = "dev.kompress.base"
# busybox applets the base layer links: KServe's modelcar runs `sh -c 'ln -sf /proc/$$/root/models /mnt/ && sleep infinity'`.
APPLETS = ("sh", "ln", "sleep", "ls", "cat", "echo", "true")
BLOCK = 8 << 20
# ELF e_machine -> OCI architecture, for the busybox (the only code in the image).
_ELF_ARCH = {0x3E: "amd64", 0xB7: "arm64", 0x28: "arm", 0xF3: "riscv64", 0x15: "ppc64le", 0x16: "s390x"}


# ---------------------------------------------------------------------------------------------
# Tar streams made as the files are read
# ---------------------------------------------------------------------------------------------


def _tar_header(name: str, *, size: int = 0, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> bytes:
    """One deterministic tar header (PAX where a name or a size needs it): root-owned, mtime 0."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime, info.linkname = size, kind, mode, 0, link
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


_END = b"\0" * (2 * tarfile.BLOCKSIZE)


def _parent_dirs(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


@dataclass
class FileLayer:
    """A layer holding one file at /models/NAME; `source` is a path or the bytes themselves."""

    name: str  # relative to /models, / separated
    source: Path | bytes
    size: int = 0
    sha256: str = ""  # the file's own
    digest: str = ""  # the layer's (sha256:HEX)
    layer_size: int = 0
    skipped: bool = False  # the registry already had it
    _head: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.size = len(self.source) if isinstance(self.source, bytes) else Path(self.source).stat().st_size
        path = f"{MODELS_DIR}/{self.name}"
        self._head = b"".join(_tar_header(d, kind=tarfile.DIRTYPE, mode=0o755) for d in _parent_dirs(path)) + _tar_header(path, size=self.size)
        self.layer_size = len(self._head) + self.size + len(_padding(self.size)) + len(_END)

    def file_chunks(self) -> Iterator[bytes]:
        if isinstance(self.source, bytes):
            yield self.source
            return
        with open(self.source, "rb") as f:
            while block := f.read(BLOCK):
                yield block

    def chunks(self) -> Iterator[bytes]:
        yield self._head
        n = 0
        for block in self.file_chunks():
            n += len(block)
            yield block
        if n != self.size:
            raise KompressError(f"{self.name} changed size while it was published ({self.size} then {n} bytes)")
        yield _padding(self.size) + _END

    def hash(self) -> None:
        """The file's SHA-256 and the layer's digest, in one read."""
        whole, layer = hashlib.sha256(), hashlib.sha256(self._head)
        for block in self.file_chunks():
            whole.update(block)
            layer.update(block)
        layer.update(_padding(self.size) + _END)
        self.sha256, self.digest = whole.hexdigest(), "sha256:" + layer.hexdigest()

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": OCI_LAYER, "digest": self.digest, "size": self.layer_size,
                "annotations": {ANNOTATION_PATH: self.name, ANNOTATION_SHA256: self.sha256}}


# ---------------------------------------------------------------------------------------------
# The base layer: a static busybox
# ---------------------------------------------------------------------------------------------


def busybox_path(env: Mapping[str, str]) -> Path:
    path = Path(env.get(ENV_OCI_BUSYBOX) or OCI_BUSYBOX)
    if not path.is_file():
        raise KompressError(
            f"an oci:// output needs a static busybox for the image's base layer (KServe's modelcar runs sh, ln and sleep in it), "
            f"and there is none at {path}: install the package busybox-static (the worker image has it) or set ${ENV_OCI_BUSYBOX}"
        )
    return path


def elf_architecture(path: Path) -> str:
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise KompressError(f"{path} is not an ELF binary: the base layer needs a static busybox")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    if machine not in _ELF_ARCH:
        raise KompressError(f"{path} is built for ELF machine {machine:#x}, which has no OCI architecture name here")
    return _ELF_ARCH[machine]


def base_layer(busybox: Path) -> bytes:
    """bin/busybox with its applets linked, an empty models/ and tmp/: the same bytes for the same busybox."""
    data = busybox.read_bytes()
    out = io.BytesIO()
    out.write(_tar_header("bin/", kind=tarfile.DIRTYPE, mode=0o755))
    out.write(_tar_header("bin/busybox", size=len(data), mode=0o755) + data + _padding(len(data)))
    for applet in APPLETS:
        out.write(_tar_header(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox"))
    notice = next((p for p in (busybox.parent / "copyright", Path("/usr/share/doc/busybox-static/copyright")) if p.is_file()), None)
    if notice is not None:
        text = notice.read_bytes()
        for d in ("usr/", "usr/share/", "usr/share/doc/", "usr/share/doc/busybox/"):
            out.write(_tar_header(d, kind=tarfile.DIRTYPE, mode=0o755))
        out.write(_tar_header("usr/share/doc/busybox/copyright", size=len(text)) + text + _padding(len(text)))
    out.write(_tar_header(f"{MODELS_DIR}/", kind=tarfile.DIRTYPE, mode=0o755))
    out.write(_tar_header("tmp/", kind=tarfile.DIRTYPE, mode=0o1777))
    out.write(_END)
    return out.getvalue()


def base_descriptor(data: bytes) -> dict[str, Any]:
    """The manifest's entry for the base layer `data` (base_layer's bytes)."""
    return {"mediaType": OCI_LAYER, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data), "annotations": {ANNOTATION_BASE: "busybox"}}


# ---------------------------------------------------------------------------------------------
# The image config and the manifest
# ---------------------------------------------------------------------------------------------


def _canonical(doc: dict[str, Any]) -> bytes:
    # Sorted and compact: the same image is the same bytes, so the same digest.
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def image_config(architecture: str, base: dict[str, Any], layers: list[FileLayer]) -> bytes:
    """The image config of the base layer (its descriptor) and the file layers, in that order."""
    descriptors = [base, *(layer.descriptor() for layer in layers)]
    doc = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "WorkingDir": f"/{MODELS_DIR}"},
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},  # uncompressed: diff id = digest
        "history": [{"created_by": "kompress: busybox (sh, ln, sleep) and /models"},
                    *({"created_by": f"kompress: /{MODELS_DIR}/{layer.name}"} for layer in layers)],
    }
    return _canonical(doc)


def image_manifest(config: bytes, base: dict[str, Any], layers: list[FileLayer], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The manifest of the image config `config` (its bytes), the base layer and the file layers."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [base, *(layer.descriptor() for layer in layers)],
        **({"annotations": dict(annotations)} if annotations else {}),
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The bytes a manifest is pushed as (its digest is theirs)."""
    return _canonical(manifest)
