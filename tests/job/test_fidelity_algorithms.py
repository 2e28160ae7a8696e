"""On the trained test model (kompress_testing.trained_model), the algorithms did their work: SparseGPT beats
magnitude pruning of the same layers, AWQ beats round-to-nearest at the same bits and group sizes, every preset's
cost is measured, and a recipe that compressed nothing is caught instead of published.

Each compression runs once per session (the `runs` fixture); llm-compressor runs here, hence `slow`."""

from __future__ import annotations

import json
import os

os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from kompress_job.model import fidelity_comparison, modelio  # noqa: E402
from kompress_job.errors import TargetsMatchNothing, VerificationFailed  # noqa: E402
from kompress_job.model.verification import holds_n_m  # noqa: E402
from kompress_testing import compute_runs, trained_model  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.slow

PRESETS = ["sparse24-w4a16-w8a8", "w4a16-w8a8", "w4a16", "fp8-dynamic"]

@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """key -> RunContext after every compute stage on the trained model (each run once per session)."""
    cache: dict = {}

    def get(key: str, recipe: dict):
        if key not in cache:
            cache[key] = compute_runs.run_stages(compute_runs.trained_job(recipe), tmp_path_factory.mktemp(key))
        return cache[key]

    return get


def test_the_trained_model_has_learned_something():
    provenance = json.loads((trained_model.folder() / trained_model.PROVENANCE).read_text())
    perplexity = provenance["heldOutPerplexity"]
    assert perplexity["trained"] < perplexity["untrained"] / 10  # 512 tokens: an untrained model is near-uniform


def test_sparsegpt_24_costs_less_than_magnitude_24_of_the_same_layers(runs):
    sparsegpt = runs("sparsegpt-24", {"custom": compute_runs.SPARSEGPT_24})
    pruned = sorted(name for name, a in sparsegpt.recipe.assignment.items() if a.sparsity == "2:4")
    assert len(pruned) == 4 * 4 + 3 + 3 * (4 * 3 + 3)  # attention in 4 layers, dense MLP, 3 MoE layers x (4 experts + shared)
    assert sparsegpt.verification["ok"]  # the verify stage found 2:4 in every one of them

    magnitude = modelio.load_causal_lm(trained_model.folder(), dtype="float32")
    compute_runs.magnitude_24(magnitude, pruned)
    assert all(holds_n_m(magnitude.get_submodule(n).weight) for n in pruned)
    by_magnitude = fidelity_comparison.compare(magnitude, sparsegpt.baseline)  # same held-out rows, same original

    by_sparsegpt = sparsegpt.metrics
    assert by_sparsegpt.perplexity_increase > 0.01  # 2:4 is not free
    assert by_sparsegpt.perplexity_increase < by_magnitude.perplexity_increase
    assert by_sparsegpt.kl_divergence < by_magnitude.kl_divergence
    assert by_sparsegpt.top1_agreement > by_magnitude.top1_agreement


def test_awq_w4_costs_less_than_round_to_nearest_w4_with_the_same_groups(runs):
    awq = runs("w4a16", {"preset": "w4a16"})
    recipe = yaml.safe_load((awq.checkpoint_dir / "recipe.yaml").read_text())
    (stage,) = recipe.values()
    assert list(stage) == ["smoothing_modifiers", "quantization_modifiers"]
    rtn = runs("w4a16-rtn", {"custom": yaml.safe_dump(compute_runs.round_to_nearest(recipe))})
    assert rtn.recipe.module_table() == awq.recipe.module_table()  # same layers, same bits and group sizes

    assert 0 < awq.metrics.perplexity_increase < rtn.metrics.perplexity_increase
    assert awq.metrics.kl_divergence < rtn.metrics.kl_divergence
    assert awq.metrics.top1_agreement > rtn.metrics.top1_agreement


@pytest.mark.parametrize("preset", PRESETS)
def test_every_presets_cost_is_measured_and_published_with_the_checkpoint(runs, preset, record_property):
    ctx = runs(preset, {"preset": preset})
    metrics = ctx.metrics
    for figure in ("perplexity_original", "perplexity_compressed", "perplexity_increase", "kl_divergence", "top1_agreement"):
        record_property(figure, getattr(metrics, figure))
    assert metrics.samples == compute_runs.EVALUATION_SAMPLES and metrics.tokens > 3000
    assert metrics.perplexity_original == pytest.approx(json.loads((trained_model.folder() / trained_model.PROVENANCE).read_text())["heldOutPerplexity"]["trained"], rel=0.5)
    assert metrics.kl_divergence > 1e-5 and 0.5 < metrics.top1_agreement < 1.0
    assert metrics.perplexity_compressed == pytest.approx(metrics.perplexity_original * (1 + metrics.perplexity_increase), rel=1e-5)
    assert metrics.gate_passed is None  # no gate in this job
    report = json.loads((ctx.checkpoint_dir / "fidelity.json").read_text())
    assert report["perplexityIncrease"] == pytest.approx(metrics.perplexity_increase, abs=1e-6)
    assert [layer["block"] for layer in report["layers"]] == ["dense", "MoE", "MoE", "MoE"]
    assert (ctx.checkpoint_dir / "fidelity.png").read_bytes()[:4] == b"\x89PNG"


def test_presets_rank_as_their_precision_says(runs):
    increase = {p: runs(p, {"preset": p}).metrics.perplexity_increase for p in PRESETS}
    # 8-bit floats everywhere cost least; 2:4 pruning on top of 4/8-bit costs most
    assert min(increase, key=increase.get) == "fp8-dynamic"
    assert max(increase, key=increase.get) == "sparse24-w4a16-w8a8"
    # experts in 8 bits cost less than experts in 4 bits
    assert increase["w4a16-w8a8"] < increase["w4a16"]


def test_a_recipe_that_left_everything_untouched_is_not_a_success(tmp_path):
    ignores_everything = "quant_stage:\n  quant_modifiers:\n    QuantizationModifier: {scheme: W8A8, targets: [Linear], ignore: ['re:.*']}\n"
    with pytest.raises(VerificationFailed, match="the recipe changed nothing"):
        compute_runs.run_stages(compute_runs.trained_job({"custom": ignores_everything}), tmp_path / "ignore-all")


def test_a_recipe_whose_targets_match_nothing_is_refused_before_compressing(tmp_path):
    misses = "quant_stage:\n  quant_modifiers:\n    QuantizationModifier: {scheme: W4A16, targets: ['re:.*mlp\\.experts\\.\\d+\\.w1$']}\n"
    with pytest.raises(TargetsMatchNothing, match=r"w1"):
        compute_runs.run_stages(compute_runs.trained_job({"custom": misses}), tmp_path / "misses")


def test_evaluation_can_be_switched_off(tmp_path):
    from kompress_job import pipeline

    job = compute_runs.trained_job({"preset": "fp8-dynamic"})
    job.spec.evaluation.enabled = False
    planned = pipeline.stages_for(job)  # what the pipeline would run
    ctx = compute_runs.run_stages(job, tmp_path, stages=[s for s in compute_runs.COMPUTE_STAGES if s in planned])
    assert "baseline" not in ctx.timings and "evaluate" not in ctx.timings
    assert len(ctx.holdout) == 0  # no rows set aside for it either
    assert ctx.metrics is None and ctx.gate_failures == [] and not (ctx.checkpoint_dir / "fidelity.png").exists()

