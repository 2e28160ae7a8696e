"""What a model is made of, as llm-compressor will see it: every weight-bearing module, classified by role.

Owns: the module inventory of a transformers causal LM and the classification of its modules into
roles (attention, dense MLP, routed experts, shared experts, router, lm_head) from the model's
structure, not from one model's names:

    decoder layers   the classes transformers lists in `_no_split_modules` (else the largest list
                     of identical blocks)
    routed experts   a module holding 3-D expert tensors (transformers' fused experts), or a list of
                     identical MLPs whose length matches a sibling router's output width
    router           a direct child of the MoE block with a 2-D weight (Glm4MoeTopkRouter is not an
                     nn.Linear; Qwen2-MoE's shared_expert_gate is)
    shared experts   the other MLPs inside the MoE block
    attention        the decoder layer's child whose class is an *Attention
    dense MLP        Linear layers of a decoder layer in neither of the above
    lm_head          model.get_output_embeddings()

Fused 3-D experts are expanded *virtually* into the per-expert Linear modules llm-compressor 0.14's
`linearize_moe` creates (`experts.{i}.{up,gate,down}_proj`, in its registration order), so the
inventory of a meta-device model (the planner's) equals that of the loaded, linearized model (the
worker's). llm-compressor's own linearization cannot run on meta tensors ("Offload of type meta ...
has not been implemented"), and this module needs neither llm-compressor nor compressed-tensors.

Must not: touch weights (only shapes), or import llm-compressor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

from kompress_job.recipe.patterns import NameIndex


class Role(str, Enum):
    ATTENTION = "attention"
    DENSE_MLP = "dense_mlp"
    ROUTED_EXPERTS = "routed_experts"
    SHARED_EXPERTS = "shared_experts"
    ROUTER = "router"
    LM_HEAD = "lm_head"
    OTHER = "other"


MLP_ROLES = (Role.DENSE_MLP, Role.ROUTED_EXPERTS, Role.SHARED_EXPERTS)
# The gating half of a gated MLP. Shape cannot tell it from up_proj, so its leaf name does; these are
# the names transformers' MLPs and llm-compressor's linearized experts use (w1 in older Mixtral code).
GATE_PROJ_NAMES = ("gate_proj", "w1")
# Leaf names of the standard decoder-layer layout used to derive AWQ mappings (see recipe.awq).
ATTENTION_INPUT_NAMES = ("q_proj", "k_proj", "v_proj")
ATTENTION_OUTPUT_NAMES = ("o_proj",)
UP_PROJ_NAMES = ("up_proj", "w3")
DOWN_PROJ_NAMES = ("down_proj", "w2")
INPUT_NORM_NAMES = ("input_layernorm",)
POST_ATTENTION_NORM_NAMES = ("post_attention_layernorm",)


@dataclass(frozen=True)
class WeightModule:
    """One module with a 2-D weight: a Linear (real or a virtual per-expert one) or a router."""

    name: str
    role: Role
    leaf: str
    in_features: int
    out_features: int
    is_linear: bool
    layer: int | None = None
    expert: int | None = None

    @property
    def is_gate_proj(self) -> bool:
        return self.role in MLP_ROLES and self.leaf in GATE_PROJ_NAMES

    @property
    def roles(self) -> list[str]:
        """The roles records count this module under: its own, and gate_proj as a role of its own as well (presets
        may treat the gating half of an MLP apart from up_proj)."""
        return [self.role.value, "gate_proj"] if self.is_gate_proj else [self.role.value]

    @property
    def parameters(self) -> int:
        return self.in_features * self.out_features

    @property
    def block(self) -> str:
        """The name of the module holding this one (its MLP, attention block or expert)."""
        return self.name.rsplit(".", 1)[0] if "." in self.name else ""


@dataclass(frozen=True)
class LayerLayout:
    """One decoder layer: where its attention and MLP live, and the norms that feed them."""

    index: int
    name: str
    attention: str | None
    moe_block: str | None
    input_norm: str | None
    post_attention_norm: str | None


@dataclass
class ModuleInventory:
    architecture: str
    model_type: str
    hidden_size: int | None
    # Every module name in named_modules() order, as llm-compressor will see the model (fused experts
    # already expanded), with the class names a class target such as "Linear" matches against.
    names: list[str]
    classes: dict[str, tuple[str, ...]]
    modules: list[WeightModule]
    layers: list[LayerLayout]
    num_experts: int | None
    fused_experts: list[str] = field(default_factory=list)
    experts_override: str | None = None
    notes: list[str] = field(default_factory=list)

    def by_name(self) -> dict[str, WeightModule]:
        return {m.name: m for m in self.modules}

    @cached_property
    def name_index(self) -> NameIndex:
        """`names`, indexed for compiling target regexes against them (built once, used by every group)."""
        return NameIndex(self.names)

    @property
    def is_moe(self) -> bool:
        return any(m.role is Role.ROUTED_EXPERTS for m in self.modules)

    def role_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.modules:
            counts[m.role.value] = counts.get(m.role.value, 0) + 1
        return counts


def _class_names(module: Any) -> tuple[str, ...]:
    import torch

    return tuple(cls.__name__ for cls in type(module).__mro__ if isinstance(cls, type) and issubclass(cls, torch.nn.Module))


def _fused_expert_shapes(module: Any) -> tuple[int, list[tuple[str, int, int]]] | None:
    """For transformers' fused experts (3-D parameters, `@use_experts_implementation`): the expert count and
    the per-expert Linear layers llm-compressor's LinearExperts2D will create: (leaf, in, out), in its order."""
    import torch

    down = module._parameters.get("down_proj") if hasattr(module, "_parameters") else None
    gate_up = module._parameters.get("gate_up_proj")
    up = module._parameters.get("up_proj")
    if not isinstance(down, torch.nn.Parameter) or down.ndim != 3:
        return None
    first = gate_up if gate_up is not None else up
    if not isinstance(first, torch.nn.Parameter) or first.ndim != 3:
        return None
    transposed = bool(getattr(module, "is_transposed", False))
    has_gate = bool(getattr(module, "has_gate", gate_up is not None))
    experts = int(down.shape[0])
    # Not transposed: down [E, hidden, inter], gate_up [E, 2*inter, hidden] (or up [E, inter, hidden]).
    hidden, inter = (int(down.shape[2]), int(down.shape[1])) if transposed else (int(down.shape[1]), int(down.shape[2]))
    if has_gate:
        # ExpertMLPWithGate registers up_proj, gate_proj, down_proj in that order.
        linears = [("up_proj", hidden, inter), ("gate_proj", hidden, inter), ("down_proj", inter, hidden)]
    else:
        linears = [("up_proj", hidden, inter), ("down_proj", inter, hidden)]
    return experts, linears


def _weight_shape(module: Any) -> tuple[int, int] | None:
    """(out, in) of a module's own 2-D `weight`, without reading it (meta tensors are fine)."""
    weight = getattr(module, "_parameters", {}).get("weight")
    if weight is None or weight.ndim != 2:
        return None
    return int(weight.shape[0]), int(weight.shape[1])


def _decoder_layer_names(model: Any, named: dict[str, Any]) -> list[str]:
    import torch

    block_classes = set(getattr(model, "_no_split_modules", None) or [])
    found = [n for n, m in named.items() if type(m).__name__ in block_classes]
    # Keep only outermost matches (a block class may nest, e.g. an attention class listed too).
    found = [n for n in found if not any(n != o and n.startswith(o + ".") for o in found)]
    if found:
        return found
    best: list[str] = []
    best_params = -1
    for name, module in named.items():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        kinds = {type(child) for child in module}
        if len(kinds) != 1:
            continue
        params = sum(p.numel() for p in module.parameters())
        if params > best_params:
            best, best_params = [f"{name}.{i}" for i in range(len(module))], params
    return best


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or "Linear" in _class_names(module)


def _looks_like_expert_list(module: Any, parent: Any) -> int | None:
    """A ModuleList of identical MLPs (≥2) next to a router whose output width equals their count."""
    import torch

    if not isinstance(module, torch.nn.ModuleList):
        return None
    blocks = [child for child in module if any(_is_linear(m) for m in child.modules())]
    if len(blocks) < 2 or len({type(b) for b in blocks}) != 1:
        return None
    if "LinearExperts2D" in _class_names(module):
        return len(blocks)
    for sibling in parent.children():
        shape = _weight_shape(sibling)
        if sibling is not module and shape is not None and shape[0] == len(blocks):
            return len(blocks)
    return None


def build_inventory(model: Any, *, experts_override: str | None = None) -> ModuleInventory:
    """Classify every weight-bearing module of `model` (loaded, linearized, or on the meta device)."""
    config = getattr(model, "config", None)
    named: dict[str, Any] = dict(model.named_modules())
    override_re = re.compile(experts_override[3:]) if experts_override else None
    layer_names = _decoder_layer_names(model, named)
    experts = _find_experts(model, named)
    names, classes, shapes = _names_as_llmcompressor_sees_them(named, experts)
    layers = _layer_layouts(named, layer_names, experts.moe_blocks)
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    lm_head_name = next((n for n, m in named.items() if output_embeddings is not None and m is output_embeddings), None)
    classify = _Classifier(layers, experts.containers, lm_head_name, override_re)
    modules = [classify(name, *shapes[name]) for name in names if name in shapes]
    return ModuleInventory(
        architecture=type(model).__name__,
        model_type=str(getattr(config, "model_type", "") or ""),
        hidden_size=getattr(config, "hidden_size", None),
        names=names,
        classes=classes,
        modules=modules,
        layers=layers,
        num_experts=experts.num_experts,
        fused_experts=sorted(c for c in experts.containers if c in experts.fused),
        experts_override=experts_override,
        notes=_notes(modules),
    )


@dataclass(frozen=True)
class _Experts:
    """The model's expert containers: fused (3-D, by name: expert count and per-expert Linears) or lists of MLPs."""

    fused: dict[str, tuple[int, list[tuple[str, int, int]]]]
    containers: set[str]  # outermost only
    moe_blocks: dict[str, str]  # the MoE block (a container's parent) -> its container
    num_experts: int | None


def _find_experts(model: Any, named: dict[str, Any]) -> _Experts:
    """Expert containers: fused (3-D) or lists of identical MLPs. Their parents are MoE blocks."""
    fused: dict[str, tuple[int, list[tuple[str, int, int]]]] = {}
    expert_lists: dict[str, int] = {}
    for name, module in named.items():
        if not name:
            continue
        shapes = _fused_expert_shapes(module)
        if shapes is not None:
            fused[name] = shapes
            continue
        parent = named[name.rsplit(".", 1)[0]] if "." in name else model
        count = _looks_like_expert_list(module, parent)
        if count is not None:
            expert_lists[name] = count
    containers = set(fused) | set(expert_lists)
    # Nested matches (a list inside a list) keep the outermost.
    containers = {c for c in containers if not any(c != o and c.startswith(o + ".") for o in containers)}
    counts = {fused[c][0] if c in fused else expert_lists[c] for c in containers}
    return _Experts(fused, containers, {c.rsplit(".", 1)[0]: c for c in containers}, max(counts) if counts else None)


def _names_as_llmcompressor_sees_them(
    named: dict[str, Any], experts: _Experts
) -> tuple[list[str], dict[str, tuple[str, ...]], dict[str, tuple[int, int, bool]]]:
    """Every module name in order, its class names, and (out, in, is_linear) of each with a 2-D weight: fused
    containers expanded into LinearExperts2D, their own children (the 3-D parameters' holders) left out."""
    names: list[str] = []
    classes: dict[str, tuple[str, ...]] = {}
    shapes: dict[str, tuple[int, int, bool]] = {}  # name -> (out, in, is_linear)
    skip_prefix: str | None = None
    for name, module in named.items():
        if skip_prefix is not None and name.startswith(skip_prefix):
            continue
        skip_prefix = None
        if name in experts.fused and name in experts.containers:
            _expand_fused(name, *experts.fused[name], names, classes, shapes)
            skip_prefix = name + "."
            continue
        names.append(name)
        classes[name] = _class_names(module)
        shape = _weight_shape(module)
        if shape is not None and not isinstance(module, _embedding_types()):
            shapes[name] = (shape[0], shape[1], _is_linear(module))
    return names, classes, shapes


def _expand_fused(name: str, experts: int, linears: list[tuple[str, int, int]], names: list[str],
                  classes: dict[str, tuple[str, ...]], shapes: dict[str, tuple[int, int, bool]]) -> None:
    """The modules llm-compressor's linearize_moe makes of the fused container `name`, appended in its order."""
    names.append(name)
    classes[name] = ("LinearExperts2D", "ModuleList", "Module")
    expert_cls = "ExpertMLPWithGate" if any(leaf == "gate_proj" for leaf, _, _ in linears) else "ExpertMLPWithoutGate"
    for i in range(experts):
        names.append(f"{name}.{i}")
        classes[f"{name}.{i}"] = (expert_cls, "ExpertMLP", "Module")
        for leaf, fan_in, fan_out in linears:
            lin = f"{name}.{i}.{leaf}"
            names.append(lin)
            classes[lin] = ("Linear", "Module")
            shapes[lin] = (fan_out, fan_in, True)
    names.append(f"{name}.act_fn")
    classes[f"{name}.act_fn"] = ("Module",)


def _layer_layouts(named: dict[str, Any], layer_names: list[str], moe_blocks: dict[str, str]) -> list[LayerLayout]:
    """The structure of each decoder layer: its attention child, MoE block and norms."""
    layers: list[LayerLayout] = []
    for i, lname in enumerate(layer_names):
        children = dict(named[lname].named_children())
        attention = next((f"{lname}.{n}" for n, child in children.items() if "attention" in type(child).__name__.lower()), None)
        moe_block = next((b for b in moe_blocks if b.startswith(lname + ".")), None)
        input_norm = next((f"{lname}.{n}" for n in INPUT_NORM_NAMES if n in children), None)
        post_norm = next((f"{lname}.{n}" for n in POST_ATTENTION_NORM_NAMES if n in children), None)
        layers.append(LayerLayout(i, lname, attention, moe_block, input_norm, post_norm))
    return layers


class _Classifier:
    """The role (and expert index) of one weight-bearing module, from where it sits in the model."""

    def __init__(self, layers: list[LayerLayout], containers: set[str], lm_head_name: str | None, override_re: re.Pattern[str] | None) -> None:
        self.layer_of = {layout.name: layout for layout in layers}
        self.layer_set = set(self.layer_of)
        self.containers = containers
        self.lm_head_name = lm_head_name
        self.override_re = override_re

    def __call__(self, name: str, out_features: int, in_features: int, is_linear: bool) -> WeightModule:
        layer_name = _enclosing(name, self.layer_set)
        layout = self.layer_of.get(layer_name) if layer_name else None
        role, expert = self._role(name, is_linear, layout)
        if role is Role.ROUTED_EXPERTS and self.override_re is not None and expert is None:
            match = re.search(r"\.(\d+)\.[^.]+$", name)
            expert = int(match.group(1)) if match else None
        if not is_linear and role not in (Role.ROUTER, Role.OTHER):
            role = Role.OTHER
        return WeightModule(
            name=name,
            role=role,
            leaf=name.rsplit(".", 1)[-1],
            in_features=in_features,
            out_features=out_features,
            is_linear=is_linear,
            layer=layout.index if layout is not None else None,
            expert=expert,
        )

    def _role(self, name: str, is_linear: bool, layout: LayerLayout | None) -> tuple[Role, int | None]:
        if name == self.lm_head_name:
            return Role.LM_HEAD, None
        if self.override_re is not None and is_linear and self.override_re.match(name):
            return Role.ROUTED_EXPERTS, None
        container = _enclosing(name, self.containers)
        if container is not None:
            rest = name[len(container) + 1 :].split(".", 1)[0]
            return (Role.ROUTED_EXPERTS if self.override_re is None else Role.OTHER), (int(rest) if rest.isdigit() else None)
        if layout is None:
            return Role.OTHER, None
        if layout.moe_block and name.startswith(layout.moe_block + "."):
            return (Role.ROUTER if "." not in name[len(layout.moe_block) + 1 :] else Role.SHARED_EXPERTS), None
        if layout.attention and name.startswith(layout.attention + "."):
            return Role.ATTENTION, None
        return (Role.DENSE_MLP if is_linear else Role.OTHER), None


def _notes(modules: list[WeightModule]) -> list[str]:
    others = [m.name for m in modules if m.role is Role.OTHER and m.is_linear]
    if not others:
        return []
    return [f"{len(others)} Linear module(s) outside the decoder layers' attention and MLPs stay 16-bit: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}"]


def _enclosing(name: str, candidates: set[str]) -> str | None:
    """The candidate `name` lies inside (candidates never nest): a lookup per dot, not a scan of 17,000 names x 46 layers."""
    dot = name.find(".")
    while dot != -1:
        if name[:dot] in candidates:
            return name[:dot]
        dot = name.find(".", dot + 1)
    return None


def _embedding_types() -> tuple[type, ...]:
    import torch

    return (torch.nn.Embedding,)
