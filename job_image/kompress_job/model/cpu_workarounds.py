"""Workarounds for upstream bugs that only bite on machines without an accelerator (a laptop, CI, this repo's
tests). Each is applied only where its trigger holds, is idempotent, and names the upstream behaviour it
works around, so it can be deleted when upstream fixes it.

Owns: every monkey patch Kompress applies to llm-compressor or transformers. Nothing else in Kompress
patches third-party code.
Must not: change what a GPU run does.

    apply()    apply what this machine needs; returns the names of the workarounds applied
"""

from __future__ import annotations

import importlib.util
import sys
import threading

_lock = threading.Lock()
_applied: list[str] = []


def has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def apply() -> list[str]:
    """Apply the workarounds this machine needs (once per process). Returns their names."""
    with _lock:
        if not has_accelerator():
            _apply_once("awq-pinned-memory", _skip_pinning_without_accelerator)
            _apply_once("awq-distributed-reduce-on-cpu", _reduce_awq_statistics_on_cpu)
        if importlib.util.find_spec("torchvision") is None:
            _apply_once("transformers-apply-patches-without-torchvision", _tolerate_alias_modules_without_torchvision)
        return list(_applied)


def _apply_once(name: str, patch) -> None:
    if name not in _applied:
        patch()
        _applied.append(name)


def _skip_pinning_without_accelerator() -> None:
    # llm-compressor 0.14 AWQModifier._apply_smoothing pins every cached activation batch
    # (IntermediatesCache.pin_memory -> Tensor.pin_memory()) to speed up host-to-GPU copies. Without an
    # accelerator torch raises "Cannot access accelerator device when none is available." Pinning is
    # only a transfer optimisation: on a CPU there is no transfer, so skipping it changes no result.
    from llmcompressor.pipelines.cache import IntermediatesCache

    def pin_memory(self, batch_index, input_names=None):  # noqa: ARG001 - same signature as upstream
        return None

    IntermediatesCache.pin_memory = pin_memory


def _reduce_awq_statistics_on_cpu() -> None:
    # llm-compressor 0.14 awq/base.py `_allreduce_data_sum` (distributed runs only) moves the tensors to
    # `torch.accelerator.current_accelerator()` before all_reduce; without an accelerator that is None
    # ("'NoneType' object has no attribute 'type'"). gloo reduces CPU tensors where they are, so the
    # same sum is computed in place. Only a CPU distributed run (this repo's DDP test) reaches it.
    import torch.distributed as dist
    from compressed_tensors.distributed import wait_for_comms
    from compressed_tensors.offload.dist_utils import as_broadcastable
    from llmcompressor.modifiers.transform.awq import base as awq_base

    def allreduce_data_sum(data):
        pending = [dist.all_reduce(as_broadcastable(datum), op=dist.ReduceOp.SUM, async_op=True) for datum in data]
        wait_for_comms(pending)
        return data

    awq_base._allreduce_data_sum = allreduce_data_sum


def _tolerate_alias_modules_without_torchvision() -> None:
    # transformers 5.17 `monkey_patching.apply_patches` (entered by from_pretrained whenever a patch
    # mapping is registered, which llm-compressor's load_quantizable_moe does) calls dir() on every
    # `transformers*` module in sys.modules. transformers registers lazy alias modules for legacy paths
    # (`image_processing_*`), whose __dir__ imports the target; image processors import torchvision and
    # die with "No module named 'torchvision'" when it is absent. The aliases hold image processors
    # only, never a class a patch mapping replaces, so an empty listing on ImportError loses nothing.
    import transformers  # noqa: F401 - creates the alias modules

    for name, module in list(sys.modules.items()):
        if not name.startswith("transformers") or module is None:
            continue
        original = module.__dict__.get("__dir__")
        if original is None or getattr(original, "_kompress_safe", False):
            continue

        def safe_dir(original=original):
            try:
                return original()
            except ImportError:
                return []

        safe_dir._kompress_safe = True  # type: ignore[attr-defined]
        module.__dir__ = safe_dir
