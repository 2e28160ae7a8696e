"""Module roles come from the model's structure, for GLM4-MoE, Qwen3-MoE and Llama, on the meta device."""

from __future__ import annotations

import pytest

from _worker_helpers import tiny_models  # noqa: F401 - fixture

from kompress_job.recipe.inventory import Role, build_inventory
from kompress_testing.models import meta_model

pytestmark = pytest.mark.unit


def roles(inventory) -> dict[str, str]:
    return {m.name: m.role.value for m in inventory.modules}


def test_glm4_moe_roles_follow_structure_not_names():
    inv = build_inventory(meta_model("glm4-moe"))
    r = roles(inv)
    # layer 0 is dense (first_k_dense_replace=1): its MLP is a dense MLP, not an expert
    assert r["model.layers.0.mlp.gate_proj"] == "dense_mlp"
    assert r["model.layers.0.mlp.down_proj"] == "dense_mlp"
    # the router is Glm4MoeTopkRouter (not an nn.Linear, and not named "router")
    router = inv.by_name()["model.layers.1.mlp.gate"]
    assert router.role is Role.ROUTER and not router.is_linear and (router.out_features, router.in_features) == (4, 128)
    # "shared_experts" contains "experts" but is not a routed expert
    assert r["model.layers.1.mlp.shared_experts.up_proj"] == "shared_experts"
    assert r["lm_head"] == "lm_head"
    assert all(r[f"model.layers.{i}.self_attn.{p}_proj"] == "attention" for i in (0, 1) for p in "qkvo")
    assert inv.num_experts == 4 and inv.is_moe


def test_fused_experts_are_expanded_into_llm_compressors_per_expert_linears_on_meta():
    inv = build_inventory(meta_model("glm4-moe"))
    experts = [m for m in inv.modules if m.role is Role.ROUTED_EXPERTS]
    assert len(experts) == 4 * 3
    assert inv.fused_experts == ["model.layers.1.mlp.experts"]
    e2 = {m.leaf: m for m in experts if m.expert == 2}
    assert {leaf: (m.out_features, m.in_features) for leaf, m in e2.items()} == {"up_proj": (128, 128), "gate_proj": (128, 128), "down_proj": (128, 128)}
    assert e2["gate_proj"].is_gate_proj and not e2["up_proj"].is_gate_proj
    # the order llm-compressor's LinearExperts2D registers them (matters for AWQ's grouping)
    i = inv.names.index("model.layers.1.mlp.experts.0.up_proj")
    assert inv.names[i : i + 3] == [f"model.layers.1.mlp.experts.0.{p}" for p in ("up_proj", "gate_proj", "down_proj")]


def test_qwen3_moe_every_layer_is_moe_without_shared_experts():
    inv = build_inventory(meta_model("qwen3-moe"))
    counts = inv.role_counts()
    assert counts == {"attention": 8, "routed_experts": 2 * 4 * 3, "router": 2, "lm_head": 1}
    assert {(m.out_features, m.in_features) for m in inv.modules if m.role is Role.ROUTED_EXPERTS and m.leaf == "down_proj"} == {(128, 160)}


def test_llama_is_dense():
    inv = build_inventory(meta_model("llama"))
    assert not inv.is_moe
    assert inv.role_counts() == {"attention": 8, "dense_mlp": 6, "lm_head": 1}


def test_experts_override_replaces_detection():
    inv = build_inventory(meta_model("llama"), experts_override=r"re:.*mlp\.(up|down)_proj$")
    assert {m.name for m in inv.modules if m.role is Role.ROUTED_EXPERTS} == {f"model.layers.{i}.mlp.{p}_proj" for i in (0, 1) for p in ("up", "down")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["glm4-moe", "qwen3-moe"])
def test_virtual_expansion_equals_llm_compressors_linearization(name, tiny_models):
    """The planner's meta-device inventory names exactly the modules the worker's loaded model has."""
    from kompress_job.model import modelio

    planned = build_inventory(meta_model(name))
    loaded = build_inventory(modelio.load_causal_lm(tiny_models[name], dtype="float32"))
    assert loaded.names == planned.names
    assert [(m.name, m.role, m.in_features, m.out_features) for m in loaded.modules] == [
        (m.name, m.role, m.in_features, m.out_features) for m in planned.modules
    ]
