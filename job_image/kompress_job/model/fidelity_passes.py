"""Running a model over held-out rows, the same way for the original and for the compressed model.

    plan_batches(lengths, vocab)     row indices per batch: as many rows as keep one batch's fp32 logits within a budget
    build_batches(rows, plan, pad)   those batches as tensors (right-padded ids, masks, the tokens predicted)
    find_taps(model)                 the modules whose output is recorded: each decoder layer's attention block,
                                     its MLP (or MoE) block, and the layer itself
    Runner(model)                    forward passes with output hooks on the taps, each tap's output kept as a sketch
                                     (a context manager: onloads the model to an accelerator and back)
    onload(model) / undo_onload      run a model held in host memory on the accelerator, one module at a time
                                     (also how task_scores runs lm-eval's hf backend)
    log_probs_at(logits, predicted)  fp32 log-softmax of the predicted positions, in chunks
    tail_log_mass(log_probs, ids)    log of the probability outside the given tokens, per row

Both sides must agree on everything here, or the comparison would measure the difference between two
measurements: the same batches in the same order, the same positions recorded (the first DRIFT_TOKENS, in row
order) and the same sketch. Hidden states wider than SKETCH_DIM are sketched as a Gaussian projection to
SKETCH_DIM dimensions, seeded by the width (Johnson-Lindenstrauss: squared norms are preserved in expectation),
narrower ones kept exactly.

Owns: batching, the taps and their hooks, the sketch, onloading. Must not: write files (fidelity_record does),
compute figures of merit (fidelity_comparison does), or know about stages, the job spec or object stores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SKETCH_DIM = 64
SKETCH_SEED = 20241126
DRIFT_TOKENS = 4096  # positions whose hidden states are recorded (the first ones, in row order)
# Bytes of fp32 logits one batch may produce. On an accelerator the weights stream through one module at
# a time, so most of its memory is free for logits: fewer, larger batches mean fewer passes over the weights.
LOGITS_BUDGET = 2 * 1024**3
ACCELERATOR_LOGITS_BUDGET = 16 * 1024**3
MAX_BATCH = 16


# ---------------------------------------------------------------------------------------------
# Batches and taps: what both sides agree on
# ---------------------------------------------------------------------------------------------


def plan_batches(lengths: Sequence[int], vocab_size: int, *, budget: int = LOGITS_BUDGET, max_batch: int = MAX_BATCH) -> list[list[int]]:
    """Row indices per batch, in order: as many rows as keep one batch's fp32 logits (padded) within `budget`."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index, length in enumerate(lengths):
        wider = max(longest, length)
        if current and (len(current) + 1 > max_batch or (len(current) + 1) * wider * vocab_size * 4 > budget):
            batches.append(current)
            current, wider = [], length
        current.append(index)
        longest = wider
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class Tap:
    """A module whose output is recorded: `kind` is attention, mlp or layer (the decoder layer's output);
    `moe` says whether the layer's MLP is a mixture of experts."""

    name: str
    layer: int
    kind: str
    module: Any
    moe: bool = False


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers, in order: the ModuleList as long as config.num_hidden_layers (model.model.layers in
    every Hugging Face decoder we know)."""
    import torch

    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and (count is None or len(layers) == count):
        return list(layers)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0 and len(module) == count:
            return list(module)
    return []


_MLP_NAMES = ("mlp", "block_sparse_moe", "feed_forward", "moe")


def find_taps(model: Any) -> list[Tap]:
    taps: list[Tap] = []
    for index, layer in enumerate(decoder_layers(model)):
        attention = next((m for _, m in layer.named_children() if type(m).__name__.endswith("Attention")), None)
        mlp = next((m for n, m in layer.named_children() if n in _MLP_NAMES), None)
        moe = mlp is not None and any(n == "experts" for n, _ in mlp.named_children())
        if attention is not None:
            taps.append(Tap(f"layers.{index}.attention", index, "attention", attention, moe))
        if mlp is not None:
            taps.append(Tap(f"layers.{index}.mlp", index, "mlp", mlp, moe))
        taps.append(Tap(f"layers.{index}", index, "layer", layer, moe))
    return taps


def _first_tensor(output: Any) -> Any:
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return getattr(output, "last_hidden_state", None)


class _Sketch:
    """x -> x @ R with R (width x SKETCH_DIM) Gaussian / sqrt(SKETCH_DIM), the same on both sides; identity when narrow."""

    def __init__(self) -> None:
        self._by_width: dict[tuple[int, str], Any] = {}

    def __call__(self, x: Any) -> Any:
        import torch

        width = x.shape[-1]
        if width <= SKETCH_DIM:
            return x.float()
        key = (width, str(x.device))
        if key not in self._by_width:
            generator = torch.Generator().manual_seed(SKETCH_SEED + width)
            self._by_width[key] = (torch.randn(width, SKETCH_DIM, generator=generator) / math.sqrt(SKETCH_DIM)).to(x.device)
        return x.float() @ self._by_width[key]


# ---------------------------------------------------------------------------------------------
# Running a model over the batches
# ---------------------------------------------------------------------------------------------


@dataclass
class Batch:
    rows: list[int]
    input_ids: Any  # [B, T] long, right-padded
    mask: Any  # [B, T] bool
    predicted: Any  # [B, T] bool: position t predicts token t+1 (both real)
    targets: Any  # [n] long, the tokens predicted, in row-major order
    drift_take: int  # how many of this batch's real positions (row-major) go into the drift record


def build_batches(rows: Sequence[Sequence[int]], plan: list[list[int]], pad_id: int) -> list[Batch]:
    """The batches of `plan` over `rows`, right-padded with `pad_id`; the first DRIFT_TOKENS real positions are recorded."""
    import torch

    out: list[Batch] = []
    drift_left = DRIFT_TOKENS
    for indices in plan:
        longest = max(len(rows[i]) for i in indices)
        ids = torch.full((len(indices), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), longest), dtype=torch.bool)
        for b, i in enumerate(indices):
            ids[b, : len(rows[i])] = torch.tensor(list(rows[i]), dtype=torch.long)
            mask[b, : len(rows[i])] = True
        predicted = torch.zeros_like(mask)
        predicted[:, :-1] = mask[:, :-1] & mask[:, 1:]
        targets = ids[:, 1:][predicted[:, :-1]]
        take = min(drift_left, int(mask.sum()))
        drift_left -= take
        out.append(Batch(list(indices), ids, mask, predicted, targets, take))
    return out


class Runner:
    """Forward passes with output hooks on the taps. With an accelerator, the model's weights stay where they
    are (host memory) and each module is onloaded for its own forward (compressed-tensors' offloading), so a
    model larger than the GPU is evaluated as llm-compressor calibrates it; the dispatch is removed after."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.taps = find_taps(model)
        self.sketch = _Sketch()
        self.captured: dict[str, Any] = {}
        self._mask: Any = None  # the batch being run: which positions are real, and how many to record
        self._take = 0
        self._handles: list[Any] = []
        self._dispatched = False
        self.device = _input_device(model)
        self.logits_budget = LOGITS_BUDGET

    def __enter__(self) -> Runner:
        self.device, self._dispatched = onload(self.model)
        if self.device.type != "cpu":
            free = _free_memory(self.device)
            self.logits_budget = min(ACCELERATOR_LOGITS_BUDGET, free // 4) if free else LOGITS_BUDGET
        for tap in self.taps:
            self._handles.append(tap.module.register_forward_hook(self._hook(tap.name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._dispatched:
            undo_onload(self.model)

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            if self._take <= 0:
                return
            hidden = _first_tensor(output)
            if hidden is None or hidden.dim() != 3:
                return
            real = hidden[self._mask.to(hidden.device)][: self._take]
            self.captured[name] = self.sketch(real.detach()).cpu()

        return hook

    def logits(self, batch: Batch) -> Any:
        import torch

        self._mask, self._take = batch.mask, batch.drift_take
        self.captured = {}
        with torch.no_grad():
            out = self.model(input_ids=batch.input_ids.to(self.device), attention_mask=batch.mask.long().to(self.device), use_cache=False)
        return out.logits


def onload(model: Any) -> tuple[Any, bool]:
    """(device to run on, whether the model was dispatched): with an accelerator and a model in host memory, each
    module is onloaded to the accelerator for its own forward (compressed-tensors' offloading); undo_onload undoes it."""
    from kompress_job.model.cpu_workarounds import has_accelerator

    device = _input_device(model)
    if not has_accelerator() or device.type != "cpu":
        return device, False
    import torch
    from compressed_tensors.offload import set_onload_device

    device = torch.device(torch.accelerator.current_accelerator().type, torch.accelerator.current_device_index())
    set_onload_device(model, device)
    return device, True


def undo_onload(model: Any) -> None:
    from compressed_tensors.offload import remove_dispatch

    remove_dispatch(model)  # weights stay on their offload device: the model is as it was


def _free_memory(device: Any) -> int | None:
    import torch

    try:
        return int(torch.accelerator.get_memory_info(device.index or 0)[0])
    except Exception:  # noqa: BLE001 - an accelerator that cannot say: keep the host's budget
        return None


def _input_device(model: Any) -> Any:
    import torch

    for param in model.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device("cpu")


def log_probs_at(logits: Any, predicted: Any, chunk: int = 2048):
    """fp32 log-softmax rows of the predicted positions, in chunks (one batch's fp32 logits can be large)."""
    import torch

    flat = logits[predicted.to(logits.device)]
    for start in range(0, flat.shape[0], chunk):
        yield start, torch.log_softmax(flat[start : start + chunk].float(), dim=-1)


def tail_log_mass(log_probs: Any, top_ids: Any) -> Any:
    """log of the probability outside `top_ids`, per row, computed from the full distribution (never 1 - sum)."""
    import torch

    masked = log_probs.scatter(1, top_ids, float("-inf"))
    return torch.logsumexp(masked, dim=-1)
