"""The picture published beside a checkpoint: where, layer by layer, the compressed model drifts from the original.

One PNG: x is the decoder layer, y the relative error ||h_compressed - h_original|| / ||h_original|| (log
scale) of three outputs per layer (attention block, MLP or MoE block, the layer's output), with the
headline figures (perplexity of both, KL, top-1 agreement) in the title. A rising line is error that
accumulates; a jump is a layer that the recipe hurt.

Owns: drawing (matplotlib, Agg backend, no display). Must not: compute figures (kompress_job.model.fidelity_comparison does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERIES = (
    ("attention", "attention block output", "#1f77b4", "o"),
    ("mlp", "MLP / MoE block output", "#d62728", "s"),
    ("output", "layer output (residual stream)", "#2ca02c", "D"),
)


def plot_drift(comparison: Any, path: Path, *, title: str) -> Path:
    """Draw `comparison` (fidelity_comparison.Comparison) to `path` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    layers = comparison.layers
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    try:
        drawn = False
        for key, label, color, marker in SERIES:
            points = [(d.layer, getattr(d, key)) for d in layers if getattr(d, key) is not None and getattr(d, key) > 0]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker=marker, color=color, label=label, linewidth=1.8, markersize=6)
                drawn = True
        _layer_axis(ax, layers)  # before the legend, which names the shading of dense layers
        if drawn:
            _percent_axis(ax, [v for d in layers for v in (d.attention, d.mlp, d.output) if v])
            ax.legend(loc="best", fontsize=9, frameon=False)
        else:
            ax.text(0.5, 0.5, "no layer outputs differ from the original", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("decoder layer")
        ax.set_ylabel("relative error of the output\n‖compressed − original‖ / ‖original‖")
        ax.grid(True, which="both", axis="y", alpha=0.3)
        ax.grid(True, which="major", axis="x", alpha=0.15)
        ax.spines[["top", "right"]].set_visible(False)
        figures = (
            f"perplexity {comparison.perplexity_original:.3f} → {comparison.perplexity_compressed:.3f} "
            f"({comparison.perplexity_increase:+.1%}),  KL {comparison.kl_divergence:.4f} nats,  "
            f"top-1 agreement {comparison.top1_agreement:.1%}"
        )
        ax.set_title(f"{title}\n{figures}", fontsize=10, loc="left")
        fig.text(0.01, 0.01, f"{comparison.samples} held-out samples, {comparison.tokens:,} predicted tokens, never used for calibration", fontsize=8, color="#555555")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _percent(value: float, _position: float = 0) -> str:
    if value <= 0:
        return "0"
    return f"{round(value * 100, 6):g} %"


def _percent_axis(ax: Any, values: list[float]) -> None:
    """Relative errors in percent: a log axis when they span more than a decade, else a linear one from 0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if max(values) / min(values) > 10:
        ax.set_yscale("log")
        if max(values) / min(values) < 1000:  # a few decades: label 1, 2 and 5 of each
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(0, max(values) * 1.15)
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))


LABELLED_LAYERS = 16


def _layer_axis(ax: Any, layers: list[Any]) -> None:
    """Each layer's number and kind (dense or MoE) under it; with many layers, every few numbers and the
    dense layers shaded instead."""
    if not layers:
        return
    if len(layers) <= LABELLED_LAYERS:
        ax.set_xticks([d.layer for d in layers], [f"{d.layer}\n{'MoE' if d.moe else 'dense'}" for d in layers])
        return
    step = -(-len(layers) // 12)
    ax.set_xticks([d.layer for d in layers][::step])
    dense = [d.layer for d in layers if not d.moe]
    if dense and len(dense) < len(layers):
        for index, layer in enumerate(dense):
            ax.axvspan(layer - 0.5, layer + 0.5, color="#999999", alpha=0.15, linewidth=0, label="dense layer (the others MoE)" if index == 0 else None)
