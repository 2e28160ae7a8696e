"""Running llm-compressor's oneshot with a resolved recipe: the one call both the in-process compress stage
and each distributed rank make.

Owns: the oneshot arguments (every expert calibrated, samples in order, no save), calibration progress
(counted by forward hooks on the decoder layers, never by patching llm-compressor), and a check right
after oneshot that every module got the scheme the resolver planned (the verify stage checks the
saved checkpoint again, as users load it).
Must not: load or save models.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from kompress_job.errors import NoCalibrationSamples
from kompress_job.recipe.resolved import ResolvedRecipe

ProgressFn = Callable[[int, int, str], None]


@contextlib.contextmanager
def layer_progress(model: Any, resolved: ResolvedRecipe, samples: int, report: ProgressFn | None) -> Iterator[None]:
    """Report calibration progress: each pass runs every sample through every decoder layer twice
    (calibrate, then propagate the compressed output), so forward calls of decoder layers count steps.
    A data-free recipe (weights only) is one step."""
    if report is None:
        yield
        return
    if samples == 0:
        report(0, 1, "quantizing weights (no calibration data needed)")
        yield
        report(1, 1, "weights quantized")
        return
    layers = [model.get_submodule(layout.name) for layout in resolved.inventory.layers]
    passes = max(1, resolved.calibration_passes)
    per_pass = max(1, len(layers) * samples * 2)
    total = per_pass * passes
    state = {"done": 0, "last": 0.0}

    def hook(module, args):  # noqa: ARG001
        state["done"] += 1
        now = time.monotonic()
        if now - state["last"] >= 0.5:
            state["last"] = now
            done = min(state["done"], total)
            report(done, total, f"calibration pass {min(passes, done // per_pass + 1)}/{passes}")

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    report(total, total, f"{passes} calibration pass{'es' if passes > 1 else ''} done")


def run_oneshot(model: Any, resolved: ResolvedRecipe, *, dataset: Any, tokenizer: Any, max_seq_length: int, trust_remote_code: bool = False, report: ProgressFn | None = None) -> None:
    """Apply the resolved recipe to `model` in place."""
    from kompress_job.model import cpu_workarounds

    cpu_workarounds.apply()
    from llmcompressor import oneshot

    kwargs: dict[str, Any] = {
        "model": model,
        "recipe": resolved.modifiers(),
        "processor": tokenizer,
        "trust_remote_code_model": trust_remote_code,
        # Static activation scales must be calibrated for every expert, not only the routed ones
        # (unrouted experts otherwise get garbage scales with a mere warning).
        "moe_calibrate_all_experts": True,
        "output_dir": None,
    }
    samples = 0
    if resolved.needs_calibration:
        if dataset is None or len(dataset) == 0:
            raise NoCalibrationSamples(
                "this recipe learns from calibration data (SparseGPT, AWQ or static activation scales) but there are no "
                "calibration samples: check spec.calibration (a messages column needs a model with a chat template)"
            )
        samples = len(dataset)
        kwargs.update(
            dataset=dataset,
            num_calibration_samples=samples,
            max_seq_length=max_seq_length,
            # the calibration stage already shuffled with spec.calibration.seed; keep its order
            shuffle_calibration_samples=False,
        )
    with layer_progress(model, resolved, _samples_on_this_rank(samples), report):
        oneshot(**kwargs)


def _samples_on_this_rank(samples: int) -> int:
    """llm-compressor gives each DDP rank floor(n*(r+1)/w) - floor(n*r/w) of identical datasets."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return samples
    rank, world = dist.get_rank(), dist.get_world_size()
    return samples * (rank + 1) // world - samples * rank // world


def planned_vs_applied(model: Any, resolved: ResolvedRecipe) -> list[str]:
    """Modules whose quantization scheme in memory differs from the plan (empty when all agree)."""
    problems = []
    for name, assignment in resolved.assignment.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            problems.append(f"{name}: missing after compression")
            continue
        scheme = getattr(module, "quantization_scheme", None)
        if assignment.scheme is None:
            if scheme is not None and getattr(scheme, "weights", None) is not None:
                problems.append(f"{name}: planned 16-bit but quantized")
            continue
        if scheme is None or scheme.weights is None:
            problems.append(f"{name}: planned {assignment.scheme.name} but not quantized")
            continue
        if scheme.weights.num_bits != assignment.scheme.weights.bits:
            problems.append(f"{name}: planned {assignment.scheme.weights.bits}-bit, got {scheme.weights.num_bits}-bit")
    return problems
