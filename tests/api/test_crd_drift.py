"""The committed CRD is what the typed model generates: change the model, run `make crds`."""

from __future__ import annotations

import pytest

from kompress_api import crdgen

from .conftest import ROOT

@pytest.mark.unit
def test_committed_crd_equals_the_generated_one():
    committed = (ROOT / "crds" / "kompress.dev_compressionjobs.yaml").read_text()
    assert committed == crdgen.render(), "crds/ drifted from api/kompress_api/v1alpha1.py: run `make crds` and commit the result"


@pytest.mark.integration
def test_the_api_server_accepts_the_generated_crd_and_serves_it(control_plane):
    """kube-apiserver checks what no generator can: structural schema, CEL compilation and cost, defaults."""
    from kompress_testing.pytest_plugin import install_crd

    crd = crdgen.crd()
    install_crd(control_plane, crd)
    client = control_plane.admin()
    stored = client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}")
    conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    resources = client.get("/apis/kompress.dev/v1alpha1")["resources"]
    assert {"compressionjobs", "compressionjobs/status"} <= {r["name"] for r in resources}


@pytest.mark.unit
def test_a_model_change_without_regeneration_is_caught(monkeypatch):
    # Proof that the check above can fail: the generator reads the model at call time.
    from kompress_api import v1alpha1

    committed = (ROOT / "crds" / "kompress.dev_compressionjobs.yaml").read_text()
    monkeypatch.setattr(v1alpha1, "SHORT_NAMES", ["cjob", "kcj", "compress"])
    assert committed != crdgen.render()
