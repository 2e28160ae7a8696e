"""What a safetensors checkpoint's files say without reading a weight: the index's tensor names, a file's header.

    weight_names(folder)   every tensor name of a local checkpoint: its safetensors index, else the headers of its
                           *.safetensors files (no weights read)
    names_in_index(text)   the tensor names of a model.safetensors.index.json
    read_header(path)      a safetensors file's JSON header
Must not: import torch, transformers or llm-compressor (the planning pod and the sources import it).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

INDEX = "model.safetensors.index.json"


def weight_names(folder: Path | str) -> list[str] | None:
    """Every tensor name of the checkpoint in `folder`, from its index or its safetensors headers; None when
    the folder holds neither."""
    folder = Path(folder)
    index = folder / INDEX
    if index.is_file():
        return names_in_index(index.read_text())
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return None
    return sorted(name for shard in shards for name in read_header(shard) if name != "__metadata__")


def names_in_index(text: str) -> list[str]:
    doc = json.loads(text)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise ValueError("not a safetensors index: no weight_map")
    return sorted(weight_map)


def read_header(path: Path) -> dict[str, Any]:
    """A safetensors file's JSON header (8-byte little-endian length, then JSON): names, dtypes, shapes, offsets."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))
