"""The chart's model cache values (issue 20): a claim the platform team made, or one the chart creates per watched
namespace on a ReadWriteMany class, and the operator told which claim and what size limit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kompress"
HELM = ROOT / ".tools" / "helm"

pytestmark = pytest.mark.integration


def render(*values: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELM), "template", "kompress", str(CHART), "--namespace", "kompress-system", *values], capture_output=True, text=True, check=check)


def docs(*values: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(*values).stdout) if d]


def operator_env(rendered):
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def claims(rendered):
    return [d for d in rendered if d["kind"] == "PersistentVolumeClaim"]


def test_no_cache_by_default():
    rendered = docs()
    assert claims(rendered) == [] and "KOMPRESS_CACHE_CLAIM" not in operator_env(rendered)


def test_the_chart_creates_a_rwx_claim_in_each_watched_namespace_and_keeps_it_on_uninstall():
    rendered = docs("--set", "cache.enabled=true", "--set", "cache.storageClass=nfs-csi", "--set", "cache.size=2Ti",
                    "--set", "cache.maxBytes=1800000000000", "--set", "watchNamespaces={ml,research}")
    made = claims(rendered)
    assert [c["metadata"]["namespace"] for c in made] == ["ml", "research"]
    for claim in made:
        kubernetes_validate.validate(claim, "1.33", strict=True)
        assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs-csi", "resources": {"requests": {"storage": "2Ti"}}}
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    env = operator_env(rendered)
    assert env["KOMPRESS_CACHE_CLAIM"] == "kompress-model-cache" and env["KOMPRESS_CACHE_MAX_BYTES"] == "1800000000000"


def test_an_existing_claim_is_used_and_none_created():
    rendered = docs("--set", "cache.enabled=true", "--set", "cache.existingClaim=shared-models")
    assert claims(rendered) == [] and operator_env(rendered)["KOMPRESS_CACHE_CLAIM"] == "shared-models"


def test_a_bad_cache_size_is_refused_with_the_key():
    result = render("--set", "cache.size=lots", check=False)
    assert result.returncode != 0 and "cache" in result.stderr and "size" in result.stderr
