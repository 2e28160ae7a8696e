"""Byte counts as the plan reads and writes them: Kubernetes quantities in, GB and Gi out.

    parse_quantity(value)   a Kubernetes quantity (`256Gi`, `500G`, `1e12`, 1024) in bytes
    gb(n)                   "12.3 GB" (decimal, "?" when unknown): how the plan states a size
    gi(n)                   "12Gi", rounded up: a value to paste into spec.resources

Owns: the unit arithmetic of spec.resources and of the plan's messages. Must not: know what the sizes are of
(the checks and the Plan say that).
"""

from __future__ import annotations

import math
import re

_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][+-]?[0-9]+)?)([KMGTPE]i|[kMGTPE]|m)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(value: int | str) -> int:
    """A Kubernetes quantity (`256Gi`, `500G`, `1e12`, 1024) in bytes."""
    if isinstance(value, int):
        return value
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def gb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e9:.1f} GB"


def gi(n: int) -> str:
    # Rounded up: a figure the user pastes into spec.resources must not fall short of the estimate.
    return f"{math.ceil(n / 2**30)}Gi"
