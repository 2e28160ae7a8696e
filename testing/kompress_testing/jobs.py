"""Worker test harness, not product: small model and checkpoint folders, jobs, and stand-ins for the compute stages.

Owns: a tokenizer trained here on the built-in dialogues (never downloaded), model folders as the Hub
or a bucket holds them, checkpoint folders as the save stage leaves them, CompressionJob builders,
and `ComputeStandIns`, which replaces the stages from plan to evaluate so the I/O stages (preflight,
fetch-model, calibration, publish) run end to end in seconds.
Must not: be imported by product code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kompress_api import v1alpha1
from kompress_api.v1alpha1 import EvaluationMetrics

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"


# ---------------------------------------------------------------------------------------------
# A tokenizer trained here (never downloaded), and model/checkpoint folders around it
# ---------------------------------------------------------------------------------------------


def train_tokenizer(folder: Path) -> Path:
    """tokenizer.json + tokenizer_config.json of a 512-token byte-level BPE trained on the built-in dialogues."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from kompress_job.model.calibration_data import builtin_rows

    texts = [r["text"] for r in builtin_rows("chatterbot", chat=False)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


def write_model(folder: Path, tokenizer_files: Path, *, chat_template: bool = True, weight_bytes: int = 64 * 1024, extra: dict[str, bytes] | None = None) -> Path:
    """A model folder as the Hub or a bucket holds one: config, safetensors weights, tokenizer (+ files that must be skipped)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "glm4_moe", "hidden_size": 64, "num_hidden_layers": 2}))
    rng = np.random.default_rng(0)
    save_file({"model.embed_tokens.weight": rng.standard_normal(weight_bytes // 4, dtype=np.float32)}, str(folder / "model.safetensors"))
    for f in tokenizer_files.iterdir():
        shutil.copy(f, folder / f.name)
    if chat_template:
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["chat_template"] = CHAT_TEMPLATE
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for name, data in (extra or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def write_checkpoint(folder: Path, tokenizer_files: Path, sizes: dict[str, int] | None = None) -> Path:
    """What the save stage leaves: compressed-tensors config, shards, tokenizer, recipe."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "glm4_moe", "quantization_config": {"format": "mixed-precision"}}))
    (folder / "recipe.yaml").write_text("quant_stage:\n  quant_modifiers: {}\n")
    for name, size in (sizes or {"model-00001-of-00002.safetensors": 300_000, "model-00002-of-00002.safetensors": 200_000}).items():
        (folder / name).write_bytes(os.urandom(size))
    for f in tokenizer_files.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


# ---------------------------------------------------------------------------------------------
# Jobs, and stand-ins for the stages these tests don't exercise
# ---------------------------------------------------------------------------------------------


def make_job(model_uri: str, output_uri: str, **spec: Any) -> v1alpha1.CompressionJob:
    doc: dict[str, Any] = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": "tiny", "namespace": "default", "uid": "0a1b2c3d-0000-0000-0000-000000000000"},
        "spec": {
            "model": {"uri": model_uri},
            "recipe": {"preset": "w4a16-w8a8"},
            "output": {"uri": output_uri},
            "calibration": {"samples": 8, "maxSequenceLength": 32},
            "evaluation": {"samples": 4},
            "resources": {"gpus": 0},
        },
    }
    for key, value in spec.items():
        doc["spec"][key] = {**doc["spec"].get(key, {}), **value} if isinstance(value, dict) else value
    return v1alpha1.parse(doc)


class FakeRecipe:
    """The shape of kompress_job.recipe's ResolvedRecipe.summary(), with made-up figures."""

    def summary(self) -> dict[str, Any]:
        return {
            "source": "preset",
            "preset": "w4a16-w8a8",
            "groups": [
                {"name": "group_0", "scheme": "W4A16", "sparsity": None, "modules": 2, "parameters": 65536},
                {"name": "group_1", "scheme": "W8A8", "sparsity": None, "modules": 12, "parameters": 393216},
            ],
            "kept_16bit": {"modules": 3, "parameters": 150000, "of_parameters": 608752},
            "servable": True,
            "serving": "vLLM: Marlin W4A16 on Linear layers, INT8 fused MoE on experts",
        }


def stage_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"kompress_job.stages.{name.replace('-', '_')}") is not None


# What the evaluate stand-in reports for a checkpoint of random bytes: never a measurement.
MADE_UP_METRICS = EvaluationMetrics(samples=4, tokens=100, perplexity_original=10.0, perplexity_compressed=10.5, perplexity_increase=0.05, kl_divergence=0.01, top1_agreement=0.95)


class ComputeStandIns:
    """The compute stages (plan ... evaluate), replaced for I/O tests: save copies a prepared checkpoint.

    The prepared checkpoint is random bytes, so nothing can be evaluated on it: the evaluate stand-in
    reports MADE_UP_METRICS (figures no model produced) and, with `gate_failures`, a missed gate, so the
    publish tests check where a rejected model goes in seconds. Real evaluation and the real gate are tested
    on the trained test model (tests/job/test_fidelity*.py).
    `real_compute`: run the product's own compute stages wherever they exist (baseline and evaluate
    included), and stand in only for the ones not written yet (their module is missing).
    """

    REPLACED = ("plan", "load-model", "baseline", "compress", "save", "verify", "evaluate")

    def __init__(self, checkpoint: Path | None = None, *, gate_failures: list[str] | None = None, real_compute: bool = False) -> None:
        if checkpoint is None and not real_compute:
            raise ValueError("stand-ins need a checkpoint to publish, unless the real compute stages run")
        self.checkpoint = checkpoint
        self.gate_failures = gate_failures or []
        self.real_compute = real_compute
        self.ran: list[str] = []

    def resolve(self, name: str):
        from kompress_job import pipeline

        if name not in self.REPLACED or (self.real_compute and stage_exists(name)):
            return pipeline.stage_function(name)

        def stand_in(ctx) -> None:
            self.ran.append(name)
            if name == "compress":
                ctx.recipe = FakeRecipe()
            if name == "save":
                target = ctx.workdir / "checkpoint"
                shutil.copytree(self.checkpoint, target, dirs_exist_ok=True)
                ctx.checkpoint_dir = target
            if name == "evaluate":
                ctx.metrics = MADE_UP_METRICS.model_copy()
                ctx.gate_failures = list(self.gate_failures)

        return stand_in
