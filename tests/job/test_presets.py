"""Presets resolved on the meta device, as the planner resolves them: the assignment, fallbacks, overrides,
refusals, and the recipe's targets hitting exactly the planned modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kompress_api.exit_codes import ExitCode
from kompress_api.v1alpha1 import Recipe

from kompress_job.errors import TargetsMatchNothing, UnsupportedArchitecture
from kompress_job.recipe import resolve
from kompress_job.recipe.patterns import matched_names
from kompress_testing.models import config_dir, meta_model

pytestmark = pytest.mark.unit

PRESETS = ["sparse24-w4a16-w8a8", "w4a16-w8a8", "w4a16", "fp8-dynamic", "fp8-block", "nvfp4a16", "mxfp4a16", "nvfp4"]


def expected_founding(name: str) -> str:
    """The founding recipe's intent, written out by hand for the tiny GLM4-MoE: what each module gets."""
    if name in ("lm_head", "model.layers.1.mlp.gate") or name.endswith("gate_proj"):
        return "untouched"
    if ".self_attn." in name or name.startswith("model.layers.0.mlp."):
        return "2:4 + int4"
    if ".experts." in name or ".shared_experts." in name:
        return "2:4 + int8 static"
    raise AssertionError(f"unexpected module {name}")


def test_founding_preset_assignment_module_by_module():
    resolved = resolve(Recipe(preset="sparse24-w4a16-w8a8"), meta_model("glm4-moe"))
    got = {}
    for name, a in resolved.assignment.items():
        if a.scheme is None and a.sparsity is None:
            got[name] = "untouched"
        else:
            bits = a.scheme.weights.bits
            acts = " static" if a.scheme.activations and not a.scheme.activations.dynamic else ""
            got[name] = f"{a.sparsity} + int{bits}{acts}"
    assert got == {name: expected_founding(name) for name in got}
    assert len(got) == 28  # 8 attention, 3 dense, 12 expert, 3 shared, router, lm_head
    groups = {g.name: g for g in resolved.groups}
    assert groups["w4a16-g128+sparse2:4"].scheme.weights.group_size == 128
    assert groups["w8a8-int8-static+sparse2:4"].scheme.activations.strategy == "tensor"
    assert resolved.servable is False


def test_non_multiple_width_falls_back_to_a_smaller_group_and_is_recorded():
    resolved = resolve(Recipe(preset="w4a16"), meta_model("glm4-moe"))
    assert [f.summary() for f in resolved.fallbacks] == [
        {"module": "model.layers.0.mlp.down_proj", "in_features": 320, "requested": "group 128", "applied": "group 64", "reason": "input width 320 is not a multiple of 128"}
    ]
    assert resolved.assignment["model.layers.0.mlp.down_proj"].scheme.weights.group_size == 64
    # qwen3-moe expert width 160 = 5 * 32; llama's 344 is not a multiple of 32: per-channel
    qwen = resolve(Recipe(preset="w4a16"), meta_model("qwen3-moe"))
    assert {f.applied for f in qwen.fallbacks} == {"group 32"} and len(qwen.fallbacks) == 8
    llama = resolve(Recipe(preset="w4a16"), meta_model("llama"))
    assert {(f.module, f.applied) for f in llama.fallbacks} == {(f"model.layers.{i}.mlp.down_proj", "channel") for i in (0, 1)}
    assert llama.assignment["model.layers.0.mlp.down_proj"].scheme.weights.strategy == "channel"


def test_group_size_override_and_ignore_override():
    resolved = resolve(
        Recipe(preset="w4a16", overrides={"groupSize": 64, "ignore": ["model.layers.0.mlp.down_proj", r"re:.*self_attn\.o_proj$"]}),
        meta_model("glm4-moe"),
    )
    assert resolved.fallbacks == []  # 320 is a multiple of 64
    assert resolved.assignment["model.layers.0.mlp.up_proj"].scheme.weights.group_size == 64
    kept = set(resolved.kept_modules)
    assert {"model.layers.0.mlp.down_proj", "model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"} <= kept


def test_override_entries_that_match_nothing_are_refused_naming_them():
    with pytest.raises(TargetsMatchNothing) as err:
        resolve(Recipe(preset="w4a16", overrides={"ignore": ["router", "gate_proj", "lm_head"]}), meta_model("glm4-moe"))
    assert "'router'" not in err.value.message and "router, gate_proj" in err.value.message
    assert err.value.exit is ExitCode.TARGETS_MATCH_NOTHING


@pytest.mark.parametrize("preset", ["sparse24-w4a16-w8a8", "w4a16-w8a8"])
def test_expert_presets_refuse_a_dense_model(preset):
    with pytest.raises(UnsupportedArchitecture) as err:
        resolve(Recipe(preset=preset), meta_model("llama"))
    assert err.value.exit.code == 12 and "no routed experts" in err.value.message


@pytest.mark.parametrize("model", ["glm4-moe", "qwen3-moe", "llama"])
@pytest.mark.parametrize("preset", PRESETS)
def test_recipe_targets_hit_exactly_the_planned_modules(model, preset):
    try:
        resolved = resolve(Recipe(preset=preset), meta_model(model))
    except UnsupportedArchitecture:
        assert model == "llama" and preset in PRESETS[:2]
        return
    names, classes = resolved.inventory.names, resolved.inventory.classes
    stage = resolved.recipe["kompress_stage"]
    for group_name, group in stage["quantization_modifiers"]["QuantizationModifier"]["config_groups"].items():
        planned = {n for n, a in resolved.assignment.items() if a.scheme is not None and a.scheme.name == group_name}
        assert set(matched_names(group["targets"], names, classes)) == planned, group_name
    pruned = {n for n, a in resolved.assignment.items() if a.sparsity}
    if pruned:
        assert set(matched_names(stage["sparsity_modifiers"]["SparseGPTModifier"]["targets"], names, classes)) == pruned
    json.dumps(resolved.summary())  # JSON-able for the manifest and the plan


def test_w4a16_w8a8_keeps_expert_projections_alike_for_vllm():
    resolved = resolve(Recipe(preset="w4a16-w8a8"), meta_model("glm4-moe"))
    experts = {n: a.scheme.name for n, a in resolved.assignment.items() if ".experts." in n}
    assert set(experts.values()) == {"w8a8-int8-dynamic"}  # gate, up and down alike
    assert resolved.assignment["model.layers.1.mlp.gate"].scheme is None
    assert resolved.servable is True


def test_awq_mappings_exist_only_where_the_model_has_them():
    """GLM4-MoE's dense first layer has no router: the MLP mapping must not require one there."""
    resolved = resolve(Recipe(preset="w4a16"), meta_model("glm4-moe"))
    mappings = resolved.recipe["kompress_stage"]["smoothing_modifiers"]["AWQModifier"]["mappings"]
    names = resolved.inventory.names
    for mapping in mappings:
        smooth = matched_names([mapping["smooth_layer"]], names)
        assert smooth, mapping
        for entry in mapping["balance_layers"]:
            assert matched_names([entry], names), entry
    dense = [m for m in mappings if matched_names([m["smooth_layer"]], names) == ["model.layers.0.post_attention_layernorm"]]
    assert len(dense) == 1 and not any("mlp\\.gate$" in b for b in dense[0]["balance_layers"])


def test_glm_4_5_air_resolves_on_meta_without_importing_llm_compressor():
    """The planner's path: GLM-4.5-Air's real config, meta device, every preset, no weights, no llm-compressor."""
    script = f"""
import json, sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
from kompress_api.v1alpha1 import Recipe
from kompress_job.recipe import resolve
config = AutoConfig.from_pretrained({str(config_dir("glm-4.5-air"))!r})
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config)
out = {{}}
for preset in {PRESETS!r}:
    out[preset] = resolve(Recipe(preset=preset), model).summary()
out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in ("llmcompressor", "compressed_tensors"))
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    founding = out["sparse24-w4a16-w8a8"]
    assert founding["experts"] == 128
    assert founding["roles"]["routed_experts"]["modules"] == 45 * 128 * 3
    assert founding["roles"]["gate_proj"] == {"modules": 45 * 128 + 45 + 1, "groups": {"16bit": 45 * 128 + 46}}
    # every gate_proj kept 16-bit: ~33.5 B of the 106 B parameters stay uncompressed
    assert 33.4e9 < founding["kept_16bit"]["parameters"] - 151552 * 4096 - 45 * 128 * 4096 < 33.6e9
    assert founding["fallbacks"] == [
        {"module": "model.layers.0.mlp.down_proj", "in_features": 10944, "requested": "group 128", "applied": "group 64", "reason": "input width 10944 is not a multiple of 128"}
    ]
    w4a16 = out["w4a16"]
    assert w4a16["kept_16bit"]["modules"] == 46  # 45 routers + lm_head
