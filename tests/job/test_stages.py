"""load-model -> compress -> save -> verify on tiny models: every preset on every model it applies to, the
founding preset checked module by module on the files, and the failures a user gets instead of a wrong model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _worker_helpers import CALIBRATION_LENGTH, RUNS, compressed, make_ctx, make_job, run_stages, tiny_models
from kompress_api.exit_codes import ExitCode

from kompress_job import pipeline
from kompress_job.errors import CompressionMismatch, ModelFileCorrupt, ModelNotFound, NoCalibrationSamples, VerificationFailed
from kompress_job.model.verification import holds_n_m


def safetensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in folder.glob("*.safetensors"):
        tensors.update(load_file(str(path)))
    return tensors


@pytest.mark.slow
@pytest.mark.parametrize(("model", "preset"), RUNS, ids=[f"{m}-{p}" for m, p in RUNS])
def test_preset_compresses_saves_and_verifies(compressed, tiny_models, model, preset):
    from llmcompressor.recipe import Recipe as LlmcRecipe

    ctx, snapshots = compressed(model, preset)
    out = ctx.checkpoint_dir
    assert ctx.verification["ok"], ctx.verification["failures"]
    assert ctx.verification["logits_finite"] and ctx.verification["generated_tokens"] > 0
    assert ctx.verification["modules_checked"] == len(ctx.recipe.assignment)

    config = json.loads((out / "config.json").read_text())
    groups = config["quantization_config"]["config_groups"]
    # one compressed-tensors config group per planned scheme (sparsity is not a config group)
    assert len(groups) == len({a.scheme.name for a in ctx.recipe.assignment.values() if a.scheme is not None})
    # a pruned checkpoint says so, as compressed-tensors' SparsityCompressionConfig reads it; an unpruned one does not
    from compressed_tensors.config import SparsityCompressionConfig

    from kompress_job.recipe.patterns import matched_names

    recorded = config["quantization_config"]["sparsity_config"]
    pruned = {name for name, a in ctx.recipe.assignment.items() if a.sparsity}
    if preset.startswith("sparse24"):
        sparsity = SparsityCompressionConfig.load_from_registry(recorded["format"], **recorded)
        assert sparsity.sparsity_structure == "2:4" and sparsity.format == "dense" and sparsity.ignore == []
        assert set(matched_names(sparsity.targets, ctx.recipe.assignment)) == pruned  # exactly the pruned modules
        assert 0.1 < sparsity.global_sparsity < 0.5
    else:
        assert recorded == {} and not pruned
    # the recipe that ran can be read back by llm-compressor itself (upstream's recipe.yaml cannot)
    readback = LlmcRecipe.create_instance(str(out / "recipe.yaml"))
    assert [type(m).__name__ for m in readback.modifiers] == [type(m).__name__ for m in ctx.recipe.modifiers()]
    record = json.loads((out / "kompress-record.json").read_text())
    assert record["modules"] == ctx.recipe.module_table()
    assert record["recipe"]["preset"] == preset and record["recipe"]["fallbacks"] == [f.summary() for f in ctx.recipe.fallbacks]
    # tokenizer and chat template travel with the checkpoint
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.chat_template and "<|assistant|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    original = sum(p.stat().st_size for p in Path(tiny_models[model]).glob("*.safetensors"))
    assert sum(p.stat().st_size for p in out.glob("*.safetensors")) < original
    # progress reached the end of the compress stage
    compress = [s for s in snapshots if s.stage == "compress"]
    assert compress and compress[-1].step == compress[-1].total_steps


@pytest.mark.slow
def test_founding_preset_on_glm4_moe_module_by_module(compressed, tiny_models):
    """Pruned or not, int4, int8 or untouched: read from the saved files, against the recipe's intent."""
    ctx, _ = compressed("glm4-moe", "sparse24-w4a16-w8a8")
    saved = safetensors(ctx.checkpoint_dir)
    original = safetensors(tiny_models["glm4-moe"])
    modules = sorted({k.rsplit(".", 1)[0] for k in saved if k.rsplit(".", 1)[1] in ("weight", "weight_packed")} - {"model.embed_tokens"} - {n for n in {k.rsplit(".", 1)[0] for k in saved} if "norm" in n})

    def what(name: str) -> str:
        if f"{name}.weight_packed" in saved:
            from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

            shape = tuple(saved[f"{name}.weight_shape"].tolist())
            values = unpack_from_int32(saved[f"{name}.weight_packed"], 4, shape)
            group = shape[1] // saved[f"{name}.weight_scale"].shape[1]
            return f"{'2:4' if holds_n_m(values) else 'dense'} int4 g{group}"
        weight = saved[f"{name}.weight"]
        if weight.dtype.is_floating_point:
            return f"{'2:4' if holds_n_m(weight) else 'dense'} {weight.dtype}".replace("torch.", "")
        static = f"{name}.input_scale" in saved
        return f"{'2:4' if holds_n_m(weight) else 'dense'} int8{' static' if static else ''}"

    got = {name: what(name) for name in modules}
    expected = {}
    for name in modules:
        if name == "lm_head" or name.endswith(("gate_proj", "mlp.gate")):
            expected[name] = "dense float32"
        elif name == "model.layers.0.mlp.down_proj":
            expected[name] = "2:4 int4 g64"  # 320 is not a multiple of 128: the recorded fallback
        elif ".self_attn." in name or name.startswith("model.layers.0.mlp."):
            expected[name] = "2:4 int4 g128"
        else:  # routed and shared experts' up/down
            expected[name] = "2:4 int8 static"
    assert got == expected
    # untouched means untouched: the router, lm_head and every gate_proj outside AWQ's reach are bit-identical
    # (layer 0's dense gate_proj shares its input with up_proj, so AWQ rescales its input columns exactly)
    for name in ("lm_head", "model.layers.1.mlp.gate", "model.layers.1.mlp.shared_experts.gate_proj", "model.layers.1.mlp.experts.3.gate_proj"):
        assert (saved[f"{name}.weight"] == original[f"{name}.weight"]).all(), name
    # every expert got its own calibrated activation scale (all experts see every token during calibration,
    # so up_proj inputs, the layer's hidden states, are the same; down_proj inputs are each expert's own)
    up = [float(saved[f"model.layers.1.mlp.experts.{e}.up_proj.input_scale"]) for e in range(4)]
    down = [float(saved[f"model.layers.1.mlp.experts.{e}.down_proj.input_scale"]) for e in range(4)]
    assert all(s > 0 for s in up + down) and len(set(down)) == 4


@pytest.mark.slow
def test_verification_fails_on_a_checkpoint_that_is_not_what_the_recipe_said(compressed, tmp_path):
    from safetensors.torch import load_file, save_file

    from kompress_job.stages import verify

    ctx, _ = compressed("glm4-moe", "sparse24-w4a16-w8a8")
    tampered = tmp_path / "checkpoint"
    shutil.copytree(ctx.checkpoint_dir, tampered)
    shard = next(tampered.glob("*.safetensors"))
    tensors = load_file(str(shard))
    head = tensors["lm_head.weight"].clone()
    head.view(head.shape[0], -1, 4)[..., :2] = 0  # a stray 2:4 mask on a module that must stay untouched
    tensors["lm_head.weight"] = head
    expert = tensors["model.layers.1.mlp.experts.0.down_proj.weight"].clone()
    expert[expert == 0] = 1  # 2:4 gone where it was asked for
    tensors["model.layers.1.mlp.experts.0.down_proj.weight"] = expert
    save_file(tensors, str(shard), metadata={"format": "pt"})
    config = json.loads((tampered / "config.json").read_text())
    config["quantization_config"]["sparsity_config"] = {}  # what compressed-tensors 0.19 writes by itself
    (tampered / "config.json").write_text(json.dumps(config))

    check = make_ctx(ctx.job, ctx.model_dir, tmp_path)
    check.recipe, check.tokenizer, check.checkpoint_dir = ctx.recipe, ctx.tokenizer, tampered
    with pytest.raises(VerificationFailed) as err:
        run_stages(check, "verify")
    assert "lm_head: planned untouched but carries a 2:4 sparsity mask" in err.value.message
    assert "config.json's sparsity_config does not record the 2:4 sparsity" in err.value.message
    assert "model.layers.1.mlp.experts.0.down_proj: 2:4 sparsity planned but not present" in err.value.message
    assert err.value.exit is ExitCode.VERIFICATION_FAILED


@pytest.mark.slow
def test_a_corrupt_or_missing_weight_file_is_model_file_corrupt_naming_the_file(tiny_models, tmp_path):
    """Not an internal error retried on GPUs: a distinct, non-retried code, and which file it is."""
    model = shutil.copytree(tiny_models["llama"], tmp_path / "model")
    [shard] = sorted(model.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-1000])  # truncated, as an interrupted copy leaves it
    with pytest.raises(ModelFileCorrupt) as err:
        run_stages(make_ctx(make_job(model, preset="w4a16"), model, tmp_path / "work"), "load-model")
    assert shard.name in err.value.message and err.value.exit.code == 23 and not err.value.exit.retriable

    shard.unlink()
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": shard.name}}))
    (model / "other.safetensors").write_bytes((tiny_models["llama"] / shard.name).read_bytes())
    with pytest.raises(ModelFileCorrupt, match=shard.name):
        run_stages(make_ctx(make_job(model, preset="w4a16"), model, tmp_path / "work2"), "load-model")


@pytest.mark.slow
def test_a_model_without_a_usable_tokenizer_or_config_is_model_not_found_not_retried(tiny_models, tmp_path):
    model = shutil.copytree(tiny_models["llama"], tmp_path / "model")
    for path in model.glob("tokenizer*"):
        path.unlink()
    with pytest.raises(ModelNotFound, match="has no tokenizer transformers can load") as err:
        run_stages(make_ctx(make_job(model, preset="w4a16"), model, tmp_path / "work"), "load-model")
    assert "\n" not in err.value.message
    (model / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFound, match="config.json in .* is not JSON"):
        run_stages(make_ctx(make_job(model, preset="w4a16"), model, tmp_path / "work2"), "load-model")


@pytest.mark.slow
def test_schemes_llm_compressor_did_not_apply_are_a_non_retried_compression_mismatch(tiny_models, tmp_path, monkeypatch):
    from kompress_job.stages import compress

    ctx = make_ctx(make_job(tiny_models["llama"], preset="w4a16"), tiny_models["llama"], tmp_path)
    run_stages(ctx, "load-model")
    monkeypatch.setattr(compress, "run_oneshot", lambda *args, **kwargs: None)  # a library that silently did nothing
    with pytest.raises(CompressionMismatch) as err:
        run_stages(ctx, "compress")
    assert "did not apply the planned schemes" in err.value.message and "model.layers.0.self_attn.q_proj" in err.value.message
    assert err.value.exit.code == 24 and not err.value.exit.retriable


@pytest.mark.unit
def test_missing_model_path_is_model_not_found(tmp_path):
    ctx = make_ctx(make_job(tmp_path / "nowhere"), tmp_path / "nowhere", tmp_path)
    with pytest.raises(ModelNotFound) as err:
        run_stages(ctx, "load-model")
    assert "does not exist" in err.value.message and err.value.exit.code == 11
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        run_stages(make_ctx(make_job(tmp_path / "empty"), tmp_path / "empty", tmp_path), "load-model")


@pytest.mark.slow
def test_bad_input_fails_the_pipeline_with_distinct_exit_codes(tiny_models, tmp_path):
    """Through kompress_job.pipeline, as the worker pod runs it: the WorkerResult carries the exit code."""
    from datasets import Dataset

    def result(model_dir, *, preset="sparse24-w4a16-w8a8", custom=None, calibration=None):
        ctx = make_ctx(make_job(model_dir, preset=None if custom else preset, custom=custom), model_dir, tmp_path / "work")
        ctx.calibration = calibration
        return pipeline.run(ctx)

    empty = Dataset.from_dict({"input_ids": [], "attention_mask": []})
    nothing = "s_stage:\n  q_modifiers:\n    QuantizationModifier: {scheme: W8A8, targets: [Linear], ignore: [router]}\n"
    overlap = (
        "s_stage:\n  q_modifiers:\n    QuantizationModifier:\n      config_groups:\n"
        "        a: {targets: [Linear], weights: {num_bits: 8, type: int, strategy: channel, symmetric: true}}\n"
        "        b: {targets: [lm_head], weights: {num_bits: 8, type: int, strategy: channel, symmetric: true}}\n"
    )
    cases = {
        "missing model": (result(tmp_path / "missing"), ExitCode.MODEL_NOT_FOUND, "load-model"),
        # the recipe is resolved on the model's structure to choose its path, before any weights are loaded
        "dense model, expert preset": (result(tiny_models["llama"]), ExitCode.UNSUPPORTED_ARCHITECTURE, "load-model"),
        "no calibration samples": (result(tiny_models["glm4-moe"], calibration=empty), ExitCode.NO_CALIBRATION_SAMPLES, "compress"),
        "targets match nothing": (result(tiny_models["glm4-moe"], custom=nothing), ExitCode.TARGETS_MATCH_NOTHING, "load-model"),
        "overlapping groups": (result(tiny_models["glm4-moe"], custom=overlap), ExitCode.OVERLAPPING_GROUPS, "load-model"),
    }
    for case, (res, code, stage) in cases.items():
        assert (res.exit_code, res.reason, res.stage) == (code.code, code.reason, stage), (case, res.message)
    assert len({code.code for _, code, _ in cases.values()}) == len(cases)


@pytest.mark.slow
def test_no_calibration_rows_is_refused_before_oneshot(tiny_models, tmp_path):
    from datasets import Dataset

    ctx = make_ctx(make_job(tiny_models["glm4-moe"], preset="w4a16-w8a8"), tiny_models["glm4-moe"], tmp_path)
    run_stages(ctx, "load-model")
    ctx.calibration = Dataset.from_dict({"input_ids": [], "attention_mask": []})
    with pytest.raises(NoCalibrationSamples, match="chat template"):
        run_stages(ctx, "compress")
    assert not any(hasattr(m, "quantization_scheme") for m in ctx.model.modules())
    assert CALIBRATION_LENGTH == ctx.job.spec.calibration.max_sequence_length
