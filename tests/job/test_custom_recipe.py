"""spec.recipe.custom: parsed by llm-compressor's own classes, refused before compression when it would
silently do something else, and run as given when it is right."""

from __future__ import annotations

import pytest
from _worker_helpers import make_ctx, make_job, run_stages, tiny_models
from kompress_api.exit_codes import ExitCode
from kompress_api.v1alpha1 import Recipe

from kompress_job.errors import InvalidRecipe, OverlappingGroups, TargetsMatchNothing
from kompress_job.recipe import resolve
from kompress_testing.models import meta_model

# The founding tutorial's recipe, with its parse errors fixed (valid field names), but its strings kept:
# exact-name ignores that match nothing, a negative-lookahead "Linear" regex that matches no name.
TUTORIAL = r"""
quant_stage:
  quant_modifiers:
    SparseGPTModifier:
      sparsity: 0.5
      mask_structure: "2:4"
      targets: ["Linear"]
      ignore: ["lm_head", "router", "gate_proj"]
    QuantizationModifier:
      ignore: ["lm_head", "router", "gate_proj"]
      config_groups:
        attention_dense:
          targets: ['re:(?!.*experts).*Linear']
          weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 128}
        experts:
          targets: ['re:.*experts\..*']
          weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}
          input_activations: {num_bits: 8, type: int, symmetric: true, strategy: tensor, dynamic: false}
"""

# The tutorial's modifier as literally written: fields AWQModifier does not have.
TUTORIAL_AWQ = """
quant_stage:
  quant_modifiers:
    AWQModifier: {bits: 4, symmetric: true, group_size: 128}
    QuantizationModifier: {scheme: W4A16, targets: [Linear], ignore: [lm_head]}
"""

OVERLAPPING = r"""
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: [lm_head]
      config_groups:
        everything: {targets: [Linear], weights: {num_bits: 8, type: int, strategy: channel, symmetric: true}}
        experts: {targets: ['re:.*mlp\.experts\.'], weights: {num_bits: 4, type: int, strategy: group, group_size: 32, symmetric: true}}
"""

# Right for GLM4-MoE: int8 W8A8 dynamic on every Linear except lm_head, 2:4 on the experts' down_proj.
GOOD = r"""
quant_stage:
  sparsity_modifiers:
    SparseGPTModifier:
      sparsity: 0.5
      mask_structure: "2:4"
      targets: ['re:.*experts\.\d+\.down_proj$']
  quant_modifiers:
    QuantizationModifier:
      scheme: W8A8
      targets: [Linear]
      ignore: ['re:.*lm_head']
"""


@pytest.mark.unit
def test_tutorial_recipe_is_refused_naming_every_entry_that_matches_nothing():
    with pytest.raises(TargetsMatchNothing) as err:
        resolve(Recipe(custom=TUTORIAL), meta_model("glm4-moe"))
    message = err.value.message
    for entry in (
        "SparseGPTModifier.ignore: 'lm_head'",  # SparseGPT names Linear targets 'lm_head.': exact 'lm_head' never matches
        "SparseGPTModifier.ignore: 'router'",
        "SparseGPTModifier.ignore: 'gate_proj'",
        "QuantizationModifier.ignore: 'router'",
        "QuantizationModifier.ignore: 'gate_proj'",
        "QuantizationModifier.config_groups.attention_dense.targets: 're:(?!.*experts).*Linear'",
    ):
        assert entry in message
    assert "QuantizationModifier.ignore: 'lm_head'" not in message  # that one does match
    assert err.value.exit is ExitCode.TARGETS_MATCH_NOTHING


@pytest.mark.unit
def test_unknown_fields_are_refused_by_llm_compressors_own_classes():
    with pytest.raises(InvalidRecipe) as err:
        resolve(Recipe(custom=TUTORIAL_AWQ), meta_model("glm4-moe"))
    assert "AWQModifier" in err.value.message and "Extra inputs are not permitted" in err.value.message
    assert err.value.exit.code == 21


@pytest.mark.unit
def test_overlapping_config_groups_are_refused():
    with pytest.raises(OverlappingGroups) as err:
        resolve(Recipe(custom=OVERLAPPING), meta_model("glm4-moe"))
    assert "everything and experts" in err.value.message and "model.layers.1.mlp.experts.0.down_proj" in err.value.message
    assert err.value.exit.code == 15


@pytest.mark.unit
def test_llm_compressors_default_awq_mapping_for_glm4_moe_is_refused_before_it_crashes():
    custom = """
quant_stage:
  quant_modifiers:
    AWQModifier: {}
    QuantizationModifier: {scheme: W4A16, targets: [Linear], ignore: [lm_head, 'model.layers.0.mlp.down_proj']}
"""
    with pytest.raises(InvalidRecipe) as err:
        resolve(Recipe(custom=custom), meta_model("glm4-moe"))
    assert "default mappings for Glm4MoeForCausalLM" in err.value.message
    assert "model.layers.0.post_attention_layernorm, model.layers.1.post_attention_layernorm" in err.value.message


@pytest.mark.unit
def test_group_size_that_does_not_divide_a_width_is_refused_before_running():
    custom = """
quant_stage:
  quant_modifiers:
    QuantizationModifier: {scheme: W4A16, targets: [Linear], ignore: [lm_head]}
"""
    with pytest.raises(InvalidRecipe) as err:
        resolve(Recipe(custom=custom), meta_model("glm4-moe"))
    assert "model.layers.0.mlp.down_proj (320)" in err.value.message


@pytest.mark.slow
def test_refusal_happens_before_compression(tiny_models, tmp_path):
    ctx = make_ctx(make_job(tiny_models["glm4-moe"], preset=None, custom=TUTORIAL), tiny_models["glm4-moe"], tmp_path)
    # load-model resolves the recipe on the model's structure (to choose its path) before reading any weight
    with pytest.raises(TargetsMatchNothing):
        run_stages(ctx, "load-model")
    assert ctx.recipe is None and ctx.model is None and ctx.checkpoint_dir is None


@pytest.mark.slow
def test_a_correct_custom_recipe_runs_as_given_and_verifies(tiny_models, tmp_path):
    ctx = make_ctx(make_job(tiny_models["glm4-moe"], preset=None, custom=GOOD), tiny_models["glm4-moe"], tmp_path)
    run_stages(ctx, "load-model", "compress", "save", "verify")
    assert ctx.verification["ok"], ctx.verification["failures"]
    groups = {g["name"]: g for g in ctx.recipe.summary()["groups"]}
    assert groups["group_0+sparse2:4"]["modules"] == 4  # the 4 experts' down_proj
    assert groups["group_0"]["weights"]["bits"] == 8 and groups["group_0"]["activations"]["dynamic"] is True
    assert groups["16bit"]["roles"] == {"lm_head": 1, "router": 1}


BROKEN_REGEX = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      config_groups:
        int8: {targets: ["re:.*mlp[.down"], weights: {num_bits: 8, type: int, strategy: channel, symmetric: true}}
      ignore: [lm_head, "re:(.*gate"]
"""


@pytest.mark.unit
def test_a_custom_recipe_with_a_broken_regex_is_an_invalid_recipe_naming_each_entry(tmp_path):
    from kompress_job.planning.plan import make_plan
    from kompress_testing.models import build_config

    plan = make_plan(make_job(tmp_path, preset=None, custom=BROKEN_REGEX), build_config("glm4-moe").to_dict())
    (problem,) = plan.errors
    assert problem.code == "InvalidRecipe"
    assert "config_groups.int8.targets[0]: 're:.*mlp[.down' is not a valid regex: unterminated character set" in problem.message
    assert "ignore[1]: 're:(.*gate' is not a valid regex: missing )" in problem.message
