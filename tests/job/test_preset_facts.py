"""What a preset is has one home, its PresetRule (kompress_job.recipe.presets): docs/presets.md's table is rendered
from the rules (`make docs`), and the API's description of spec.recipe.preset (the API cannot import the worker)
is checked against them here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kompress_api.v1alpha1 import DATA_FREE_PRESETS, Preset, Recipe

from kompress_job.recipe import presets, presets_doc
from kompress_job.recipe.schemes import W8A8_DYNAMIC, W8A8_STATIC

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "presets.md"


def test_the_committed_presets_page_is_what_the_rules_render():
    committed = PAGE.read_text(encoding="utf-8")
    assert committed == presets_doc.rewrite(committed), (
        "docs/presets.md's table of the presets drifted from PresetRule (job_image/kompress_job/recipe/presets.py): run `make docs` and commit the result"
    )


def test_a_rule_changed_without_regenerating_the_page_is_caught(monkeypatch):
    # Proof that the check above can fail: the table is rendered from the rules at call time.
    committed = PAGE.read_text(encoding="utf-8")
    monkeypatch.setitem(presets._ABOUT, Preset.W4A16, presets._ABOUT[Preset.W4A16]._replace(vllm="yes, on Tuesdays"))
    assert committed != presets_doc.rewrite(committed)


def test_only_the_part_between_the_markers_is_rewritten():
    page = f"# hand-written\n\n{presets_doc.BEGIN}\n| stale |\n{presets_doc.END}\n\nhand-written too\n"
    assert presets_doc.rewrite(page) == f"# hand-written\n\n{presets_doc.BEGIN}\n{presets_doc.table()}\n{presets_doc.END}\n\nhand-written too\n"
    with pytest.raises(ValueError, match="markers|presets:begin"):
        presets_doc.rewrite("# a page without its markers\n")


def _clauses(description: str) -> dict[str, str]:
    """'a (x), b and c (y)' -> {a: x, b: y, c: y}."""
    out: dict[str, str] = {}
    for names, clause in re.findall(r"([a-z0-9-]+(?: and [a-z0-9-]+)*) \(([^()]*)\)", description):
        for name in names.split(" and "):
            assert name not in out, f"{name} described twice"
            out[name] = clause
    return out


def _learns_nothing(rule: presets.PresetRule) -> bool:
    return not rule.awq and rule.sparsity is None and not any(s.needs_calibration for s in rule.roles.values() if s is not None)


def test_the_apis_description_of_the_preset_field_agrees_with_the_rules():
    clauses = _clauses(Recipe.model_fields["preset"].description or "")
    assert set(clauses) == {p.value for p in Preset}
    for preset in Preset:
        rule, clause = presets.rule_for(preset, presets.DEFAULT_GROUP_SIZE), clauses[preset.value]
        schemes = {s for s in rule.roles.values() if s is not None}
        assert ("NOT servable" in clause) == (not rule.servable), preset
        assert ("servable" in clause) <= (rule.servable or "NOT servable" in clause), preset
        assert ("no calibration" in clause) == _learns_nothing(rule) == (preset.value in DATA_FREE_PRESETS), preset
        assert ("2:4" in clause) == (rule.sparsity == presets.SPARSE_24), preset
        assert ("gate_proj" in clause and "16-bit" in clause) == (rule.gate_proj is None), preset
        assert ("W8A8 static" in clause) <= (W8A8_STATIC in schemes) and ("W8A8 dynamic" in clause) <= (W8A8_DYNAMIC in schemes), preset
        assert ("FP4" in clause) <= any(s.weights.fp4 for s in schemes) and ("FP8" in clause) <= any(s.weights.type == "float" and s.weights.bits == 8 for s in schemes), preset
        assert ("Blackwell" in clause) <= ("Blackwell" in rule.vllm), preset


@pytest.mark.parametrize("preset", list(Preset))
def test_the_model_card_says_what_each_preset_is_from_its_rule(preset):
    from huggingface_hub import ModelCard

    from kompress_job.outputs import manifest, model_card
    from kompress_testing.jobs import make_job

    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm", recipe={"preset": preset.value})
    doc = manifest.build_manifest(
        job, status="published", resolved_revision=None, source_bytes=None, files=[], recipe=None, calibration_used=None,
        metrics=None, gate_failures=[], timings={}, libraries={},
    )
    card = model_card.render(doc, output_uri="s3://models/glm")
    rule = presets.rule_for(preset, presets.DEFAULT_GROUP_SIZE)
    assert f"- **Recipe:** `{preset.value}` preset: {rule.description}." in card
    tags = ModelCard(card).data.to_dict()["tags"]
    assert tags == ["kompress", "llm-compressor", "compressed-tensors", *rule.tags, *(["vllm"] if rule.servable else [])]
    assert ("vLLM cannot serve this checkpoint today" in card) == (not rule.servable)
    assert not rule.servable or "vllm serve ./GLM-4.5-Air-" in card
