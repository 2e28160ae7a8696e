"""The contract between the operator and the pods it starts (the worker and the planner).

Owns: environment variable names, the progress port and path, the worker's stages (kompress_api.stages,
re-exported here: the worker runs them, reports them in its progress, and the operator reads them), and the two
JSON documents a pod hands back: progress (served over HTTP while it runs) and its result (the termination message,
at most 4096 bytes). Pods get no Kubernetes API access; this is all they share with the operator.
Must not: contain worker or operator logic.
"""

from __future__ import annotations

import json
from typing import Any

from kompress_api._model import ApiModel, api_field
from kompress_api.paths import SCRATCH_DIR, SHM_DIR, TERMINATION_LOG  # noqa: F401 - part of the protocol
from kompress_api.stages import DONE, PUBLISH, STAGE_NAMES, STAGES, Stage, stage_names  # noqa: F401 - part of the protocol
from kompress_api.v1alpha1 import JobResult, PlanSummary, Progress

# The CompressionJob (metadata name/namespace/uid and spec, never status) as JSON. It holds only
# references to Secrets, so an env var is safe; secret values arrive as the variables below.
ENV_JOB = "KOMPRESS_JOB"
ENV_HF_TOKEN = "HF_TOKEN"
ENV_HF_ENDPOINT = "HF_ENDPOINT"
# Per-location S3 credentials arrive by envFrom with these prefixes, e.g. KOMPRESS_MODEL_S3_AWS_ACCESS_KEY_ID.
S3_ENV_PREFIX = {"model": "KOMPRESS_MODEL_S3_", "calibration": "KOMPRESS_CALIBRATION_S3_", "output": "KOMPRESS_OUTPUT_S3_", "tasks": "KOMPRESS_TASKS_S3_"}
# An hf:// output's write token (spec.output.huggingFace.tokenSecret), apart from the model's read token (HF_TOKEN).
ENV_OUTPUT_HF_TOKEN = "KOMPRESS_OUTPUT_HF_TOKEN"
# spec.output.signing.keySecret is mounted read-only at SIGNING_DIR; the variable names the folder. The key never reaches
# the environment. On a laptop, the variable names a folder holding the same files.
ENV_OUTPUT_SIGNING_DIR = "KOMPRESS_OUTPUT_SIGNING_DIR"
SIGNING_DIR = "/kompress/signing"
SIGNING_PRIVATE_KEY = "private-key.pem"
SIGNING_CERTIFICATE = "certificate.pem"
SIGNING_CERTIFICATE_CHAIN = "certificate-chain.pem"
# An oci:// output's spec.output.oci.credentialsSecret (a dockerconfigjson) is mounted read-only at OCI_AUTH_DIR; the
# variable names the file (the Secret's key .dockerconfigjson). The values never reach the environment.
OCI_AUTH_DIR = "/kompress/oci-auth"
OCI_AUTH_KEY = ".dockerconfigjson"
ENV_OUTPUT_OCI_AUTH = "KOMPRESS_OUTPUT_OCI_AUTH"
# The static busybox the worker image carries (package busybox-static): an oci:// output's base layer (sh, ln, sleep
# for KServe's modelcar container). The variable overrides where it is.
ENV_OCI_BUSYBOX = "KOMPRESS_OCI_BUSYBOX"
OCI_BUSYBOX = "/bin/busybox"
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


class WorkerResult(JobResult):
    """What a worker pod leaves in its termination message: how it ended, and what it produced (the JobResult the
    operator copies into status.result)."""

    ok: bool = api_field(description="whether the job succeeded.")
    exit_code: int = api_field(0, description="the process exit code (kompress_api.exit_codes).")
    reason: str = api_field("Succeeded", description="CamelCase reason.")
    message: str = api_field("", description="what happened.")
    stage: str | None = api_field(None, description="the stage that failed, if any.")


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
