"""What a CompressionJob does to the model, kompress.dev/v1alpha1: spec.recipe.

Owns: the named presets (Preset), the typed adjustments of a preset (RecipeOverrides), how the worker
applies a recipe (RecipePath, DATA_FREE_PRESETS) and Recipe itself: fields, docs, bounds, CEL rules and
their local mirror, with the check that a `re:` entry compiles (regex_problem).
kompress_api.v1alpha1 re-exports them: import them from there.
Must not: resolve a preset into llm-compressor modifiers (the worker's recipe module does).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints, field_validator, model_validator

from kompress_api._model import ApiModel, api_field

# Bounded strings let the API server estimate the cost of the CEL rules that compare whole objects.
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class Preset(str, Enum):
    """Named recipes. docs/presets.md says what each keeps, quantizes, and where it can be served."""

    SPARSE24_W4A16_W8A8 = "sparse24-w4a16-w8a8"
    W4A16_W8A8 = "w4a16-w8a8"
    W4A16 = "w4a16"
    FP8_DYNAMIC = "fp8-dynamic"
    FP8_BLOCK = "fp8-block"
    NVFP4A16 = "nvfp4a16"
    MXFP4A16 = "mxfp4a16"
    NVFP4 = "nvfp4"


class RecipePath(str, Enum):
    """How the worker applies the recipe."""

    AUTO = "auto"
    DATA_FREE = "data-free"
    LOADED = "loaded"


# The presets whose schemes need no calibration data (the worker derives the same from the resolved recipe;
# tests/job/test_data_free.py holds the two together). The CRD refuses path data-free for the others.
DATA_FREE_PRESETS = ("fp8-dynamic", "fp8-block", "nvfp4a16", "mxfp4a16")
_DATA_FREE_MESSAGE = "spec.recipe.path data-free needs a preset that learns nothing from data: fp8-dynamic, fp8-block, nvfp4a16 or mxfp4a16 (or path auto/loaded)"
REGEX_PREFIX = "re:"
# Kubernetes' CEL cannot compile a regex, so admission refuses only what is surely broken, in RE2: an
# unclosed, unescaped [ and a *, + or ? with nothing to repeat. The typed model compiles every entry.
BROKEN_REGEX_RE = r"^re:([*+?]|.*[^\\](\\\\)*\[[^\]]*$)"
BROKEN_REGEX_WHY = "an unclosed [, or a *, + or ? with nothing to repeat"


def regex_problem(entry: str) -> str | None:
    """Why a `re:` entry is not a regex Python compiles (compressed-tensors matches them with `re`), or None."""
    if not entry.startswith(REGEX_PREFIX):
        return None
    try:
        re.compile(entry[len(REGEX_PREFIX) :])
    except re.error as err:
        return f"{entry!r} is not a valid regex: {err}"
    return None


class RecipeOverrides(ApiModel):
    """Typed knobs on a preset. Anything beyond these calls for spec.recipe.custom."""

    ignore: list[Pattern] = api_field(
        [],
        description=(
            "more modules to keep in 16-bit, untouched: exact module names (model.layers.0.mlp.down_proj) or "
            "regexes prefixed re: (re:.*mlp\\.down_proj$). Each entry must match at least one module."
        ),
        rules=[(f"self.all(p, !p.matches(r'{BROKEN_REGEX_RE}'))", f"spec.recipe.overrides.ignore has a re: entry that is not a valid regex ({BROKEN_REGEX_WHY})")],
        max_length=256,
    )
    group_size: int | None = api_field(None, description="group size for 4-bit weights. Layers whose input width is not a multiple fall back to the largest of 64 or 32 that divides it, else to per-channel. Default 128.", ge=16, le=1024)
    experts: str | None = api_field(
        None,
        description="regex (re:...) of module names to treat as routed experts, overriding the detection from the model's structure.",
        rules=[
            ("self.startsWith('re:')", "spec.recipe.overrides.experts must be a regex starting with re:"),
            (f"!self.matches(r'{BROKEN_REGEX_RE}')", f"spec.recipe.overrides.experts is not a valid regex ({BROKEN_REGEX_WHY})"),
        ],
        max_length=1024,
    )

    @field_validator("ignore")
    @classmethod
    def _ignore_regexes_compile(cls, entries: list[str]) -> list[str]:
        problems = [f"spec.recipe.overrides.ignore[{i}]: {why}" for i, entry in enumerate(entries) if (why := regex_problem(entry))]
        if problems:
            raise ValueError("; ".join(problems))
        return entries

    @field_validator("experts")
    @classmethod
    def _experts_regex_compiles(cls, entry: str | None) -> str | None:
        if entry is not None and (why := regex_problem(entry)):
            raise ValueError(f"spec.recipe.overrides.experts: {why}")
        return entry


class Recipe(ApiModel):
    """What to do to the model: a named preset, or a complete llm-compressor recipe."""

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("has(self.preset) != has(self.custom)", "spec.recipe needs exactly one of preset or custom"),
        ("!has(self.overrides) || has(self.preset)", "spec.recipe.overrides applies to a preset only"),
        (
            "!has(self.path) || self.path != 'data-free' || !has(self.preset) || self.preset in " + str(list(DATA_FREE_PRESETS)).replace('"', "'"),
            _DATA_FREE_MESSAGE,
        ),
    ]

    preset: Preset | None = api_field(
        None,
        description=(
            "a named recipe: sparse24-w4a16-w8a8 (the founding recipe: SparseGPT 2:4, AWQ, INT4 W4A16 on attention and "
            "dense MLP, INT8 W8A8 static on experts, router/gate_proj/lm_head 16-bit; NOT servable by vLLM today), "
            "w4a16-w8a8 (servable: INT4 W4A16 non-experts, INT8 W8A8 dynamic on experts), w4a16 (servable, smallest), "
            "fp8-dynamic (servable on FP8 GPUs, no calibration), fp8-block (FP8, 128x128 weight blocks, no calibration), "
            "nvfp4a16 and mxfp4a16 (FP4 weights only, no calibration), nvfp4 (FP4 weights and activations, calibrated; "
            "Blackwell). See docs/presets.md."
        ),
    )
    overrides: RecipeOverrides | None = api_field(None, description="typed adjustments of the preset. Only with preset.")
    path: RecipePath = api_field(
        RecipePath.AUTO,
        description=(
            "how the worker applies the recipe: data-free (llm-compressor's model_free_ptq: the safetensors files one by one, "
            "never the whole model in memory; only for recipes that need no calibration: fp8-dynamic, fp8-block, nvfp4a16, "
            "mxfp4a16), loaded (the whole model in host memory, llm-compressor's oneshot; every recipe), or auto (default: "
            "data-free when the recipe allows it, else loaded)."
        ),
    )
    mtp: Literal["keep", "drop", "quantize"] = api_field(
        "keep",
        description=(
            "what happens to the model's multi-token-prediction (MTP) layers, which vLLM uses for speculative decoding "
            "(GLM-4.5's model.layers.46.*, DeepSeek-V3's, Qwen3-Next's mtp.*): keep carries them into the checkpoint "
            "unchanged (the source dtype, byte-identical, listed in quantization_config.ignore); drop leaves them out; "
            "quantize is refused by the plan today (see docs/presets.md). Default keep."
        ),
        schema_default="keep",
    )
    custom: str | None = api_field(
        None,
        description="a complete llm-compressor recipe in YAML, used as given. Every targets and ignore entry must match a module, and no module may be in two config groups.",
        max_length=262144,
    )

    @model_validator(mode="after")
    def _one_recipe(self) -> "Recipe":
        # The same two rules as cel_rules, so a manifest the API server would refuse is refused locally too.
        if (self.preset is None) == (self.custom is None):
            raise ValueError("spec.recipe needs exactly one of preset or custom")
        if self.overrides is not None and self.preset is None:
            raise ValueError("spec.recipe.overrides applies to a preset only")
        if self.path is RecipePath.DATA_FREE and self.preset is not None and self.preset.value not in DATA_FREE_PRESETS:
            raise ValueError(_DATA_FREE_MESSAGE)
        return self
