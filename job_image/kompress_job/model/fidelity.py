"""How far a compressed model is from its original, measured on held-out text, one model in memory at a time.

    record(model, rows, folder)      the original's side, before compression: for every predicted position,
                                     its loss, its top-k next tokens with their log-probabilities and the
                                     log of the mass outside them (the "tail"); for every decoder layer, a
                                     random projection of the attention, MLP and layer outputs. Written to
                                     `folder`, one safetensors file per batch, so the record never has to
                                     fit in memory and the original can be released before compression.
    load_record(folder, rows)        a record written before (by this run, or kept in the model cache), read back
    compare(model, record)           the compressed side, streamed over the same batches: perplexity of each,
                                     mean KL divergence, top-1 agreement, per-layer output drift.
    gate_failures(metrics, gate)     the quality gate's verdict, in words with the figures and the limits.
    estimate(config, samples, len)   what evaluation adds to a job in time, memory and disk, from config.json.

The KL divergence is KL(original || compressed), in nats, averaged over predicted positions. Only the
original's top-k tokens are kept (k = 32 by default), so it is computed on the coarsened distribution
{top-k tokens of the original} + {one bucket for every other token}: exact over the top-k, and the tail
compared as one outcome (original's tail mass against the compressed model's mass on the same tokens).
Coarsening never increases a KL divergence (the log-sum inequality), so the figure is a lower bound on the
exact one, equal to it when the tail holds no mass; `Comparison.mean_tail_mass` says how much mass the
bucket held. On the trained test model (k = 32 of 512 tokens) the bucket holds about 5 % of the mass and
the figure is about 87 % of the exact KL (tests/job/test_fidelity.py).

Drift per layer: ||h_compressed - h_original|| / ||h_original|| over the recorded positions, for the output
of each decoder layer's attention block, its MLP (or MoE) block, and the layer itself (the residual stream).
These outputs do not change under AWQ's smoothing (which moves scale between a layer and its consumers
inside a block), so they show where the damage enters, whatever the recipe did to individual weights.
Hidden states wider than SKETCH_DIM are stored as a Gaussian projection to SKETCH_DIM dimensions
(Johnson-Lindenstrauss: squared norms are preserved in expectation), narrower ones exactly.

Owns: the numbers and the record's files in the folder it is given. Must not: know about stages, the job
spec, object stores or plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

TOP_K = 32
SKETCH_DIM = 64
SKETCH_SEED = 20241126
DRIFT_TOKENS = 4096  # positions whose hidden states are recorded (the first ones, in row order)
# Bytes of fp32 logits one batch may produce. On an accelerator the weights stream through one module at
# a time, so most of its memory is free for logits: fewer, larger batches mean fewer passes over the weights.
LOGITS_BUDGET = 2 * 1024**3
ACCELERATOR_LOGITS_BUDGET = 16 * 1024**3
MAX_BATCH = 16
RECORD_FORMAT = 1
# nats. Float rounding (a no-op SparseGPT at sparsity 0 recomputes every weight) moves recorded
# log-probabilities by ~2e-5 on the trained test model; INT8 on a single o_proj moves one by 1.35.
IDENTICAL_TOLERANCE = 1e-3


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
class _Batch:
    rows: list[int]
    input_ids: Any  # [B, T] long, right-padded
    mask: Any  # [B, T] bool
    predicted: Any  # [B, T] bool: position t predicts token t+1 (both real)
    targets: Any  # [n] long, the tokens predicted, in row-major order
    drift_take: int  # how many of this batch's real positions (row-major) go into the drift record


def _batches(rows: Sequence[Sequence[int]], plan: list[list[int]], pad_id: int) -> list[_Batch]:
    import torch

    out: list[_Batch] = []
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
        out.append(_Batch(list(indices), ids, mask, predicted, targets, take))
    return out


class _Runner:
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

    def __enter__(self) -> _Runner:
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

    def logits(self, batch: _Batch) -> Any:
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


def _log_probs_at(logits: Any, predicted: Any, chunk: int = 2048):
    """fp32 log-softmax rows of the predicted positions, in chunks (one batch's fp32 logits can be large)."""
    import torch

    flat = logits[predicted.to(logits.device)]
    for start in range(0, flat.shape[0], chunk):
        yield start, torch.log_softmax(flat[start : start + chunk].float(), dim=-1)


# ---------------------------------------------------------------------------------------------
# The original's side
# ---------------------------------------------------------------------------------------------


@dataclass
class BaselineRecord:
    """The original model's figures on the held-out rows, on disk in `folder` (batch-NNNNN.safetensors)."""

    folder: Path
    top_k: int
    vocab_size: int
    rows: list[list[int]]
    plan: list[list[int]]
    pad_id: int
    samples: int
    tokens: int
    taps: list[dict[str, Any]] = field(default_factory=list)  # name, layer, kind, moe
    seconds: float | None = None

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("batch-*.safetensors"))

    def batch_file(self, index: int) -> Path:
        return self.folder / f"batch-{index:05d}.safetensors"

    def write_index(self) -> None:
        doc = {k: v for k, v in self.__dict__.items() if k not in ("folder", "rows")}
        doc["format"] = RECORD_FORMAT
        (self.folder / "record.json").write_text(json.dumps(doc))


def record(model: Any, rows: Sequence[Sequence[int]], folder: Path, *, pad_id: int = 0, top_k: int = TOP_K, on_batch: Callable[[int, int], None] | None = None) -> BaselineRecord:
    """Run the original over `rows` (token id lists) and write what the comparison needs to `folder`."""
    import time

    import torch
    from safetensors.torch import save_file

    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("batch-*.safetensors"):
        stale.unlink()
    vocab = _vocab_size(model)
    k = min(top_k, vocab)
    usable = [list(r) for r in rows if len(r) >= 2]
    with _Runner(model) as runner:
        plan = plan_batches([len(r) for r in usable], vocab, budget=runner.logits_budget)
        batches = _batches(usable, plan, pad_id)
        rec = BaselineRecord(folder=folder, top_k=k, vocab_size=vocab, rows=usable, plan=plan, pad_id=pad_id, samples=len(usable), tokens=0)
        rec.taps = [{"name": t.name, "layer": t.layer, "kind": t.kind, "moe": t.moe} for t in runner.taps]
        for index, batch in enumerate(batches):
            logits = runner.logits(batch)
            targets = batch.targets.to(logits.device)
            nll, ids, logp, tail = [], [], [], []
            for start, lp in _log_probs_at(logits, batch.predicted):
                t = targets[start : start + lp.shape[0]]
                nll.append(-lp.gather(1, t[:, None]).squeeze(1).cpu())
                top = lp.topk(k, dim=-1)
                ids.append(top.indices.int().cpu())
                logp.append(top.values.cpu())
                tail.append(_tail_log_mass(lp, top.indices).cpu())
            del logits
            tensors = {"nll": torch.cat(nll), "topk_ids": torch.cat(ids), "topk_logp": torch.cat(logp), "tail_logp": torch.cat(tail)}
            tensors.update({f"tap.{name}": value.contiguous() for name, value in runner.captured.items()})
            save_file(tensors, str(rec.batch_file(index)))
            rec.tokens += int(tensors["nll"].numel())
            if on_batch:
                on_batch(index + 1, len(batches))
    rec.seconds = round(time.monotonic() - started, 3)
    rec.write_index()
    return rec


def load_record(folder: Path, rows: Sequence[Sequence[int]]) -> BaselineRecord:
    """The record `record` wrote to `folder` for these `rows` (its index says everything but the rows, which the
    caller holds). ValueError when the folder is not such a record, or not of these rows."""
    try:
        doc = json.loads((folder / "record.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"no baseline record in {folder}: {err}") from None
    if doc.get("format") != RECORD_FORMAT:
        raise ValueError(f"the baseline record in {folder} is format {doc.get('format')}, not {RECORD_FORMAT}")
    usable = [list(r) for r in rows if len(r) >= 2]
    rec = BaselineRecord(
        folder=folder, top_k=doc["top_k"], vocab_size=doc["vocab_size"], rows=usable, plan=doc["plan"], pad_id=doc["pad_id"],
        samples=doc["samples"], tokens=doc["tokens"], taps=doc.get("taps") or [], seconds=doc.get("seconds"),
    )
    if rec.samples != len(usable) or sorted(i for batch in rec.plan for i in batch) != list(range(len(usable))):
        raise ValueError(f"the baseline record in {folder} is of {rec.samples} rows, not of these {len(usable)}")
    if any(not rec.batch_file(i).is_file() for i in range(len(rec.plan))):
        raise ValueError(f"the baseline record in {folder} lacks some of its {len(rec.plan)} batch files")
    return rec


def rows_digest(rows: Sequence[Sequence[int]]) -> str:
    """SHA-256 of the token ids of `rows`, in order: what a stored record must have been made from."""
    import hashlib

    h = hashlib.sha256()
    for row in rows:
        h.update(len(row).to_bytes(4, "little"))
        h.update(b"".join(int(t).to_bytes(4, "little", signed=True) for t in row))
    return h.hexdigest()


def _vocab_size(model: Any) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "out_features", None):
        return int(head.out_features)
    return int(model.config.vocab_size)


def _tail_log_mass(log_probs: Any, top_ids: Any) -> Any:
    """log of the probability outside `top_ids`, per row, computed from the full distribution (never 1 - sum)."""
    import torch

    masked = log_probs.scatter(1, top_ids, float("-inf"))
    return torch.logsumexp(masked, dim=-1)


# ---------------------------------------------------------------------------------------------
# The compressed side
# ---------------------------------------------------------------------------------------------


@dataclass
class LayerDrift:
    layer: int
    moe: bool = False
    attention: float | None = None
    mlp: float | None = None
    output: float | None = None


@dataclass
class Comparison:
    samples: int
    tokens: int
    perplexity_original: float
    perplexity_compressed: float
    kl_divergence: float
    top1_agreement: float
    mean_tail_mass: float
    max_difference: float  # largest |difference| of a recorded log-probability or loss between the two models
    layers: list[LayerDrift]
    top_k: int
    seconds: float | None = None

    @property
    def identical(self) -> bool:
        """The compressed model computes what the original did, to float rounding: nothing was compressed."""
        return self.max_difference <= IDENTICAL_TOLERANCE

    @property
    def perplexity_increase(self) -> float:
        return self.perplexity_compressed / self.perplexity_original - 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "tokens": self.tokens,
            "perplexityOriginal": self.perplexity_original,
            "perplexityCompressed": self.perplexity_compressed,
            "perplexityIncrease": self.perplexity_increase,
            "klDivergence": self.kl_divergence,
            "top1Agreement": self.top1_agreement,
            "method": {
                "topK": self.top_k,
                "klDivergence": "KL(original || compressed) in nats per position, over the original's top-k tokens plus one bucket for the rest (a lower bound on the exact KL)",
                "meanTailMass": self.mean_tail_mass,
                "drift": f"||h_compressed - h_original|| / ||h_original|| over up to {DRIFT_TOKENS} positions, hidden states projected to {SKETCH_DIM} dimensions when wider",
            },
            "layers": [{"layer": d.layer, "block": "MoE" if d.moe else "dense", "attention": d.attention, "mlp": d.mlp, "output": d.output} for d in self.layers],
            "seconds": self.seconds,
        }


def compare(model: Any, rec: BaselineRecord, *, on_batch: Callable[[int, int], None] | None = None) -> Comparison:
    """Run the compressed model over the recorded batches and compare it with the record, batch by batch."""
    import time

    import torch
    from safetensors.torch import load_file

    started = time.monotonic()
    batches = _batches(rec.rows, rec.plan, rec.pad_id)
    nll_o = nll_c = kl = agree = tail_mass = 0.0
    tokens = 0
    max_difference = 0.0
    drift_num: dict[str, float] = {}
    drift_den: dict[str, float] = {}
    with _Runner(model) as runner:
        for index, batch in enumerate(batches):
            saved = load_file(str(rec.batch_file(index)))
            logits = runner.logits(batch)
            targets = batch.targets.to(logits.device)
            for start, lq in _log_probs_at(logits, batch.predicted):
                n = lq.shape[0]
                t = targets[start : start + n]
                o_nll = saved["nll"][start : start + n].to(lq.device)
                ids = saved["topk_ids"][start : start + n].long().to(lq.device)
                logp = saved["topk_logp"][start : start + n].to(lq.device)
                tail_p = saved["tail_logp"][start : start + n].to(lq.device)
                c_nll = -lq.gather(1, t[:, None]).squeeze(1)
                logq = lq.gather(1, ids)
                tail_q = _tail_log_mass(lq, ids)
                p = logp.exp()
                # an empty tail (k = vocabulary) contributes nothing, not 0 * (-inf - -inf)
                tail_term = torch.where(torch.isinf(tail_p), torch.zeros_like(tail_p), tail_p.exp() * (tail_p - tail_q))
                kl_rows = (p * (logp - logq)).sum(-1) + tail_term
                nll_o += float(o_nll.double().sum())
                nll_c += float(c_nll.double().sum())
                kl += float(kl_rows.clamp_min(0).double().sum())
                agree += float((lq.argmax(-1) == ids[:, 0]).sum())
                tail_mass += float(tail_p.exp().double().sum())
                tokens += n
                max_difference = max(max_difference, float((c_nll - o_nll).abs().max()), float((logq - logp).abs().max()))
            del logits
            for name, sketch in runner.captured.items():
                original = saved.get(f"tap.{name}")
                if original is None or original.shape != sketch.shape:
                    continue
                drift_num[name] = drift_num.get(name, 0.0) + float(((sketch - original) ** 2).double().sum())
                drift_den[name] = drift_den.get(name, 0.0) + float((original**2).double().sum())
            if on_batch:
                on_batch(index + 1, len(batches))
    if tokens == 0:
        raise ValueError("no predicted positions: every held-out row is shorter than 2 tokens")
    layers: dict[int, LayerDrift] = {}
    for tap in rec.taps:
        name = tap["name"]
        if name not in drift_den or drift_den[name] <= 0:
            continue
        value = math.sqrt(drift_num[name] / drift_den[name])
        entry = layers.setdefault(tap["layer"], LayerDrift(tap["layer"], moe=bool(tap.get("moe"))))
        setattr(entry, "output" if tap["kind"] == "layer" else tap["kind"], value)
    return Comparison(
        samples=rec.samples,
        tokens=tokens,
        perplexity_original=math.exp(nll_o / tokens),
        perplexity_compressed=math.exp(nll_c / tokens),
        kl_divergence=kl / tokens,
        top1_agreement=agree / tokens,
        mean_tail_mass=tail_mass / tokens,
        max_difference=max_difference,
        layers=[layers[i] for i in sorted(layers)],
        top_k=rec.top_k,
        seconds=round(time.monotonic() - started, 3),
    )


def exact_kl(log_p: Any, log_q: Any) -> Any:
    """KL(p || q) per row from full log-distributions (for checking the top-k approximation)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# ---------------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------------


def gate_failures(metrics: Any, gate: Any) -> list[str]:
    """Each limit of `gate` (kompress_api QualityGate) that `metrics` (EvaluationMetrics) misses, with both figures."""
    if gate is None:
        return []
    failures: list[str] = []
    if gate.max_perplexity_increase is not None and metrics.perplexity_increase is not None and metrics.perplexity_increase > gate.max_perplexity_increase:
        failures.append(
            f"perplexity {metrics.perplexity_increase:+.1%} ({metrics.perplexity_original:.3f} -> {metrics.perplexity_compressed:.3f})"
            f" > limit {gate.max_perplexity_increase:+.1%}"
        )
    if gate.max_kl_divergence is not None and metrics.kl_divergence is not None and metrics.kl_divergence > gate.max_kl_divergence:
        failures.append(f"KL divergence {metrics.kl_divergence:.4f} nats > limit {gate.max_kl_divergence:.4f}")
    if gate.min_top1_agreement is not None and metrics.top1_agreement is not None and metrics.top1_agreement < gate.min_top1_agreement:
        failures.append(f"top-1 agreement {metrics.top1_agreement:.1%} < limit {gate.min_top1_agreement:.1%}")
    return failures


# ---------------------------------------------------------------------------------------------
# What evaluation costs, from config.json alone (for the plan)
# ---------------------------------------------------------------------------------------------


class EvaluationCost(NamedTuple):
    seconds: float  # baseline + evaluate, both forward passes, weight streaming included
    memory_bytes: int  # peak working memory on the execution device beyond the weights (logits, activations)
    disk_bytes: int  # the baseline record in scratch


def parameter_counts(config: dict[str, Any]) -> tuple[int, int]:
    """(total, active per token) parameters of a decoder from its config.json (MoE: routed experts count
    top-k times towards the active figure). An approximation for planning, within a few percent."""
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    layers = int(text["num_hidden_layers"])
    vocab = int(text.get("vocab_size", 32000))
    heads = int(text.get("num_attention_heads", max(1, hidden // 128)))
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    dense_mlp = 3 * hidden * int(text.get("intermediate_size", 4 * hidden))
    experts = int(text.get("n_routed_experts") or text.get("num_experts") or text.get("num_local_experts") or 0)
    if experts:
        moe_inter = int(text.get("moe_intermediate_size") or text.get("intermediate_size"))
        expert = 3 * hidden * moe_inter
        shared_count = int(text.get("n_shared_experts") or 0)
        shared = shared_count * expert + (3 * hidden * int(text["shared_expert_intermediate_size"]) if text.get("shared_expert_intermediate_size") else 0)
        top_k = int(text.get("num_experts_per_tok") or 1)
        dense_layers = int(text.get("first_k_dense_replace") or 0)
        sparse_step = int(text.get("decoder_sparse_step") or 1)
        moe_layers = len([i for i in range(dense_layers, layers) if (i + 1) % sparse_step == 0])
        mlp_total = (layers - moe_layers) * dense_mlp + moe_layers * (experts * expert + shared + experts * hidden)
        mlp_active = (layers - moe_layers) * dense_mlp + moe_layers * (top_k * expert + shared + experts * hidden)
    else:
        mlp_total = mlp_active = layers * dense_mlp
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings") else 2)
    total = layers * attention + mlp_total + embeddings
    active = layers * attention + mlp_active + vocab * hidden
    return total, active


def estimate(
    config: dict[str, Any],
    samples: int,
    seq_len: int,
    *,
    dtype_bytes: int = 2,
    top_k: int = TOP_K,
    flops_per_second: float = 2e14,
    weight_bandwidth: float = 2.5e10,
    logits_budget: int = ACCELERATOR_LOGITS_BUDGET,
) -> EvaluationCost:
    """What baseline + evaluate add to a job: two forward passes over `samples` rows of `seq_len` tokens.

    Time: per pass, 2 x active parameters x tokens FLOPs at `flops_per_second` (default: an H100 at about a
    quarter of its bf16 peak, what a batch of long rows reaches), plus, per batch, streaming every weight from
    host memory to the device at `weight_bandwidth` (PCIe 4/5), since the worker keeps the model in host memory.
    Memory: one batch's fp32 logits and log-probabilities (at most `logits_budget`, the evaluation's own
    figure on an accelerator) plus activations.
    Disk: the record, (k ids + k log-probs + loss + tail) x 4 bytes per position, plus the drift projections.
    """
    text = config.get("text_config") or config
    total, active = parameter_counts(config)
    vocab = int(text.get("vocab_size", 32000))
    hidden = int(text["hidden_size"])
    layers = int(text["num_hidden_layers"])
    tokens = samples * seq_len
    batches = len(plan_batches([seq_len] * samples, vocab, budget=logits_budget))
    per_pass = 2 * active * tokens / flops_per_second + batches * total * dtype_bytes / weight_bandwidth
    rows_per_batch = math.ceil(samples / batches)
    logits = rows_per_batch * seq_len * vocab * 4
    activations = rows_per_batch * seq_len * max(hidden, int(text.get("intermediate_size", 4 * hidden))) * dtype_bytes * 4
    memory = 2 * logits + activations  # logits in fp32, and one chunk's log-softmax beside them
    drift = min(DRIFT_TOKENS, tokens) * 3 * layers * min(hidden, SKETCH_DIM) * 4
    disk = tokens * (2 * top_k + 2) * 4 + drift
    return EvaluationCost(seconds=round(2 * per_pass, 1), memory_bytes=int(memory), disk_bytes=int(disk))
