"""The plan's byte arithmetic against compressed-tensors itself: for each scheme, the tensors a Linear layer becomes
when compressed-tensors 0.19 compresses it (names, dtypes, shapes) are the tensors the plan predicts. Also the
safetensors framing, quantities, and a tiny model's whole checkpoint layout."""

from __future__ import annotations

import pytest

from kompress_job.planning.checkpoint import Tensor, compression_format, header_bytes, module_tensors
from kompress_job.planning.plan import parse_quantity
from kompress_job.recipe.schemes import FP8_BLOCK, FP8_DYNAMIC, MXFP4A16, NVFP4, NVFP4A16, W8A8_DYNAMIC, W8A8_STATIC, QuantArgs, Scheme, w4a16

pytestmark = pytest.mark.unit

SCHEMES = {
    "w4a16 group 128": (w4a16(128), 256),
    "w4a16 group 64, input 320 (a fallback)": (w4a16(64), 320),
    "w4a16 per channel": (w4a16(128).with_group_size(None), 344),
    "w4a16 asymmetric": (Scheme("w4a16-asym", QuantArgs(4, "int", "group", False, 64)), 320),
    "w8a16 (8-bit weight-only, packed)": (Scheme("w8a16", QuantArgs(8, "int", "channel", True)), 256),
    "w8a8 int8 static": (W8A8_STATIC, 256),
    "w8a8 int8 dynamic": (W8A8_DYNAMIC, 256),
    "w8a8 int8 static asymmetric": (Scheme("w8a8-asym", QuantArgs(8, "int", "channel", False), QuantArgs(8, "int", "tensor", False)), 256),
    "w4a8 (int4 weights with int8 activations: int-quantized)": (Scheme("w4a8", QuantArgs(4, "int", "group", True, 128), QuantArgs(8, "int", "token", True, dynamic=True)), 256),
    "fp8 dynamic": (FP8_DYNAMIC, 256),
    "fp8 static": (Scheme("fp8-static", QuantArgs(8, "float", "channel", True), QuantArgs(8, "float", "tensor", True)), 256),
    "fp8 weight-only": (Scheme("fp8-w", QuantArgs(8, "float", "channel", True)), 256),
    "fp8 block 128x128 (fp8-block)": (FP8_BLOCK, 256),
    "nvfp4 weight-only (nvfp4a16)": (NVFP4A16, 256),
    "nvfp4 w4a4 (nvfp4)": (NVFP4, 256),
    "mxfp4 weight-only (mxfp4a16)": (MXFP4A16, 256),
}
OUT = 128
DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "int32": "I32", "int64": "I64", "int8": "I8", "float8_e4m3fn": "F8_E4M3", "uint8": "U8"}


def compressed_by_compressed_tensors(scheme: Scheme, in_features: int) -> set[tuple[str, str, tuple[int, ...]]]:
    """What compressed-tensors' ModelCompressor leaves of a Linear(in_features, OUT) quantized with `scheme`."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, apply_quantization_config

    model = torch.nn.Sequential(torch.nn.Linear(in_features, OUT, bias=False))
    group = scheme.to_ct(["Linear"])
    config = QuantizationConfig(config_groups={"g": QuantizationScheme(**group)})
    apply_quantization_config(model, config)
    with torch.no_grad():  # qparams are allocated uninitialized; give them harmless values
        for name, tensor in model.state_dict().items():
            if name.endswith("scale"):
                tensor.fill_(0.01)
            elif name.endswith("zero_point"):
                tensor.zero_()
    ModelCompressor.from_pretrained_model(model).compress_model(model)
    return {(name, DTYPE_NAMES[str(t.dtype).removeprefix("torch.")], tuple(t.shape)) for name, t in model.state_dict().items()}


@pytest.mark.parametrize("label", list(SCHEMES))
def test_module_tensors_match_compressed_tensors(label):
    scheme, in_features = SCHEMES[label]
    predicted = {(t.name, t.dtype, t.shape) for t in module_tensors("0", OUT, in_features, scheme, "F32")}
    assert predicted == compressed_by_compressed_tensors(scheme, in_features)


def test_formats_follow_compressed_tensors_priority():
    assert compression_format(w4a16()) == "pack-quantized"
    assert compression_format(W8A8_STATIC) == compression_format(W8A8_DYNAMIC) == "int-quantized"
    assert compression_format(FP8_DYNAMIC) == "float-quantized"
    assert compression_format(None) == "dense"


def test_int4_is_half_a_byte_per_weight_plus_scales():
    # 4096 x 4096 in groups of 128, bf16 scales: 8 MiB packed + 4096 * 32 scales * 2 bytes + the 16-byte shape
    size = sum(t.nbytes for t in module_tensors("q", 4096, 4096, w4a16(128), "BF16"))
    assert size == 4096 * 4096 // 2 + 4096 * 32 * 2 + 16


def test_safetensors_header_is_counted_as_written(tmp_path):
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.layers.{i}.mlp.experts.{j}.down_proj.weight": torch.zeros(8, 4) for i in range(3) for j in range(40)}
    save_file(tensors, str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    written = (tmp_path / "x.safetensors").stat().st_size
    predicted = [Tensor(name, "F32", (8, 4)) for name in tensors]
    total = sum(t.nbytes for t in predicted)
    assert abs(total + header_bytes(predicted, 1, total) - written) <= 16


def test_kubernetes_quantities():
    assert parse_quantity("256Gi") == 256 * 2**30
    assert parse_quantity("500G") == 500 * 10**9
    assert parse_quantity("1e12") == 10**12
    assert parse_quantity(1024) == 1024
    with pytest.raises(ValueError):
        parse_quantity("lots")
