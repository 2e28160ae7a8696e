"""Server-side printing pieces: ages as kubectl shows them, the JSONPath of printer columns, Accept parsing."""

from __future__ import annotations

import pytest

from kompress_testing.apiserver import jsonpath, tables

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seconds,shown", [(-5, "<invalid>"), (0, "0s"), (119, "119s"), (125, "2m5s"), (600, "10m"),
                                           (3 * 3600 + 5 * 60, "3h5m"), (10 * 3600, "10h"), (3 * 86400 + 3600, "3d1h"),
                                           (20 * 86400, "20d"), (800 * 86400, "2y70d")])
def test_ages_read_as_kubectl_prints_them(seconds, shown):
    assert tables.human_duration(seconds) == shown


CONDITIONS = {"status": {"conditions": [{"type": "Planned", "status": "True"}, {"type": "Succeeded", "status": "False", "reason": "OOM"}]},
              "metadata": {"labels": {"app.kubernetes.io/name": "kompress"}}, "spec": {"list": [1, 2, 3]}}


@pytest.mark.parametrize("expression,found", [
    ('.status.conditions[?(@.type=="Succeeded")].status', ["False"]),
    ('.status.conditions[?(@.type!="Succeeded")].type', ["Planned"]),
    (".status.conditions[*].type", ["Planned", "Succeeded"]),
    (".status.conditions[0].status", ["True"]),
    (".spec.list[-1]", [3]),
    (".status.conditions[?(@.reason)].reason", ["OOM"]),
    (".metadata.labels['app.kubernetes.io/name']", ["kompress"]),
    ("{.status.missing.deeper}", []),
])
def test_jsonpath_of_printer_columns(expression, found):
    assert jsonpath.find(expression, CONDITIONS) == found


def test_table_is_negotiated_only_when_asked():
    assert tables.wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")
    assert not tables.wants_table("application/json")
    assert not tables.wants_table(None)
