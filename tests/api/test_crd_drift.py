"""The committed CRD is what the typed model generates: change the model, run `make crds`."""

from __future__ import annotations

import pytest

from kompress_api import crdgen

from .conftest import ROOT

pytestmark = pytest.mark.unit


def test_committed_crd_equals_the_generated_one():
    committed = (ROOT / "crds" / "kompress.dev_compressionjobs.yaml").read_text()
    assert committed == crdgen.render(), "crds/ drifted from api/kompress_api/v1alpha1.py: run `make crds` and commit the result"


def test_crd_rules_compile_as_the_api_server_would_require():
    from kompress_testing.crdschema import CrdSchema

    assert CrdSchema.from_crd(crdgen.crd()).rule_errors() == []


def test_a_model_change_without_regeneration_is_caught(monkeypatch):
    # Proof that the check above can fail: the generator reads the model at call time.
    from kompress_api import v1alpha1

    committed = (ROOT / "crds" / "kompress.dev_compressionjobs.yaml").read_text()
    monkeypatch.setattr(v1alpha1, "SHORT_NAMES", ["cjob", "kcj", "compress"])
    assert committed != crdgen.render()
