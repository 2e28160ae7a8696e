"""Reading the CompressionJob a process was given: from a YAML file (`kompress run`, `kompress plan`) or from
$KOMPRESS_JOB (the pods). Shared by the runner and the planner's CLI, so it lives below both.

Must not: talk to the Kubernetes API.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kompress_api import v1alpha1
from kompress_api.worker_protocol import ENV_JOB

from kompress_job.errors import InvalidSpec, describe


def parse_job(obj: Any, where: str) -> v1alpha1.CompressionJob:
    if not isinstance(obj, dict):
        raise InvalidSpec(f"{where} is not a CompressionJob object")
    try:
        return v1alpha1.parse(obj)
    except ValidationError as err:
        raise InvalidSpec(f"{where} is not a valid CompressionJob: {describe(err)}") from None


def load_job_file(path: str) -> v1alpha1.CompressionJob:
    """The one CompressionJob in a YAML file (- for stdin); other documents (a Secret...) are ignored."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise InvalidSpec(f"cannot read {path}: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path} is not valid YAML: {exc}") from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == v1alpha1.KIND]
    if len(jobs) != 1:
        raise InvalidSpec(f"{path} must hold exactly one {v1alpha1.KIND}, found {len(jobs)}")
    return parse_job(jobs[0], path)


def job_from_env(env: Mapping[str, str]) -> v1alpha1.CompressionJob:
    """The pod's job: $KOMPRESS_JOB, metadata and spec as JSON (references to Secrets only)."""
    raw = env.get(ENV_JOB)
    if not raw:
        raise InvalidSpec(f"${ENV_JOB} is not set: the operator passes the CompressionJob to the pod in it")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidSpec(f"${ENV_JOB} is not JSON: {exc}") from None
    if isinstance(doc, dict):
        doc.setdefault("apiVersion", v1alpha1.API_VERSION)
        doc.setdefault("kind", v1alpha1.KIND)
        doc.pop("status", None)
    return parse_job(doc, f"${ENV_JOB}")
