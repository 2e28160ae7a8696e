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

    glm4-moe with mtp=True (--mtp)   also GLM-4.5's multi-token-prediction layer, `model.layers.2.*`, with real
                (seeded) weights, in a shard of its own as GLM-4.5-Air ships it (add_mtp_layer; its config,
                like transformers' default, declares num_nextn_predict_layers: 1 either way)

    python -m kompress_testing.models NAME DIR [--mtp]

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


def write_model(name: str, out_dir: str | Path, *, mtp: bool = False) -> Path:
    """Build the model and tokenizer and save them as a Hub-style folder (config, safetensors, tokenizer).
    mtp (glm4-moe only): also write a multi-token-prediction layer with real weights (add_mtp_layer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(name)
    tokenizer = build_tokenizer()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if mtp:
        add_mtp_layer(out)
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
MTP_SEED = SEED + 46  # its own stream: adding the layer leaves every other weight as it was


def mtp_layer_tensors(config: Any) -> dict[str, Any]:
    """GLM-4.5's MTP layer for a GLM4-MoE `config`, named and laid out as GLM-4.5-Air's checkpoint stores
    `model.layers.46.*` (vLLM's glm4_moe_mtp reads it so): a whole MoE decoder block with per-expert
    projections, plus enorm, hnorm, eh_proj (2·hidden -> hidden), shared_head.{norm,head} and its own
    embed_tokens. Seeded like the tiny models (normal weights, norms near 1)."""
    import torch
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeDecoderLayer

    index = config.num_hidden_layers
    hidden, vocab = config.hidden_size, config.vocab_size
    torch.manual_seed(MTP_SEED)
    block = Glm4MoeDecoderLayer(config, index)
    generator = torch.Generator().manual_seed(MTP_SEED)

    def draw(pname: str, shape: tuple[int, ...]) -> Any:
        if len(shape) == 1 and "norm" in pname:
            return 1.0 + 0.05 * torch.randn(shape, generator=generator)
        return (0.02 if len(shape) > 1 else 0.01) * torch.randn(shape, generator=generator)

    raw: dict[str, Any] = {}
    for pname, tensor in block.state_dict().items():
        raw[pname] = torch.zeros(tensor.shape) if pname.endswith("e_score_correction_bias") else draw(pname, tuple(tensor.shape))
    for pname, shape in (("enorm.weight", (hidden,)), ("hnorm.weight", (hidden,)), ("eh_proj.weight", (hidden, 2 * hidden)),
                         ("shared_head.norm.weight", (hidden,)), ("shared_head.head.weight", (vocab, hidden)), ("embed_tokens.weight", (vocab, hidden))):
        raw[pname] = draw(pname, shape)
    out: dict[str, Any] = {}
    for pname, tensor in raw.items():
        if pname == "mlp.experts.gate_up_proj":  # fused in transformers, per expert in the checkpoint (gate first)
            half = tensor.shape[1] // 2
            for e in range(tensor.shape[0]):
                out[f"mlp.experts.{e}.gate_proj.weight"] = tensor[e, :half].contiguous()
                out[f"mlp.experts.{e}.up_proj.weight"] = tensor[e, half:].contiguous()
        elif pname == "mlp.experts.down_proj":
            for e in range(tensor.shape[0]):
                out[f"mlp.experts.{e}.down_proj.weight"] = tensor[e].contiguous()
        else:
            out[pname] = tensor.contiguous()
    return {f"model.layers.{index}.{k}": v.to(torch.float32) for k, v in out.items()}


def add_mtp_layer(folder: str | Path) -> list[str]:
    """Add GLM-4.5's MTP layer (mtp_layer_tensors) to the GLM4-MoE checkpoint in `folder` as GLM-4.5-Air ships
    it: sharded, the MTP tensors in a shard of their own, model.safetensors.index.json naming every tensor.
    Returns the MTP tensor names. Written with safetensors itself, not with Kompress's carry-over code."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "glm4_moe" or getattr(config, "num_nextn_predict_layers", 0) != 1:
        raise ValueError(f"{folder}: add_mtp_layer writes one GLM4-MoE MTP layer; this config is {config.model_type}")
    tensors = mtp_layer_tensors(config)
    single = folder / "model.safetensors"
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    single.rename(folder / first)
    save_file(tensors, str(folder / second), metadata={"format": "pt"})
    weight_map: dict[str, str] = {}
    total = 0
    for shard in (first, second):
        with safe_open(str(folder / shard), framework="pt") as handle:
            for key in handle.keys():
                weight_map[key] = shard
                sliced = handle.get_slice(key)
                total += _numel(sliced.get_shape()) * _DTYPE_BYTES[sliced.get_dtype()]
    doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(doc, indent=2) + "\n")
    return sorted(tensors)


_DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1}


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def mtp_layer_names(config: dict[str, Any]) -> list[str]:
    """The names mtp_layer_tensors gives, for a config.json of any size (built on the meta device: no weights)."""
    import torch
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeDecoderLayer

    cfg = CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
    index = cfg.num_hidden_layers
    with torch.device("meta"):
        block = Glm4MoeDecoderLayer(cfg, index)
    names = ["enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight", "shared_head.head.weight", "embed_tokens.weight"]
    for pname, tensor in block.state_dict().items():
        if pname in ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"):
            projections = ("gate_proj", "up_proj") if pname.endswith("gate_up_proj") else ("down_proj",)
            names += [f"mlp.experts.{e}.{p}.weight" for e in range(tensor.shape[0]) for p in projections]
        else:
            names.append(pname)
    return sorted(f"model.layers.{index}.{n}" for n in names)


def synthetic_index(config: dict[str, Any]) -> str:
    """GLM-4.5-Air's model.safetensors.index.json as far as planning reads it: the MTP layer's tensor names (the
    real index, 4 MB, is not stored here). The rest of the weight map is the model's own, which the plan builds."""
    import json

    names = mtp_layer_names(config)
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": {n: "model-00047-of-00047.safetensors" for n in names}}, indent=2)


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
    parser.add_argument("--mtp", action="store_true", help="glm4-moe: also write a multi-token-prediction layer (GLM-4.5's layout)")
    args = parser.parse_args(argv)
    out = write_model(args.name, args.dir, mtp=args.mtp)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
