"""Targets are regexes that match exactly the intended modules, by compressed-tensors' own matching rules."""

from __future__ import annotations

import random

import pytest

from kompress_job.recipe.patterns import exact_patterns, matched_names, matches

UNIVERSE = (
    ["model", "model.layers", "lm_head"]
    + [f"model.layers.{i}" for i in range(12)]
    + [f"model.layers.{i}.self_attn.{p}_proj" for i in range(12) for p in "qkvo"]
    + [f"model.layers.{i}.mlp.experts.{e}.{p}_proj" for i in range(1, 12) for e in range(16) for p in ("up", "gate", "down")]
    + [f"model.layers.{i}.mlp.experts.{e}" for i in range(1, 12) for e in range(16)]
    + [f"model.layers.{i}.mlp.shared_experts.{p}_proj" for i in range(1, 12) for p in ("up", "gate", "down")]
    + [f"model.layers.0.mlp.{p}_proj" for p in ("up", "gate", "down")]
)


def hit(patterns: list[str]) -> set[str]:
    return set(matched_names(patterns, UNIVERSE))


@pytest.mark.unit
@pytest.mark.parametrize(
    "wanted",
    [
        {n for n in UNIVERSE if n.endswith(("up_proj", "down_proj")) and ".experts." in n},  # experts, not shared
        {n for n in UNIVERSE if ".self_attn." in n},
        {n for n in UNIVERSE if n.startswith(("model.layers.3.", "model.layers.7.")) and n.endswith("gate_proj")},
        {"lm_head"},
        {"model.layers.5.mlp.experts.3"},
    ],
    ids=["experts-up-down", "attention", "two-layers-gate", "lm_head", "one-container"],
)
def test_patterns_match_exactly_the_wanted_set(wanted):
    patterns = exact_patterns(wanted, UNIVERSE)
    assert hit(patterns) == wanted
    assert len(patterns) <= 3  # readable, not one name per module


@pytest.mark.unit
def test_random_subsets_are_always_exact():
    rng = random.Random(7)
    linears = [n for n in UNIVERSE if n.endswith("_proj")]
    for _ in range(40):
        wanted = set(rng.sample(linears, rng.randint(1, 60)))
        assert hit(exact_patterns(wanted, UNIVERSE)) == wanted


@pytest.mark.unit
def test_matching_rules_are_compressed_tensors_rules():
    import torch
    from compressed_tensors.utils.match import is_match

    linear = torch.nn.Linear(2, 2)
    cases = [
        ("lm_head", "lm_head"),
        ("lm_head", "model.lm_head"),  # exact names are exact
        ("re:.*lm_head", "model.lm_head"),
        ("re:lm_head", "model.lm_head"),  # re.match anchors at the start
        ("re:.*mlp\\.gate$", "model.layers.1.mlp.gate_proj"),
        ("Linear", "anything"),  # class names match modules of that class
        ("gate_proj", "model.layers.1.mlp.gate_proj"),  # the tutorial's ignore entry: no match
    ]
    for entry, name in cases:
        assert matches(entry, name, ("Linear", "Module")) == is_match(name, linear, entry), (entry, name)
