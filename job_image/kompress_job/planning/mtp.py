"""The plan's view of the multi-token-prediction (MTP) layers: which the source holds, what they weigh, where
they end up under spec.recipe.mtp, and what to tell the user.

    plan_mtp(config, handling, names, model, dtypes)   MtpPlan: the layers config.json declares
                                       (kompress_job.model.mtp.layers), their tensors in the source's index (`names`;
                                       None when no index was seen), each sized from the model's structure
    MtpPlan.checkpoint_tensors         what the compressed checkpoint adds for them (keep: each as the source
                                       stores it, in a shard of its own)
    check(mtp, source_dtype)           MtpLayerMissing, MtpLayerUnverified, MtpLayoutUnknown, MtpLayerDropped,
                                       MtpQuantizeUnsupported

Sizes: a tensor inside the MTP layer's decoder block has the shape of the same tensor in the model's last
decoder layer (fused 3-D experts split per expert, as checkpoints store them); the layer's own tensors are
a table (norms: hidden; eh_proj / fc: hidden x 2·hidden; embed_tokens and shared_head.head: vocab x hidden).
They are stored in the source's dtype (byte-identical copies). Must not: read weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kompress_job.model.mtp.layers import MtpLayers, declared
from kompress_job.planning import problems
from kompress_job.planning.checkpoint import Tensor, safetensors_dtype

KEEP, DROP, QUANTIZE = "keep", "drop", "quantize"
GROUP = "mtp"  # the checkpoint layout's group for them
# The layer's own tensors (besides its decoder block): shape as a function of (hidden, vocab).
_OWN = {
    "enorm.weight": lambda h, v: (h,),
    "hnorm.weight": lambda h, v: (h,),
    "shared_head.norm.weight": lambda h, v: (h,),
    "norm.weight": lambda h, v: (h,),
    "pre_fc_norm_embedding.weight": lambda h, v: (h,),
    "pre_fc_norm_hidden.weight": lambda h, v: (h,),
    "eh_proj.weight": lambda h, v: (h, 2 * h),
    "fc.weight": lambda h, v: (h, 2 * h),
    "embed_tokens.weight": lambda h, v: (v, h),
    "shared_head.head.weight": lambda h, v: (v, h),
}
_PER_EXPERT = re.compile(r"^(?P<experts>.*experts)\.(?P<index>\d+)\.(?P<proj>gate|up|down)_proj\.weight$")
_QUANTIZE_REASON = (
    "Kompress cannot quantize MTP layers: transformers does not build them (the model class ignores their tensors at "
    "load), so llm-compressor never sees them and no calibration pass reaches them. vLLM's glm4_moe_mtp loader "
    "would build the decoder block with the model's quantization config, but its eh_proj is a plain nn.Linear that "
    "must stay 16-bit; this has not been run on vLLM here"
)


@dataclass(frozen=True)
class MtpPlan:
    layers: MtpLayers
    handling: str
    tensors: tuple[Tensor, ...] | None  # the source's MTP tensors, sized; None: the source's index was not seen
    unsized: tuple[str, ...] = ()  # names whose shape the structure does not give (counted as 0 bytes)
    lower_bound_bytes: int = 0  # without an index: the decoder block, eh_proj and norms, per layer

    @property
    def download_bytes(self) -> int:
        """What the source's MTP tensors add to the download (a lower bound when the index was not seen)."""
        return self.bytes if self.tensors is not None else self.lower_bound_bytes

    @property
    def in_source(self) -> bool | None:
        return None if self.tensors is None else bool(self.tensors)

    @property
    def parameters(self) -> int:
        return sum(_numel(t.shape) for t in self.tensors or ())

    @property
    def bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors or ())

    @property
    def checkpoint_tensors(self) -> list[Tensor]:
        return list(self.tensors or ()) if self.handling == KEEP else []

    def summary(self) -> dict[str, Any]:
        return {
            "layers": self.layers.count,
            "prefixes": list(self.layers.prefixes),
            "handling": self.handling,
            "in_source": self.in_source,
            "tensors": len(self.tensors) if self.tensors is not None else None,
            "parameters": self.parameters,
            "source_bytes": self.bytes,
            "in_checkpoint": bool(self.checkpoint_tensors),
            "unsized": list(self.unsized),
        }


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def plan_mtp(config: dict[str, Any], handling: str, names: list[str] | None, last_layer: Any, source_dtype: str, load_dtype: str) -> MtpPlan | None:
    """The plan for the MTP layers `config` declares (None when it declares none). `names`: every tensor name of
    the source checkpoint (its index), None when unknown; `last_layer`: the model's last decoder layer (meta)."""
    layers = declared(config)
    if layers is None:
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden, vocab = int(text.get("hidden_size") or 0), int(text.get("vocab_size") or 0)
    block = _block_tensors(last_layer, load_dtype) if last_layer is not None else {}
    stored = safetensors_dtype(source_dtype)
    if names is None or not layers.known:
        per_layer = sum(p.numel() for p in last_layer.parameters()) if last_layer is not None else 0
        lower = layers.count * (per_layer + 2 * hidden * hidden + 3 * hidden) * Tensor("", stored, (1,)).nbytes
        return MtpPlan(layers, handling, None, lower_bound_bytes=lower)
    tensors, unsized = [], []
    for name in layers.select(names):
        shape_dtype = _shape(_inner(layers, name), block, hidden, vocab)
        if shape_dtype is None:
            unsized.append(name)
            continue
        shape, keeps_f32 = shape_dtype
        tensors.append(Tensor(name, "F32" if keeps_f32 else stored, shape))
    return MtpPlan(layers, handling, tuple(tensors), tuple(unsized))


def _inner(layers: MtpLayers, name: str) -> str:
    """The name inside its MTP layer: model.layers.46.self_attn.q_proj.weight -> self_attn.q_proj.weight;
    mtp.layers.0.mlp.gate.weight -> layers.0.mlp.gate.weight (the prefix layout keeps its block index)."""
    prefix = next(p for p in layers.prefixes if name.startswith(p))
    return name[len(prefix):]


def _block_tensors(layer: Any, load_dtype: str) -> dict[str, tuple[tuple[int, ...], bool]]:
    """name -> (shape, stored as float32 whatever the model's dtype) for a decoder layer's tensors, fused experts
    split per expert as checkpoints store them."""
    out: dict[str, tuple[tuple[int, ...], bool]] = {}
    state = dict(layer.named_parameters())
    state.update({n: b for n, b in layer.named_buffers() if n in layer.state_dict()})
    for name, tensor in state.items():
        shape = tuple(int(s) for s in tensor.shape)
        f32 = str(tensor.dtype) == "torch.float32" and load_dtype != "float32"
        owner, _, leaf = name.rpartition(".")
        if len(shape) == 3 and leaf in ("gate_up_proj", "down_proj"):
            experts, rows, cols = shape
            for proj in ("gate", "up") if leaf == "gate_up_proj" else ("down",):
                per = (rows // 2, cols) if leaf == "gate_up_proj" else (rows, cols)
                out[f"{owner}.*.{proj}_proj.weight"] = (per, f32)
            continue
        out[name] = (shape, f32)
    return out


def _shape(inner: str, block: dict[str, tuple[tuple[int, ...], bool]], hidden: int, vocab: int) -> tuple[tuple[int, ...], bool] | None:
    if inner in _OWN:
        return _OWN[inner](hidden, vocab), False
    inner = re.sub(r"^layers\.\d+\.", "", inner)  # the prefix layout's block index
    if inner in block:
        return block[inner]
    match = _PER_EXPERT.match(inner)
    if match:
        return block.get(f"{match['experts']}.*.{match['proj']}_proj.weight") or block.get(f"{match['experts']}.0.{match['proj']}_proj.weight")
    return None


def check(mtp: MtpPlan | None, source_dtype: str) -> list[problems.Problem]:
    if mtp is None:
        return []
    layers = mtp.layers
    what = f"{layers.count} multi-token-prediction (MTP) layer(s) ({layers.where()})"
    if mtp.handling == QUANTIZE:
        return [problems.error(problems.MTP_QUANTIZE_UNSUPPORTED, f"spec.recipe.mtp is quantize: {_QUANTIZE_REASON}.", "set spec.recipe.mtp to keep (16-bit, byte-identical; the default) or drop")]
    if not layers.known:
        return [
            problems.warning(
                problems.MTP_LAYOUT_UNKNOWN,
                f"config.json declares {what}, but Kompress does not know where model_type {layers.model_type!r} stores them, "
                "so the checkpoint will not have them and vLLM's MTP speculative decoding will not be available",
                "nothing to do for compression; to serve with MTP, ask for the family to be added to kompress_job.model.mtp.layers.FAMILIES",
            )
        ]
    if mtp.handling == DROP:
        gone = f"{len(mtp.tensors)} tensors, {mtp.bytes / 1e9:.2f} GB" if mtp.tensors else "none in the source anyway"
        return [problems.warning(problems.MTP_LAYER_DROPPED, f"spec.recipe.mtp is drop: the checkpoint leaves out {what} ({gone}); vLLM's MTP speculative decoding will not be available for it", "set spec.recipe.mtp: keep to carry them over unchanged")]
    if mtp.in_source is None:
        return [
            problems.warning(
                problems.MTP_LAYER_UNVERIFIED,
                f"config.json declares {what}, but no safetensors index was found beside it, so whether the source holds them is known "
                "only after the download: they are not counted in the checkpoint size (they are carried over, unchanged, if present)",
                "nothing to do; plan against the model's folder (with model.safetensors.index.json) to have them counted",
            )
        ]
    if not mtp.in_source:
        return [
            problems.warning(
                problems.MTP_LAYER_MISSING,
                f"config.json declares {what}, but the source checkpoint holds none of their tensors: the compressed checkpoint cannot have "
                "them either, and vLLM's MTP speculative decoding will not be available for it",
                "use a checkpoint that ships the MTP layer if you need MTP speculative decoding",
            )
        ]
    return []
