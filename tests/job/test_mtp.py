"""Multi-token-prediction layers: found from config.json and tensor names by one table (checked against
transformers' own model classes), carried byte for byte into a checkpoint folder or left out, and checked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kompress_job.model.mtp import carry, layers
from kompress_job.io.safetensors_files import read_header
from kompress_testing.models import config_dir

pytestmark = pytest.mark.unit

GLM = json.loads((config_dir("glm-4.5-air") / "config.json").read_text())


def test_glm_and_deepseek_store_mtp_layers_after_the_last_decoder_layer():
    glm = layers.declared(GLM)
    assert (glm.count, glm.prefixes, glm.layout) == (1, ("model.layers.46.",), "next-layers")
    deepseek = layers.declared({"model_type": "deepseek_v3", "num_hidden_layers": 61, "num_nextn_predict_layers": 1})
    assert deepseek.prefixes == ("model.layers.61.",)
    two = layers.declared({"model_type": "glm4_moe", "num_hidden_layers": 4, "num_nextn_predict_layers": 2})
    assert two.select(["model.layers.3.x", "model.layers.4.eh_proj.weight", "model.layers.5.enorm.weight", "model.layers.40.x"]) == [
        "model.layers.4.eh_proj.weight",
        "model.layers.5.enorm.weight",
    ]


def test_qwen3_next_style_models_store_them_under_mtp():
    qwen = layers.declared({"model_type": "qwen3_next", "num_hidden_layers": 48, "mtp_num_hidden_layers": 1})
    assert qwen.prefixes == ("mtp.",) and qwen.select(["mtp.fc.weight", "model.layers.0.x", "mtpx"]) == ["mtp.fc.weight"]
    vl = layers.declared({"model_type": "qwen3_5_moe", "text_config": {"model_type": "qwen3_5_moe_text", "mtp_num_hidden_layers": 1}})
    assert vl.prefixes == ("mtp.",)


def test_no_declared_layers_and_unknown_families():
    assert layers.declared({"model_type": "llama", "num_hidden_layers": 2}) is None
    assert layers.declared({**GLM, "num_nextn_predict_layers": 0}) is None
    odd = layers.declared({"model_type": "somebody_moe", "num_hidden_layers": 8, "num_nextn_predict_layers": 1})
    assert odd.count == 1 and not odd.known and odd.select(["model.layers.8.eh_proj.weight"]) == []


@pytest.mark.parametrize(
    ("model_type", "config", "class_path"),
    [
        ("glm4_moe", {"num_hidden_layers": 46}, "transformers.models.glm4_moe.modeling_glm4_moe.Glm4MoeForCausalLM"),
        ("deepseek_v3", {"num_hidden_layers": 61}, "transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3ForCausalLM"),
        ("glm4_moe_lite", {"num_hidden_layers": 47}, "transformers.models.glm4_moe_lite.modeling_glm4_moe_lite.Glm4MoeLiteForCausalLM"),
        ("qwen3_next", {"num_hidden_layers": 48, "mtp_num_hidden_layers": 1}, "transformers.models.qwen3_next.modeling_qwen3_next.Qwen3NextForCausalLM"),
    ],
)
def test_the_table_agrees_with_what_transformers_drops_at_load(model_type, config, class_path):
    # transformers lists the MTP layers' prefix in the model class's _keys_to_ignore_on_load_unexpected: the
    # tensors the table finds are exactly the ones the loaded model never has.
    import importlib
    import re

    module, _, name = class_path.rpartition(".")
    ignored = [re.compile(p) for p in getattr(importlib.import_module(module), name)._keys_to_ignore_on_load_unexpected]
    found = layers.declared({"model_type": model_type, "num_nextn_predict_layers": 1, **config})
    probe = f"{found.prefixes[0]}self_attn.q_proj.weight"
    assert any(p.search(probe) for p in ignored), (probe, ignored)


# -- carrying ------------------------------------------------------------------------------------------------

TINY = {"model_type": "glm4_moe", "num_hidden_layers": 2, "num_nextn_predict_layers": 1}
MTP = layers.declared(TINY)


def write_source(folder, *, dtype=torch.bfloat16):
    """A two-shard source checkpoint with an MTP layer (model.layers.2.*) in the second shard, as GLM ships it."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    body = {"model.embed_tokens.weight": torch.randn(8, 4, generator=generator).to(dtype), "model.layers.1.mlp.gate.weight": torch.randn(2, 4, generator=generator).to(dtype)}
    mtp = {
        "model.layers.2.eh_proj.weight": torch.randn(4, 8, generator=generator).to(dtype),
        "model.layers.2.enorm.weight": torch.randn(4, generator=generator).to(dtype),
        "model.layers.2.mlp.experts.0.gate_proj.weight": torch.randn(3, 4, generator=generator).to(dtype),
        "model.layers.2.mlp.gate.e_score_correction_bias": torch.randn(2, generator=generator),  # float32 beside bf16
    }
    save_file(body, str(folder / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    save_file(mtp, str(folder / "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map = {**{n: "model-00001-of-00002.safetensors" for n in body}, **{n: "model-00002-of-00002.safetensors" for n in mtp}}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(TINY))
    return mtp


def write_compressed(folder):
    """What llm-compressor's save leaves: one shard without the MTP layer, a quantization_config."""
    folder.mkdir(parents=True)
    save_file({"model.embed_tokens.weight": torch.zeros(8, 4), "model.layers.1.self_attn.q_proj.weight_packed": torch.zeros(4, 1, dtype=torch.int32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**TINY, "quantization_config": {"format": "pack-quantized", "ignore": ["lm_head"]}}))


def raw_bytes(path, name) -> bytes:
    header = read_header(path)
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        start, end = header[name]["data_offsets"]
        f.seek(8 + length + start)
        return f.read(end - start)


def test_keep_copies_every_mtp_tensor_byte_for_byte_into_a_shard_of_its_own(tmp_path):
    mtp = write_source(tmp_path / "source")
    write_compressed(tmp_path / "out")
    result = carry.apply(tmp_path / "source", tmp_path / "out", MTP, "keep")
    assert (result.tensors, result.layers, result.shard) == (4, 1, "model-00002-of-00002.safetensors")
    assert result.bytes == sum(t.numel() * t.element_size() for t in mtp.values())
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight_packed", *mtp}
    assert {index["weight_map"][n] for n in mtp} == {"model-00002-of-00002.safetensors"}
    with safe_open(str(out / result.shard), "pt") as handle:
        for name, tensor in mtp.items():
            assert handle.get_tensor(name).dtype == tensor.dtype and torch.equal(handle.get_tensor(name), tensor)
            assert raw_bytes(out / result.shard, name) == raw_bytes(tmp_path / "source" / "model-00002-of-00002.safetensors", name)
    ignore = json.loads((out / "config.json").read_text())["quantization_config"]["ignore"]
    assert ignore == ["lm_head", r"re:^model\.layers\.2\..*"]
    assert all(carry.ignored_by(ignore, n.rpartition(".")[0]) for n in mtp)
    assert not carry.ignored_by(ignore, "model.layers.1.self_attn.q_proj")
    assert carry.check(tmp_path / "source", out, MTP, "keep") == []


def test_check_finds_a_changed_missing_or_unignored_mtp_tensor(tmp_path):
    write_source(tmp_path / "source")
    write_compressed(tmp_path / "out")
    result = carry.apply(tmp_path / "source", tmp_path / "out", MTP, "keep")
    shard = tmp_path / "out" / result.shard
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "out", bad)
    data = bytearray((bad / result.shard).read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor (sorted: model.layers.2.mlp.gate.e_score_correction_bias)
    (bad / result.shard).write_bytes(bytes(data))
    assert carry.check(tmp_path / "source", bad, MTP, "keep") == ["MTP tensor model.layers.2.mlp.gate.e_score_correction_bias: its bytes differ from the source's"]
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["ignore"] = ["lm_head"]
    (bad / "config.json").write_text(json.dumps(config))
    assert sum("not in quantization_config.ignore" in f for f in carry.check(tmp_path / "source", bad, MTP, "keep")) == 4
    assert shard.is_file()
    assert carry.check(tmp_path / "source", tmp_path / "out", MTP, "drop")[0].startswith("spec.recipe.mtp is drop but the checkpoint holds 4")
    empty = tmp_path / "empty"
    write_compressed(empty)
    assert len(carry.check(tmp_path / "source", empty, MTP, "keep")) == 4


def test_drop_leaves_them_out_and_removes_what_the_library_copied(tmp_path):
    # llm-compressor 0.14 copies mtp.* tensors itself (model_mtp.safetensors, ignore re:^mtp.*): drop takes them out.
    qwen = layers.declared({"model_type": "qwen3_next", "num_hidden_layers": 2, "mtp_num_hidden_layers": 1})
    source = tmp_path / "source"
    source.mkdir()
    save_file({"model.norm.weight": torch.ones(4), "mtp.fc.weight": torch.ones(4, 8)}, str(source / "model.safetensors"))
    out = tmp_path / "out"
    write_compressed(out)
    save_file({"mtp.fc.weight": torch.ones(4, 8)}, str(out / "model_mtp.safetensors"))
    weight_map = {"model.embed_tokens.weight": "model.safetensors", "model.layers.1.self_attn.q_proj.weight_packed": "model.safetensors", "mtp.fc.weight": "model_mtp.safetensors"}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["ignore"].append("re:^mtp.*")
    (out / "config.json").write_text(json.dumps(config))
    kept_dir = tmp_path / "kept"
    shutil.copytree(out, kept_dir)

    result = carry.apply(source, out, qwen, "drop")
    assert (result.handling, result.tensors, result.shard) == ("drop", 1, None)
    assert not (out / "model_mtp.safetensors").exists() and "mtp.fc.weight" not in carry.tensors_in(out)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["ignore"] == ["lm_head"]
    assert carry.check(source, out, qwen, "drop") == []

    kept = carry.apply(source, kept_dir, qwen, "keep")  # replaced by Kompress's own copy, once
    assert kept.tensors == 1 and sorted(p.name for p in kept_dir.glob("*.safetensors")) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert json.loads((kept_dir / "config.json").read_text())["quantization_config"]["ignore"] == ["lm_head", r"re:^mtp\..*"]
    assert carry.check(source, kept_dir, qwen, "keep") == []


def test_a_config_that_declares_layers_the_checkpoint_lacks_carries_nothing(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    save_file({"model.norm.weight": torch.ones(4)}, str(source / "model.safetensors"))
    out = tmp_path / "out"
    write_compressed(out)
    before = sorted(p.name for p in out.iterdir())
    result = carry.apply(source, out, MTP, "keep")
    assert (result.tensors, result.bytes, result.shard) == (0, 0, None)
    assert sorted(p.name for p in out.iterdir()) == before
    assert carry.apply(source, out, None, "keep") is None


def test_the_worker_result_and_status_result_record_what_became_of_the_mtp_layer(tmp_path):
    from kompress_api.exit_codes import ExitCode
    from kompress_api.worker_protocol import WorkerResult, encode_termination
    from kompress_operator.status import job_result

    from kompress_job.context import RunContext
    from kompress_job.pipeline import result_of
    from kompress_job.progress import ProgressReporter
    from kompress_testing.jobs import make_job

    ctx = RunContext(job=make_job("/models/glm", "s3://models/glm"), workdir=tmp_path, progress=ProgressReporter(["save"]), env={})
    ctx.mtp = carry.CarryResult("keep", 1, 404, 7_233_147_136, "model-00004-of-00004.safetensors")
    result = result_of(ctx, ExitCode.OK, "published")
    assert WorkerResult.model_validate_json(encode_termination(result)).mtp == result.mtp
    assert job_result(result).wire()["mtp"] == {"handling": "keep", "layers": 1, "tensors": 404, "bytes": 7_233_147_136}
