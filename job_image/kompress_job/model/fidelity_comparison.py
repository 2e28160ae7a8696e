"""The compressed model against the record of the original: the figures of merit and the quality gate's verdict.

    compare(model, record)           the compressed side, streamed over the recorded batches: perplexity of each,
                                     mean KL divergence, top-1 agreement, per-layer output drift (Comparison)
    Comparison / LayerDrift          those figures; Comparison.summary() is what fidelity.json holds
    gate_failures(metrics, gate)     the quality gate's verdict, in words with the figures and the limits
    exact_kl(log_p, log_q)           KL from full distributions, for checking the top-k approximation (tests)

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
Both sides' hidden states are the sketches fidelity_passes makes.

Owns: the numbers. Must not: write files, know about stages, the job spec, object stores or plots
(fidelity_plot draws a Comparison).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kompress_job.model.fidelity_passes import DRIFT_TOKENS, SKETCH_DIM, Runner, build_batches, log_probs_at, tail_log_mass
from kompress_job.model.fidelity_record import BaselineRecord

# nats. Float rounding (a no-op SparseGPT at sparsity 0 recomputes every weight) moves recorded
# log-probabilities by ~2e-5 on the trained test model; INT8 on a single o_proj moves one by 1.35.
IDENTICAL_TOLERANCE = 1e-3


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

    from safetensors.torch import load_file

    started = time.monotonic()
    batches = build_batches(rec.rows, rec.plan, rec.pad_id)
    positions = _PositionSums()
    drift = _DriftSums()
    with Runner(model) as runner:
        for index, batch in enumerate(batches):
            saved = load_file(str(rec.batch_file(index)))
            logits = runner.logits(batch)
            targets = batch.targets.to(logits.device)
            for start, lq in log_probs_at(logits, batch.predicted):
                positions.add(lq, targets, saved, start)
            del logits
            drift.add(runner.captured, saved)
            if on_batch:
                on_batch(index + 1, len(batches))
    if positions.tokens == 0:
        raise ValueError("no predicted positions: every held-out row is shorter than 2 tokens")
    tokens = positions.tokens
    return Comparison(
        samples=rec.samples,
        tokens=tokens,
        perplexity_original=math.exp(positions.nll_original / tokens),
        perplexity_compressed=math.exp(positions.nll_compressed / tokens),
        kl_divergence=positions.kl / tokens,
        top1_agreement=positions.agree / tokens,
        mean_tail_mass=positions.tail_mass / tokens,
        max_difference=positions.max_difference,
        layers=drift.per_layer(rec.taps),
        top_k=rec.top_k,
        seconds=round(time.monotonic() - started, 3),
    )


@dataclass
class _PositionSums:
    """Sums over the predicted positions, chunk by chunk: both losses, the (coarsened) KL, top-1 agreements, the
    original's tail mass; and the largest difference of a recorded log-probability or loss."""

    nll_original: float = 0.0
    nll_compressed: float = 0.0
    kl: float = 0.0
    agree: float = 0.0
    tail_mass: float = 0.0
    tokens: int = 0
    max_difference: float = 0.0

    def add(self, lq: Any, targets: Any, saved: dict[str, Any], start: int) -> None:
        """One chunk: `lq` the compressed model's log-probabilities at the batch's predicted positions `start`
        onwards, `saved` the record's tensors of the same batch."""
        import torch

        n = lq.shape[0]
        t = targets[start : start + n]
        o_nll = saved["nll"][start : start + n].to(lq.device)
        ids = saved["topk_ids"][start : start + n].long().to(lq.device)
        logp = saved["topk_logp"][start : start + n].to(lq.device)
        tail_p = saved["tail_logp"][start : start + n].to(lq.device)
        c_nll = -lq.gather(1, t[:, None]).squeeze(1)
        logq = lq.gather(1, ids)
        tail_q = tail_log_mass(lq, ids)
        p = logp.exp()
        # an empty tail (k = vocabulary) contributes nothing, not 0 * (-inf - -inf)
        tail_term = torch.where(torch.isinf(tail_p), torch.zeros_like(tail_p), tail_p.exp() * (tail_p - tail_q))
        kl_rows = (p * (logp - logq)).sum(-1) + tail_term
        self.nll_original += float(o_nll.double().sum())
        self.nll_compressed += float(c_nll.double().sum())
        self.kl += float(kl_rows.clamp_min(0).double().sum())
        self.agree += float((lq.argmax(-1) == ids[:, 0]).sum())
        self.tail_mass += float(tail_p.exp().double().sum())
        self.tokens += n
        self.max_difference = max(self.max_difference, float((c_nll - o_nll).abs().max()), float((logq - logp).abs().max()))


@dataclass
class _DriftSums:
    """Per tap, batch by batch: the squared norm of (compressed - original) sketches and of the original's."""

    num: dict[str, float] = field(default_factory=dict)
    den: dict[str, float] = field(default_factory=dict)

    def add(self, captured: dict[str, Any], saved: dict[str, Any]) -> None:
        for name, sketch in captured.items():
            original = saved.get(f"tap.{name}")
            if original is None or original.shape != sketch.shape:
                continue
            self.num[name] = self.num.get(name, 0.0) + float(((sketch - original) ** 2).double().sum())
            self.den[name] = self.den.get(name, 0.0) + float((original**2).double().sum())

    def per_layer(self, taps: list[dict[str, Any]]) -> list[LayerDrift]:
        """The relative error of each recorded tap, gathered by decoder layer, in layer order."""
        layers: dict[int, LayerDrift] = {}
        for tap in taps:
            name = tap["name"]
            if name not in self.den or self.den[name] <= 0:
                continue
            value = math.sqrt(self.num[name] / self.den[name])
            entry = layers.setdefault(tap["layer"], LayerDrift(tap["layer"], moe=bool(tap.get("moe"))))
            setattr(entry, "output" if tap["kind"] == "layer" else tap["kind"], value)
        return [layers[i] for i in sorted(layers)]


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
