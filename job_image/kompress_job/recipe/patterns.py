"""Target strings, as llm-compressor and compressed-tensors match them, and regexes that hit exactly a set.

Owns: the matching rules (compressed-tensors 0.19 `match_name`/`_match_class`: an entry `re:X` matches a
module whose name `re.match`es X — anchored at the start only; any other entry matches a module whose
name equals it or one of whose classes is named so), and `exact_patterns(wanted, universe)`, which
compiles a set of module names into a few readable regexes and proves they match exactly that set
within the model's module list (or falls back to anchored exact names, which always do).
Must not: import torch, llm-compressor or compressed-tensors.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

REGEX_PREFIX = "re:"


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(entry: str, name: str, classes: Iterable[str] = ()) -> bool:
    """Whether a targets/ignore entry matches a module, by compressed-tensors' rules."""
    if entry.startswith(REGEX_PREFIX):
        return _compiled(entry[len(REGEX_PREFIX) :]).match(name) is not None
    return entry == name or entry in classes


def matched_names(entries: Iterable[str], names: Iterable[str], classes: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Names (in the given order) matched by any entry."""
    entries = list(entries)
    classes = classes or {}
    return [n for n in names if any(matches(e, n, classes.get(n, ())) for e in entries)]


def unmatched_entries(entries: Iterable[str], names: Iterable[str], classes: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Entries that match none of `names`."""
    names = list(names)
    classes = classes or {}
    return [e for e in entries if not any(matches(e, n, classes.get(n, ())) for n in names)]


def exact_name_pattern(name: str) -> str:
    return REGEX_PREFIX + "^" + re.escape(name) + "$"


def _alternation(values: Iterable[str]) -> str:
    values = sorted(set(values), key=lambda v: (len(v), v))
    if len(values) == 1:
        return re.escape(values[0])
    return "(?:" + "|".join(re.escape(v) for v in values) + ")"


def _split(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """model.layers.3.mlp.experts.7.up_proj -> (('model','layers',None...) template, ('3','7'))"""
    parts = name.split(".")
    template = tuple("\0" if p.isdigit() else p for p in parts)
    numbers = tuple(p for p in parts if p.isdigit())
    return template, numbers


LEAF = "\u0001"


def _shape(parts: Sequence[str]) -> tuple[str, ...]:
    """What a name's parts look like to a pattern built by `_build`, all but the last: numbers masked."""
    return tuple("\0" if p == "\0" or p.isdigit() else p for p in parts[:-1])


class NameIndex:
    """A model's module names, indexed by shape, so that checking a candidate regex scans only the names it
    could match rather than all of them (GLM-4.5-Air has ~18k modules and a preset checks ~100 regexes).

    Sound because every regex `_build` makes has one dot-free piece per part, anchored at both ends: a name
    it matches has the template's number of parts, its literal parts, and digits where the template has
    numbers. The last part (the leaf alternation) is left out of the key.
    """

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.name_set = set(self.names)
        self._by_shape: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for name in self.names:
            self._by_shape[_shape(name.split("."))].append(name)

    def could_match(self, template: tuple[str, ...]) -> list[str]:
        return self._by_shape.get(_shape(template), [])


def name_index(universe: Iterable[str] | NameIndex) -> NameIndex:
    return universe if isinstance(universe, NameIndex) else NameIndex(universe)


def _build(template: tuple[str, ...], slots: list[str], leaves: list[str]) -> str:
    """Regex for a template: numeric slots filled from `slots`, the leaf marker by an alternation of leaves."""
    pieces: list[str] = []
    slot = iter(slots)
    for part in template:
        if part == "\0":
            pieces.append(next(slot))
        elif part == LEAF:
            pieces.append(_alternation(leaves))
        else:
            pieces.append(re.escape(part))
    return REGEX_PREFIX + r"\.".join(pieces) + "$"


def exact_patterns(wanted: Iterable[str], universe: Iterable[str] | NameIndex) -> list[str]:
    """A short list of `re:` patterns that together match exactly `wanted` among `universe`.

    Names are grouped by shape (numeric path parts are slots, the last part is the leaf); each group
    becomes one regex, with `\\d+` where every number in that slot is wanted and an alternation
    otherwise. Every candidate is checked against the universe; a group whose regex would match more
    falls back to explicit alternations, then to exact names. `universe`: the model's module names, or
    their `NameIndex` (built once per model when many sets are compiled against it).
    """
    wanted_set = set(wanted)
    if not wanted_set:
        return []
    universe = name_index(universe)
    missing = wanted_set - universe.name_set
    if missing:
        raise ValueError(f"names not in the module list: {sorted(missing)[:5]}")

    # (template without the leaf, numbers) -> leaves ; then group rows sharing the same leaf set.
    by_prefix: dict[tuple[tuple[str, ...], tuple[str, ...], str], set[str]] = defaultdict(set)
    for name in wanted_set:
        template, numbers = _split(name)
        if template[-1] == "\0":
            by_prefix[(template, numbers, "")].add("")
        else:
            by_prefix[(template[:-1], numbers, "")].add(template[-1])
    groups: dict[tuple[tuple[str, ...], frozenset[str]], list[tuple[str, ...]]] = defaultdict(list)
    for (prefix, numbers, _), leaves in by_prefix.items():
        if leaves == {""}:
            groups[(prefix, frozenset())].append(numbers)
        else:
            groups[(prefix + (LEAF,), frozenset(leaves))].append(numbers)

    patterns: list[str] = []
    for (template, leaves), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1]))):
        group_names = {_join(template, numbers, leaf) for numbers in rows for leaf in (leaves or {""})}
        patterns.extend(_patterns_for_group(template, sorted(leaves), rows, group_names, universe))
    return patterns


def _join(template: tuple[str, ...], numbers: tuple[str, ...], leaf: str) -> str:
    it = iter(numbers)
    parts = []
    for part in template:
        if part == "\0":
            parts.append(next(it))
        elif part == LEAF:
            parts.append(leaf)
        else:
            parts.append(part)
    return ".".join(parts)


def _patterns_for_group(template, leaves, rows, group_names, universe) -> list[str]:
    n_slots = len(rows[0])
    slot_values = [sorted({row[i] for row in rows}, key=int) for i in range(n_slots)]
    candidates: list[list[str]] = []
    if len(rows) == _product(len(v) for v in slot_values):  # every combination of slot values is wanted
        candidates.append([r"\d+"] * n_slots)
        candidates.append([_alternation(v) for v in slot_values])
    for slots in candidates:
        pattern = _build(template, slots, leaves)
        regex = _compiled(pattern[len(REGEX_PREFIX) :])
        if {n for n in universe.could_match(template) if regex.match(n)} == group_names:
            return [pattern]
    if n_slots > 0 and len(slot_values[0]) > 1:
        # not a product: split on the first slot and try again for each value
        out: list[str] = []
        for value in slot_values[0]:
            sub_rows = [row[1:] for row in rows if row[0] == value]
            sub_names = {n for n in group_names if _first_slot(template, n) == value}
            out.extend(_patterns_for_group(_fix_first_slot(template, value), leaves, sub_rows, sub_names, universe))
        return out
    return [exact_name_pattern(n) for n in sorted(group_names)]


def _first_slot(template: tuple[str, ...], name: str) -> str | None:
    parts = name.split(".")
    for part_t, part in zip(template, parts):
        if part_t == "\0":
            return part
    return None


def _fix_first_slot(template: tuple[str, ...], value: str) -> tuple[str, ...]:
    out = list(template)
    out[out.index("\0")] = value
    return tuple(out)


def _product(values: Iterable[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result
