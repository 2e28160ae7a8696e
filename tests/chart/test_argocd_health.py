"""The Argo CD health check, run under a real Lua 5.1 interpreter (Argo CD's gopher-lua dialect)
against the cases in its health_test.yaml, in the format Argo CD's own resource_customizations use."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lupa import lua51

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "charts" / "kompress" / "files" / "argocd"
CASES = yaml.safe_load((ARGOCD_DIR / "health_test.yaml").read_text())["tests"]


def _to_lua(lua, value):
    """JSON-shaped Python -> Lua tables as Argo CD builds them (lists 1-based)."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def health(obj: dict) -> dict:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute((ARGOCD_DIR / "health.lua").read_text())
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.unit
@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_matches_expected(case):
    obj = yaml.safe_load((ARGOCD_DIR / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


@pytest.mark.unit
def test_every_phase_is_covered():
    phases = {yaml.safe_load((ARGOCD_DIR / c["inputPath"]).read_text()).get("status", {}).get("phase") for c in CASES}
    from kompress_api.v1alpha1 import Phase

    assert {p.value for p in Phase} - {"Pending"} <= phases, "add a health_test.yaml case for every phase"
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded", "Suspended"}
