"""Does the saved checkpoint hold what the resolved recipe said? Checked on the files and on the model
loaded back the way users load it.

    files     for every weight-bearing module, its tensors in the safetensors shards:
              quantized -> packed/int8/fp8 weights, a scale whose shape fits the strategy and group size,
                           values inside the integer range, an input scale (finite, > 0) when activations
                           are static (so every expert was calibrated)
              16-bit    -> a plain float weight, no scale
              FP4       -> two values a byte (uint8 [out, in/2]), group scales FP8 E4M3 (NVFP4, with an FP32 global
                           scale, one per fused q/k/v or gate/up set) or E8M0 uint8 (MXFP4); NVFP4 W4A4 also a
                           calibrated input_global_scale on every module (every expert)
              FP8 block -> an FP8 weight and one scale per 128x128 block
              2:4       -> at least 2 zeros in every 4 consecutive input weights where sparsity was
                           asked, and NOT so in 16-bit modules (no stray mask)
    reload    llm-compressor's MoE loader + AutoModelForCausalLM.from_pretrained (plain from_pretrained
              cannot load per-expert checkpoints of fused-expert models); every module is where the
              plan put it, with the planned bits, type, strategy, group size, symmetry, activations
    run       a forward pass gives finite logits; greedy generation produces new tokens
    config    config.json has a quantization_config, and its sparsity_config records the recipe's pruning
              (structure and targets; kompress_job.model.sparsity_metadata)

Owns: these checks and the report. Must not: modify the checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from kompress_job.model import sparsity_metadata
from kompress_job.recipe.resolved import ResolvedRecipe
from kompress_job.recipe.schemes import QuantArgs

PROMPT = "Hello, how are you today?"
MAX_FAILURES_SHOWN = 20


class VerificationSummary(TypedDict):
    """VerificationReport.summary(): what the verify stage leaves in RunContext.verification, as JSON."""

    ok: bool
    checkpoint: str
    modules_checked: int
    by_group: dict[str, int]
    failures: list[str]
    failure_count: int
    logits_finite: bool | None
    generated_tokens: int | None
    sample: str | None
    seconds: float | None
    mode: str
    mtp_tensors_checked: int | None


@dataclass
class VerificationReport:
    checkpoint: str
    modules_checked: int = 0
    by_group: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    logits_finite: bool | None = None
    generated_tokens: int | None = None
    sample: str | None = None
    seconds: float | None = None
    # "reload": loaded back as users load it and run; "streamed": files and config.json only, tensor by tensor
    mode: str = "reload"
    mtp_tensors_checked: int | None = None  # the source's MTP tensors compared byte for byte (stages/verify)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> VerificationSummary:
        return {
            "ok": self.ok,
            "checkpoint": self.checkpoint,
            "modules_checked": self.modules_checked,
            "by_group": dict(sorted(self.by_group.items())),
            "failures": self.failures[:MAX_FAILURES_SHOWN],
            "failure_count": len(self.failures),
            "logits_finite": self.logits_finite,
            "generated_tokens": self.generated_tokens,
            "sample": self.sample,
            "seconds": self.seconds,
            "mode": self.mode,
            "mtp_tensors_checked": self.mtp_tensors_checked,
        }


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


class _Shards:
    """Tensor name -> shard file, reading one tensor at a time."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self._open = safe_open
        self.where: dict[str, Path] = {}
        for path in sorted(folder.glob("*.safetensors")):
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    self.where[key] = path

    def has(self, key: str) -> bool:
        return key in self.where

    def get(self, key: str):
        with self._open(str(self.where[key]), framework="pt") as handle:
            return handle.get_tensor(key)

    def keys_of(self, module: str) -> set[str]:
        prefix = module + "."
        return {k[len(prefix) :] for k in self.where if k.startswith(prefix) and "." not in k[len(prefix) :]}


def holds_n_m(weight, n: int = 2, m: int = 4) -> bool:
    """At least n zeros in every m consecutive weights along the input dimension."""
    import torch

    rows, cols = weight.shape
    if cols % m:
        return False
    zeros = (weight.reshape(rows, cols // m, m) == 0).sum(dim=-1)
    return bool(torch.all(zeros >= n))


def _integer_weight(shards: _Shards, module: str, weights: QuantArgs, out_features: int, in_features: int, failures: list[str]):
    """The stored integer (or fp8) weight of a quantized module, checking its storage on the way."""
    import torch

    keys = shards.keys_of(module)
    if weights.fp4:
        return _fp4_weight(shards, module, weights, out_features, in_features, failures)
    if "weight_packed" in keys:
        from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

        packed = shards.get(f"{module}.weight_packed")
        values = unpack_from_int32(packed, weights.bits, torch.Size([out_features, in_features]))
        low, high = -(2 ** (weights.bits - 1)), 2 ** (weights.bits - 1) - 1
        if values.min() < low or values.max() > high:
            failures.append(f"{module}: stored values outside the {weights.bits}-bit range")
        return values
    if "weight" not in keys:
        failures.append(f"{module}: no weight in the checkpoint")
        return None
    weight = shards.get(f"{module}.weight")
    expected_dtype = {("int", 8): torch.int8, ("float", 8): torch.float8_e4m3fn}.get((weights.type, weights.bits))
    if expected_dtype is None:
        failures.append(f"{module}: cannot check storage of {weights.type}{weights.bits}")
        return None
    if weight.dtype != expected_dtype:
        failures.append(f"{module}: stored as {weight.dtype}, expected {expected_dtype} for {weights.type}{weights.bits}")
        return None
    return weight.float() if weight.dtype != torch.int8 else weight


def _fp4_weight(shards: _Shards, module: str, weights: QuantArgs, out_features: int, in_features: int, failures: list[str]):
    """NVFP4 / MXFP4: two E2M1 values per byte, group scales in FP8 E4M3 (NV, under an FP32 global scale) or
    E8M0 as uint8 (MX). Returns the unpacked values (as floats) when the storage is right."""
    import torch

    keys = shards.keys_of(module)
    if "weight_packed" not in keys:
        failures.append(f"{module}: FP4 planned but no weight_packed stored")
        return None
    packed = shards.get(f"{module}.weight_packed")
    if packed.dtype != torch.uint8 or tuple(packed.shape) != (out_features, in_features // 2):
        failures.append(f"{module}: weight_packed {packed.dtype} {tuple(packed.shape)}, expected uint8 {(out_features, in_features // 2)} (two FP4 values a byte)")
        return None
    scale_dtype = torch.float8_e4m3fn if weights.strategy == "tensor_group" else torch.uint8
    if "weight_scale" in keys and shards.get(f"{module}.weight_scale").dtype != scale_dtype:
        failures.append(f"{module}: weight_scale stored as {shards.get(f'{module}.weight_scale').dtype}, expected {scale_dtype} for {'NVFP4' if scale_dtype != torch.uint8 else 'MXFP4'}")
    if weights.strategy == "tensor_group":
        _positive_scale(shards, module, "weight_global_scale", failures)
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8

    return unpack_fp4_from_uint8(packed, out_features, in_features, dtype=torch.float32)


def _positive_scale(shards: _Shards, module: str, key: str, failures: list[str]) -> None:
    """A stored scale that calibration or the weights set: present, finite, > 0."""
    import torch

    if key not in shards.keys_of(module):
        failures.append(f"{module}: no {key} stored")
        return
    value = shards.get(f"{module}.{key}").float()
    if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
        failures.append(f"{module}: {key} {value.flatten()[:4].tolist()} is not a calibrated scale (finite, > 0)")


def _expected_scale_shape(weights: QuantArgs, out_features: int, in_features: int) -> tuple[int, ...] | None:
    if weights.strategy in ("group", "tensor_group") and weights.group_size:
        return (out_features, in_features // weights.group_size)
    if weights.strategy == "block" and weights.block_structure:
        rows, cols = weights.block_structure
        return (-(-out_features // rows), -(-in_features // cols))
    if weights.strategy == "channel":
        return (out_features, 1)
    if weights.strategy == "tensor":
        return (1,)
    return None


def check_files(folder: Path, resolved: ResolvedRecipe, report: VerificationReport) -> None:
    shards = _Shards(folder)
    by_name = resolved.inventory.by_name()
    for name, assignment in resolved.assignment.items():
        module = by_name[name]
        report.modules_checked += 1
        report.by_group[assignment.group] = report.by_group.get(assignment.group, 0) + 1
        keys = shards.keys_of(name)
        if not keys:
            report.failures.append(f"{name}: not in the checkpoint")
            continue
        scheme = assignment.scheme
        if scheme is None:
            if keys & {"weight_scale", "weight_packed", "input_scale", "weight_zero_point"}:
                report.failures.append(f"{name}: planned 16-bit but stored with quantization tensors {sorted(keys)}")
                continue
            weight = shards.get(f"{name}.weight")
            if not weight.dtype.is_floating_point or weight.element_size() < 2:
                report.failures.append(f"{name}: planned 16-bit but stored as {weight.dtype}")
            elif assignment.sparsity is not None:
                _check_sparsity(name, weight, assignment.sparsity, report)
            elif weight.ndim == 2 and weight.shape[1] % 4 == 0 and holds_n_m(weight):
                report.failures.append(f"{name}: planned untouched but carries a 2:4 sparsity mask")
            continue
        values = _integer_weight(shards, name, scheme.weights, module.out_features, module.in_features, report.failures)
        expected_scale = _expected_scale_shape(scheme.weights, module.out_features, module.in_features)
        if "weight_scale" not in keys:
            report.failures.append(f"{name}: quantized ({scheme.name}) but has no weight_scale")
        elif expected_scale is not None:
            scale = shards.get(f"{name}.weight_scale")
            if tuple(scale.shape) != expected_scale:
                report.failures.append(f"{name}: weight_scale shape {tuple(scale.shape)}, expected {expected_scale} for {scheme.weights.strategy} {scheme.weights.group_size or ''}".rstrip())
        if scheme.activations is not None and scheme.activations.dynamic == "local":
            # NVFP4 activations: group scales at run time under a global scale calibration set, for every expert
            _positive_scale(shards, name, "input_global_scale", report.failures)
        elif scheme.activations is not None and not scheme.activations.dynamic:
            if "input_scale" not in keys:
                report.failures.append(f"{name}: static activations planned but no input_scale stored")
            else:
                _positive_scale(shards, name, "input_scale", report.failures)
        if values is not None and assignment.sparsity is not None:
            _check_sparsity(name, values, assignment.sparsity, report)


def check_fused_global_scales(folder: Path, resolved: ResolvedRecipe, report: VerificationReport) -> None:
    """NVFP4: vLLM runs q/k/v and a dense MLP's gate/up as one layer with one global scale, so llm-compressor
    gives each set one (oneshot and model_free_ptq alike, model_free_ptq reading a set split across shards
    together). Expert MLPs are left out: model_free_ptq does not fuse them (vLLM takes the first of w1/w3's)."""
    from kompress_job.recipe.presets import fused_kind
    from kompress_job.recipe.inventory import Role

    shards = _Shards(folder)
    sets: dict[tuple[str, str], list[str]] = {}
    for m in resolved.inventory.modules:
        a = resolved.assignment[m.name]
        kind = fused_kind(m)
        if kind is None or a.scheme is None or a.scheme.weights.strategy != "tensor_group" or m.role in (Role.ROUTED_EXPERTS, Role.SHARED_EXPERTS):
            continue
        sets.setdefault((m.block, kind), []).append(m.name)
    for (block, kind), names in sets.items():
        keys = [f"{n}.weight_global_scale" for n in names]
        if len(names) < 2 or not all(shards.has(k) for k in keys):
            continue  # a missing scale is reported by check_files
        values = {float(shards.get(k).float().flatten()[0]) for k in keys}
        if len(values) > 1:
            report.failures.append(f"{block} {kind}: weight_global_scale differs across the fused set ({sorted(values)}); vLLM loads them as one layer with one")


def _check_sparsity(name: str, weight, sparsity: str, report: VerificationReport) -> None:
    if ":" not in sparsity:
        return  # unstructured: the fraction is what the modifier aimed at, not a pattern to verify
    n, m = (int(x) for x in sparsity.split(":"))
    if not holds_n_m(weight, n, m):
        report.failures.append(f"{name}: {sparsity} sparsity planned but not present in the stored weights")


# ------------------------------------------------------------------------------------------------
# Reload, as users do
# ------------------------------------------------------------------------------------------------


def _same(planned: QuantArgs | None, actual: Any) -> str | None:
    from kompress_job.recipe.schemes import args_from_ct

    got = args_from_ct(actual)
    if planned is None and got is None:
        return None
    if planned is None or got is None:
        return f"planned {planned and _describe(planned)}, loaded {got and _describe(got)}"
    fields = ("bits", "type", "strategy", "symmetric", "group_size", "dynamic")
    diffs = [f"{f} {getattr(planned, f)} != {getattr(got, f)}" for f in fields if getattr(planned, f) != getattr(got, f)]
    return ", ".join(diffs) or None


def _describe(args: QuantArgs) -> str:
    group = f" g{args.group_size}" if args.group_size else ""
    return f"{args.type}{args.bits} {args.strategy}{group}{' dynamic' if args.dynamic else ''}"


def check_reloaded(model: Any, resolved: ResolvedRecipe, report: VerificationReport) -> None:
    reloaded = {name for name, _ in model.named_modules()}
    missing = [n for n in resolved.assignment if n not in reloaded]
    if missing:
        report.failures.append(f"{len(missing)} planned module(s) absent after reload (layout lost?), e.g. {', '.join(missing[:3])}")
    for name, assignment in resolved.assignment.items():
        if name in missing:
            continue
        scheme = getattr(model.get_submodule(name), "quantization_scheme", None)
        if assignment.scheme is None:
            if scheme is not None and getattr(scheme, "weights", None) is not None:
                report.failures.append(f"{name}: planned 16-bit but loads with a quantization scheme")
            continue
        if scheme is None:
            report.failures.append(f"{name}: planned {assignment.scheme.name} but loads without quantization")
            continue
        for what, planned, actual in (
            ("weights", assignment.scheme.weights, scheme.weights),
            ("activations", assignment.scheme.activations, scheme.input_activations),
        ):
            diff = _same(planned, actual)
            if diff:
                report.failures.append(f"{name}: {what} {diff}")


def check_runs(model: Any, tokenizer: Any, report: VerificationReport, max_new_tokens: int = 8) -> None:
    import torch

    inputs = tokenizer(PROMPT, return_tensors="pt")
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with torch.no_grad():
        logits = model(**inputs).logits
        report.logits_finite = bool(torch.isfinite(logits).all())
        if not report.logits_finite:
            report.failures.append("forward pass produced NaN or infinite logits")
            return
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False, pad_token_id=pad)
    new = out[0, inputs["input_ids"].shape[1] :]
    report.generated_tokens = int(new.numel())
    report.sample = tokenizer.decode(new, skip_special_tokens=False)[:200]
    if report.generated_tokens == 0:
        report.failures.append("generation produced no tokens")


def verify_checkpoint(folder: Path, resolved: ResolvedRecipe, *, load: Any, tokenizer: Any) -> tuple[VerificationReport, Any]:
    """Run every check; returns the report and the reloaded model (for the evaluation stage)."""
    started = time.monotonic()
    report = VerificationReport(checkpoint=str(folder))
    config = json.loads((folder / "config.json").read_text())
    quantized = any(a.scheme is not None for a in resolved.assignment.values())
    if quantized and "quantization_config" not in config:
        report.failures.append("config.json has no quantization_config")
    report.failures += sparsity_metadata.check(config, resolved)
    check_files(folder, resolved, report)
    check_fused_global_scales(folder, resolved, report)
    model = load(folder)
    check_reloaded(model, resolved, report)
    check_runs(model, tokenizer, report)
    report.seconds = round(time.monotonic() - started, 3)
    return report, model


def check_config(folder: Path, resolved: ResolvedRecipe, report: VerificationReport) -> None:
    """What a loader will apply, read from config.json alone: each planned module is matched by exactly the config
    group of its planned scheme (targets, not ignored), and each 16-bit module by none: the reload check without
    the model, for the streamed mode."""
    from kompress_job.recipe.patterns import matches
    from kompress_job.recipe.schemes import scheme_from_ct

    config = json.loads((folder / "config.json").read_text()).get("quantization_config") or {}
    groups = {name: (g.get("targets", []), scheme_from_ct(name, g)) for name, g in config.get("config_groups", {}).items()}
    ignore = config.get("ignore") or []
    classes = resolved.inventory.classes
    for name, assignment in resolved.assignment.items():
        own = classes.get(name, ())
        ignored = any(matches(entry, name, own) for entry in ignore)
        hits = [] if ignored else [g for g, (targets, _) in groups.items() if any(matches(t, name, own) for t in targets)]
        if assignment.scheme is None:
            if hits:
                report.failures.append(f"{name}: planned 16-bit but config.json's group {hits[0]} targets it")
            continue
        if len(hits) != 1:
            report.failures.append(f"{name}: planned {assignment.scheme.name}, but config.json {'ignores it' if ignored else f'matches it with {len(hits)} groups'}")
            continue
        loaded = groups[hits[0]][1]
        for what, planned, actual in (("weights", assignment.scheme.weights, loaded.weights if loaded else None), ("activations", assignment.scheme.activations, loaded.activations if loaded else None)):
            diff = _same(planned, actual.to_ct() if actual is not None else None)
            if diff:
                report.failures.append(f"{name}: config.json {what} {diff}")


def verify_streamed(folder: Path, resolved: ResolvedRecipe) -> VerificationReport:
    """Every check that needs no model in memory: the files tensor by tensor, fused global scales, config.json."""
    started = time.monotonic()
    report = VerificationReport(checkpoint=str(folder), mode="streamed")
    check_files(folder, resolved, report)
    check_fused_global_scales(folder, resolved, report)
    check_config(folder, resolved, report)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def failure_message(report: VerificationReport) -> str:
    shown = "; ".join(report.failures[:8])
    more = f" (and {len(report.failures) - 8} more)" if len(report.failures) > 8 else ""
    return f"the saved checkpoint does not match the recipe: {shown}{more}"
