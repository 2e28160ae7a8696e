"""The model a plan is made for, from config.json alone: its structure on the meta device, its dtypes, and the
multi-token-prediction (MTP) layer transformers does not build.

    meta_model(config, dtype)   transformers' own class for the config, built on the meta device (no weights, no
                                memory): the same modules the worker will load, so the recipe resolves the same
    load_dtype(spec, config)    the dtype the worker loads in, which is also the dtype of everything the
                                checkpoint keeps unquantized (spec.model.dtype, or the config's for auto)
    mtp_layers(model, config)   what config.json says about MTP layers, and where they end up
    standard_names(config, model)  config.json with transformers' standard field names filled in from the
                                model's own aliases (GPT-2's n_embd is hidden_size), which the planner reads

The MTP layer, established from code (transformers 5.17, llm-compressor 0.14, compressed-tensors 0.19, vLLM):
GLM-4.5(-Air) and DeepSeek-V3 store it as the decoder layer after the last one (`model.layers.46.*` on
GLM-4.5-Air; vLLM's glm4_moe_mtp loader reads it there), and transformers lists exactly that prefix in the
model class's `_keys_to_ignore_on_load_unexpected`, so the worker never loads it. llm-compressor's save
wrapper then tries to copy MTP tensors back (its config check passes: `num_mtp_layers` is an alias of
`num_nextn_predict_layers`), but copies only keys that start with `mtp`, so nothing is copied: the compressed
checkpoint has no MTP layer. Its parameters are counted here as one more decoder layer of the last layer's
shape plus `eh_proj` (2·hidden → hidden) and three norms; copies of the embedding and output head that some
checkpoints also store under that prefix cannot be seen from config.json, so this is a lower bound.

Must not: read weights or import llm-compressor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kompress_job.errors import UnsupportedArchitecture, describe

DTYPES = ("bfloat16", "float16", "float32")
# transformers' `dtype="auto"` reads the config's dtype; without one it looks at the weights, which a plan
# never sees. bfloat16 is what nearly every released LLM ships in.
ASSUMED_DTYPE = "bfloat16"


def config_dtype(config: dict[str, Any]) -> str | None:
    value = config.get("dtype") or config.get("torch_dtype")
    if value is None and isinstance(config.get("text_config"), dict):
        value = config["text_config"].get("dtype") or config["text_config"].get("torch_dtype")
    value = str(value).removeprefix("torch.") if value is not None else None
    return value if value in DTYPES else None


def load_dtype(spec_dtype: str, config: dict[str, Any]) -> str:
    """The dtype the worker loads the model in (spec.model.dtype; auto: the config's)."""
    if spec_dtype != "auto":
        return spec_dtype
    return config_dtype(config) or ASSUMED_DTYPE


def dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def meta_model(config: dict[str, Any], dtype: str, *, trust_remote_code: bool = False) -> Any:
    """The causal LM transformers builds for `config` (a parsed config.json), on the meta device, in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    what = config.get("architectures") or model_type or "this model"
    if not model_type:
        raise UnsupportedArchitecture(f"config.json has no model_type: transformers cannot tell which model {what} is")
    if model_type not in CONFIG_MAPPING:
        hint = (
            " It ships its own code (auto_map), which planning from config.json alone cannot run: plan it where the model's"
            " *.py files are, or leave planning to the worker."
            if config.get("auto_map")
            else " A newer transformers may know it."
        )
        raise UnsupportedArchitecture(f"transformers {_transformers_version()} does not know model_type {model_type!r} ({what}).{hint}")
    from huggingface_hub.errors import StrictDataclassError  # transformers 5 checks config fields' types with it

    try:
        cfg = CONFIG_MAPPING[model_type].from_dict(dict(config))
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, AttributeError, ImportError, StrictDataclassError) as err:
        raise UnsupportedArchitecture(f"transformers cannot build {what} from its config.json: {describe(err)}") from None


def standard_names(config: dict[str, Any], model: Any) -> dict[str, Any]:
    """`config` with the standard names transformers maps to this model's own fields (its config class's
    attribute_map: hidden_size, num_hidden_layers, num_attention_heads... from GPT-2's n_embd, n_layer, n_head)
    added where config.json does not have them, in the text config where there is one."""
    text_config = model.config.get_text_config()
    aliases = {name: getattr(text_config, name, None) for name in getattr(text_config, "attribute_map", {})}
    aliases = {name: value for name, value in aliases.items() if value is not None}
    if isinstance(config.get("text_config"), dict):
        return {**config, "text_config": {**aliases, **config["text_config"]}}
    return {**aliases, **config}


def _transformers_version() -> str:
    from importlib import metadata

    return metadata.version("transformers")


@dataclass(frozen=True)
class MtpLayers:
    """The multi-token-prediction layers config.json declares."""

    count: int
    prefix: str | None  # where the checkpoint stores them, when known (e.g. model.layers.46)
    parameters: int  # at least (see the module docstring)
    dropped_on_load: bool  # transformers ignores them (the class lists their prefix)
    in_checkpoint: bool | None  # llm-compressor copies them back; None: cannot tell

    def summary(self, source_dtype_bytes: int) -> dict[str, Any]:
        return {
            "layers": self.count,
            "prefix": self.prefix,
            "parameters": self.parameters,
            "source_bytes": self.parameters * source_dtype_bytes,
            "loaded": not self.dropped_on_load,
            "in_checkpoint": self.in_checkpoint,
        }


def mtp_layers(config: dict[str, Any], model_class: type, last_decoder_layer: Any) -> MtpLayers | None:
    """The MTP layers `config` declares; `last_decoder_layer`: the model's last decoder layer (their shape)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    count = int(text.get("num_nextn_predict_layers") or text.get("num_mtp_layers") or text.get("mtp_num_hidden_layers") or 0)
    if count <= 0:
        return None
    hidden = int(text.get("hidden_size") or 0)
    decoder = sum(p.numel() for p in last_decoder_layer.parameters()) if last_decoder_layer is not None else 0
    per_layer = decoder + 2 * hidden * hidden + 3 * hidden  # + eh_proj and enorm, hnorm, shared_head.norm
    ignored = [re.compile(p) for p in (getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or [])]
    prefix = f"model.layers.{int(text.get('num_hidden_layers') or 0)}"
    if any(p.match(f"{prefix}.eh_proj.weight") for p in ignored):
        # llm-compressor 0.14 copies back only keys starting with "mtp" (compressed_tensors.utils.mtp).
        return MtpLayers(count, prefix, per_layer * count, dropped_on_load=True, in_checkpoint=prefix.startswith("mtp"))
    return MtpLayers(count, None, per_layer * count, dropped_on_load=True, in_checkpoint=None)
