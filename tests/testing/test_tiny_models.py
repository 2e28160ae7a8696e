"""The tiny models the worker is tested on: deterministic, loadable as saved, with a chat template, and with
the widths that exercise the group-size fallback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kompress_testing import models


@pytest.mark.unit
def test_builds_are_deterministic():
    a, b = models.build_model("glm4-moe").state_dict(), models.build_model("glm4-moe").state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert models.build_tokenizer().get_vocab() == models.build_tokenizer().get_vocab()


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(models.FAMILIES))
def test_each_family_has_a_width_the_128_group_does_not_divide(name):
    import torch

    model = models.build_model(name)
    # input widths of Linear weights [out, in] and of fused experts' down_proj [experts, hidden, in]
    widths = {p.shape[-1] for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n}
    assert any(w % 128 for w in widths), widths
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.unit
def test_cli_writes_a_model_folder_transformers_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    done = subprocess.run([sys.executable, "-m", "kompress_testing.models", "qwen3-moe", str(tmp_path / "m")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "qwen3_moe"
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nHello<|end|>\n<|assistant|>\n"
    ids = tokenizer(text, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


@pytest.mark.unit
def test_calibration_rows_are_tokenized_chat_turns():
    tokenizer = models.build_tokenizer()
    rows = models.calibration_dataset(tokenizer, samples=16, max_length=64)
    assert len(rows) == 16 and set(rows.column_names) == {"input_ids", "attention_mask"}
    assert all(0 < len(ids) <= 64 for ids in rows["input_ids"])
    assert tokenizer.decode(rows[0]["input_ids"]).startswith("<|user|>")
