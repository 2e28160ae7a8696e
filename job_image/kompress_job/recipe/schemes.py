"""Quantization schemes as plain data: what a config group does to weights and activations.

Owns: the few schemes the presets use, in a form that needs no compressed-tensors import (the planner
resolves recipes without paying ~5 s to import it), their conversion to compressed-tensors'
`QuantizationScheme` fields (as a dict, so a recipe can be written as YAML), and the reverse, to
summarise any scheme a custom recipe declares.
Must not: import torch, llm-compressor or compressed-tensors at module import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class QuantArgs:
    """One tensor's quantization: compressed-tensors' QuantizationArgs, the fields that matter here."""

    bits: int
    type: str  # "int" | "float"
    strategy: str  # "group" | "channel" | "tensor" | "token" | "tensor_group" | "block"
    symmetric: bool = True
    group_size: int | None = None
    # True: scales computed at run time; "local": per-group scales at run time under a global scale that is
    # calibrated (NVFP4 activations); False: static, calibrated.
    dynamic: bool | str = False
    block_structure: tuple[int, int] | None = None  # strategy "block": rows x columns of one scale
    scale_dtype: str | None = None  # None: the checkpoint's dtype; FP4 formats store FP8 (NV) or E8M0 as uint8 (MX)
    observer: str | None = None  # None: compressed-tensors' default

    def to_ct(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_bits": self.bits, "type": self.type, "strategy": self.strategy, "symmetric": self.symmetric, "dynamic": self.dynamic}
        if self.group_size is not None:
            out["group_size"] = self.group_size
        if self.block_structure is not None:
            out["block_structure"] = list(self.block_structure)
        if self.scale_dtype is not None:
            out["scale_dtype"] = self.scale_dtype
            out["zp_dtype"] = self.scale_dtype
        if self.observer is not None:
            out["observer"] = self.observer
        return out

    @property
    def fp4(self) -> bool:
        """A 4-bit float format (NVFP4, MXFP4): its group size is fixed by the format, not a knob."""
        return self.type == "float" and self.bits == 4

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scheme:
    """Weights and (optional) input activations of a config group."""

    name: str
    weights: QuantArgs
    activations: QuantArgs | None = None

    def to_ct(self, targets: list[str]) -> dict[str, Any]:
        """compressed-tensors QuantizationScheme fields (a config group of QuantizationModifier)."""
        group: dict[str, Any] = {"targets": list(targets), "weights": self.weights.to_ct()}
        if self.activations is not None:
            group["input_activations"] = self.activations.to_ct()
        return group

    def with_group_size(self, group_size: int | None) -> "Scheme":
        """The same scheme with another weight group size; None means per-channel."""
        if group_size is None:
            return replace(self, name=f"{self.name}-channel", weights=replace(self.weights, strategy="channel", group_size=None))
        return replace(self, name=f"{self.name.split('-g')[0]}-g{group_size}", weights=replace(self.weights, strategy="group", group_size=group_size))

    @property
    def needs_calibration(self) -> bool:
        """Static activation scales (and NVFP4's global activation scale under its "local" dynamic groups) are
        learned from data; everything else is data-free (computed from the weights alone)."""
        return self.activations is not None and self.activations.dynamic is not True

    def summary(self) -> dict[str, Any]:
        return {
            "scheme": self.name,
            "weights": self.weights.summary(),
            "activations": self.activations.summary() if self.activations else None,
        }


def w4a16(group_size: int = 128) -> Scheme:
    """INT4 symmetric weights in groups along the input; 16-bit activations (vLLM: Marlin, dense and MoE)."""
    return Scheme(f"w4a16-g{group_size}", QuantArgs(4, "int", "group", True, group_size))


# INT8 channel weights with INT8 activations scaled per tensor from calibration data. vLLM runs it on
# Linear layers, not on fused MoE experts (which need dynamic per-token activations).
W8A8_STATIC = Scheme("w8a8-int8-static", QuantArgs(8, "int", "channel", True), QuantArgs(8, "int", "tensor", True, dynamic=False))
# INT8 channel weights, INT8 activations quantized per token at run time: what vLLM's fused MoE loads.
W8A8_DYNAMIC = Scheme("w8a8-int8-dynamic", QuantArgs(8, "int", "channel", True), QuantArgs(8, "int", "token", True, dynamic=True))
# compressed-tensors' FP8_DYNAMIC preset: FP8 E4M3 channel weights, FP8 per-token dynamic activations.
FP8_DYNAMIC = Scheme("fp8-dynamic", QuantArgs(8, "float", "channel", True), QuantArgs(8, "float", "token", True, dynamic=True))
# compressed-tensors 0.19's FP8_BLOCK (DeepSeek-V3 style): FP8 weights with one scale per 128x128 block, FP8
# activations scaled per group of 128 at run time.
FP8_BLOCK = Scheme(
    "fp8-block",
    QuantArgs(8, "float", "block", True, block_structure=(128, 128)),
    QuantArgs(8, "float", "group", True, group_size=128, dynamic=True),
)
# NVFP4A16: FP4 (E2M1) weights in groups of 16 with FP8 (E4M3) group scales under one FP32 global scale per
# tensor (strategy tensor_group); 16-bit activations.
_NVFP4_WEIGHTS = QuantArgs(4, "float", "tensor_group", True, group_size=16, scale_dtype="float8_e4m3fn")
NVFP4A16 = Scheme("nvfp4a16", _NVFP4_WEIGHTS)
# NVFP4 (W4A4): the same weights; activations FP4 in groups of 16, their group scales at run time ("local")
# under a global scale that calibration sets (observer static_minmax), as compressed-tensors' preset does.
NVFP4 = Scheme("nvfp4", _NVFP4_WEIGHTS, QuantArgs(4, "float", "tensor_group", True, group_size=16, dynamic="local", scale_dtype="float8_e4m3fn", observer="static_minmax"))
# MXFP4A16: FP4 weights in groups of 32 with power-of-two (E8M0, stored as uint8) scales; 16-bit activations.
MXFP4A16 = Scheme("mxfp4a16", QuantArgs(4, "float", "group", True, group_size=32, scale_dtype="uint8"))


def args_from_ct(args: Any) -> QuantArgs | None:
    """A compressed-tensors QuantizationArgs (object or dict) as QuantArgs."""
    if args is None:
        return None
    get = args.get if isinstance(args, dict) else (lambda k, d=None: getattr(args, k, d))

    def plain(value: Any) -> Any:
        return getattr(value, "value", value)

    strategy = plain(get("strategy")) or ("group" if get("group_size") else "tensor")
    dynamic = plain(get("dynamic", False))
    block = get("block_structure")
    return QuantArgs(
        bits=int(get("num_bits", 8)),
        type=str(plain(get("type", "int"))),
        strategy=str(strategy),
        symmetric=bool(get("symmetric", True)),
        group_size=get("group_size"),
        dynamic="local" if str(dynamic).lower() == "local" else dynamic not in (False, None, "false"),
        block_structure=tuple(int(b) for b in block) if block else None,
    )


def scheme_from_ct(name: str, scheme: Any) -> Scheme | None:
    """A compressed-tensors QuantizationScheme (object or dict) as Scheme; None when it quantizes no weights."""
    get = scheme.get if isinstance(scheme, dict) else (lambda k, d=None: getattr(scheme, k, d))
    weights = args_from_ct(get("weights"))
    if weights is None:
        return None
    return Scheme(name, weights, args_from_ct(get("input_activations")))
