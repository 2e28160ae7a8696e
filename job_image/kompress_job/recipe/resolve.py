"""The one entry point the planner and the compress stage share: spec.recipe + model -> ResolvedRecipe.

    resolve(recipe_spec, model)   model loaded, linearized, or on the meta device: only shapes are read

A ResolvedRecipe (kompress_job.recipe.resolved) says, before anything runs, exactly what will happen to each
module: its group (scheme and sparsity), the modules kept 16-bit, the fallbacks taken, warnings, and the
llm-compressor recipe (its YAML form) that does it.

Presets resolve without importing llm-compressor or compressed-tensors (~5-8 s), so `kompress plan`
stays fast; custom recipes need llm-compressor's own classes to be parsed, and import it.
Must not: touch weights, run anything, or do I/O.
"""

from __future__ import annotations

from typing import Any

from kompress_api.v1alpha1 import Preset, Recipe, RecipeOverrides

from kompress_job.errors import InvalidSpec, TargetsMatchNothing
from kompress_job.recipe.inventory import ModuleInventory, Role, build_inventory
from kompress_job.recipe.patterns import unmatched_entries
from kompress_job.recipe.presets import Parallelism, assign, build_recipe
from kompress_job.recipe.resolved import ResolvedRecipe


def resolve(recipe_spec: Recipe, model: Any, *, parallelism: Parallelism = Parallelism()) -> ResolvedRecipe:
    """Resolve spec.recipe against a model (only its structure and shapes are read).

    Raises UnsupportedArchitecture (preset needs what the model lacks), TargetsMatchNothing (an ignore,
    experts or recipe entry that hits no module), OverlappingGroups, InvalidRecipe (custom recipe that
    does not parse). `parallelism`: how vLLM will split the model (spec.serving), which block-scaled presets keep whole blocks for.
    """
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
