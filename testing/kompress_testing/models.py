"""Tiny language models built locally from configs: the test and demo stand-ins for real checkpoints.

Owns: three model families small enough to compress on a laptop CPU in seconds, and the tokenizer
they share, trained here on English dialogue shipped in a PyPI package (chatterbot-corpus, BSD).
Everything is seeded, so two builds give byte-identical weights.

    glm4-moe    GLM4-MoE as in GLM-4.5-Air: dense first layer, shared expert, Glm4MoeTopkRouter,
                fused 3-D experts. Dense intermediate 320 is not a multiple of 128 (as 10944 is not),
                so its down_proj exercises the group-size fallback (to 64).
    qwen3-moe   Qwen3-MoE: every layer MoE, no shared expert. Expert intermediate 160 is a multiple of
                32 only, so 4-bit expert down_proj falls back to group 32.
    llama       a dense Llama. Intermediate 344 is not a multiple of 32: its down_proj falls back to
                per-channel 4-bit.

    python -m kompress_testing.models NAME DIR

Development harness, not product: product code never imports this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# ChatML-like: short, and it exercises the same apply_chat_template path real chat models use.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
VOCAB_SIZE = 512
SEED = 1234

# Each family: a model_type and config keywords. Widths are chosen so the attention and most MLPs take
# the 128 group size, while one projection per family does not (see the module docstring).
_COMMON = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    vocab_size=VOCAB_SIZE,
    max_position_embeddings=512,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
FAMILIES: dict[str, tuple[str, dict]] = {
    "glm4-moe": (
        "glm4_moe",
        dict(
            _COMMON,
            intermediate_size=320,
            moe_intermediate_size=128,
            first_k_dense_replace=1,
            n_routed_experts=4,
            n_shared_experts=1,
            num_experts_per_tok=2,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            attention_bias=True,
            partial_rotary_factor=0.5,
            use_qk_norm=False,
        ),
    ),
    "qwen3-moe": (
        "qwen3_moe",
        dict(
            _COMMON,
            intermediate_size=256,
            moe_intermediate_size=160,
            num_experts=4,
            num_experts_per_tok=2,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=True,
        ),
    ),
    "llama": ("llama", dict(_COMMON, intermediate_size=344)),
}


# Real models' config.json files (no weights), for planning at full size on the meta device.
CONFIGS = Path(__file__).parent / "configs"


def config_dir(name: str) -> Path:
    """Folder holding a real model's config.json, e.g. config_dir("glm-4.5-air")."""
    folder = CONFIGS / name
    if not (folder / "config.json").is_file():
        raise KeyError(f"no stored config for {name!r}; known: {sorted(p.name for p in CONFIGS.iterdir())}")
    return folder


def corpus_texts(language: str = "english") -> Iterator[str]:
    """Every utterance of chatterbot-corpus's dialogues in one language, in a stable order."""
    for conversation in corpus_conversations(language):
        yield from conversation


def corpus_conversations(language: str = "english") -> Iterator[list[str]]:
    """chatterbot-corpus conversations (lists of alternating turns), files in name order."""
    root = resources.files("chatterbot_corpus") / "data" / language
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if not path.name.endswith((".yml", ".yaml")):
            continue
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in doc.get("conversations") or []:
            turns = [str(turn) for turn in conversation if isinstance(turn, (str, int, float))]
            if turns:
                yield turns


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer trained on the corpus, wrapped for transformers, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_config(name: str):
    from transformers import AutoConfig

    if name not in FAMILIES:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(FAMILIES)}")
    model_type, kwargs = FAMILIES[name]
    config = AutoConfig.for_model(model_type, **kwargs)
    config.dtype = "float32"
    return config


def meta_model(name: str):
    """The model's structure on the meta device: what the planner sees (no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(build_config(name))


def build_model(name: str):
    """The model, fp32, with seeded weights (std 0.02 like a fresh pretrained init, biases nonzero)."""
    model = seeded_model(build_config(name))
    model.eval()
    return model


def seeded_model(config: Any):
    """transformers' model for `config`, fp32, with the tiny models' seeded initialisation (also the trained
    model's starting point): random normal weights everywhere, norms near 1, so no layer is accidentally
    2:4-sparse or all-equal and quantization has real work to do."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if param.ndim == 1 and "norm" in pname:
                param.copy_(1.0 + 0.05 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_((0.02 if param.ndim > 1 else 0.01) * torch.randn(param.shape, generator=generator))
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("e_score_correction_bias"):
                buffer.zero_()
    return model


def write_model(name: str, out_dir: str | Path) -> Path:
    """Build the model and tokenizer and save them as a Hub-style folder (config, safetensors, tokenizer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(name)
    tokenizer = build_tokenizer()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def reshard(source: str | Path, out_dir: str | Path, shards: int) -> Path:
    """A copy of a saved model whose weights are dealt round-robin over `shards` safetensors files (with the
    index transformers writes), so that every fused set (q/k/v, gate/up) is split across files: what the
    data-free path has to reassemble. Other files are copied as they are."""
    import json
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    source, out = Path(source), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != "model.safetensors.index.json":
            shutil.copy2(path, out / path.name)
    tensors = {}
    for path in sorted(source.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
    names = sorted(tensors)
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {name: files[i % shards] for i, name in enumerate(names)}
    for file in files:
        save_file({n: tensors[n].contiguous() for n in names if weight_map[n] == file}, str(out / file), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True))
    return out


def calibration_dataset(tokenizer, samples: int = 16, max_length: int = 64, *, offset: int = 0):
    """A tokenized `datasets.Dataset` of chat-rendered conversations: what the calibration stage hands
    the compress stage (columns input_ids, attention_mask)."""
    from datasets import Dataset

    rows: list[dict] = []
    conversations: Callable[[], Iterator[list[str]]] = corpus_conversations
    for index, turns in enumerate(conversations()):
        if index < offset:
            continue
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        enc = tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=False)
        rows.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        if len(rows) == samples:
            break
    return Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kompress_testing.models", description="Build a tiny model and its tokenizer into a folder.")
    parser.add_argument("name", choices=sorted(FAMILIES))
    parser.add_argument("dir")
    args = parser.parse_args(argv)
    out = write_model(args.name, args.dir)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
