"""The one entry point the planner and the compress stage share: spec.recipe + model -> ResolvedRecipe.

    resolve(recipe_spec, model)   model loaded, linearized, or on the meta device: only shapes are read

A ResolvedRecipe says, before anything runs, exactly what will happen to each module: its group
(scheme and sparsity), the modules kept 16-bit, the fallbacks taken, warnings, and the llm-compressor
recipe (its YAML form) that does it. `summary()` is the JSON the manifest, the model card and the plan
show; `module_table()` is the full per-module record the save stage writes.

Presets resolve without importing llm-compressor or compressed-tensors (~5-8 s), so `kompress plan`
stays fast; custom recipes need llm-compressor's own classes to be parsed, and import it.
Must not: touch weights, run anything, or do I/O.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import yaml
from kompress_api.v1alpha1 import Preset, Recipe, RecipeOverrides

from kompress_job.errors import InvalidSpec, TargetsMatchNothing
from kompress_job.recipe.inventory import GATE_PROJ_NAMES, MLP_ROLES, ModuleInventory, Role, build_inventory
from kompress_job.recipe.patterns import exact_patterns, unmatched_entries
from kompress_job.recipe.presets import Assignment, Fallback, Parallelism, assign, build_recipe
from kompress_job.recipe.schemes import Scheme

KEPT_GROUP = "16bit"


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
    groups: list[ModuleGroup]
    recipe: dict[str, Any]
    fallbacks: list[Fallback] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    servable: bool | None = None
    serving: str | None = None

    # -- what will happen ----------------------------------------------------------------------------
    @property
    def kept_modules(self) -> list[str]:
        """Modules left exactly as they are: no quantization, no pruning."""
        return [name for name, a in self.assignment.items() if a.scheme is None and a.sparsity is None]

    @property
    def needs_calibration(self) -> bool:
        """Whether any modifier learns from data (SparseGPT, AWQ, static activation scales)."""
        if any(modifier_type != "QuantizationModifier" for modifier_type, _ in self.recipe_modifiers()):
            return True
        return any(a.scheme is not None and a.scheme.needs_calibration for a in self.assignment.values())

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

    def recipe_yaml(self) -> str:
        """The llm-compressor recipe as YAML (readable back with llmcompressor.recipe.Recipe.create_instance)."""
        return yaml.safe_dump(self.recipe, sort_keys=False, width=1000)

    def modifiers(self) -> list[Any]:
        """llm-compressor Modifier objects, parsed by llm-compressor itself from the recipe (imports it)."""
        from llmcompressor.recipe import Recipe as LlmcRecipe

        return list(LlmcRecipe.from_dict(self.recipe).modifiers)

    # -- records -------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        inv = self.inventory
        total = sum(m.parameters for m in inv.modules)
        return {
            "source": self.source,
            "preset": self.preset,
            "architecture": inv.architecture,
            "model_type": inv.model_type,
            "experts": inv.num_experts,
            "roles": self._role_table(),
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

    def _role_table(self) -> dict[str, dict[str, Any]]:
        table: dict[str, dict[str, Any]] = {}
        by_name = self.inventory.by_name()
        for name, a in self.assignment.items():
            m = by_name[name]
            for role in _roles_of(m):
                row = table.setdefault(role, {"modules": 0, "groups": {}})
                row["modules"] += 1
                row["groups"][a.group] = row["groups"].get(a.group, 0) + 1
        return dict(sorted(table.items()))


def _roles_of(m) -> list[str]:
    roles = [m.role.value]
    if m.role in MLP_ROLES and m.leaf in GATE_PROJ_NAMES:
        roles.append("gate_proj")
    return roles


def _groups(inventory: ModuleInventory, assignment: dict[str, Assignment], with_targets: bool = True) -> list[ModuleGroup]:
    by_name = inventory.by_name()
    grouped: dict[str, list[str]] = defaultdict(list)
    for name, a in assignment.items():
        grouped[a.group].append(name)
    groups = []
    for group_name, names in grouped.items():
        a = assignment[names[0]]
        roles: dict[str, int] = defaultdict(int)
        for n in names:
            for role in _roles_of(by_name[n]):
                roles[role] += 1
        groups.append(
            ModuleGroup(
                name=group_name,
                scheme=a.scheme,
                sparsity=a.sparsity,
                modules=names,
                roles=dict(roles),
                parameters=sum(by_name[n].parameters for n in names),
                targets=exact_patterns(names, inventory.name_index) if with_targets else [],
            )
        )
    # quantized first (most bits last), the kept group at the end
    groups.sort(key=lambda g: (g.kept, g.scheme.weights.bits if g.scheme else 99, g.name))
    return groups


def resolve(recipe_spec: Recipe, model: Any, config: Any = None, parallelism: Parallelism = Parallelism()) -> ResolvedRecipe:
    """Resolve spec.recipe against a model (only its structure and shapes are read).

    Raises UnsupportedArchitecture (preset needs what the model lacks), TargetsMatchNothing (an ignore,
    experts or recipe entry that hits no module), OverlappingGroups, InvalidRecipe (custom recipe that
    does not parse). `config` is accepted for symmetry with the planner and unused: the model carries it.
    `parallelism`: how vLLM will split the model (spec.serving), which block-scaled presets keep whole blocks for.
    """
    del config
    overrides = recipe_spec.overrides
    inventory = build_inventory(model, experts_override=overrides.experts if overrides else None)
    if recipe_spec.custom is not None:
        from kompress_job.recipe.custom import resolve_custom

        return resolve_custom(recipe_spec.custom, inventory)
    if recipe_spec.preset is None:
        raise InvalidSpec("spec.recipe needs exactly one of preset or custom")
    return resolve_preset(Preset(recipe_spec.preset), inventory, overrides, parallelism)


def resolve_preset(preset: Preset, inventory: ModuleInventory, overrides: RecipeOverrides | None = None, parallelism: Parallelism = Parallelism()) -> ResolvedRecipe:
    ignored = _check_overrides(inventory, overrides)
    assignment, fallbacks, rule = assign(preset, inventory, overrides, ignored, parallelism)
    recipe, warnings = build_recipe(preset, inventory, assignment, rule)
    warnings = list(inventory.notes) + warnings
    if ignored:
        warnings.append(f"spec.recipe.overrides.ignore keeps {len(ignored)} more module(s) 16-bit")
    return ResolvedRecipe(
        source="preset",
        preset=preset.value,
        inventory=inventory,
        assignment=assignment,
        groups=_groups(inventory, assignment),
        recipe=recipe,
        fallbacks=fallbacks,
        warnings=warnings,
        servable=rule.servable,
        serving=rule.serving,
    )


def _check_overrides(inventory: ModuleInventory, overrides: RecipeOverrides | None) -> set[str]:
    """The modules overrides.ignore keeps 16-bit; every entry (and the experts regex) must match a module."""
    if overrides is None:
        return set()
    weight_names = [m.name for m in inventory.modules]
    problems = []
    missing = unmatched_entries(overrides.ignore, weight_names, inventory.classes)
    if missing:
        problems.append(f"spec.recipe.overrides.ignore entries match no module: {', '.join(missing)}")
    if overrides.experts and not any(m.role is Role.ROUTED_EXPERTS for m in inventory.modules):
        problems.append(f"spec.recipe.overrides.experts {overrides.experts} matches no Linear module")
    if problems:
        raise TargetsMatchNothing(
            "; ".join(problems) + ". Entries are exact module names or regexes prefixed re: (matched from the start of the name), "
            f"e.g. re:.*mlp\\.down_proj$. This model's modules look like: {', '.join(weight_names[:3])}, ..."
        )
    from kompress_job.recipe.patterns import matches

    return {m.name for m in inventory.modules if any(matches(e, m.name, inventory.classes.get(m.name, ())) for e in overrides.ignore)}
