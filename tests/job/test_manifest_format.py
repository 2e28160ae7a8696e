"""The manifest's format: 2 writes every key camelCase; `manifest.read` gives format 1 and 2 the same view, and refuses
any other format by name (`kompress verify` too)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kompress_job.io.published import ReaderOptions
from kompress_job.outputs import manifest, model_card, verify
from kompress_testing.jobs import make_job

pytestmark = pytest.mark.unit

# Written by build_manifest at format 1 (how: fixtures/README.md). Its recipe.effective is ResolvedRecipe.summary() as
# build_manifest was given it, so the same run can be written again in format 2 from it.
FORMAT_1 = Path(__file__).parent / "fixtures" / "kompress-format1.json"

# Maps keyed by a name (a config group, package, stage, task, module role), not by a field: data, whatever its case.
# "*" is any list item or map entry. Written out here, not taken from manifest.NAME_KEYED, so a change there shows.
NAMES = {
    ("groups",), ("libraries",), ("timings",), ("evaluation", "tasks", "samples"),
    ("recipe", "effective", "roles"), ("recipe", "effective", "roles", "*", "groups"), ("recipe", "effective", "groups", "*", "roles"),
}
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def format_1() -> dict[str, Any]:
    return json.loads(FORMAT_1.read_text())


def format_2_of_the_same_run(old: dict[str, Any]) -> dict[str, Any]:
    """What build_manifest writes today for the run the format-1 fixture records (the same job, figures and files)."""
    source, recipe, cal, evaluation = old["source"], old["recipe"], old["calibration"], old["evaluation"]
    job = make_job(
        source["uri"], "s3://models/glm/w4a16",
        model={"revision": source["revision"], "dtype": source["dtype"]},
        recipe={"preset": recipe["preset"], "overrides": recipe["overrides"]},
        calibration={"uri": cal["uri"], "revision": cal["revision"], "split": cal["split"], "format": cal["format"], "seed": cal["seed"],
                     "samples": cal["requestedSamples"], "maxSequenceLength": cal["maxSequenceLength"]},
        evaluation={"samples": 32, "tasks": [{"name": "arc_easy"}], "gate": evaluation["gate"]},
    )
    doc = manifest.build_manifest(
        job,
        status=old["status"],
        resolved_revision=source["resolvedRevision"],
        source_bytes=source["bytes"],
        files=old["files"],
        recipe=recipe["effective"],
        calibration_used={k: cal[k] for k in ("samples", "heldOut", "resolvedRevision")},
        metrics=evaluation["metrics"],
        gate_failures=evaluation["gateFailures"],
        tasks=evaluation["tasks"],
        timings=old["timings"],
        libraries=old["libraries"],
        mtp=old["mtp"],
        created_at=datetime.fromisoformat(old["createdAt"]),
    )
    doc["signature"] = old["signature"]  # publish adds it (outputs.signing.record), camelCase in both formats
    return doc


def field_keys(value: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Every key of `value` at any depth that names a field (not those of the NAMES maps), with its path."""
    found = []
    if isinstance(value, dict):
        named = path in NAMES
        for key, item in value.items():
            if not named:
                found.append(".".join((*path, key)))
            found += field_keys(item, (*path, "*" if named else key))
    elif isinstance(value, list):
        for item in value:
            found += field_keys(item, (*path, "*"))
    return found


def leaves(value: Any) -> list[Any]:
    """The document's values (not its keys), in order."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def test_the_fixture_is_format_1_with_its_snake_case_keys():
    old = format_1()
    assert old["kind"] == "KompressManifest" and old["format"] == 1
    snake = [key for key in field_keys(old) if "_" in key.rsplit(".", 1)[-1]]
    assert "recipe.effective.kept_16bit.of_parameters" in snake and "recipe.effective.needs_calibration" in snake
    assert "recipe.effective.groups.*.weights.group_size" in snake and "recipe.effective.fallbacks.*.in_features" in snake


def test_the_written_manifest_has_no_snake_case_key_at_any_depth():
    new = format_2_of_the_same_run(format_1())
    assert new["format"] == manifest.FORMAT == 2
    keys = field_keys(json.loads(manifest.dumps(new)))
    assert len(keys) > 150  # every part of the run is there, the recipe summary to its quantization arguments
    assert [key for key in keys if not CAMEL.match(key.rsplit(".", 1)[-1])] == []
    assert {"recipe.effective.kept16bit.ofParameters", "recipe.effective.modelType", "recipe.effective.groups.*.weights.groupSize"} <= set(keys)
    # Names keying a map are data: as they were.
    assert {"fetch-model", "load-model"} <= set(new["timings"]) and {"huggingface_hub", "lm_eval"} <= set(new["libraries"])
    assert "dense_mlp" in new["recipe"]["effective"]["roles"] and "dense_mlp" in new["recipe"]["effective"]["groups"][0]["roles"]


def test_format_2_keeps_every_value_of_format_1():
    old = format_1()
    new = format_2_of_the_same_run(old)
    assert leaves({**old, "format": 2}) == leaves(new)
    assert new == {**manifest.camel_keys(old), "format": 2}


def test_a_format_1_manifest_reads_as_the_same_view_as_format_2():
    old, new = manifest.read(format_1()), manifest.read(format_2_of_the_same_run(format_1()))
    assert (old["format"], new["format"]) == (1, 2)  # the view says what was written
    assert {**old, "format": 2} == new
    effective = old["recipe"]["effective"]
    assert effective["kept16bit"] == {"modules": 2, "parameters": 66048, "ofParameters": 532992}
    assert (effective["modelType"], effective["needsCalibration"], effective["servable"]) == ("glm4_moe", True, True)
    assert effective["groups"][0]["weights"]["groupSize"] == 128 and effective["fallbacks"][0]["inFeatures"] == 320
    assert old["signature"]["publicKeySha256"] == "9a" * 32 and old["evaluation"]["tasks"]["samples"] == {"arc_easy": 100}
    # Both render the same card.
    assert model_card.render(format_1(), output_uri="s3://models/glm/w4a16") == model_card.render(format_2_of_the_same_run(format_1()), output_uri="s3://models/glm/w4a16")


def test_the_view_has_every_part_of_a_sparse_manifest():
    view = manifest.read({"kind": "KompressManifest", "format": 2, "files": [{"path": "config.json", "size": 2, "sha256": "ab" * 32}]})
    assert view["source"] == dict.fromkeys(("uri", "revision", "resolvedRevision", "bytes", "dtype"))
    assert (view["signature"], view["mtp"], view["recipe"]["effective"], view["evaluation"]["tasks"]) == (None, None, None, None)
    assert (view["groups"], view["libraries"], view["evaluation"]["gateFailures"]) == ({}, {}, [])


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"kind": "KompressManifest", "format": 3, "files": []}, "format 3, which this reader does not know (it reads formats 1, 2"),
        ({"kind": "KompressManifest", "files": []}, "format None"),
        ({"kind": "KompressManifest", "format": True, "files": []}, "format True"),
        ({"kind": "SomethingElse", "format": 2}, "not a Kompress manifest (kind 'SomethingElse')"),
        ([], "not a Kompress manifest"),
        ({"kind": "KompressManifest", "format": 2, "files": [{"path": "a", "size": "2", "sha256": "x"}]}, "files[0] is not a {path, size, sha256}"),
        ({"kind": "KompressManifest", "format": 2}, "files is not a list"),
    ],
)
def test_what_is_not_a_manifest_it_reads_is_refused_saying_why(doc, says):
    with pytest.raises(manifest.ManifestError, match=re.escape(says)):
        manifest.read(doc)


def _folder_with(tmp_path: Path, doc: dict[str, Any]) -> Path:
    out = tmp_path / "model"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    doc["files"] = [{"path": "config.json", "size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}]
    (out / "kompress.json").write_text(json.dumps(doc))
    return out


def test_kompress_verify_reads_format_1_and_names_a_format_it_does_not_know(tmp_path):
    old = {k: v for k, v in format_1().items() if k != "signature"}
    outcome = verify.check(f"file://{_folder_with(tmp_path / '1', old)}", ReaderOptions())
    assert outcome.exit is verify.VerifyExit.OK and outcome.files == 1

    outcome = verify.check(f"file://{_folder_with(tmp_path / '3', {**old, 'format': 3})}", ReaderOptions())
    assert outcome.exit is verify.VerifyExit.NOT_A_MODEL and "format 3, which this reader does not know" in outcome.message
