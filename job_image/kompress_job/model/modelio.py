"""Loading models the ways the worker needs: for compression, on the meta device, and back from a checkpoint.

Owns: the one place that calls `from_pretrained` on a causal LM, with llm-compressor's MoE loader so
fused 3-D experts arrive as per-expert Linear layers (what recipes target and what checkpoints store),
and the errors a user sees when the folder is not a model.
Must not: know about recipes or stages.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from kompress_job.errors import ModelFileCorrupt, ModelNotFound, UnsupportedArchitecture, describe

DTYPES = {"bfloat16", "float16", "float32"}


def torch_dtype(name: str) -> Any:
    """spec.model.dtype -> what from_pretrained takes ('auto' or a torch dtype)."""
    if name == "auto":
        return "auto"
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name}")
    import torch

    return getattr(torch, name)


def check_model_dir(path: Path | str | None) -> Path:
    """The model folder, or ModelNotFound saying what is missing."""
    if path is None:
        raise ModelNotFound("no model folder: the fetch-model stage did not provide one")
    folder = Path(path)
    if not folder.is_dir():
        raise ModelNotFound(f"model folder {folder} does not exist; check spec.model.uri (and the volume it is on)")
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{folder} has no config.json: spec.model.uri must point at a Hugging Face style model folder")
    try:
        json.loads((folder / "config.json").read_bytes())
    except ValueError as err:
        raise ModelNotFound(f"the config.json in {folder} is not JSON: {err}") from None
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelNotFound(f"{folder} has a config.json but no weights (*.safetensors)")
    check_weight_files(folder)
    return folder


def check_weight_files(folder: Path) -> None:
    """ModelFileCorrupt naming the file, for a safetensors file whose header cannot be read or whose size is not
    what its header says (truncated, overwritten), or a shard the index names that is not there.

    Reads headers only (safetensors checks the offsets against the file's size), so a 200 GB model costs
    milliseconds; without it transformers fails the load with a message naming no file, as an internal error
    that the Job would retry on GPUs, failing the same way each time."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelFileCorrupt(f"{index.name} in {folder} is not a safetensors index (no weight_map): {type(err).__name__}") from None
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            raise ModelFileCorrupt(f"{index.name} names {len(missing)} weight file(s) that are not in the model: {', '.join(missing[:3])}")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError, OSError, ValueError
            raise ModelFileCorrupt(f"weight file {path.name} of the model cannot be read: {err}; fetch it again or fix the source at spec.model.uri") from None


def _unsupported(folder: Path, err: Exception, trust_remote_code: bool) -> UnsupportedArchitecture:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    what = config.get("architectures") or config.get("model_type") or "this model"
    hint = "" if trust_remote_code else " If the model ships its own code, set spec.model.trustRemoteCode: true."
    return UnsupportedArchitecture(f"transformers cannot build {what}: {describe(err)}.{hint}")


def load_causal_lm(
    path: Path | str, *, dtype: str = "auto", trust_remote_code: bool = False, offloaded: bool = False, offload_folder: Path | None = None, host_budget: int | None = None
) -> Any:
    """The model in host memory, MoE experts as per-expert Linear layers (llm-compressor's layout).

    offloaded: load through compressed-tensors' offloaded loader (rank 0 reads the weights, other DDP
    ranks build on meta and receive them), as llm-compressor's distributed examples do; what does not
    fit in host memory goes to `offload_folder` on disk.
    host_budget (with offloaded): at most about this many bytes of weights in host memory, the rest on disk in
    `offload_folder`, each module's read back for its own forward (onto the accelerator, or the CPU): the same
    outputs as a model loaded whole (tests compare), for a host that cannot hold the model.
    """
    from kompress_job.model import cpu_workarounds

    folder = check_model_dir(path)
    cpu_workarounds.apply()
    from llmcompressor.modeling.moe.linearize import load_quantizable_moe
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(_fp4_load_dtype(folder, dtype)), "trust_remote_code": trust_remote_code}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_conversion_mappings_restored())
        stack.enter_context(load_quantizable_moe())
        if offloaded:
            from compressed_tensors.offload import load_offloaded_model

            stack.enter_context(load_offloaded_model())
            kwargs["device_map"] = "auto_offload"
            if offload_folder is not None:
                kwargs["offload_folder"] = str(offload_folder)
            if host_budget is not None:
                kwargs["max_memory"] = {"cpu": max(1, host_budget)}  # no accelerator named: what does not fit goes to disk
            elif not cpu_workarounds.has_accelerator():
                # compressed-tensors budgets a distributed run's host memory as /dev/shm capped by the mmap
                # limit times the mean tensor size, minus 5 GB: a tiny test model gets a negative budget
                # and goes to disk. On a CPU there is no device to onload to: keep it all in memory.
                import psutil

                kwargs["max_memory"] = {"cpu": psutil.virtual_memory().available}
        from huggingface_hub.errors import StrictDataclassError  # a config.json field of the wrong type

        try:
            model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        except (ValueError, KeyError, ImportError, StrictDataclassError) as err:
            if "does not recognize this architecture" in str(err) or "trust_remote_code" in str(err) or isinstance(err, (KeyError, StrictDataclassError)):
                raise _unsupported(folder, err, trust_remote_code) from None
            raise
    model.eval()
    return model


def _fp4_load_dtype(folder: Path, dtype: str) -> str:
    """compressed-tensors 0.19 decompresses FP4 weights (NVFP4, MXFP4) to bfloat16 whatever the model's dtype, so
    a float32 checkpoint's forward fails ("self and mat2 must have the same dtype"). Such a checkpoint (only test
    models are float32) is loaded in bfloat16; every real model is bf16 or fp16 already and loads as it is."""
    if dtype != "auto":
        return dtype
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return dtype
    formats = {str(g.get("format")) for g in (config.get("quantization_config") or {}).get("config_groups", {}).values() if isinstance(g, dict)}
    formats.add(str((config.get("quantization_config") or {}).get("format")))
    fp32 = (config.get("dtype") or config.get("torch_dtype")) == "float32"
    return "bfloat16" if fp32 and formats & {"nvfp4-pack-quantized", "mxfp4-pack-quantized"} else dtype


@contextlib.contextmanager
def _conversion_mappings_restored():
    """Put transformers' checkpoint conversion mappings back as they were after a load.

    llm-compressor 0.14's load_quantizable_moe registers its per-expert save mapping for the model type
    globally and never removes it, so every later plain from_pretrained of that type in the process leaves
    the experts randomly initialised, and every save_pretrained writes fused experts. The model it loaded
    keeps its own save mapping (model._weight_conversions), which is what saving it uses.
    """
    from transformers import conversion_mapping

    conversion_mapping.get_checkpoint_conversion_mapping("llama")  # builds the registry if not built yet
    registry = conversion_mapping._checkpoint_conversion_mapping_cache
    saved, user = dict(registry), set(conversion_mapping.USER_REGISTERED_MAPPINGS)
    try:
        yield
    finally:
        registry.clear()
        registry.update(saved)
        conversion_mapping.USER_REGISTERED_MAPPINGS.clear()
        conversion_mapping.USER_REGISTERED_MAPPINGS.update(user)


def load_tokenizer(path: Path | str, *, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer, or ModelNotFound (not retried: the model's files are what they are) when the folder
    holds none transformers can load (no tokenizer.json, tokenizer.model or vocabulary, or one it cannot read)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise ModelNotFound(
            f"the model at {path} has no tokenizer transformers can load (tokenizer.json, tokenizer.model or a vocabulary): {describe(err)}"
        ) from None


def meta_model(path: Path | str, *, trust_remote_code: bool = False) -> Any:
    """The model's structure on the meta device, from config.json alone (no weights read)."""
    import torch
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(path)
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, ImportError, StrictDataclassError) as err:
        raise _unsupported(folder, err, trust_remote_code) from None
