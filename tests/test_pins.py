"""One source of truth for versions: every pin in requirements/*.txt agrees with requirements/lock.txt (what the
tests ran), and the operator image installs exactly those pins as a non-root, compiler-free image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"

pytestmark = pytest.mark.unit


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return pins


LOCK = _pins(REQ / "lock.txt")


@pytest.mark.parametrize("name", ["worker.txt", "operator.txt", "dev.txt"])
def test_every_pin_matches_the_lock(name):
    pins = _pins(REQ / name)
    assert pins, f"{name} pins nothing"
    mismatched = {pkg: (version, LOCK.get(pkg)) for pkg, version in pins.items() if LOCK.get(pkg) != version}
    assert not mismatched, f"requirements/{name} disagrees with lock.txt (pinned, locked): {mismatched}"


def test_llmcompressor_constraints_hold_in_the_lock():
    # llm-compressor 0.14.0.1 pins torch<=2.14.0, transformers<=5.17.0 and compressed-tensors==0.19.0.
    assert LOCK["llmcompressor"] == "0.14.0.1"
    assert tuple(int(p) for p in LOCK["torch"].split(".")[:3]) <= (2, 14, 0)
    assert LOCK["compressed-tensors"] == "0.19.0"
    assert tuple(int(p) for p in LOCK["transformers"].split(".")[:3]) <= (5, 17, 0)


def test_operator_image_is_pinned_slim_non_root_and_torch_free():
    dockerfile = (ROOT / "operator" / "Dockerfile").read_text()
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.M)
    assert bases and re.match(r"python:\d+\.\d+\.\d+-slim", bases[0]), "pin an exact slim Python base"
    assert "requirements/operator.txt" in dockerfile and "-c /src/requirements/lock.txt" in dockerfile
    assert re.search(r"^USER 65532", dockerfile, re.M), "the operator runs as the chart's non-root UID"
    assert "gcc" not in dockerfile and "build-essential" not in dockerfile
    operator_pins = _pins(REQ / "operator.txt")
    assert "torch" not in operator_pins and "llmcompressor" not in operator_pins
