"""Objects the harness's own tests create: a small CRD with the schema features we emulate, and jobs."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOBS = "/apis/kompress.dev/v1alpha1/namespaces/default/compressionjobs"


def tiny_job(name: str = "tiny-laptop", **labels: str) -> dict[str, Any]:
    job = yaml.safe_load((ROOT / "examples" / "tiny-laptop.yaml").read_text())
    job["metadata"] = {"name": name, **({"labels": dict(labels)} if labels else {})}
    return job


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"], "categories": ["examples"]},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "x-kubernetes-validations": [
                            {"rule": "self.size <= self.limit", "message": "size must not exceed limit", "fieldPath": ".size"},
                            {"rule": "self.size >= oldSelf.size", "message": "size may only grow"},
                        ],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "limit": {"type": "integer", "default": 10},
                            "colour": {"type": "string", "enum": ["red", "blue"], "nullable": True},
                            "memory": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 5}},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "settings": {"type": "object", "default": {},
                                         "properties": {"mode": {"type": "string", "default": "fast"},
                                                        "retries": {"type": "integer", "default": 3}}},
                            "labels": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "string"}},
                            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                                      "items": {"type": "object", "required": ["name"],
                                                "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
                        },
                    },
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}, "ready": {"type": "boolean"}}},
                },
            }},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Colour", "type": "string", "jsonPath": ".spec.colour", "priority": 1},
            ],
        }],
    },
}
WIDGETS = "/apis/example.dev/v1/namespaces/default/widgets"


def widget(name: str = "w1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 1, **spec}}


@pytest.fixture
def widgets(apiserver):
    """The apiserver fixture with the Widget CRD installed too."""
    apiserver.apply_crd(copy.deepcopy(WIDGET_CRD))
    return apiserver
