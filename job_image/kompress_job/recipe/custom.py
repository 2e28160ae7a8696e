"""spec.recipe.custom: a whole llm-compressor recipe, used as given, but never silently wrong.

Owns: parsing with llm-compressor's own classes (its Recipe and modifiers, which forbid unknown fields:
the tutorial's `AWQModifier(bits=4, ...)` is refused here, not hours into a run), and checking the
recipe against the model before anything runs:

    - every targets / ignore / AWQ mapping entry must match a module, as the modifier will match it
      (TargetsMatchNothing names each entry that does not);
    - no module may fall in two quantization config groups (OverlappingGroups);
    - AWQ mappings must group into one smooth layer per set (the crash llm-compressor's default
      GLM4-MoE mapping hits on a dense first layer), and group sizes must divide the input widths.

Matching follows compressed-tensors 0.19 and each modifier's own use of it. One quirk matters: a
sparsity modifier (SparseGPT, Wanda) whose targets select Linear layers directly names each such layer
`<name>.` (with a trailing dot) when it applies `ignore`, so `ignore: [lm_head]` matches nothing there
and lm_head is pruned; `re:.*lm_head` works.

Must not: run anything. Imports llm-compressor (only custom recipes pay for it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kompress_api.v1alpha1 import regex_problem

from kompress_job.errors import InvalidRecipe, OverlappingGroups, TargetsMatchNothing
from kompress_job.recipe.inventory import ModuleInventory
from kompress_job.recipe.patterns import matches
from kompress_job.recipe.presets import Assignment
from kompress_job.recipe.resolved import ResolvedRecipe
from kompress_job.recipe.schemes import Scheme, scheme_from_ct

PRUNABLE_CLASSES = ("Linear", "Conv1d", "Conv2d", "Conv3d")


def parse(text: str) -> tuple[Any, dict[str, Any]]:
    """(llm-compressor Recipe, its dict form). Raises InvalidRecipe with llm-compressor's own complaint."""
    import yaml
    from llmcompressor.recipe import Recipe as LlmcRecipe

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidRecipe(f"spec.recipe.custom is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise InvalidRecipe("spec.recipe.custom must be a YAML mapping: <name>_stage: {<name>_modifiers: {<ModifierType>: {...}}}")
    if broken := _broken_regexes(raw, "spec.recipe.custom"):
        raise InvalidRecipe("; ".join(broken))
    try:
        recipe = LlmcRecipe.from_dict(raw)
    except Exception as err:  # noqa: BLE001 - pydantic, factory and value errors all mean the same to the user
        raise InvalidRecipe(f"spec.recipe.custom could not be parsed by llm-compressor: {_short(err)}") from None
    if not recipe.modifiers:
        raise InvalidRecipe(
            "spec.recipe.custom holds no modifiers. llm-compressor recipes look like "
            "`quant_stage: {quant_modifiers: {QuantizationModifier: {...}}}` (keys ending in _stage and _modifiers)."
        )
    return recipe, raw


def _broken_regexes(value: Any, where: str) -> list[str]:
    """Every `re:` string of the recipe that Python's re cannot compile, with its place (found before anything matches with it)."""
    if isinstance(value, str):
        why = regex_problem(value)
        return [f"{where}: {why}"] if why else []
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _broken_regexes(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _broken_regexes(item, f"{where}[{i}]")]
    return []


def _short(err: Exception, limit: int = 1500) -> str:
    from kompress_job.errors import describe  # one line: pydantic's field paths and reasons, without its web links

    text = describe(err)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class _Checker:
    """Collects every problem before raising, so one error message lists them all."""

    def __init__(self, inventory: ModuleInventory) -> None:
        self.inv = inventory
        self.weight_names = [m.name for m in inventory.modules]
        self.unmatched: list[str] = []
        self.invalid: list[str] = []

    def hits(self, entry: str, names: list[str]) -> list[str]:
        return [n for n in names if matches(entry, n, self.inv.classes.get(n, ()))]

    def require(self, where: str, entries: list[str], names: list[str]) -> None:
        for entry in entries:
            if not self.hits(entry, names):
                self.unmatched.append(f"{where}: {entry!r}")


def resolve_custom(text: str, inventory: ModuleInventory) -> ResolvedRecipe:
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_base import SparsityModifierBase
    from llmcompressor.modifiers.quantization.quantization.mixin import QuantizationMixin
    from llmcompressor.modifiers.transform import AWQModifier

    recipe, raw = parse(text)
    check = _Checker(inventory)
    schemes: dict[str, Scheme | None] = {}
    quant_groups: dict[str, set[str]] = {}
    sparsity: dict[str, str] = {}
    warnings: list[str] = []

    for index, modifier in enumerate(recipe.modifiers):
        kind = type(modifier).__name__
        label = f"{kind}" if sum(type(m).__name__ == kind for m in recipe.modifiers) == 1 else f"{kind}[{index}]"
        if isinstance(modifier, QuantizationMixin):
            _quantization(check, label, modifier, schemes, quant_groups)
        elif isinstance(modifier, SparsityModifierBase):
            _sparsity(check, label, modifier, sparsity)
        elif isinstance(modifier, AWQModifier):
            warnings.extend(_awq(check, label, modifier))
        else:
            for field in ("targets", "ignore"):
                if hasattr(modifier, field):
                    check.require(f"{label}.{field}", _as_list(getattr(modifier, field)), inventory.names)

    if check.unmatched:
        raise TargetsMatchNothing(
            "spec.recipe.custom has entries that match no module of "
            f"{inventory.architecture}: {'; '.join(check.unmatched)}. Plain entries must equal a full module name "
            "(e.g. model.layers.0.mlp.gate_proj) or a class name (Linear); use re:<regex> (matched from the start of "
            "the name) for patterns, e.g. re:.*mlp\\.gate$ or re:.*lm_head."
        )
    _refuse_overlaps(quant_groups)
    if check.invalid:
        raise InvalidRecipe("spec.recipe.custom cannot run on this model: " + "; ".join(check.invalid))

    assignment: dict[str, Assignment] = {}
    group_of = {name: group for group, names in quant_groups.items() for name in names}
    for m in inventory.modules:
        group = group_of.get(m.name)
        assignment[m.name] = Assignment(schemes.get(group) if group else None, sparsity.get(m.name))
    return ResolvedRecipe(
        source="custom",
        preset=None,
        inventory=inventory,
        assignment=assignment,
        recipe=raw,
        warnings=list(inventory.notes) + warnings,
        servable=None,
        serving="custom recipe: servability depends on its schemes (see docs/presets.md for what vLLM loads)",
    )


def _quantization(check: _Checker, label: str, modifier: Any, schemes: dict, quant_groups: dict) -> None:
    ignore = _as_list(modifier.ignore)
    check.require(f"{label}.ignore", ignore, check.weight_names)
    try:
        config = modifier.resolved_config
    except Exception as err:  # noqa: BLE001
        raise InvalidRecipe(f"spec.recipe.custom: {label} has no usable quantization scheme: {_short(err)}") from None
    for group_name, scheme in (config.config_groups or {}).items():
        key = group_name if group_name not in quant_groups else f"{label}.{group_name}"
        targets = _as_list(scheme.targets)
        check.require(f"{label}.config_groups.{group_name}.targets", targets, check.weight_names)
        names = {
            n
            for n in check.weight_names
            if any(matches(t, n, check.inv.classes.get(n, ())) for t in targets) and not any(matches(i, n, check.inv.classes.get(n, ())) for i in ignore)
        }
        summary = scheme_from_ct(key, scheme)
        schemes[key] = summary
        quant_groups[key] = names
        if summary is not None and summary.weights.strategy in ("group", "tensor_group") and summary.weights.group_size:
            by_name = check.inv.by_name()
            bad = sorted(n for n in names if by_name[n].in_features % summary.weights.group_size != 0)
            if bad:
                check.invalid.append(
                    f"{label}.config_groups.{group_name}: group_size {summary.weights.group_size} does not divide the input width of "
                    f"{len(bad)} module(s) ({', '.join(f'{n} ({by_name[n].in_features})' for n in bad[:3])}{', ...' if len(bad) > 3 else ''}); "
                    "add them to ignore or to a group with a smaller group_size or strategy channel"
                )


def _sparsity(check: _Checker, label: str, modifier: Any, sparsity: dict[str, str]) -> None:
    inv = check.inv
    targets = _as_list(modifier.targets)
    ignore = _as_list(modifier.ignore)
    check.require(f"{label}.targets", targets, inv.names)
    # The names the modifier matches `ignore` against (llm-compressor 0.14 SparsityModifierBase.
    # on_calibration_start): f"{target_layer}.{relative name}", empty for the layer itself.
    layers = [n for n in inv.names if any(matches(t, n, inv.classes.get(n, ())) for t in targets)]
    candidates: list[tuple[str, str]] = []  # (name as the modifier sees it, module name)
    for layer in layers:
        prefix = layer + "."
        for name in inv.names:
            if (name == layer or name.startswith(prefix)) and any(c in PRUNABLE_CLASSES for c in inv.classes.get(name, ())):
                rel = "" if name == layer else name[len(prefix) :]
                candidates.append((f"{layer}.{rel}", name))
    for entry in ignore:
        if not any(matches(entry, seen, inv.classes.get(module, ())) for seen, module in candidates):
            hint = " (it names Linear layers '<name>.' with a trailing dot when targets select them directly: use re:.*<name>)" if any(module == entry for _, module in candidates) else ""
            check.unmatched.append(f"{label}.ignore: {entry!r}{hint}")
    mask = getattr(modifier, "mask_structure", "0:0") or "0:0"
    what = mask if mask != "0:0" else f"{modifier.sparsity} unstructured"
    for seen, module in candidates:
        if not any(matches(entry, seen, inv.classes.get(module, ())) for entry in ignore):
            sparsity[module] = what


def _awq(check: _Checker, label: str, modifier: Any) -> list[str]:
    from llmcompressor.modifiers.transform.awq.dynamic_mappings import AWQ_DYNAMIC_MAPPING_REGISTRY
    from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY, default_mappings

    inv = check.inv
    mappings = modifier.mappings
    where = f"{label}.mappings"
    if mappings is None:
        if inv.architecture in AWQ_DYNAMIC_MAPPING_REGISTRY:
            return [f"{label}: mappings are built at run time for {inv.architecture}; they could not be checked in advance"]
        mappings = AWQ_MAPPING_REGISTRY.get(inv.architecture, default_mappings)
        where = f"{label} (llm-compressor's default mappings for {inv.architecture})"
    for i, mapping in enumerate(mappings):
        targets = [mapping.smooth_layer, *mapping.balance_layers]
        check.require(f"{where}[{i}]", targets, inv.names)
        try:
            for smooth, *_ in match_modules_set(inv, targets):
                if len(smooth) > 1:
                    check.invalid.append(
                        f"{where}[{i}] groups several smooth layers together ({', '.join(smooth[:3])}): "
                        "some layers lack one of its balance layers (e.g. a router on a dense layer); split the mapping per layer kind"
                    )
                    break
        except ValueError as err:
            check.invalid.append(f"{where}[{i}]: {err}")
    return []


def _refuse_overlaps(quant_groups: dict[str, set[str]]) -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for group, names in quant_groups.items():
        for name in names:
            owners[name].append(group)
    clashes: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, groups in owners.items():
        if len(groups) > 1:
            clashes[tuple(groups)].append(name)
    if clashes:
        parts = [f"{' and '.join(groups)} both match {len(names)} module(s), e.g. {', '.join(sorted(names)[:3])}" for groups, names in clashes.items()]
        raise OverlappingGroups("spec.recipe.custom: modules in more than one quantization config group: " + "; ".join(parts) + ". Narrow the targets or add the modules to one group's ignore.")


def _lowest_common_ancestor(names: list[str | None]) -> str:
    # compressed-tensors get_lowest_common_ancestor_name: None entries are skipped, "" is the root.
    names = [n for n in names if n is not None]
    if not names:
        return ""
    parts = [n.split(".") for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def match_modules_set(inv: ModuleInventory, targets: list[str]):
    """compressed-tensors 0.19 match_modules_set over the inventory's names (same order, same grouping)."""
    matches_by: dict[str, list[str]] = defaultdict(list)
    parent_context: str | None = None
    unmatched = set(targets)
    for name in inv.names:
        classes = inv.classes.get(name, ())
        matched_here = set()
        for target in targets:
            if matches(target, name, classes):
                new_context = _lowest_common_ancestor([name, parent_context])
                if not unmatched and new_context != parent_context:
                    yield [matches_by[t] for t in targets]
                    matches_by = defaultdict(list)
                    new_context = name
                    unmatched = set(targets)
                matches_by[target].append(name)
                parent_context = new_context
                unmatched -= {target}
                matched_here.add(target)
        if len(matched_here) > 1:
            raise ValueError(f"module {name} is matched by several entries: {sorted(matched_here)}")
    if unmatched == set(targets):
        return
    if not unmatched:
        yield [matches_by[t] for t in targets]
        return
    raise ValueError(f"the last layer matched only {sorted(set(targets) - unmatched)}, not {sorted(unmatched)}")
