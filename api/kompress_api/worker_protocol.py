"""The contract between the operator and the pods it starts (the worker and the planner).

Owns: environment variable names, the progress port and path, and the two JSON documents a pod
hands back: progress (served over HTTP while it runs) and its result (the termination message,
at most 4096 bytes). Pods get no Kubernetes API access; this is all they share with the operator.
Must not: contain worker or operator logic.
"""

from __future__ import annotations

import json
from typing import Any

from kompress_api._model import ApiModel, api_field
from kompress_api.paths import SCRATCH_DIR, SHM_DIR, TERMINATION_LOG  # noqa: F401 - part of the protocol
from kompress_api.v1alpha1 import EvaluationMetrics, MtpResult, PlanSummary, Progress

# The CompressionJob (metadata name/namespace/uid and spec, never status) as JSON. It holds only
# references to Secrets, so an env var is safe; secret values arrive as the variables below.
ENV_JOB = "KOMPRESS_JOB"
ENV_HF_TOKEN = "HF_TOKEN"
ENV_HF_ENDPOINT = "HF_ENDPOINT"
# Per-location S3 credentials arrive by envFrom with these prefixes, e.g. KOMPRESS_MODEL_S3_AWS_ACCESS_KEY_ID.
S3_ENV_PREFIX = {"model": "KOMPRESS_MODEL_S3_", "calibration": "KOMPRESS_CALIBRATION_S3_", "output": "KOMPRESS_OUTPUT_S3_", "tasks": "KOMPRESS_TASKS_S3_"}
ENV_PROGRESS_BIND = "KOMPRESS_PROGRESS_BIND"
ENV_TERMINATION_LOG = "KOMPRESS_TERMINATION_LOG"
ENV_LOG_FORMAT = "KOMPRESS_LOG_FORMAT"
ENV_SCRATCH_DIR = "KOMPRESS_SCRATCH"
ENV_GPUS = "KOMPRESS_GPUS"
# The model cache (kompress_job.io.cache): where its claim is mounted (and the claim's name, for reports), its size
# limit for eviction, when a lock is stale.
ENV_CACHE_DIR = "KOMPRESS_CACHE_DIR"
ENV_CACHE_CLAIM = "KOMPRESS_CACHE_CLAIM"
ENV_CACHE_MAX_BYTES = "KOMPRESS_CACHE_MAX_BYTES"
ENV_CACHE_STALE_SECONDS = "KOMPRESS_CACHE_STALE_SECONDS"
CACHE_DIR = "/var/cache/kompress"
# The worker image's user (job_image/Dockerfile): the cache volume's group owner by the pods' fsGroup.
WORKER_UID = 65532

PROGRESS_PORT = 8080
PROGRESS_PATH = "/progress"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
TERMINATION_LIMIT = 4096

# The same image runs both commands.
WORKER_COMMAND = ["kompress", "worker"]
PLANNER_COMMAND = ["kompress", "plan-pod"]


class WorkerProgress(Progress):
    """What GET /progress returns."""


class WorkerResult(ApiModel):
    """What a worker pod leaves in its termination message."""

    ok: bool = api_field(description="whether the job succeeded.")
    exit_code: int = api_field(0, description="the process exit code (kompress_api.exit_codes).")
    reason: str = api_field("Succeeded", description="CamelCase reason.")
    message: str = api_field("", description="what happened.")
    stage: str | None = api_field(None, description="the stage that failed, if any.")
    output_uri: str | None = api_field(None, description="where the checkpoint was published.")
    manifest_uri: str | None = api_field(None, description="the manifest.")
    rejected_uri: str | None = api_field(None, description="where a checkpoint that missed the gate was kept.")
    resolved_revision: str | None = api_field(None, description="the exact model revision compressed.")
    checkpoint_bytes: int | None = api_field(None, description="size of the checkpoint.")
    original_bytes: int | None = api_field(None, description="size of the source model.")
    compression_ratio: float | None = api_field(None, description="bf16 size / checkpoint size.")
    metrics: EvaluationMetrics | None = api_field(None, description="fidelity figures.")
    mtp: MtpResult | None = api_field(None, description="what became of the multi-token-prediction layers.")


class PlannerResult(ApiModel):
    """What a planning pod leaves in its termination message."""

    ok: bool = api_field(description="false when the plan has errors or could not be made.")
    exit_code: int = api_field(0, description="the process exit code.")
    reason: str = api_field("Planned", description="CamelCase reason.")
    message: str = api_field("", description="summary, or why planning failed.")
    plan: PlanSummary | None = api_field(None, description="the plan's figures and problems.")


def _fit(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def encode_termination(result: ApiModel, limit: int = TERMINATION_LIMIT) -> str:
    """Serialize a result into at most `limit` bytes, shortening messages (never dropping figures)."""
    doc = result.wire()
    text = _fit(doc)
    if len(text.encode()) <= limit:
        return text
    # Shorten the longest free-text parts first: the message, then plan problem messages and fixes.
    problems = (doc.get("plan") or {}).get("problems") or []
    for budget in (1000, 400, 160, 60):
        if len(doc.get("message", "")) > budget:
            doc["message"] = doc["message"][: budget - 1] + "…"
        for problem in problems:
            for key in ("message", "fix"):
                if len(problem.get(key, "")) > budget:
                    problem[key] = problem[key][: budget - 1] + "…"
        text = _fit(doc)
        if len(text.encode()) <= limit:
            return text
    # Still too long: keep errors before warnings, as many as fit; then task scores from the end (those that
    # missed the gate come first), counted in taskScoresOmitted: the manifest has them all.
    problems.sort(key=lambda p: p.get("severity") != "error")
    while problems and len(_fit(doc).encode()) > limit:
        problems.pop()
    metrics = doc.get("metrics") or {}
    scores = metrics.get("tasks") or []
    while scores and len(_fit(doc).encode()) > limit:
        scores.pop()
        metrics["taskScoresOmitted"] = metrics.get("taskScoresOmitted", 0) + 1
    text = _fit(doc)
    if len(text.encode()) > limit:
        raise ValueError("termination message does not fit even when shortened")
    return text
