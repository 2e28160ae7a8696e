"""The compressed checkpoint before it exists: every tensor it will hold, and its size to the byte.

Owns: compressed-tensors 0.19's storage formats as arithmetic (read from its compressors, checked against
checkpoints the worker writes), applied module by module to a resolved recipe:

    format (chosen as compressed-tensors' infer_module_format does, first that fits)    tensors per module
    nvfp4-pack-quantized  float 4-bit weights, group 16      weight_packed u8 [out, in/2], weight_scale f8 [out, in/16],
                                                              weight_global_scale f32 [1] (+ input_global_scale)
    int-quantized         int weights + any input activations weight i8 [out, in], weight_scale, (input_scale)
    pack-quantized        int weights, 16-bit activations     weight_packed i32 [out, ⌈in·bits/32⌉], weight_scale,
                                                              weight_shape i64 [2]
    float-quantized       float 8-bit weights + activations   weight f8_e4m3 [out, in], weight_scale, (input_scale)
    naive-quantized       anything else quantized             weight at its bit width, weight_scale
    (16-bit)              not quantized (or 2:4 only: the zeros are stored, there is no sparse format any more)
                                                              weight in the checkpoint dtype [out, in]

    mxfp4-pack-quantized  float 4-bit weights, group 32      weight_packed u8 [out, in/2], weight_scale u8 (E8M0) [out, in/32]
    weight_scale   in the checkpoint dtype: tensor [1], channel [out, 1], group [out, ⌈in/g⌉], block [⌈out/b0⌉, ⌈in/b1⌉]
                   (fp8-block: 128 x 128, one scale per block)
    zero points    only when asymmetric (pack-quantized packs them along dim 0 into int32); symmetric ones are dropped
    input_scale    only for static (calibrated) activations: [1] per tensor
    biases, norms, embeddings, routers, buffers: as they are, in their dtype

Fused 3-D experts are saved per expert (`experts.{i}.{gate,up,down}_proj.*`), as llm-compressor's linearized
modules are. The files: safetensors shards of at most 50 GB (transformers' default), each with its JSON header,
plus `model.safetensors.index.json` when there is more than one (a carried MTP layer has a shard of its own). Config, tokenizer and Kompress's records (a
few kB to a few MB) are not counted.
Must not: import llm-compressor or compressed-tensors, or read weights (a meta-device model is enough).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from kompress_job.recipe.resolved import ResolvedRecipe
from kompress_job.recipe.schemes import QuantArgs, Scheme

# safetensors dtype names and their sizes in bytes.
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "F8_E4M3": 1, "BOOL": 1}
TORCH_TO_SAFETENSORS = {
    "float64": "F64",
    "float32": "F32",
    "bfloat16": "BF16",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
}
# transformers' save_pretrained default (huggingface_hub reads "50GB" as 50 * 10^9 bytes).
MAX_SHARD_BYTES = 50 * 10**9
OTHER = "other"  # tensors of no weight module: embeddings, norms, buffers


class Tensor(NamedTuple):  # a tuple: GLM-4.5-Air's checkpoint has 35,000-53,000 of them
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return _nbytes(self.dtype, self.shape)


@lru_cache(maxsize=4096)
def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * DTYPE_BYTES[dtype]


@lru_cache(maxsize=4096)
def _entry_length(dtype: str, shape: tuple[int, ...]) -> int:
    """Header characters of one tensor, besides its name and offsets."""
    return len('"":{"dtype":"","shape":[],"data_offsets":[,]},') + len(dtype) + len(",".join(str(d) for d in shape))


@dataclass
class CheckpointLayout:
    """Every tensor of the checkpoint, each attributed to a module group (or OTHER)."""

    tensors: list[Tensor]
    group_of: list[str]
    formats: dict[str, str] = field(default_factory=dict)  # group -> compressed-tensors format

    extra_shards: int = 0  # shards of their own (the carried MTP layer), besides the ones the save fills
    extra_bytes: int = 0

    def __post_init__(self) -> None:
        self._sizes = [t.nbytes for t in self.tensors]
        self.tensor_bytes = sum(self._sizes)

    def add_shard(self, tensors: list[Tensor], group: str) -> None:
        """Tensors written to a shard of their own after the save (kompress_job.model.mtp.carry)."""
        if not tensors:
            return
        self.tensors = self.tensors + list(tensors)
        self.group_of = self.group_of + [group] * len(tensors)
        self.extra_shards += 1
        self.extra_bytes += sum(t.nbytes for t in tensors)
        self.__post_init__()

    def bytes_by_group(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for size, group in zip(self._sizes, self.group_of):
            out[group] += size
        return dict(out)

    def shards(self) -> int:
        return max(1, math.ceil((self.tensor_bytes - self.extra_bytes) / MAX_SHARD_BYTES)) + self.extra_shards

    def file_bytes(self) -> int:
        """What the *.safetensors files and the index take on disk."""
        shards = self.shards()
        return self.tensor_bytes + header_bytes(self.tensors, shards, self.tensor_bytes) + index_bytes(self.tensors, shards, self.tensor_bytes)


def safetensors_dtype(torch_dtype: Any) -> str:
    name = str(torch_dtype).removeprefix("torch.")
    return TORCH_TO_SAFETENSORS[name]


def compression_format(scheme: Scheme | None) -> str:
    """compressed-tensors 0.19's format for a scheme (infer_module_format's priority order)."""
    if scheme is None:
        return "dense"
    w, a = scheme.weights, scheme.activations
    if w.type == "float" and w.bits == 4 and w.group_size == 16:
        return "nvfp4-pack-quantized"
    if w.type == "float" and w.bits == 4 and w.group_size == 32:
        return "mxfp4-pack-quantized"
    if w.type == "int" and a is not None:
        return "int-quantized"
    if w.type == "int" and 1 <= w.bits <= 8 and not (a is not None and a.type == "float"):
        return "pack-quantized"
    if w.type == "float" and a is not None:
        return "float-quantized"
    return "naive-quantized"


def _scale_shape(args: QuantArgs, out_features: int, in_features: int) -> tuple[int, ...]:
    if args.strategy in ("group", "tensor_group"):
        return (out_features, math.ceil(in_features / (args.group_size or in_features)))
    if args.strategy == "channel":
        return (out_features, 1)
    if args.strategy == "block":
        rows, cols = args.block_structure or (128, 128)
        return (math.ceil(out_features / rows), math.ceil(in_features / cols))
    return (1,)


def _quantized_dtype(args: QuantArgs) -> str:
    if args.type == "float":
        return "F8_E4M3" if args.bits == 8 else "U8"
    return "I8" if args.bits <= 8 else ("I16" if args.bits <= 16 else "I32")


def module_tensors(name: str, out_features: int, in_features: int, scheme: Scheme | None, dtype: str) -> list[Tensor]:
    """The tensors a Linear module's weight becomes in the checkpoint (its bias is counted with the model's
    other tensors). `dtype`: the checkpoint's 16-bit (or 32-bit) dtype, also that of the scales."""
    return [Tensor(f"{name}.{suffix}", tensor_dtype, shape) for suffix, tensor_dtype, shape in _suffixes(out_features, in_features, scheme, dtype)]


@lru_cache(maxsize=1024)
def _suffixes(out_features: int, in_features: int, scheme: Scheme | None, dtype: str) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    # Thousands of experts share a few shapes: computed once per shape and scheme.
    if scheme is None:
        return (("weight", dtype, (out_features, in_features)),)
    w, a = scheme.weights, scheme.activations
    fmt = compression_format(scheme)
    scale = _scale_shape(w, out_features, in_features)
    out: list[tuple[str, str, tuple[int, ...]]] = []
    if fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized"):
        out.append(("weight_packed", "U8", (out_features, math.ceil(in_features / 2))))
        out.append(("weight_scale", "F8_E4M3" if fmt.startswith("nv") else "U8", scale))
        if fmt.startswith("nv"):
            out.append(("weight_global_scale", "F32", (1,)))
            if a is not None:
                out.append(("input_global_scale", "F32", (1,)))
        return tuple(out)
    if fmt == "pack-quantized":
        out.append(("weight_packed", "I32", (out_features, math.ceil(in_features * w.bits / 32))))
        out.append(("weight_scale", dtype, scale))
        out.append(("weight_shape", "I64", (2,)))
        if not w.symmetric and w.strategy in ("group", "channel"):
            out.append(("weight_zero_point", "I32", (math.ceil(scale[0] * w.bits / 32), *scale[1:])))
    else:  # int-, float- and naive-quantized: one value per weight at its own dtype
        out.append(("weight", _quantized_dtype(w), (out_features, in_features)))
        out.append(("weight_scale", dtype, scale))
        if not w.symmetric:
            out.append(("weight_zero_point", _quantized_dtype(w), scale))
    if a is not None and not a.dynamic:
        out.append(("input_scale", dtype, (1,)))
        if not a.symmetric:
            out.append(("input_zero_point", _quantized_dtype(a), (1,)))
    return tuple(out)


def layout(model: Any, resolved: ResolvedRecipe, dtype: str) -> CheckpointLayout:
    """Every tensor the compressed checkpoint of `model` (meta device is fine) will hold under `resolved`
    (a kompress_job.recipe.ResolvedRecipe). `dtype`: the checkpoint's safetensors dtype (e.g. BF16)."""
    inventory = resolved.inventory
    assignment = resolved.assignment
    by_name = inventory.by_name()
    fused = tuple(f"{c}." for c in inventory.fused_experts)
    tensors: list[Tensor] = []
    group_of: list[str] = []

    def add(tensor: Tensor, group: str) -> None:
        tensors.append(tensor)
        group_of.append(group)

    # 1. The model's own tensors (tied ones once), except quantized weights and fused 3-D experts.
    state_names = set(model.state_dict(keep_vars=True).keys())
    seen = list(model.named_parameters())  # tied weights once, under the name transformers saves
    param_names = {n for n, _ in seen}
    for bname, buffer in model.named_buffers():
        if bname in state_names and bname not in param_names:  # persistent buffers only
            seen.append((bname, buffer))
    for tname, tensor in seen:
        owner, _, leaf = tname.rpartition(".")
        if tensor.ndim == 3 and owner in inventory.fused_experts:
            continue  # saved per expert, below
        a = assignment.get(owner)
        if a is not None and a.scheme is not None and leaf == "weight":
            continue  # replaced by its compressed tensors, below
        add(Tensor(tname, _dtype_of(tensor), tuple(int(s) for s in tensor.shape)), a.group if a is not None else OTHER)

    # 2. Quantized weights, and every per-expert weight of fused experts.
    formats: dict[str, str] = {}
    for name, a in assignment.items():
        m = by_name[name]
        if a.scheme is None and not name.startswith(fused):
            continue  # a real module kept 16-bit: its weight was counted above
        for tensor in module_tensors(name, m.out_features, m.in_features, a.scheme, dtype):
            add(tensor, a.group)
        formats.setdefault(a.group, compression_format(a.scheme))
    for group in set(group_of):
        formats.setdefault(group, "dense")
    return CheckpointLayout(tensors, group_of, formats)


def _dtype_of(tensor: Any) -> str:
    # The meta model is built in the dtype the worker loads (= the checkpoint's), so its tensors' dtypes are
    # the saved ones, including a float32 buffer registered as such on purpose (a router's correction bias).
    return safetensors_dtype(tensor.dtype)


def header_bytes(tensors: list[Tensor], shards: int, total: int) -> int:
    """safetensors headers: 8 bytes of length + JSON {"__metadata__":{"format":"pt"},"<name>":{"dtype":..,"shape":[..],
    "data_offsets":[a,b]},...} padded to 8 bytes, per shard. Offsets run from 0 in each shard of `total / shards` bytes."""
    per_shard_bytes = max(1, math.ceil(total / shards))
    body = offset = 0
    for t in tensors:
        if offset >= per_shard_bytes:
            offset = 0
        end = offset + t.nbytes
        body += _entry_length(t.dtype, t.shape) + len(t.name) + len(str(offset)) + len(str(end))
        offset = end
    framing = len('{"__metadata__":{"format":"pt"}}') - 1 + 8 + 4  # braces, the length prefix, average padding
    return body + shards * framing


def index_bytes(tensors: list[Tensor], shards: int, total: int) -> int:
    """model.safetensors.index.json (json.dumps(indent=2, sort_keys=True)) when the checkpoint is sharded."""
    if shards <= 1:
        return 0
    shard_name = len("model-00001-of-00001.safetensors")
    entries = sum(len(t.name) + shard_name + len('    "": "",\n') for t in tensors)
    head = len('{\n  "metadata": {\n    "total_parameters": ,\n    "total_size": \n  },\n  "weight_map": {\n  }\n}\n') + 2 * len(str(total))
    return entries + head
