"""kompress_testing.crdschema applies a CRD schema the way apiextensions-apiserver does (pure functions)."""

from __future__ import annotations

import pytest

from kompress_testing.crdschema import CrdSchema

from .conftest import WIDGET_CRD, widget

pytestmark = pytest.mark.unit
SCHEMA = CrdSchema.from_crd(WIDGET_CRD)


def errors(obj, old=None):
    return [str(e) for e in SCHEMA.admit(obj, old).errors]


def test_unknown_fields_are_pruned_and_reported_but_preserved_where_the_schema_says_so():
    admission = SCHEMA.admit(widget(bogus=1, extra={"anything": {"goes": True}}) | {"toplevel": 1})
    assert admission.unknown_fields == ["spec.bogus", "toplevel"]
    assert "bogus" not in admission.object["spec"] and "toplevel" not in admission.object
    assert admission.object["spec"]["extra"] == {"anything": {"goes": True}}


def test_unknown_metadata_fields_are_reported_too():
    obj = widget()
    obj["metadata"]["colour"] = "red"
    assert SCHEMA.admit(obj).unknown_fields == ["metadata.colour"]


def test_defaults_apply_including_inside_a_defaulted_object():
    spec = SCHEMA.admit(widget()).object["spec"]
    assert spec["limit"] == 10
    assert spec["settings"] == {"mode": "fast", "retries": 3}
    assert SCHEMA.admit(widget(settings={"mode": "slow"})).object["spec"]["settings"] == {"mode": "slow", "retries": 3}


def test_null_is_dropped_unless_nullable_and_defaulted_when_a_default_exists():
    spec = SCHEMA.admit(widget(limit=None, tags=None, colour=None)).object["spec"]
    assert spec["limit"] == 10  # non-nullable null with a default: defaulted
    assert "tags" not in spec  # non-nullable null without a default: dropped, not an error
    assert spec["colour"] is None  # nullable: kept


def test_type_errors_name_the_field_and_the_type():
    assert errors(widget(size="big")) == [
        'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"',
        '<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; '
        'correct the existing errors to complete validation',
    ]


def test_bounds_enum_lengths_and_counts():
    found = errors(widget(size=0, colour="green", tags=["a", "b", "toolong"], labels={"a": "1", "b": "2", "c": "3"}))
    assert 'spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1' in found
    assert 'spec.colour: Unsupported value: "green": supported values: "red", "blue"' in found
    assert 'spec.tags: Too many: 3: must have at most 2 items' in found
    assert 'spec.tags[2]: Too long: may not be more than 5 bytes' in found
    assert 'spec.labels: Too many: 3: must have at most 2 items' in found


def test_required_fields():
    assert errors({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}})[0] == "spec.size: Required value"


def test_int_or_string_accepts_both_and_refuses_others():
    assert errors(widget(memory=5)) == []
    assert errors(widget(memory="5Gi")) == []
    assert 'spec.memory: Invalid value: "boolean": spec.memory in body must be of type integer|string: "boolean"' in errors(widget(memory=True))


def test_list_type_map_keys_must_be_unique():
    found = errors(widget(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 81}]))
    assert found == ['spec.ports[1]: Duplicate value: map[string]interface {}{"name":"http"}']


def test_cel_rule_failure_uses_message_field_path_and_schema_type():
    assert errors(widget(size=11)) == ['spec.size: Invalid value: "object": size must not exceed limit']


def test_transition_rules_are_skipped_on_create_and_checked_on_update():
    old = SCHEMA.admit(widget(size=5)).object
    assert errors(widget(size=2)) == []
    assert errors(widget(size=2), old=old) == ['spec: Invalid value: "object": size may only grow']
    assert errors(widget(size=6), old=old) == []


def test_cel_is_not_run_when_the_structure_is_already_wrong():
    found = errors(widget(size=20, tags="x"))
    assert not any("size must not exceed limit" in e for e in found)
    assert any("some validation rules were not checked" in e for e in found)


def test_cel_runtime_errors_are_reported_with_the_rule():
    schema = CrdSchema({"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                                                  "x-kubernetes-validations": [{"rule": "self.missing == 1"}]}}})
    assert [str(e) for e in schema.admit({"spec": {}}).errors] == [
        'spec: Invalid value: "object": no such key: missing evaluating rule: self.missing == 1']


def test_message_expression_and_reason():
    schema = CrdSchema({"type": "object", "properties": {"spec": {"type": "object", "properties": {"n": {"type": "integer"}},
                        "x-kubernetes-validations": [{"rule": "self.n < 3", "messageExpression": "'n is ' + string(self.n)",
                                                      "reason": "FieldValueForbidden"}]}}})
    (error,) = schema.admit({"spec": {"n": 7}}).errors
    assert (str(error), error.reason) == ("spec: Forbidden: n is 7", "FieldValueForbidden")


def test_rules_that_do_not_compile_are_found():
    schema = CrdSchema({"type": "object", "x-kubernetes-validations": [{"rule": "self.a =="}]})
    assert schema.rule_errors() and "compilation failed" in schema.rule_errors()[0]
