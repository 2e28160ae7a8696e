"""The manifest and model card as pure functions of a run, and where a rejected model goes."""

from __future__ import annotations

import json

import pytest

from kompress_api.v1alpha1 import EvaluationMetrics
from kompress_job.outputs import manifest, model_card
from kompress_job.io.storage import rejected_uri
from kompress_testing.jobs import FakeRecipe, make_job

pytestmark = pytest.mark.unit


def build(job, **overrides):
    args = dict(
        status="published",
        resolved_revision="6b371e2a9433175c581451fa7ac9716cabd8ffd4",
        source_bytes=214_000_000_000,
        files=[{"path": "model-00001-of-00002.safetensors", "size": 60_000_000_000, "sha256": "ab" * 32}, {"path": "config.json", "size": 2_000, "sha256": "cd" * 32}],
        recipe=manifest.recipe_summary(FakeRecipe()),
        calibration_used={"samples": 512, "heldOut": 32},
        metrics=EvaluationMetrics(samples=32, tokens=60_000, perplexity_original=5.1, perplexity_compressed=5.3, perplexity_increase=0.039, kl_divergence=0.02, top1_agreement=0.91).wire(),
        gate_failures=[],
        timings={"compress": 3600.0},
        libraries={"llmcompressor": "0.14.0.1"},
    )
    args.update(overrides)
    return manifest.build_manifest(job, **args)


@pytest.mark.parametrize(
    ("uri", "rejected"),
    [
        ("s3://models/glm/w4a16", "s3://models/glm/w4a16.rejected"),
        ("s3://models/glm/w4a16/", "s3://models/glm/w4a16.rejected"),
        ("s3://models", "s3://models/kompress.rejected"),
        ("file:///data/out", "file:///data/out.rejected"),
    ],
)
def test_a_rejected_model_goes_beside_the_final_prefix_never_under_it(uri, rejected):
    assert rejected_uri(uri) == rejected
    if uri != "s3://models":  # a bucket root has no sibling: its rejected copy is a marked folder in it
        assert not rejected_uri(uri).startswith(uri.rstrip("/") + "/")


def test_group_module_counts_read_the_resolved_recipes_summary():
    assert manifest.group_module_counts(FakeRecipe().summary()) == {"group_0": 2, "group_1": 12}
    assert manifest.group_module_counts({"groups": {"a": ["x", "y"], "b": {"modules": 3}}}) == {"a": 2, "b": 3}
    assert manifest.group_module_counts(None) is None and manifest.group_module_counts({"preset": "w4a16"}) is None


def test_manifest_records_source_recipe_files_and_figures():
    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm", model={"revision": "main"})
    doc = build(job)
    assert json.loads(manifest.dumps(doc)) == doc  # plain JSON
    assert doc["source"] == {"uri": "hf://zai-org/GLM-4.5-Air", "revision": "main", "resolvedRevision": "6b371e2a9433175c581451fa7ac9716cabd8ffd4", "bytes": 214_000_000_000, "dtype": "auto"}
    assert doc["checkpointBytes"] == 60_000_002_000
    assert [f["path"] for f in doc["files"]] == ["config.json", "model-00001-of-00002.safetensors"]
    assert doc["groups"] == {"group_0": 2, "group_1": 12}
    assert doc["evaluation"]["gate"] is None and doc["evaluation"]["gatePassed"] is None


def test_model_card_in_the_style_of_the_hub():
    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm")
    card = model_card.render(build(job), output_uri="s3://models/glm")
    assert card.startswith("---\nbase_model: zai-org/GLM-4.5-Air\n")
    assert "# GLM-4.5-Air-w4a16-w8a8" in card
    assert "[zai-org/GLM-4.5-Air](https://huggingface.co/zai-org/GLM-4.5-Air) at revision `6b371e2a" in card
    assert "| perplexity increase | +3.90 % |" in card
    assert "aws s3 sync s3://models/glm ./GLM-4.5-Air-w4a16-w8a8" in card and "vllm serve ./GLM-4.5-Air-w4a16-w8a8" in card
    assert "| ratio | 3.57× |" in card


def test_model_card_of_the_founding_recipe_says_vllm_cannot_serve_it():
    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm", recipe={"preset": "sparse24-w4a16-w8a8"})
    card = model_card.render(build(job, recipe=None), output_uri="s3://models/glm")
    assert "vLLM cannot serve this checkpoint today" in card and "vllm serve" not in card
    assert "- sparse" in card and "- vllm" not in card


def test_model_card_of_a_rejected_model_says_so_first():
    job = make_job("/models/tiny", "s3://models/tiny")
    doc = build(job, status="rejected", gate_failures=["perplexity +31.0% exceeds +25%"])
    card = model_card.render(doc, output_uri="s3://models/tiny.rejected")
    title_end = card.index("\n", card.index("# "))
    assert card[title_end:].lstrip().startswith("> **REJECTED")
    assert "perplexity +31.0% exceeds +25%" in card


def test_a_hub_datasets_commit_is_recorded_beside_the_revision_asked_for():
    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm", calibration={"uri": "hf://HuggingFaceH4/ultrachat_200k", "split": "train_sft", "revision": "main"})
    doc = build(job, calibration_used={"samples": 512, "heldOut": 32, "resolvedRevision": "8049631c405ae6576f93f445c6b8166f76f5505a"})
    cal = doc["calibration"]
    assert (cal["uri"], cal["revision"], cal["resolvedRevision"], cal["samples"]) == ("hf://HuggingFaceH4/ultrachat_200k", "main", "8049631c405ae6576f93f445c6b8166f76f5505a", 512)
    card = model_card.render(doc, output_uri="s3://models/glm")
    assert "from `hf://HuggingFaceH4/ultrachat_200k` at `8049631c405ae6576f93f445c6b8166f76f5505a`" in card


MTP_KEPT = {"handling": "keep", "layers": 1, "tensors": 404, "bytes": 7_233_147_136, "shard": "model-00004-of-00004.safetensors"}


def test_manifest_and_card_record_a_kept_mtp_layer_and_how_to_serve_with_it():
    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm")
    doc = build(job, mtp=MTP_KEPT)
    assert json.loads(manifest.dumps(doc))["mtp"] == MTP_KEPT
    card = model_card.render(doc, output_uri="s3://models/glm")
    assert "- **Speculative decoding:** MTP kept, 404 tensors, 7.23 GB" in card and "quantization_config.ignore" in card
    assert """vllm serve ./GLM-4.5-Air-w4a16-w8a8 --speculative-config '{"method":"mtp","num_speculative_tokens":1}'""" in card


def test_card_of_a_dropped_mtp_layer_says_so_and_offers_no_speculative_decoding():
    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm")
    card = model_card.render(build(job, mtp={**MTP_KEPT, "handling": "drop", "shard": None}), output_uri="s3://models/glm")
    assert "MTP dropped (spec.recipe.mtp: drop): the source's 404 multi-token-prediction tensors (7.23 GB) are not in this checkpoint" in card
    assert "--speculative-config" not in card and "vllm serve ./GLM-4.5-Air-w4a16-w8a8" in card
    assert "Speculative decoding" not in model_card.render(build(job), output_uri="s3://models/glm")  # a model without MTP layers
