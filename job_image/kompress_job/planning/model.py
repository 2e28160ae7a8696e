"""The model a plan is made for, from config.json alone: its structure on the meta device and its dtypes
(its multi-token-prediction layers, which transformers does not build, are kompress_job.planning.mtp's).

    meta_model(config, dtype)   transformers' own class for the config, built on the meta device (no weights, no
                                memory): the same modules the worker will load, so the recipe resolves the same
    load_dtype(spec, config)    the dtype the worker loads in, which is also the dtype of everything the
                                checkpoint keeps unquantized (spec.model.dtype, or the config's for auto)
    standard_names(config, model)  config.json with transformers' standard field names filled in from the
                                model's own aliases (GPT-2's n_embd is hidden_size), which the planner reads

Must not: read weights or import llm-compressor.
"""

from __future__ import annotations

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
