"""The resolved recipe: what will happen to each module of one model, before anything runs.

Owns: ResolvedRecipe (the inventory, each module's assignment, the llm-compressor recipe that carries it out,
fallbacks and warnings) and what follows from it alone: its groups, its role table, the calibration passes
llm-compressor will run for it (which modifier learns from data: CALIBRATING_MODIFIERS and
quantization_calibrates, the one definition the compress stage, the plan and the data-free path read), and its
records (`summary()` for the manifest, the model card and the plan; `module_table()` for the save stage).
Made by kompress_job.recipe.resolve (presets) and kompress_job.recipe.custom (spec.recipe.custom).
Must not: import torch, llm-compressor or compressed-tensors at module import, touch weights, or do I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kompress_job.recipe.inventory import ModuleInventory
from kompress_job.recipe.patterns import exact_patterns
from kompress_job.recipe.presets import Assignment, Fallback
from kompress_job.recipe.schemes import Scheme, args_from_ct

QUANTIZATION_MODIFIER = "QuantizationModifier"
# The kinds of work a modifier does over the model (planning.footprint.PASS_SECONDS times each).
WEIGHTS_ONLY = "weights-only"  # a QuantizationModifier that computes every scale from the weights: no pass over data
STATIC_ACTIVATIONS = "static-activations"  # a pass over the data that gathers activation statistics

# The modifiers that learn from calibration data, as llm-compressor 0.14 declares them (the classes whose
# `requires_calibration_data` is true; its default `independent` pipeline gives each one a sequential pass of its
# own over the data), with the kind of pass each is. tests/job/test_calibration_passes.py pins this against the
# installed llm-compressor. QuantizationModifier learns from data only for some schemes (quantization_calibrates).
CALIBRATING_MODIFIERS: dict[str, str] = {
    "GPTQModifier": "GPTQModifier",
    "SparseGPTModifier": "SparseGPTModifier",
    "AWQModifier": "AWQModifier",
    "AutoRoundModifier": "AutoRoundModifier",
    "WandaPruningModifier": STATIC_ACTIVATIONS,
    "SmoothQuantModifier": STATIC_ACTIVATIONS,
    "LogarithmicEqualizationModifier": STATIC_ACTIVATIONS,
    "REAPPruningModifier": STATIC_ACTIVATIONS,
}
# llm-compressor's observers that need activations to weigh the weights' error (QuantizationMixin).
_DATA_OBSERVERS = ("imatrix_mse", "nvfp4_expanded_imatrix")


def quantization_calibrates(args: Mapping[str, Any]) -> bool:
    """Whether a QuantizationModifier with `args` learns from data, as llm-compressor 0.14 decides it
    (QuantizationMixin._set_requires_calibration_data): a KV-cache scheme, an observer that needs activations,
    static input activations or NVFP4's "local" ones (their global scale is calibrated), or static output
    activations. Otherwise every scale comes from the weights (or at run time) and it needs no data."""
    if args.get("requires_calibration_data") or args.get("kv_cache_scheme") is not None:
        return True
    for group in _config_groups(args):
        if (group.get("weights") or {}).get("observer") in _DATA_OBSERVERS:
            return True
        inputs = args_from_ct(group.get("input_activations"))
        if inputs is not None and inputs.dynamic is not True:
            return True
        outputs = group.get("output_activations")
        if outputs is not None and not outputs.get("dynamic", False):
            return True
    return False


def _config_groups(args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every config group of a QuantizationModifier: its config_groups, and the compressed-tensors preset schemes its
    `scheme` names (only a custom recipe does, which has imported compressed-tensors already; presets write
    config_groups)."""
    groups = [g for g in (args.get("config_groups") or {}).values() if isinstance(g, dict)]
    scheme = args.get("scheme")  # a preset name, or {preset name: targets}
    if scheme:
        from compressed_tensors.quantization import preset_name_to_scheme

        for name in [scheme] if isinstance(scheme, str) else list(scheme):
            groups.append(preset_name_to_scheme(name, targets=[]).model_dump(mode="json"))
    return groups


def modifier_pass(kind: str, args: Mapping[str, Any]) -> str | None:
    """What llm-compressor runs for modifier `kind` with `args`: the kind of its pass over the calibration data, or
    WEIGHTS_ONLY for a QuantizationModifier that needs none, or None for any other modifier that needs no data
    (a rotation, magnitude pruning)."""
    if kind in CALIBRATING_MODIFIERS:
        return CALIBRATING_MODIFIERS[kind]
    if kind == QUANTIZATION_MODIFIER:
        return STATIC_ACTIVATIONS if quantization_calibrates(args) else WEIGHTS_ONLY
    return None


@dataclass
class ModuleGroup:
    """Modules that get the same treatment."""

    name: str
    scheme: Scheme | None
    sparsity: str | None
    modules: list[str]
    roles: dict[str, int]
    parameters: int
    targets: list[str] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return self.scheme is None and self.sparsity is None

    def summary(self) -> dict[str, Any]:
        scheme = self.scheme.summary() if self.scheme else {"scheme": None, "weights": None, "activations": None}
        return {
            "name": self.name,
            **scheme,
            "sparsity": self.sparsity,
            "modules": len(self.modules),
            "parameters": self.parameters,
            "roles": dict(sorted(self.roles.items())),
            "targets": self.targets,
        }


@dataclass
class ResolvedRecipe:
    source: str  # "preset" | "custom"
    preset: str | None
    inventory: ModuleInventory
    assignment: dict[str, Assignment]
    recipe: dict[str, Any]
    fallbacks: list[Fallback] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    servable: bool | None = None
    serving: str | None = None
    # modules that get the same treatment, quantized first (most bits last), the kept group at the end
    groups: list[ModuleGroup] = field(init=False)

    def __post_init__(self) -> None:
        self.groups = _groups(self.inventory, self.assignment)

    # -- what will happen ----------------------------------------------------------------------------
    @property
    def kept_modules(self) -> list[str]:
        """Modules left exactly as they are: no quantization, no pruning."""
        return [name for name, a in self.assignment.items() if a.scheme is None and a.sparsity is None]

    @property
    def passes(self) -> list[str]:
        """What each modifier runs, in order (modifier_pass): its calibration pass's kind, or WEIGHTS_ONLY."""
        return [kind for kind in (modifier_pass(k, args) for k, args in self.recipe_modifiers()) if kind is not None]

    @property
    def calibration_passes(self) -> int:
        """Passes llm-compressor makes over the calibration data: one per modifier that learns from it."""
        return sum(kind != WEIGHTS_ONLY for kind in self.passes)

    @property
    def needs_calibration(self) -> bool:
        """Whether any modifier learns from data (SparseGPT, AWQ, GPTQ, static activation scales...)."""
        return self.calibration_passes > 0 or any(a.scheme is not None and a.scheme.needs_calibration for a in self.assignment.values())

    # -- what runs -----------------------------------------------------------------------------------
    def recipe_modifiers(self) -> list[tuple[str, dict[str, Any]]]:
        """(modifier type, arguments) of every modifier in the recipe, in order, across its stages."""
        out = []
        for stage_key, stage in self.recipe.items():
            if not (stage_key.endswith("_stage") and isinstance(stage, dict)):
                continue
            for group_key, group in stage.items():
                if group_key.endswith("_modifiers") and isinstance(group, dict):
                    out.extend((modifier_type, args or {}) for modifier_type, args in group.items())
        return out

    @property
    def modifier_kinds(self) -> set[str]:
        return {kind for kind, _ in self.recipe_modifiers()}

    def recipe_yaml(self) -> str:
        """The llm-compressor recipe as YAML (readable back with llmcompressor.recipe.Recipe.create_instance)."""
        return yaml.safe_dump(self.recipe, sort_keys=False, width=1000)

    def modifiers(self) -> list[Any]:
        """llm-compressor Modifier objects, parsed by llm-compressor itself from the recipe (imports it)."""
        from llmcompressor.recipe import Recipe as LlmcRecipe

        return list(LlmcRecipe.from_dict(self.recipe).modifiers)

    # -- records -------------------------------------------------------------------------------------
    def role_table(self) -> dict[str, dict[str, Any]]:
        """Per role (WeightModule.roles): modules, parameters, and how many of them fall in each group."""
        table: dict[str, dict[str, Any]] = {}
        for m in self.inventory.modules:
            group = self.assignment[m.name].group
            for role in m.roles:
                row = table.setdefault(role, {"modules": 0, "parameters": 0, "groups": {}})
                row["modules"] += 1
                row["parameters"] += m.parameters
                row["groups"][group] = row["groups"].get(group, 0) + 1
        return dict(sorted(table.items()))

    def summary(self) -> dict[str, Any]:
        inv = self.inventory
        total = sum(m.parameters for m in inv.modules)
        return {
            "source": self.source,
            "preset": self.preset,
            "architecture": inv.architecture,
            "model_type": inv.model_type,
            "experts": inv.num_experts,
            # the record counts modules per role (the plan's role_table also their parameters)
            "roles": {role: {"modules": row["modules"], "groups": row["groups"]} for role, row in self.role_table().items()},
            "groups": [g.summary() for g in self.groups],
            "kept_16bit": {"modules": len(self.kept_modules), "parameters": sum(inv.by_name()[n].parameters for n in self.kept_modules), "of_parameters": total},
            "fallbacks": [f.summary() for f in self.fallbacks],
            "warnings": list(self.warnings),
            "needs_calibration": self.needs_calibration,
            "servable": self.servable,
            "serving": self.serving,
        }

    def module_table(self) -> dict[str, str]:
        """module name -> group name, for every weight-bearing module."""
        return {name: a.group for name, a in self.assignment.items()}


def _groups(inventory: ModuleInventory, assignment: dict[str, Assignment]) -> list[ModuleGroup]:
    by_name = inventory.by_name()
    grouped: dict[str, list[str]] = defaultdict(list)
    for name, a in assignment.items():
        grouped[a.group].append(name)
    groups = []
    for group_name, names in grouped.items():
        a = assignment[names[0]]
        roles: dict[str, int] = defaultdict(int)
        for n in names:
            for role in by_name[n].roles:
                roles[role] += 1
        groups.append(
            ModuleGroup(
                name=group_name,
                scheme=a.scheme,
                sparsity=a.sparsity,
                modules=names,
                roles=dict(roles),
                parameters=sum(by_name[n].parameters for n in names),
                targets=exact_patterns(names, inventory.name_index),
            )
        )
    # quantized first (most bits last), the kept group at the end
    groups.sort(key=lambda g: (g.kept, g.scheme.weights.bits if g.scheme else 99, g.name))
    return groups
