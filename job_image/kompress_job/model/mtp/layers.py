"""Which tensors of a checkpoint are multi-token-prediction layers: a function of the model's structure (its
config.json and its tensor names) and one table of the families that have them.

    declared(config)            MtpLayers (count, prefixes) when config.json declares MTP layers, else None
    MtpLayers.select(names)     the names, of a checkpoint's tensors, that belong to those layers
    MtpLayers.ignore_patterns   quantization_config.ignore entries covering them (compressed-tensors' re: syntax,
                                matched by vLLM against its module names, which keep the checkpoint's prefix)

Two layouts exist (read from transformers 5.17's model classes and vLLM's *_mtp.py loaders):
    next-layers   the MTP layers are decoder layers numbered after the last one, `model.layers.{L + i}.*`
                  (L = num_hidden_layers): GLM-4.5/4.6/4.7 (glm4_moe), GLM-4.7-Flash (glm4_moe_lite), GLM-5
                  (glm_moe_dsa), DeepSeek-V3/V3.2. Each holds a whole decoder block plus enorm, hnorm,
                  eh_proj, shared_head.{norm,head} and often its own embed_tokens copy.
    prefix        one top-level prefix, `mtp.*`: Qwen3-Next, Qwen3.5 (dense and MoE).
Must not: import torch, transformers or llm-compressor (the planning pod imports it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


NEXT_LAYERS = "next-layers"
PREFIX = "prefix"


@dataclass(frozen=True)
class Family:
    count_keys: tuple[str, ...]  # config.json keys holding the number of MTP layers, first found wins
    layout: str  # NEXT_LAYERS or PREFIX
    prefix: str = ""  # for PREFIX


_GLM_DEEPSEEK = Family(("num_nextn_predict_layers", "num_mtp_layers"), NEXT_LAYERS)
_QWEN = Family(("mtp_num_hidden_layers", "num_nextn_predict_layers"), PREFIX, "mtp.")
# model_type -> how its MTP layers are stored. A family not listed here is reported, never guessed at.
FAMILIES: dict[str, Family] = {
    "glm4_moe": _GLM_DEEPSEEK,
    "glm4_moe_lite": _GLM_DEEPSEEK,
    "glm_moe_dsa": _GLM_DEEPSEEK,
    "deepseek_v3": _GLM_DEEPSEEK,
    "deepseek_v32": _GLM_DEEPSEEK,
    "qwen3_next": _QWEN,
    "qwen3_5": _QWEN,
    "qwen3_5_moe": _QWEN,
    "qwen3_5_text": _QWEN,
    "qwen3_5_moe_text": _QWEN,
}
# Keys any config may use for an MTP count (to notice one in a family the table does not know).
COUNT_KEYS = ("num_nextn_predict_layers", "num_mtp_layers", "mtp_num_hidden_layers")


@dataclass(frozen=True)
class MtpLayers:
    """The MTP layers a config.json declares, and where a checkpoint stores them."""

    model_type: str
    count: int
    layout: str | None  # None: a family the table does not know
    prefixes: tuple[str, ...]  # e.g. ("model.layers.46.",); empty when the layout is unknown
    first_layer: int | None = None  # NEXT_LAYERS: the index of the first MTP layer (= num_hidden_layers)

    @property
    def known(self) -> bool:
        return bool(self.prefixes)

    def holds(self, name: str) -> bool:
        return name.startswith(self.prefixes) if self.prefixes else False

    def select(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in names if self.holds(n))

    @property
    def ignore_patterns(self) -> list[str]:
        return [f"re:^{re.escape(p)}.*" for p in self.prefixes]

    def where(self) -> str:
        return ", ".join(f"{p}*" for p in self.prefixes) or "a prefix Kompress does not know for this family"


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    return config["text_config"] if isinstance(config.get("text_config"), dict) else config


def declared(config: dict[str, Any]) -> MtpLayers | None:
    """The MTP layers `config` (a parsed config.json) declares, or None when it declares none."""
    text = _text_config(config)
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    family = FAMILIES.get(model_type) or FAMILIES.get(str(config.get("model_type") or ""))
    keys = family.count_keys if family else COUNT_KEYS
    count = next((int(text[k]) for k in keys if isinstance(text.get(k), int) and not isinstance(text.get(k), bool)), 0)
    if count <= 0:
        return None
    if family is None:
        return MtpLayers(model_type, count, None, ())
    if family.layout == PREFIX:
        return MtpLayers(model_type, count, PREFIX, (family.prefix,))
    first = int(text.get("num_hidden_layers") or 0)
    return MtpLayers(model_type, count, NEXT_LAYERS, tuple(f"model.layers.{first + i}." for i in range(count)), first)
