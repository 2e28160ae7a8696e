"""Which modifier learns from calibration data is one definition (kompress_job.recipe.resolved), and it is
llm-compressor 0.14's own: its classes' `requires_calibration_data` (AutoRound's included, which the plan used to
leave out while the compress stage's progress counted it), and QuantizationModifier's own decision per scheme. The
compress stage's progress, the plan's time and the data-free path read it; the role table is one too."""

from __future__ import annotations

import pytest
from kompress_api.v1alpha1 import Preset, Recipe

from kompress_job.planning import footprint
from kompress_job.recipe import resolve
from kompress_job.recipe.resolved import CALIBRATING_MODIFIERS, WEIGHTS_ONLY, modifier_pass, quantization_calibrates
from kompress_testing.models import meta_model

pytestmark = pytest.mark.unit

AUTOROUND = """
quant_stage:
  quant_modifiers:
    AutoRoundModifier:
      iters: 10
      ignore: [lm_head, 're:.*mlp\\.gate$']
      config_groups:
        group_0:
          targets: [Linear]
          weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 32}
"""

# QuantizationModifier arguments, each a different reason to learn from data or not.
_INT8 = {"num_bits": 8, "type": "int", "symmetric": True}
QUANTIZATION_ARGS = {
    "weights only": {"config_groups": {"g": {"targets": ["Linear"], "weights": {**_INT8, "strategy": "channel"}}}},
    "dynamic activations": {"config_groups": {"g": {"targets": ["Linear"], "weights": {**_INT8, "strategy": "channel"}, "input_activations": {**_INT8, "strategy": "token", "dynamic": True}}}},
    "static activations": {"config_groups": {"g": {"targets": ["Linear"], "weights": {**_INT8, "strategy": "channel"}, "input_activations": {**_INT8, "strategy": "tensor", "dynamic": False}}}},
    "static output activations": {"config_groups": {"g": {"targets": ["Linear"], "weights": {**_INT8, "strategy": "channel"}, "output_activations": {**_INT8, "strategy": "tensor", "dynamic": False}}}},
    "an observer that needs activations": {"config_groups": {"g": {"targets": ["Linear"], "weights": {**_INT8, "strategy": "channel", "observer": "imatrix_mse"}}}},
    "a KV-cache scheme": {"kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}, "scheme": "FP8_DYNAMIC", "targets": ["Linear"]},
    "preset W4A16": {"scheme": "W4A16", "targets": ["Linear"]},
    "preset FP8 (static activations)": {"scheme": "FP8", "targets": ["Linear"]},
    "preset FP8_DYNAMIC": {"scheme": "FP8_DYNAMIC", "targets": ["Linear"]},
    "preset NVFP4 (local activations under a calibrated global scale)": {"scheme": "NVFP4", "targets": ["Linear"]},
    "presets by name": {"scheme": {"W8A16": ["re:.*mlp.*"], "FP8_DYNAMIC": ["re:.*self_attn.*"]}},
}


def _llm_compressor_modifiers():
    from llmcompressor.modifiers.factory import ModifierFactory

    ModifierFactory.refresh()
    return dict(ModifierFactory._main_registry)


def test_the_calibrating_modifiers_are_exactly_those_llm_compressor_gives_a_pass_over_the_data():
    registry = _llm_compressor_modifiers()
    assert {"AutoRoundModifier", "GPTQModifier", "AWQModifier", "QuantizationModifier"} <= set(registry)
    calibrating = {name for name, cls in registry.items() if cls.model_fields["requires_calibration_data"].default}
    assert calibrating == set(CALIBRATING_MODIFIERS)
    assert "AutoRoundModifier" in calibrating and "QuantizationModifier" not in calibrating


@pytest.mark.parametrize("args", QUANTIZATION_ARGS.values(), ids=QUANTIZATION_ARGS.keys())
def test_quantization_learns_from_data_exactly_when_llm_compressor_says(args):
    from llmcompressor.modifiers.quantization import QuantizationModifier

    assert quantization_calibrates(args) is QuantizationModifier(**args).requires_calibration_data


@pytest.mark.parametrize("preset", [p.value for p in Preset])
def test_every_presets_passes_are_the_ones_llm_compressor_runs(preset):
    model = meta_model("glm4-moe" if preset.startswith(("sparse24", "w4a16-w8a8")) else "llama")
    resolved = resolve(Recipe(preset=preset), model)
    learns = [modifier.requires_calibration_data for modifier in resolved.modifiers()]
    assert [modifier_pass(kind, args) not in (None, WEIGHTS_ONLY) for kind, args in resolved.recipe_modifiers()] == learns
    assert resolved.calibration_passes == sum(learns)
    assert resolved.needs_calibration is (any(learns) or any(a.scheme is not None and a.scheme.needs_calibration for a in resolved.assignment.values()))


def test_an_autoround_recipe_is_one_calibration_pass_for_the_progress_and_the_plan():
    resolved = resolve(Recipe(custom=AUTOROUND), meta_model("glm4-moe"))
    assert resolved.passes == ["AutoRoundModifier"]
    assert resolved.calibration_passes == 1 and resolved.needs_calibration


def test_the_plan_has_a_time_for_every_kind_of_pass():
    assert set(footprint.PASS_SECONDS) == set(CALIBRATING_MODIFIERS.values()) | {WEIGHTS_ONLY}


def test_the_records_role_table_is_the_plans_without_parameters():
    resolved = resolve(Recipe(preset="w4a16-w8a8"), meta_model("glm4-moe"))
    table = resolved.role_table()
    assert table["gate_proj"]["modules"] > 0 and table["routed_experts"]["parameters"] > 0
    assert resolved.summary()["roles"] == {role: {"modules": row["modules"], "groups": row["groups"]} for role, row in table.items()}
    counted = {role: sum(g.roles.get(role, 0) for g in resolved.groups) for role in table}
    assert counted == {role: row["modules"] for role, row in table.items()}
