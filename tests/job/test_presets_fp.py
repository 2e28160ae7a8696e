"""The FP8-block and FP4 presets, resolved on the meta device: their schemes are compressed-tensors 0.19's presets
field for field, the fallbacks their formats force, and which path (data-free or loaded) each takes."""

from __future__ import annotations

import pytest
from kompress_api.v1alpha1 import DATA_FREE_PRESETS, Preset, Recipe, RecipePath
from pydantic import ValidationError

from kompress_job.model import data_free
from kompress_job.errors import InvalidSpec
from kompress_job.recipe import resolve
from kompress_testing.models import meta_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("ours", "theirs"), [("fp8-block", "FP8_BLOCK"), ("nvfp4a16", "NVFP4A16"), ("mxfp4a16", "MXFP4A16"), ("nvfp4", "NVFP4"), ("fp8-dynamic", "FP8_DYNAMIC")])
def test_schemes_are_compressed_tensors_presets(ours, theirs):
    from compressed_tensors.quantization import QuantizationScheme, preset_name_to_scheme

    resolved = resolve(Recipe(preset=ours), meta_model("glm4-moe"))
    groups = resolved.recipe["kompress_stage"]["quantization_modifiers"]["QuantizationModifier"]["config_groups"]
    expected = preset_name_to_scheme(theirs, ["Linear"])
    got = QuantizationScheme(**{**groups[ours], "targets": ["Linear"]})
    assert got.weights == expected.weights
    assert got.input_activations == expected.input_activations


def test_fp8_block_falls_back_to_fp8_channels_for_partial_blocks_and_their_fused_partners():
    resolved = resolve(Recipe(preset="fp8-block"), meta_model("glm4-moe"))
    scheme = {name: a.scheme.name for name, a in resolved.assignment.items() if a.scheme is not None}
    assert scheme["model.layers.1.mlp.experts.0.gate_proj"] == "fp8-block"  # 128 x 128: one whole block
    assert scheme["model.layers.1.self_attn.o_proj"] == "fp8-block"
    # k/v have 64 rows (half a block); q is loaded with them as one qkv_proj in vLLM, so it follows them
    assert {scheme[f"model.layers.1.self_attn.{p}_proj"] for p in "qkv"} == {"fp8-dynamic"}
    assert scheme["model.layers.0.mlp.down_proj"] == "fp8-dynamic"  # 320 columns: 2.5 blocks
    reasons = {f.module: f.reason for f in resolved.fallbacks}
    assert "not made of whole 128x128 blocks" in reasons["model.layers.1.self_attn.k_proj"]
    assert "fused with" in reasons["model.layers.1.self_attn.q_proj"]
    assert resolved.assignment["lm_head"].scheme is None and resolved.assignment["model.layers.1.mlp.gate"].scheme is None


@pytest.mark.parametrize("preset", ["nvfp4a16", "mxfp4a16", "nvfp4"])
def test_fp4_widths_the_format_group_does_not_divide_stay_16_bit(preset):
    """Llama's tiny down_proj is 344 wide: not a multiple of 16 (NV) nor 32 (MX). No smaller group exists in
    the format, so it stays 16-bit, recorded; groupSize does not change an FP4 format's group."""
    resolved = resolve(Recipe(preset=preset, overrides={"groupSize": 64}), meta_model("llama"))
    assert resolved.assignment["model.layers.0.mlp.down_proj"].scheme is None
    assert resolved.assignment["model.layers.0.mlp.up_proj"].scheme.weights.group_size == (32 if preset.startswith("mx") else 16)
    fallback = next(f for f in resolved.fallbacks if f.module == "model.layers.0.mlp.down_proj")
    assert fallback.applied == "16-bit" and "344" in fallback.reason


def test_data_free_presets_are_exactly_those_that_learn_nothing():
    """The API's list (for the CRD's rule) and the worker's judgement of the resolved recipe agree."""
    model = meta_model("glm4-moe")
    free = {p.value for p in Preset if data_free.data_free_reason(resolve(Recipe(preset=p.value), model)) is None}
    assert free == set(DATA_FREE_PRESETS)
    assert resolve(Recipe(preset="nvfp4"), model).needs_calibration  # its global activation scales


def test_path_auto_takes_data_free_when_it_can_and_explicit_data_free_is_refused_otherwise():
    model = meta_model("glm4-moe")
    assert data_free.choose_path(RecipePath.AUTO, resolve(Recipe(preset="fp8-block"), model)) == "data-free"
    assert data_free.choose_path(RecipePath.AUTO, resolve(Recipe(preset="nvfp4"), model)) == "loaded"
    assert data_free.choose_path(RecipePath.LOADED, resolve(Recipe(preset="fp8-dynamic"), model)) == "loaded"
    with pytest.raises(ValidationError, match="spec.recipe.path data-free needs a preset"):
        Recipe(preset="nvfp4", path="data-free")
    custom = "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      config_groups:\n        g:\n          targets: ['re:.*self_attn\\.o_proj$']\n          weights: {num_bits: 8, type: int, strategy: channel, symmetric: true}\n          input_activations: {num_bits: 8, type: int, strategy: tensor, symmetric: true, dynamic: false}\n"
    with pytest.raises(InvalidSpec, match="calibration data"):
        data_free.choose_path(RecipePath.DATA_FREE, resolve(Recipe(custom=custom, path="data-free"), model))


def test_data_free_config_keeps_the_kept_modules_out_and_takes_more():
    resolved = resolve(Recipe(preset="nvfp4a16"), meta_model("glm4-moe"))
    config = data_free.quantization_config(resolved, extra_ignore=["re:model\\.layers\\.2\\..*"])
    assert config["ignore"][-1] == "re:model\\.layers\\.2\\..*"
    from kompress_job.recipe.patterns import matched_names

    ignored = set(matched_names(config["ignore"][:-1], resolved.inventory.names))
    assert ignored == {"lm_head", "model.layers.1.mlp.gate"}
    assert list(config["config_groups"]) == ["nvfp4a16"]
