"""The status write is a merge patch: what disappeared from the status must be removed, not left behind."""

from __future__ import annotations

import pytest

from kompress_operator.kube import merge_patch

pytestmark = pytest.mark.unit


def test_removed_keys_become_null_and_lists_are_replaced():
    old = {"phase": "Running", "progress": {"stage": "compress", "etaSeconds": 60}, "conditions": [{"type": "Running"}], "children": {"workerPod": "p1"}}
    new = {"phase": "Succeeded", "progress": {"stage": "done"}, "conditions": [{"type": "Running"}, {"type": "Succeeded"}], "children": {"workerPod": "p1"}}
    assert merge_patch(old, new) == {"phase": "Succeeded", "progress": {"stage": "done", "etaSeconds": None}, "conditions": [{"type": "Running"}, {"type": "Succeeded"}]}


def test_applying_the_patch_gives_the_new_status():
    def apply(target, patch):
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = apply(out[key], value)
            else:
                out[key] = value
        return out

    old = {"a": {"b": 1, "c": {"d": 2}}, "e": [1], "f": "x"}
    new = {"a": {"c": {"d": 3, "g": 4}}, "e": [2], "h": True}
    assert apply(old, merge_patch(old, new)) == new
