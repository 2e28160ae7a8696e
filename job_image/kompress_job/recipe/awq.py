"""AWQ smoothing mappings derived from what a model actually contains.

Owns: the (smooth layer -> balance layers) pairs for AWQModifier. A mapping scales the output of the
smooth layer down and every consumer of that output up by the same per-channel factors, so it must
list *all* consumers (a consumer left out would see a changed input). Per decoder layer:

    input norm        -> q, k, v                          if any of them is 4-bit
    v_proj            -> o_proj                           if o is 4-bit and widths agree (not under GQA)
    post-attn norm    -> every consumer of the MLP input: if any of them is 4-bit
                         dense gate/up, or router(s) + shared gate/up + every expert's gate/up
    up_proj           -> down_proj (each MLP and expert)  if down is 4-bit

llm-compressor's own default for Glm4MoeForCausalLM lists the router in every layer's MLP mapping;
GLM4-MoE's dense first layer has none, so that mapping crashes ("AWQ needs to match a single
smoothlayer ..."). Deriving per-layer-kind mappings from the inventory avoids it for any mix of dense
and MoE layers. Consumers that stay 16-bit (a gate_proj, the router) are still balanced: the scaling is
exact for them, only the 4-bit layers gain from it.

Layers whose norms are not named like transformers' decoder layers (input_layernorm,
post_attention_layernorm) get no mapping for that block, and a warning says so.
Must not: import llm-compressor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from kompress_job.recipe.inventory import (
    ATTENTION_INPUT_NAMES,
    ATTENTION_OUTPUT_NAMES,
    DOWN_PROJ_NAMES,
    GATE_PROJ_NAMES,
    UP_PROJ_NAMES,
    ModuleInventory,
    Role,
    WeightModule,
)
from kompress_job.recipe.patterns import REGEX_PREFIX, NameIndex, exact_patterns


@dataclass(frozen=True)
class _Mapping:
    kind: str
    smooth: str
    # balance layers grouped into entries: one entry per kind of consumer (q, k, v, router, ...)
    balance: tuple[tuple[str, tuple[str, ...]], ...]


def derive_mappings(inventory: ModuleInventory, four_bit: set[str]) -> tuple[list[dict], list[str]]:
    """AWQ mappings (AWQModifier `mappings` entries) for the 4-bit modules, and warnings."""
    warnings: list[str] = []
    modules = inventory.modules
    by_block: dict[str, list[WeightModule]] = defaultdict(list)
    for m in modules:
        by_block[m.block].append(m)

    per_layer: list[_Mapping] = []
    for layout in inventory.layers:
        in_layer = [m for m in modules if m.layer == layout.index]
        attention = [m for m in in_layer if m.role is Role.ATTENTION]
        qkv = [m for m in attention if m.leaf in ATTENTION_INPUT_NAMES]
        if any(m.name in four_bit for m in qkv):
            if layout.input_norm is None:
                warnings.append(f"AWQ: {layout.name} has no input_layernorm; its attention is quantized without smoothing")
            else:
                per_layer.append(_Mapping("attention-input", layout.input_norm, tuple((m.leaf, (m.name,)) for m in qkv)))
        v = next((m for m in attention if m.leaf == "v_proj"), None)
        o = next((m for m in attention if m.leaf in ATTENTION_OUTPUT_NAMES), None)
        if v is not None and o is not None and o.name in four_bit and v.out_features == o.in_features:
            per_layer.append(_Mapping("attention-output", v.name, (("o_proj", (o.name,)),)))

        mlp = [m for m in in_layer if m.role in (Role.DENSE_MLP, Role.SHARED_EXPERTS, Role.ROUTED_EXPERTS, Role.ROUTER)]
        consumers = [m for m in mlp if m.role is Role.ROUTER or (m.leaf in GATE_PROJ_NAMES + UP_PROJ_NAMES)]
        if any(m.name in four_bit for m in consumers):
            if layout.post_attention_norm is None:
                warnings.append(f"AWQ: {layout.name} has no post_attention_layernorm; its MLP input is not smoothed")
            else:
                entries: dict[str, list[str]] = defaultdict(list)
                for m in consumers:
                    entries[f"{m.role.value}.{m.leaf}"].append(m.name)
                per_layer.append(_Mapping("mlp-input", layout.post_attention_norm, tuple((k, tuple(v)) for k, v in entries.items())))
        for block, members in by_block.items():
            if not members or members[0].layer != layout.index or members[0].role not in (Role.DENSE_MLP, Role.SHARED_EXPERTS, Role.ROUTED_EXPERTS):
                continue
            up = next((m for m in members if m.leaf in UP_PROJ_NAMES), None)
            down = next((m for m in members if m.leaf in DOWN_PROJ_NAMES), None)
            if up is not None and down is not None and down.name in four_bit and up.out_features == down.in_features:
                per_layer.append(_Mapping(f"{members[0].role.value}-down", up.name, (("down_proj", (down.name,)),)))

    return _merge(per_layer, inventory.name_index), warnings


def _merge(per_layer: list[_Mapping], universe: NameIndex) -> list[dict]:
    """One mapping per kind of block with identical shape (same balance entry kinds), as exact regexes.

    compressed-tensors groups a mapping's matches by their lowest common ancestor, one group per
    smooth layer, so a regex spanning layers is fine as long as every layer it spans has every entry.
    """
    kinds: dict[tuple[str, tuple[str, ...]], list[_Mapping]] = defaultdict(list)
    for mapping in per_layer:
        kinds[(mapping.kind, tuple(k for k, _ in mapping.balance))].append(mapping)
    out: list[dict] = []
    for (_, entry_kinds), mappings in kinds.items():
        smooth = single_pattern([m.smooth for m in mappings], universe)
        balance = []
        for index, _ in enumerate(entry_kinds):
            names = [name for m in mappings for name in m.balance[index][1]]
            balance.append(single_pattern(names, universe))
        out.append({"smooth_layer": smooth, "balance_layers": balance})
    return out


def single_pattern(names: list[str], universe: Iterable[str] | NameIndex) -> str:
    """One `re:` entry matching exactly `names` among `universe`."""
    patterns = exact_patterns(names, universe)
    if len(patterns) == 1:
        return patterns[0]
    return REGEX_PREFIX + "|".join(f"(?:{p[len(REGEX_PREFIX):]})" for p in patterns)
