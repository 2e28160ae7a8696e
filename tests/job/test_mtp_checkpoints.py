"""The multi-token-prediction layer through the worker's stages, on the tiny GLM4-MoE with an MTP layer and on
the trained test model with one added: every preset's checkpoint holds every MTP tensor of the source
byte-identical, quantization_config.ignore covers them, the reloaded model still passes verification's forward
check, and the plan (config.json + the safetensors index) predicted the checkpoint within 2 %.

The trained model's committed checkpoint has no MTP tensors (its config declares one, as transformers' default
GLM4-MoE config does): a copy gets GLM-4.5's layer added at test time, deterministically (seeded), by
kompress_testing.models.add_mtp_layer, rather than retraining the model."""

from __future__ import annotations

import json
import shutil

import pytest
from _worker_helpers import compressed, make_ctx, make_job, run_stages, tiny_models  # noqa: F401 - fixtures

from kompress_job.model.mtp import carry, layers
from kompress_job.planning.plan import local_weight_names, make_plan, read_config

pytestmark = pytest.mark.slow

PRESETS = ["sparse24-w4a16-w8a8", "w4a16-w8a8", "w4a16", "fp8-dynamic", "fp8-block", "nvfp4a16"]
MODEL = "glm4-moe+mtp"


def source_bytes(folder, layer: int) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """name -> (dtype, shape, stored bytes) of every tensor of decoder layer `layer` (the MTP layer: the one after
    the last), read with safetensors itself, not with Kompress's code."""
    import torch
    from safetensors import safe_open

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():
                if name.startswith(f"model.layers.{layer}."):
                    tensor = handle.get_tensor(name).contiguous()
                    out[name] = (str(tensor.dtype), tuple(tensor.shape), tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return out


def weight_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json")


def assert_mtp_kept(source, ctx):
    out = ctx.checkpoint_dir
    layer = read_config(source)["num_hidden_layers"]
    expected = source_bytes(source, layer)
    assert len(expected) == 32  # attention (7), router (2), 4 experts x 3, shared expert (3), 2 norms, 6 of the MTP layer's own
    assert source_bytes(out, layer) == expected  # every MTP tensor, same dtype, shape and bytes
    ignore = json.loads((out / "config.json").read_text())["quantization_config"]["ignore"]
    assert all(carry.ignored_by(ignore, name.rpartition(".")[0]) for name in expected)
    assert ctx.mtp.handling == "keep" and ctx.mtp.tensors == 32 and ctx.mtp.bytes == sum(len(b) for _, _, b in expected.values())
    assert ctx.verification["ok"] and ctx.verification["mtp_tensors_checked"] == 32
    assert ctx.verification["logits_finite"] and ctx.verification["generated_tokens"] > 0  # reloaded with the MTP shard present


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_keeps_the_mtp_layer_byte_identical_and_as_planned(compressed, tiny_models, preset):
    ctx, _ = compressed(MODEL, preset)
    source = tiny_models[MODEL]
    assert_mtp_kept(source, ctx)
    plan = make_plan(ctx.job, read_config(source), weight_names=local_weight_names(source))
    written = weight_bytes(ctx.checkpoint_dir)
    assert abs(plan.estimated_checkpoint_bytes - written) <= 0.02 * written, (plan.estimated_checkpoint_bytes, written)
    assert plan.mtp.bytes == ctx.mtp.bytes and len(plan.mtp.checkpoint_tensors) == 32
    written_shards = len(list(ctx.checkpoint_dir.glob("*.safetensors")))
    if ctx.recipe_path == "data-free":  # model_free_ptq keeps the source's files, plus the MTP layer's own
        assert written_shards == len(list(source.glob("*.safetensors"))) + 1
    else:
        assert plan.checkpoint_shards == written_shards == 2
    assert not plan.errors and not {"MtpLayerMissing", "MtpLayerUnverified", "MtpLayerDropped"} & {p.code for p in plan.problems}


def test_drop_leaves_the_mtp_layer_out(tiny_models, tmp_path):
    source = tiny_models[MODEL]
    job = make_job(source, preset="w4a16")
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"recipe": job.spec.recipe.model_copy(update={"mtp": "drop"})})})
    ctx = make_ctx(job, source, tmp_path)
    run_stages(ctx, "load-model", "compress", "save", "verify")
    assert ctx.verification["ok"] and (ctx.mtp.handling, ctx.mtp.tensors) == ("drop", 32)
    assert not any(layers.declared(read_config(source)).holds(n) for n in carry.tensors_in(ctx.checkpoint_dir))
    plan = make_plan(job, read_config(source), weight_names=local_weight_names(source))
    written = weight_bytes(ctx.checkpoint_dir)
    assert abs(plan.estimated_checkpoint_bytes - written) <= 0.02 * written and "MtpLayerDropped" in {p.code for p in plan.problems}


@pytest.fixture(scope="module")
def trained_with_mtp(tmp_path_factory):
    from kompress_testing import models, trained_model

    folder = tmp_path_factory.mktemp("trained-mtp") / "glm4-moe-chat"
    shutil.copytree(trained_model.folder(), folder)
    models.add_mtp_layer(folder)
    return folder


def test_the_trained_model_as_committed_declares_an_mtp_layer_it_does_not_hold():
    from kompress_testing import trained_model

    folder = trained_model.folder()
    plan = make_plan(make_job(folder, preset="w4a16"), read_config(folder), weight_names=local_weight_names(folder))
    missing = {p.code: p for p in plan.problems}["MtpLayerMissing"]
    assert "model.layers.4.*" in missing.message and plan.mtp.in_source is False and not plan.mtp.checkpoint_tensors


@pytest.mark.parametrize("preset", PRESETS)
def test_the_trained_model_keeps_its_mtp_layer_in_every_preset(trained_with_mtp, tmp_path, preset):
    job = make_job(trained_with_mtp, preset=preset)
    ctx = make_ctx(job, trained_with_mtp, tmp_path)
    run_stages(ctx, "load-model", "compress", "save", "verify")
    assert_mtp_kept(trained_with_mtp, ctx)
    plan = make_plan(job, read_config(trained_with_mtp), weight_names=local_weight_names(trained_with_mtp))
    written = weight_bytes(ctx.checkpoint_dir)
    assert abs(plan.estimated_checkpoint_bytes - written) <= 0.02 * written, (plan.estimated_checkpoint_bytes, written)
