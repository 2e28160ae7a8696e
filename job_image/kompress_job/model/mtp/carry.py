"""The save stage's MTP step, and the verify stage's check of it. Works on files only (no model, no torch), so
any path that writes a checkpoint (llm-compressor's save, a data-free one) can call it after writing.

    apply(source, out, mtp, handling)   keep: every MTP tensor of the source checkpoint copied byte for byte (its
                                        dtype, shape and bytes as stored) into one more shard of `out`; the shards
                                        renamed model-0000i-of-0000N, model.safetensors.index.json written with
                                        every tensor, quantization_config.ignore extended to cover them.
                                        drop: none in `out` (llm-compressor 0.14 copies `mtp.*` tensors back by
                                        itself; they are taken out again, with its ignore entry).
    check(source, out, mtp, handling)   what is wrong: a source MTP tensor missing or changed, an ignore list that
                                        does not cover it, or (drop) one left in

Must not: load weights into memory beyond one copy buffer, or touch the source folder (it may be a read-only volume).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kompress_job.io.safetensors_files import INDEX, read_header
from kompress_job.model.mtp.layers import MtpLayers

KEEP, DROP = "keep", "drop"
CHUNK = 64 * 2**20
_SHARD = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")
# What llm-compressor 0.14's save wrapper adds when it copies `mtp*` tensors itself (compressed_tensors.utils.mtp).
_UPSTREAM_IGNORE = "re:^mtp.*"


@dataclass(frozen=True)
class Stored:
    """One tensor as a safetensors file stores it."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class CarryResult:
    handling: str
    layers: int
    tensors: int  # MTP tensors of the source
    bytes: int
    shard: str | None = None  # the shard that holds them (keep)

    def summary(self) -> dict[str, Any]:
        return {"handling": self.handling, "layers": self.layers, "tensors": self.tensors, "bytes": self.bytes, "shard": self.shard}


def tensors_in(folder: Path) -> dict[str, Stored]:
    """Every tensor of the checkpoint in `folder` (the shards the index names, or every *.safetensors)."""
    index = folder / INDEX
    shards = sorted({*json.loads(index.read_text())["weight_map"].values()}) if index.is_file() else [p.name for p in sorted(folder.glob("*.safetensors"))]
    out: dict[str, Stored] = {}
    for shard in shards:
        path = folder / shard
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
        for name, info in read_header(path).items():
            if name != "__metadata__":
                a, b = info["data_offsets"]
                out[name] = Stored(path, info["dtype"], tuple(info["shape"]), 8 + length + a, 8 + length + b)
    return out


def apply(source: Path, out: Path, mtp: MtpLayers | None, handling: str) -> CarryResult | None:
    """Carry (keep) or leave out (drop) the MTP tensors of the checkpoint in `source` for the one in `out`.
    None when the config declares no MTP layer."""
    if mtp is None:
        return None
    source, out = Path(source), Path(out)
    wanted = {n: s for n, s in tensors_in(source).items() if mtp.holds(n)}
    _strip(out, mtp)  # a clean start: whatever the library's save put there is replaced
    size = sum(s.nbytes for s in wanted.values())
    if handling != KEEP or not wanted:
        return CarryResult(handling, mtp.count, len(wanted), size)
    shard = _write_shard(out, wanted)
    _extend_ignore(out / "config.json", mtp.ignore_patterns)
    return CarryResult(handling, mtp.count, len(wanted), size, shard)


def _strip(out: Path, mtp: MtpLayers) -> None:
    """Take MTP tensors out of `out`: only whole shards of them are expected (llm-compressor's model_mtp.safetensors)."""
    stored = tensors_in(out)
    carried = {n: s for n, s in stored.items() if mtp.holds(n)}
    if not carried:
        return
    mixed = {s.path for s in carried.values()} & {s.path for n, s in stored.items() if not mtp.holds(n)}
    if mixed:
        raise RuntimeError(f"{sorted(p.name for p in mixed)} hold MTP tensors and others: cannot replace the MTP layer alone")
    for path in {s.path for s in carried.values()}:
        path.unlink()
    _write_index(out, {n: s.path.name for n, s in stored.items() if n not in carried}, {n: s for n, s in stored.items() if n not in carried})
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    qc = config.get("quantization_config")
    if isinstance(qc, dict) and isinstance(qc.get("ignore"), list):
        qc["ignore"] = [e for e in qc["ignore"] if e not in (_UPSTREAM_IGNORE, *mtp.ignore_patterns)]
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def _write_shard(out: Path, wanted: dict[str, Stored]) -> str:
    """Renumber the shards out has, add one holding `wanted` byte for byte, rewrite the index."""
    (out / INDEX).unlink(missing_ok=True)  # rewritten below, naming the renumbered files
    shards = sorted(p.name for p in out.glob("*.safetensors") if _SHARD.match(p.name))
    total = len(shards) + 1
    for i, old in enumerate(shards, start=1):
        (out / old).rename(out / f"model-{i:05d}-of-{total:05d}.safetensors")
    stored = tensors_in(out)
    name = f"model-{total:05d}-of-{total:05d}.safetensors"
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor, s in sorted(wanted.items()):
        header[tensor] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
    with open(out / name, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, s in sorted(wanted.items()):
            _copy_range(s, f)
    weight_map = {n: s.path.name for n, s in stored.items()}
    weight_map.update({n: name for n in wanted})
    _write_index(out, weight_map, {**stored, **wanted})
    return name


def _copy_range(s: Stored, sink: Any) -> None:
    with open(s.path, "rb") as f:
        f.seek(s.start)
        left = s.nbytes
        while left:
            block = f.read(min(CHUNK, left))
            if not block:
                raise RuntimeError(f"{s.path} ends before its header says")
            sink.write(block)
            left -= len(block)


def _write_index(out: Path, weight_map: dict[str, str], sizes: dict[str, Stored]) -> None:
    index = out / INDEX
    if len(set(weight_map.values())) <= 1 and not index.is_file():
        return  # one shard and no index: nothing to say
    total = sum(sizes[n].nbytes for n in weight_map)
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")


def _extend_ignore(config_path: Path, patterns: list[str]) -> None:
    config = json.loads(config_path.read_text())
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        return  # nothing quantized: nothing for a loader to skip
    ignore = list(qc.get("ignore") or [])
    qc["ignore"] = ignore + [p for p in patterns if p not in ignore]
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def ignored_by(entries: list[str], module: str) -> bool:
    """Whether a quantization_config.ignore list skips `module` (exact names, or re: as compressed-tensors matches them)."""
    return any(re.match(e[3:], module) if e.startswith("re:") else e == module for e in entries)


def check(source: Path, out: Path, mtp: MtpLayers | None, handling: str) -> list[str]:
    """Failures: for keep, every source MTP tensor must be in `out` with the same dtype, shape and bytes, and
    skipped by quantization_config.ignore; for drop, none may be there."""
    if mtp is None:
        return []
    wanted = {n: s for n, s in tensors_in(Path(source)).items() if mtp.holds(n)}
    stored = tensors_in(Path(out))
    present = {n for n in stored if mtp.holds(n)}
    if handling != KEEP:
        return [f"spec.recipe.mtp is {handling} but the checkpoint holds {len(present)} MTP tensor(s), e.g. {min(present)}"] if present else []
    failures = [f"MTP tensor {n} of the source is not in the checkpoint" for n in sorted(set(wanted) - present)]
    config = json.loads((Path(out) / "config.json").read_text())
    qc = config.get("quantization_config")
    ignore = list(qc.get("ignore") or []) if isinstance(qc, dict) else None
    for name in sorted(set(wanted) & present):
        a, b = wanted[name], stored[name]
        if (a.dtype, a.shape) != (b.dtype, b.shape):
            failures.append(f"MTP tensor {name}: stored as {b.dtype} {list(b.shape)}, the source has {a.dtype} {list(a.shape)}")
        elif _digest(a) != _digest(b):
            failures.append(f"MTP tensor {name}: its bytes differ from the source's")
        if ignore is not None and not ignored_by(ignore, name.rpartition(".")[0]):
            failures.append(f"MTP tensor {name}: its module is not in quantization_config.ignore, so vLLM would expect it quantized")
    return failures


def _digest(s: Stored) -> str:
    h = hashlib.sha256()

    class _Sink:
        write = h.update

    _copy_range(s, _Sink())
    return h.hexdigest()
