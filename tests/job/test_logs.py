"""Logs: JSON lines in a pod, and no secret value in any line, whatever a message or traceback holds."""

from __future__ import annotations

import io
import json
import logging

import pytest

from kompress_job import logs
from kompress_job.redaction import Redactor, is_secret_variable, secret_values

pytestmark = pytest.mark.unit

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"


@pytest.fixture
def captured():
    stream = io.StringIO()
    log = logs.setup("json", Redactor([SECRET]), stream=stream)
    yield log, stream
    logging.getLogger().handlers.clear()


def test_every_credential_variable_counts_as_a_secret():
    env = {
        "HF_TOKEN": "hf_abcdef",
        "KOMPRESS_OUTPUT_S3_AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        "KOMPRESS_MODEL_S3_AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "KOMPRESS_CALIBRATION_S3_AWS_SESSION_TOKEN": "session-token",
        "AWS_SECRET_ACCESS_KEY": "chain-secret",
        "KOMPRESS_JOB": '{"spec": {}}',
        "HF_ENDPOINT": "https://hf-mirror.example",
    }
    assert set(secret_values(env)) == {"hf_abcdef", "s3cr3t-value", "AKIAEXAMPLE", "session-token", "chain-secret"}
    assert not is_secret_variable("KOMPRESS_JOB") and not is_secret_variable("KOMPRESS_OUTPUT_S3_ENDPOINT")


def test_json_lines_carry_stage_and_extras(captured):
    log, stream = captured
    log.info("stage %s: start", "publish", extra={"stage": "publish", "bytes_sent": 12})
    record = json.loads(stream.getvalue())
    assert record["message"] == "stage publish: start" and record["stage"] == "publish" and record["bytes_sent"] == 12
    assert record["level"] == "info" and record["time"].endswith("Z")


def test_secrets_are_masked_in_arguments_extras_and_tracebacks(captured):
    log, stream = captured
    log.warning("connecting with %s", SECRET, extra={"detail": f"key={SECRET}"})
    try:
        raise RuntimeError(f"refused {SECRET}")
    except RuntimeError:
        log.exception("upload failed")
    logging.getLogger("botocore").warning("header Authorization: %s", SECRET)  # a library's own logger too
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count("***") >= 4
    lines = [json.loads(line) for line in text.splitlines()]
    assert "RuntimeError: refused ***" in lines[1]["exception"]


def test_text_format_is_masked_too():
    stream = io.StringIO()
    log = logs.setup("text", Redactor([SECRET]), stream=stream)
    try:
        log.info("token %s", SECRET)
        assert SECRET not in stream.getvalue() and "token ***" in stream.getvalue()
    finally:
        logging.getLogger().handlers.clear()


def test_terminal_progress_bar_shows_bytes_then_steps():
    from kompress_job.progress import ProgressReporter

    stream = io.StringIO()
    bar = logs.TqdmProgressSink(stream)
    reporter = ProgressReporter(["fetch-model", "compress"], sinks=[bar])
    with reporter.stage("fetch-model"):
        reporter.transfer(512 * 1024 * 1024, 1024 * 1024 * 1024)
    with reporter.stage("compress", total_steps=46):
        reporter.set_steps(3, message="layer 3")
    bar.close()
    text = stream.getvalue()
    assert "fetch-model" in text and "537M/1.07G" in text
    assert "compress" in text and "3/46" in text and "layer 3" in text


def test_progress_log_lines_are_throttled_but_every_stage_change_is_logged(captured):
    from kompress_job.progress import ProgressReporter

    log, stream = captured
    reporter = ProgressReporter(["fetch-model", "publish"], sinks=[logs.LogProgressSink(log, interval=3600)])
    with reporter.stage("fetch-model"):
        for done in range(0, 100, 10):
            reporter.transfer(done, 100)
    with reporter.stage("publish"):
        reporter.transfer(5, 10)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["stage"] for line in lines] == ["fetch-model", "publish"]


def test_what_libraries_print_becomes_log_records_and_is_masked(captured):
    log, stream = captured
    lines = logs._LinesToLog(logging.getLogger("kompress.stdout"))
    lines.write("2026-11-26 | oneshot | INFO - calibrating\npartial")
    lines.write(f" line with {SECRET}\nbar  10%\rbar 100%\n")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["message"] for r in records] == ["2026-11-26 | oneshot | INFO - calibrating", "partial line with ***", "bar 100%"]
    assert {r["logger"] for r in records} == {"kompress.stdout"}
