"""kompress_job.model.fidelity_* (passes, record, comparison, cost) on tiny models (no llm-compressor): the figures
are what they claim to be, the record is all the comparison needs, the gate says what missed by how much, and the
estimate is sane at full scale."""

from __future__ import annotations

import copy
import gc
import json
import logging
import math

import pytest
import torch
from _worker_helpers import tiny_models  # noqa: F401 - fixture
from kompress_api.v1alpha1 import CompressionJob, EvaluationMetrics, QualityGate

from kompress_job.model import fidelity_comparison, fidelity_cost, fidelity_passes, fidelity_record

from kompress_job.outputs import model_card
from kompress_job.context import RunContext
from kompress_job.errors import VerificationFailed
from kompress_job.model.fidelity_plot import plot_drift
from kompress_job.progress import ProgressReporter
from kompress_testing import models

torch.set_num_threads(1)


def held_rows(count: int = 8, length: int = 48) -> list[list[int]]:
    tokenizer = models.build_tokenizer()
    data = models.calibration_dataset(tokenizer, samples=count, max_length=length, offset=100)
    return [list(ids) for ids in data["input_ids"]]


@pytest.fixture(scope="module")
def rows() -> list[list[int]]:
    return held_rows()


@pytest.fixture(scope="module")
def llama():
    return models.build_model("llama")


def perturbed(model, module: str, scale: float = 0.2):
    """A copy of `model` with noise on one module's weight (a stand-in for a compressed layer)."""
    other = copy.deepcopy(model)
    weight = other.get_submodule(module).weight
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        weight.add_(scale * weight.std() * torch.randn(weight.shape, generator=generator))
    return other


def full_log_probs(model, rows):
    """log-softmax at every predicted position, row after row (the slow, obvious way)."""
    out = []
    with torch.no_grad():
        for ids in rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            out.append(torch.log_softmax(logits.float(), dim=-1))
    return torch.cat(out)


def test_perplexity_is_the_exponential_of_the_models_own_mean_loss(llama, rows, tmp_path):
    rec = fidelity_record.record(llama, rows, tmp_path / "record")
    result = fidelity_comparison.compare(llama, rec)
    with torch.no_grad():
        losses = [(float(llama(input_ids=torch.tensor([r]), labels=torch.tensor([r])).loss), len(r) - 1) for r in rows]
    expected = math.exp(sum(loss * n for loss, n in losses) / sum(n for _, n in losses))
    assert result.tokens == sum(len(r) - 1 for r in rows) == rec.tokens
    assert result.perplexity_original == pytest.approx(expected, rel=1e-5)
    assert result.perplexity_compressed == pytest.approx(expected, rel=1e-5)


def test_the_same_model_on_both_sides_is_identical_and_changes_nothing(llama, rows, tmp_path):
    result = fidelity_comparison.compare(llama, fidelity_record.record(llama, rows, tmp_path / "record"))
    assert result.identical
    assert result.kl_divergence == pytest.approx(0.0, abs=1e-7)
    assert result.top1_agreement == 1.0 and result.perplexity_increase == pytest.approx(0.0, abs=1e-9)
    assert all(d.output == 0.0 and d.attention == 0.0 and d.mlp == 0.0 for d in result.layers)


def test_kl_with_every_token_kept_is_exact_and_with_top_k_a_lower_bound(llama, rows, tmp_path):
    other = perturbed(llama, "model.layers.0.mlp.up_proj", scale=0.5)
    exact = float(fidelity_comparison.exact_kl(full_log_probs(llama, rows), full_log_probs(other, rows)).mean())
    vocab = llama.config.vocab_size

    everything = fidelity_comparison.compare(other, fidelity_record.record(llama, rows, tmp_path / "all", top_k=vocab))
    top8 = fidelity_comparison.compare(other, fidelity_record.record(llama, rows, tmp_path / "top8", top_k=8))

    assert exact > 1e-4  # the perturbation is visible
    assert everything.kl_divergence == pytest.approx(exact, rel=1e-4)
    assert everything.mean_tail_mass == pytest.approx(0.0, abs=1e-6)
    # an untrained model spreads its mass thinly (8 of 512 tokens hold little of it): the bucketed figure
    # is then far below the exact one, but never above it
    assert 0 < top8.kl_divergence <= exact * (1 + 1e-6) and top8.mean_tail_mass > 0.5
    assert not everything.identical and everything.top1_agreement < 1.0


def test_on_a_trained_model_the_top_k_kl_is_close_to_the_exact_one(tmp_path):
    from kompress_job.model import modelio
    from kompress_testing import trained_model

    folder = trained_model.folder()
    trained = modelio.load_causal_lm(folder, dtype="float32")
    tokenizer = modelio.load_tokenizer(folder)
    texts = [json.loads(line)["messages"] for line in (folder / trained_model.HELDOUT).read_text().splitlines()[:16]]
    rows = [tokenizer(tokenizer.apply_chat_template(m, tokenize=False), add_special_tokens=False)["input_ids"] for m in texts]
    other = perturbed(trained, "model.layers.2.self_attn.o_proj", scale=0.5)
    exact = float(fidelity_comparison.exact_kl(full_log_probs(trained, rows), full_log_probs(other, rows)).mean())
    top32 = fidelity_comparison.compare(other, fidelity_record.record(trained, rows, tmp_path / "record"))
    assert top32.top_k == 32 and top32.mean_tail_mass < 0.1
    assert 0.8 * exact < top32.kl_divergence <= exact * (1 + 1e-6)  # 87 % of it here


def test_drift_starts_at_the_layer_that_was_changed(rows, tmp_path):
    glm = models.build_model("glm4-moe")  # layer 0 dense, layer 1 MoE
    changed = perturbed(glm, "model.layers.1.mlp.shared_experts.down_proj")
    result = fidelity_comparison.compare(changed, fidelity_record.record(glm, rows, tmp_path / "record"))
    first, second = result.layers
    assert (first.layer, first.moe, second.layer, second.moe) == (0, False, 1, True)
    assert first.attention == first.mlp == first.output == 0.0  # nothing before the change moves
    assert second.attention == 0.0  # layer 1's attention runs before its MLP
    assert second.mlp > 0.01 and 0 < second.output < second.mlp  # the residual stream dilutes it


def test_the_record_alone_is_enough_once_the_original_is_gone(rows, tmp_path):
    original = models.build_model("llama")
    changed = perturbed(original, "model.layers.1.self_attn.o_proj")
    rec = fidelity_record.record(original, rows, tmp_path / "record")
    expected = fidelity_comparison.compare(changed, rec)
    del original
    gc.collect()
    # what a compare needs is on disk: one file per batch and an index
    files = sorted(p.name for p in (tmp_path / "record").iterdir())
    assert files == ["batch-00000.safetensors", "record.json"]
    assert json.loads((tmp_path / "record" / "record.json").read_text())["tokens"] == rec.tokens
    again = fidelity_comparison.compare(changed, rec)
    assert again.kl_divergence == expected.kl_divergence and again.perplexity_compressed == expected.perplexity_compressed


@pytest.mark.unit
def test_batches_keep_one_batchs_logits_within_the_budget():
    lengths = [100, 200, 50, 400, 400, 10]
    batches = fidelity_passes.plan_batches(lengths, vocab_size=1000, budget=4 * 1000 * 800, max_batch=4)
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # every row once, in order
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) * 1000 * 4 <= 4 * 1000 * 800
    assert fidelity_passes.plan_batches([10] * 40, vocab_size=10) == [list(range(i, i + 16)) for i in (0, 16)] + [list(range(32, 40))]


GATE_CASES = [
    (QualityGate(max_perplexity_increase=0.25), ["perplexity +31.2% (10.000 -> 13.120) > limit +25.0%"]),
    (QualityGate(max_perplexity_increase=0.35), []),
    (QualityGate(max_kl_divergence=0.05), ["KL divergence 0.0812 nats > limit 0.0500"]),
    (QualityGate(min_top1_agreement=0.9), ["top-1 agreement 85.0% < limit 90.0%"]),
    (
        QualityGate(max_perplexity_increase=0.1, max_kl_divergence=0.1, min_top1_agreement=0.8),
        ["perplexity +31.2% (10.000 -> 13.120) > limit +10.0%"],
    ),
    (QualityGate(), []),
    (None, []),
]


@pytest.mark.unit
@pytest.mark.parametrize(("gate", "failures"), GATE_CASES)
def test_the_gate_names_each_missed_limit_with_the_figure(gate, failures):
    metrics = EvaluationMetrics(perplexity_original=10.0, perplexity_compressed=13.12, perplexity_increase=0.312, kl_divergence=0.0812, top1_agreement=0.85)
    assert fidelity_comparison.gate_failures(metrics, gate) == failures


@pytest.mark.unit
def test_parameter_counts_and_the_estimate_for_glm_45_air():
    config = json.loads((models.config_dir("glm-4.5-air") / "config.json").read_text())
    total, active = fidelity_cost.parameter_counts(config)
    assert total == pytest.approx(106.85e9, rel=0.02)  # GLM-4.5-Air without its MTP layer
    assert active == pytest.approx(12e9, rel=0.1)  # "12 B active"
    small = fidelity_cost.estimate(config, samples=16, seq_len=1024)
    large = fidelity_cost.estimate(config, samples=256, seq_len=1024)
    assert 10 < small.seconds < 3600 and large.seconds > 10 * small.seconds
    assert small.memory_bytes <= 2 * fidelity_passes.ACCELERATOR_LOGITS_BUDGET + 8 * 1024**3
    # per position: k ids, k log-probs, loss, tail; per recorded position (at most DRIFT_TOKENS): 3 taps x 46 layers
    assert small.disk_bytes == pytest.approx(16 * 1024 * (2 * fidelity_record.TOP_K + 2) * 4 + fidelity_passes.DRIFT_TOKENS * 3 * 46 * fidelity_passes.SKETCH_DIM * 4, rel=0.01)
    seconds, memory, disk = fidelity_cost.estimate(models.build_config("glm4-moe").to_dict(), 16, 64)  # a plain tuple too
    assert seconds < 10 and memory < 1e8 and disk < 1e8


@pytest.mark.unit
def test_the_picture_is_a_png_and_reads_without_layers_too(tmp_path):
    comparison = fidelity_comparison.Comparison(
        samples=16, tokens=1000, perplexity_original=10.0, perplexity_compressed=11.0, kl_divergence=0.03, top1_agreement=0.9,
        mean_tail_mass=0.01, max_difference=1.0, top_k=32,
        layers=[fidelity_comparison.LayerDrift(0, False, 0.01, 0.02, 0.015), fidelity_comparison.LayerDrift(1, True, 0.05, 0.4, 0.1)],
    )
    deep = [fidelity_comparison.LayerDrift(i, i > 0, 0.004 * 1.08**i, 0.01 * 1.06**i, 0.006 * 1.07**i) for i in range(46)]  # GLM-4.5-Air's depth
    variants = {"drift.png": comparison, "empty.png": fidelity_comparison.Comparison(**{**comparison.__dict__, "layers": []}), "deep.png": fidelity_comparison.Comparison(**{**comparison.__dict__, "layers": deep})}
    for name, comp in variants.items():
        path = plot_drift(comp, tmp_path / name, title="tiny, preset w4a16")
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.unit
def test_the_model_card_shows_the_picture_and_links_the_report_when_published():
    from test_manifest import build

    from kompress_testing.jobs import make_job

    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm")
    files = [{"path": "fidelity.png", "size": 40_000, "sha256": "ef" * 32}, {"path": "fidelity.json", "size": 2_000, "sha256": "01" * 32}]
    card = model_card.render(build(job, files=files), output_uri="s3://models/glm")
    assert "![Relative error per layer of the attention, MLP and layer outputs](fidelity.png)" in card
    assert "[`fidelity.json`](fidelity.json)" in card
    without = model_card.render(build(job), output_uri="s3://models/glm")
    assert "fidelity.png" not in without
    gated = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm", evaluation={"gate": {"maxPerplexityIncrease": 0.05, "minTop1Agreement": 0.9}})
    card = model_card.render(build(gated, status="rejected", gate_failures=["top-1 agreement 85.0% < limit 90.0%"]), output_uri="s3://models/glm.rejected")
    assert "Quality gate (perplexity increase at most +5.0 %, top-1 agreement at least 90.0 %): **missed**." in card
    assert "| top-1 agreement | 91.0% |" in card


# ---------------------------------------------------------------------------------------------
# The stages around these functions
# ---------------------------------------------------------------------------------------------


def stage_ctx(model_dir, workdir, **evaluation) -> RunContext:
    job = CompressionJob.model_validate(
        {
            "metadata": {"name": "tiny", "namespace": "default", "uid": "0000-1111"},
            "spec": {
                "model": {"uri": f"file://{model_dir}", "dtype": "float32"},
                "recipe": {"preset": "w4a16"},
                "output": {"uri": "file:///tmp/kompress-test-out"},
                "resources": {"gpus": 0},
                "evaluation": evaluation,
            },
        }
    )
    ctx = RunContext(job=job, workdir=workdir, progress=ProgressReporter(["baseline", "evaluate"]), env={}, log=logging.getLogger("kompress.test"))
    ctx.model_dir = model_dir
    return ctx


def test_baseline_loads_the_weights_itself_when_ranks_will_load_theirs(tiny_models, rows, tmp_path):  # noqa: F811
    from datasets import Dataset

    from kompress_job.model import modelio
    from kompress_job.stages import baseline

    folder = tiny_models["llama"]
    ctx = stage_ctx(folder, tmp_path)
    ctx.tokenizer = modelio.load_tokenizer(folder)
    ctx.holdout = Dataset.from_dict({"text": ["x"] * len(rows), "input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    ctx.model = modelio.meta_model(folder)  # what load-model leaves with several devices
    with ctx.progress.stage("baseline"):
        baseline.run(ctx)
    assert all(p.device.type == "meta" for p in ctx.model.parameters())  # untouched: still the structure only
    loaded = modelio.load_causal_lm(folder, dtype="float32")
    result = fidelity_comparison.compare(loaded, ctx.baseline)
    assert result.identical and result.samples == len(rows)


def test_evaluate_refuses_a_compression_that_changed_nothing_and_gates_one_that_did(tiny_models, rows, tmp_path):  # noqa: F811
    from kompress_job.model import modelio
    from kompress_job.stages import evaluate

    folder = tiny_models["llama"]
    original = modelio.load_causal_lm(folder, dtype="float32")
    ctx = stage_ctx(folder, tmp_path, gate={"maxKlDivergence": 1e-6, "minTop1Agreement": 0.5})
    ctx.baseline = fidelity_record.record(original, rows, tmp_path / "record")
    ctx.checkpoint_dir = tmp_path / "checkpoint"
    ctx.checkpoint_dir.mkdir()

    ctx.model = original
    with pytest.raises(VerificationFailed, match="the recipe changed nothing"):
        with ctx.progress.stage("evaluate"):
            evaluate.run(ctx)

    ctx.model = perturbed(original, "model.layers.1.mlp.down_proj")
    with ctx.progress.stage("evaluate"):
        evaluate.run(ctx)
    assert ctx.metrics.kl_divergence > 1e-6 and ctx.metrics.gate_passed is False
    assert len(ctx.gate_failures) == 1 and ctx.gate_failures[0].startswith("KL divergence ") and ctx.gate_failures[0].endswith("> limit 0.0000")
    report = json.loads((ctx.checkpoint_dir / "fidelity.json").read_text())
    assert report["gateFailures"] == ctx.gate_failures and [entry["layer"] for entry in report["layers"]] == [0, 1]
    assert (ctx.checkpoint_dir / "fidelity.png").read_bytes()[:4] == b"\x89PNG"


def test_without_held_out_rows_a_gate_cannot_pass(tiny_models, tmp_path):  # noqa: F811
    from kompress_job.stages import baseline, evaluate

    ctx = stage_ctx(tiny_models["llama"], tmp_path, gate={"maxPerplexityIncrease": 0.1})
    for stage in (baseline, evaluate):
        stage.run(ctx)
    assert ctx.metrics is None and ctx.gate_failures and "could not be checked" in ctx.gate_failures[0]
    ungated = stage_ctx(tiny_models["llama"], tmp_path)
    for stage in (baseline, evaluate):
        stage.run(ungated)
    assert ungated.metrics is None and ungated.gate_failures == []
