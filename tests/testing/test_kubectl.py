"""`/usr/bin/kubectl` against the emulated server, as a user runs it: apply (default validation), get (tables),
get -w, patch --subresource=status, delete, explain, create, wait."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
import yaml

from .conftest import tiny_job

pytestmark = pytest.mark.integration
KUBECTL = "/usr/bin/kubectl"


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_apply_creates_then_reports_unchanged_then_configured(apiserver):
    assert apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml").stdout.strip() == "compressionjob.kompress.dev/tiny-laptop created"
    assert apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml").stdout.strip() == "compressionjob.kompress.dev/tiny-laptop unchanged"
    job = tiny_job()
    job["metadata"]["labels"] = {"team": "ml"}
    assert "configured" in apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(job)).stdout


def test_get_prints_the_crd_printer_columns(apiserver):
    apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml")
    apiserver.kubectl("patch", "compressionjob", "tiny-laptop", "--subresource=status", "--type=merge",
                      "-p", '{"status": {"phase": "Running", "progress": {"stage": "calibration", "percent": 40}}}')
    rows = table(apiserver.kubectl("get", "compressionjobs").stdout)
    assert rows[0] == ["NAME", "PHASE", "STAGE", "PROGRESS", "MODEL", "OUTPUT", "AGE"]
    name, phase, stage, percent, model, output, age = rows[1]
    assert (name, phase, stage, percent) == ("tiny-laptop", "Running", "calibration", "40")
    assert model == "file:///tmp/kompress/tiny-glm4-moe" and output.startswith("file:///")
    assert age.endswith("s")  # a date column is rendered as an age


def test_get_wide_adds_the_priority_columns_including_condition_filters(apiserver):
    apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml")
    condition = {"type": "Succeeded", "status": "True", "reason": "Published", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    apiserver.kubectl("patch", "cjob", "tiny-laptop", "--subresource=status", "--type=merge",
                      "-p", json.dumps({"status": {"phase": "Succeeded", "conditions": [condition]}}))
    rows = table(apiserver.kubectl("get", "cjob", "-o", "wide").stdout)
    assert rows[0][-4:] == ["PRESET", "GPUS", "SUCCEEDED", "REASON"]
    assert rows[1][-3:] == ["w4a16-w8a8", "0", "True"]  # no Failed condition: REASON is empty


def test_get_all_namespaces_adds_the_namespace_column(apiserver):
    apiserver.kubectl("create", "namespace", "ml")
    apiserver.kubectl("apply", "-n", "ml", "-f", "examples/tiny-laptop.yaml")
    rows = table(apiserver.kubectl("get", "kcj", "-A").stdout)
    assert rows[0][:2] == ["NAMESPACE", "NAME"] and rows[1][:2] == ["ml", "tiny-laptop"]


def test_get_watch_prints_each_change(apiserver):
    apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml")
    watch = subprocess.Popen([KUBECTL, "get", "cjob", "tiny-laptop", "-w", "--output-watch-events"],
                             env=apiserver.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("ADDED") for line in lines))
        apiserver.kubectl("patch", "cjob", "tiny-laptop", "--subresource=status", "--type=merge", "-p", '{"status": {"phase": "Running"}}')
        apiserver.kubectl("delete", "cjob", "tiny-laptop")
        wait_for(lambda: any(line.startswith("DELETED") for line in lines))
    finally:
        watch.kill()
        watch.wait()
    rows = [row for row in table("".join(lines)) if row and row[0] in ("ADDED", "MODIFIED", "DELETED")]
    assert [row[0] for row in rows] == ["ADDED", "MODIFIED", "DELETED"]
    assert rows[1][2] == "Running"


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_patch_status_subresource_does_not_touch_spec(apiserver):
    apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml")
    apiserver.kubectl("patch", "cjob", "tiny-laptop", "--subresource=status", "--type=merge",
                      "-p", '{"spec": {"suspend": true}, "status": {"phase": "Queued"}}')
    stored = yaml.safe_load(apiserver.kubectl("get", "cjob", "tiny-laptop", "-o", "yaml").stdout)
    assert stored["status"] == {"phase": "Queued"} and stored["spec"]["suspend"] is False


def test_invalid_apply_prints_every_field_error(apiserver):
    job = tiny_job()
    job["spec"]["resources"]["gpus"] = -2
    job["spec"]["model"]["uri"] = "ftp://x"
    result = apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(job), check=False)
    assert result.returncode == 1
    assert 'The CompressionJob "tiny-laptop" is invalid:' in result.stderr
    assert "spec.resources.gpus: Invalid value: -2: spec.resources.gpus in body should be greater than or equal to 0" in result.stderr
    assert 'spec.model.uri: Invalid value: "string": spec.model.uri must be hf://ORG/NAME' in result.stderr


def test_unknown_fields_are_refused_by_default_and_dropped_with_validation_off(apiserver):
    job = tiny_job()
    job["spec"]["colour"] = "blue"
    strict = apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(job), check=False)
    assert 'strict decoding error: unknown field "spec.colour"' in strict.stderr
    lax = apiserver.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(job))
    assert "created" in lax.stdout
    assert "colour" not in apiserver.client.get(apiserver.path(name="tiny-laptop"))["spec"]


def test_delete_waits_until_the_object_is_gone(apiserver):
    job = tiny_job()
    job["metadata"]["finalizers"] = ["test/hold"]
    apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    deleting = subprocess.Popen([KUBECTL, "delete", "cjob", "tiny-laptop", "--timeout=10s"], env=apiserver.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.7)
    assert deleting.poll() is None  # kubectl is waiting on the finalizer
    apiserver.client.patch(apiserver.path(name="tiny-laptop"), {"metadata": {"finalizers": None}})
    assert 'compressionjob.kompress.dev "tiny-laptop" deleted' in deleting.communicate(timeout=15)[0]


def test_explain_teaches_the_fields(apiserver):
    explained = apiserver.kubectl("explain", "compressionjob.spec.recipe").stdout
    assert "KIND:       CompressionJob" in explained
    assert "preset" in explained and "sparse24-w4a16-w8a8" in explained and "custom" in explained


def test_api_resources_lists_the_short_names(apiserver):
    rows = table(apiserver.kubectl("api-resources", "--api-group=kompress.dev").stdout)
    assert rows[1] == ["compressionjobs", "cjob,kcj", "kompress.dev/v1alpha1", "true", "CompressionJob"]


def test_typed_create_commands_and_wait(apiserver):
    apiserver.kubectl("create", "namespace", "ml")
    apiserver.kubectl("create", "secret", "generic", "hf-token", "-n", "ml", "--from-literal=token=hf_abc")
    assert apiserver.kubectl("get", "secret", "hf-token", "-n", "ml", "-o", "jsonpath={.data.token}").stdout == "aGZfYWJj"
    apiserver.kubectl("apply", "-f", "examples/tiny-laptop.yaml")
    waiting = subprocess.Popen([KUBECTL, "wait", "--for=condition=Succeeded", "cjob/tiny-laptop", "--timeout=10s"],
                               env=apiserver.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    condition = {"type": "Succeeded", "status": "True", "reason": "Published", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    apiserver.client.patch(apiserver.path(name="tiny-laptop", subresource="status"), {"status": {"conditions": [condition]}})
    assert "condition met" in waiting.communicate(timeout=15)[0]
