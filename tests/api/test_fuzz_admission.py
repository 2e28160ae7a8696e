"""A few hundred malformed CompressionJobs made from the CRD's own schema (wrong types, boundary numbers, strings
too long or off-pattern, unknown enum values, broken regexes and label values, conflicting fields). Each one is
either refused by the real kube-apiserver at admission with the field in its message, or refused by the typed
model the operator parses with (InvalidSpec, field named, before any Job), or valid enough that every Job the
operator would make from it is accepted by the API server too: never a worker Job the server refuses (which
would leave the CompressionJob failing at every resync), never an unexplained refusal."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
import yaml

from kompress_api import v1alpha1
from kompress_operator import children
from kompress_operator.config import OperatorConfig
from kompress_testing.cluster.client import ApiStatusError
from kompress_testing.wrappers import make_cjob

from .conftest import ROOT

pytestmark = pytest.mark.integration

CONFIG = OperatorConfig(worker_image="registry.example/kompress-job:1.0")
PLAN = v1alpha1.PlanSummary(total_parameters=2_000_000, estimated_checkpoint_bytes=3_000_000, host_memory_bytes=8 * 2**30,
                            gpu_memory_bytes=2**30, disk_bytes=20 * 2**30, servable=True)
# Strings that break the usual rules: spaces, label syntax, path tricks, a broken regex, control characters.
ODD_STRINGS = ["has space", "-leading-dash", "trailing.", "UPPER_case", "../escape", "/abs/path", "re:[unclosed",
               "x" * 64, "tab\there", "new\nline", "", "ünïcode", "a/b/c", "-4Gi"]


def base_job() -> dict[str, Any]:
    """A valid cluster job that sets every optional block, so mutations reach every field."""
    job = make_cjob("fuzz", namespace="x").with_hub_token("hf-token").with_s3_credentials("output", "s3-creds").manifest()
    job["spec"].update({
        "scheduling": {"queueName": "gpu-batch", "nodeSelector": {"gpu": "h100"}, "priorityClassName": "high",
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        "resources": {"gpus": 4, "memory": "64Gi", "scratch": "200Gi"},
        "evaluation": {"enabled": True, "samples": 16, "gate": {"minTop1Agreement": 0.9}},
        "activeDeadlineSeconds": 3600,
    })
    return job


def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "kompress.dev_compressionjobs.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def fields(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every property under spec, depth first (array items as index 0, maps by a key of their own)."""
    for name, sub in (schema.get("properties") or {}).items():
        yield (*path, name), sub
        yield from fields(sub, (*path, name))
        if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
            yield from fields(sub["items"], (*path, name, 0))
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") == "string":
            yield (*path, name, "fuzzkey"), extra


def wrong_values(schema: dict[str, Any], rng: random.Random) -> list[Any]:
    kind = schema.get("type")
    values: list[Any] = []
    if kind in ("integer", "number"):
        values.append("twelve")
        if "minimum" in schema:
            values.append(schema["minimum"] - 1)
        if "maximum" in schema:
            values.append(schema["maximum"] + 1)
        if kind == "integer":
            values.append(1.5)
        values.append(2**63)
    elif kind == "string":
        values += [12, rng.choice(ODD_STRINGS)]
        if "maxLength" in schema:
            values.append("a" * (schema["maxLength"] + 1))
        if "enum" in schema:
            values.append("not-one-of-them")
        if "pattern" in schema or "x-kubernetes-validations" in schema:
            values += rng.sample(ODD_STRINGS, 2)
    elif kind == "boolean":
        values.append("yes")
    elif kind == "array":
        values += ["not a list", [12]]
        if "maxItems" in schema:
            values.append(["x"] * (schema["maxItems"] + 1))
    elif kind == "object":
        values += ["not an object", {"unknownFieldOfFuzz": 1}]
    elif schema.get("x-kubernetes-int-or-string"):
        values += [True, rng.choice(ODD_STRINGS)]
    return values


def put(spec: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    target: Any = spec
    for key, after in zip(path[:-1], path[1:]):
        if isinstance(target, list):
            while len(target) <= key:  # type: ignore[operator]
                target.append({} if not isinstance(after, int) else [])
            target = target[key]  # type: ignore[index]
            continue
        if not isinstance(target.get(key), (dict, list)):
            target[key] = [] if isinstance(after, int) else {}
        target = target[key]
    if isinstance(target, list):
        while len(target) <= path[-1]:  # type: ignore[operator]
            target.append(None)
    target[path[-1]] = value  # type: ignore[index]


# Combinations that are each valid alone.
CONFLICTS = {
    "output-is-the-model": lambda s: s.update(model={"uri": "s3://models/src"}, output={"uri": "s3://models/src"}),
    "output-inside-the-model": lambda s: s.update(model={"uri": "s3://models/src"}, output={"uri": "s3://models/src/out"}),
    "gate-without-evaluation": lambda s: s.update(evaluation={"enabled": False, "gate": {"minTop1Agreement": 0.9}}),
    "preset-and-custom": lambda s: s["recipe"].update(custom="quant_stage: {}"),
    "revision-off-the-hub": lambda s: s.update(model={"uri": "s3://models/src", "revision": "main"}),
    "file-output-without-volume": lambda s: s.update(output={"uri": "file:///models/out"}),
}


def cases() -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    rng = random.Random(20261203)
    made = []
    for path, schema in fields(spec_schema()):
        for value in wrong_values(schema, rng):
            job = base_job()
            put(job["spec"], path, copy.deepcopy(value))
            made.append((".".join(map(str, path)), path, job))
    for name, change in CONFLICTS.items():
        job = base_job()
        change(job["spec"])
        made.append((name, (), job))
    return made


CASES = cases()


def test_the_fuzz_covers_a_few_hundred_cases():
    assert len(CASES) >= 200


def _named(message: str, path: tuple[Any, ...]) -> bool:
    """The message names the mutated field, or the nearest enclosing field (a new object's missing sibling)."""
    dotted = [str(p) for p in path if not isinstance(p, int)]
    candidates = {"spec." + ".".join(dotted[:n]) for n in range(1, len(dotted) + 1)}
    return any(c in message for c in candidates) or not path


def _typed_model_refusal(job: dict[str, Any]) -> str | None:
    try:
        v1alpha1.parse(job)
    except pydantic.ValidationError as err:
        return "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in err.errors())
    return None


def test_every_malformed_job_is_refused_with_its_field_or_makes_only_jobs_the_server_accepts(module_apiserver):
    cluster = module_apiserver
    unexplained, refused_children = [], []
    admitted = 0
    for name, path, job in CASES:
        try:
            stored = cluster.admit(job)
        except ApiStatusError as err:
            message = str(err.status.get("message") if isinstance(err.status, dict) else err.status)
            if err.code not in (400, 422) or not _named(message, path):
                unexplained.append(f"{name}: {err.code} {message[:300]}")
            continue
        admitted += 1
        stored["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
        refusal = _typed_model_refusal(stored)
        if refusal is not None:
            if not _named("spec." + refusal.removeprefix("spec."), path) and not _named(refusal, path):
                unexplained.append(f"{name}: the typed model refused it without naming the field: {refusal[:300]}")
            continue
        cjob = v1alpha1.parse(stored)
        for job_manifest in (children.build_plan_job(cjob, CONFIG), children.build_worker_job(cjob, PLAN, CONFIG)):
            manifest = copy.deepcopy(job_manifest)
            manifest["metadata"]["namespace"] = cluster.namespace
            manifest["metadata"].pop("ownerReferences", None)  # a dry run of a child of an object that was never stored
            try:
                cluster.client.post(cluster.path("jobs", api_version="batch/v1"), manifest, dryRun="All")
            except ApiStatusError as err:
                refused_children.append(f"{name}: {manifest['metadata']['name']}: {str(err)[:300]}")
    assert not unexplained, "\n".join(unexplained)
    assert not refused_children, "admitted, but the API server refuses the Job made from it:\n" + "\n".join(refused_children)
    assert admitted < len(CASES)  # most are refused; the rest were still checked end to end
