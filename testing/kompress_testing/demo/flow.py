"""The demo's steps, as a user would take them, and what they read back: shared by `make demo` and the e2e test.

Owns: the tiny model (built by `python -m kompress_testing.models`, uploaded to S3), the S3 Secret
(created with kubectl from a file, so its values are never on a command line or printed),
`examples/demo.yaml` applied with kubectl (its S3 endpoint rewritten only if the demo had to take
another port), the live `kubectl get compressionjobs -w` lines, waiting for a terminal phase, and
reading the published objects and the manifest back, with every checksum recomputed.
Must not: start or stop services (stack.py) or format a report (report.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kompress_job.outputs.manifest import Manifest
from kompress_job.outputs.manifest import read as read_manifest
from kompress_testing.cluster.build import kubectl_binary
from kompress_testing.demo.stack import REPO_ROOT, Stack, StackError

DEMO_MANIFEST = REPO_ROOT / "examples" / "demo.yaml"
SECRET_NAME = "demo-s3"
# The committed trained test model (kompress_testing.trained_model): perplexity, KL and top-1 mean something on it.
DEMO_MODEL = REPO_ROOT / "testing" / "kompress_testing" / "trained" / "glm4-moe-chat"
# Its held-out conversations (never trained on), uploaded as the job's calibration and evaluation data.
DEMO_DATA = DEMO_MODEL / "heldout.jsonl"
# The local lm-eval task (kompress_testing.lmeval_task), uploaded as the job's spec.evaluation.taskSource.
DEMO_TASKS = DEMO_MODEL.parent / "lmeval-chat"
TERMINAL = ("Succeeded", "Failed")
CJOBS = "/apis/kompress.dev/v1alpha1/namespaces/default/compressionjobs"


def demo_job(path: Path = DEMO_MANIFEST) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def s3_port_of(job: dict[str, Any]) -> int:
    """The port of the S3 endpoint the manifest names (the demo starts its S3 server there if it can)."""
    match = re.search(r":(\d+)/?$", job["spec"]["model"]["s3"]["endpoint"])
    if not match:
        raise ValueError(f"{DEMO_MANIFEST}: spec.model.s3.endpoint has no port")
    return int(match.group(1))


def with_endpoint(job: dict[str, Any], endpoint: str) -> dict[str, Any]:
    places = [job["spec"].get(location) or {} for location in ("model", "calibration", "output")]
    places.append((job["spec"].get("evaluation") or {}).get("taskSource") or {})
    for place in places:
        if place.get("s3") is not None:
            place["s3"]["endpoint"] = endpoint
    return job


def s3_location(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.strip("/")


# ---------------------------------------------------------------------------------------------
# Before the job
# ---------------------------------------------------------------------------------------------


def model_files(folder: Path = DEMO_MODEL) -> list[Path]:
    """What a model repository holds: weights, config, tokenizer, card (not the test data kept beside it)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".jsonl")


def upload_file(s3: Any, path: Path, uri: str) -> int:
    bucket, key = s3_location(uri)
    client = s3.client()
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        s3.create_bucket(bucket)
    client.upload_file(str(path), bucket, key)
    return path.stat().st_size


def upload_folder(s3: Any, files: list[Path], uri: str) -> list[tuple[str, int]]:
    return [(f"{uri}/{path.name}", upload_file(s3, path, f"{uri}/{path.name}")) for path in files]


def create_secret(stack: Stack) -> None:
    """`kubectl create secret generic demo-s3 --from-env-file=...`: the keys never appear in a command line or output."""
    env_file = stack.workdir / "demo-s3.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"AWS_ACCESS_KEY_ID={stack.s3.access_key_id}\nAWS_SECRET_ACCESS_KEY={stack.s3.secret_access_key}\n")
    try:
        stack.kubectl("create", "secret", "generic", SECRET_NAME, f"--from-env-file={env_file}")
    finally:
        env_file.unlink(missing_ok=True)


def prepare(stack: Stack, job: dict[str, Any]) -> list[tuple[str, int]]:
    """What must exist before the job is applied: the model and the data in S3, the S3 Secret, the workers'
    ServiceAccount. Returns what was uploaded (URI, bytes)."""
    model_uri, data_uri = job["spec"]["model"]["uri"], job["spec"]["calibration"]["uri"]
    uploaded = [(f"{model_uri}/", sum(size for _, size in upload_folder(stack.s3, model_files(), model_uri)))]
    uploaded.append((data_uri, upload_file(stack.s3, DEMO_DATA, data_uri)))
    tasks_uri = ((job["spec"].get("evaluation") or {}).get("taskSource") or {}).get("uri", "")
    if tasks_uri.startswith("s3://"):
        files = sorted(p for p in DEMO_TASKS.iterdir() if p.is_file())
        uploaded.append((f"{tasks_uri}/", sum(size for _, size in upload_folder(stack.s3, files, tasks_uri))))
    create_secret(stack)
    stack.kubectl("create", "serviceaccount", "kompress-worker")
    return uploaded


def apply_job(stack: Stack, job: dict[str, Any], source: Path = DEMO_MANIFEST) -> str:
    """kubectl apply: the file itself when it names our S3 endpoint, else the same job pointed at it. Returns kubectl's words."""
    if demo_job(source) == job:
        return stack.kubectl("apply", "-f", str(source.relative_to(REPO_ROOT) if source.is_relative_to(REPO_ROOT) else source)).stdout.strip()
    return stack.kubectl("apply", "-f", "-", input=yaml.safe_dump(job, sort_keys=False)).stdout.strip()


# ---------------------------------------------------------------------------------------------
# While it runs
# ---------------------------------------------------------------------------------------------


class Watch:
    """`kubectl get compressionjobs -w`, its lines handed to `show` (repeats of the same state skipped)."""

    def __init__(self, stack: Stack, show: Callable[[str], None]) -> None:
        self.show = show
        self.proc = subprocess.Popen([str(kubectl_binary()), "get", "compressionjobs", "--watch"], env=stack.env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
        self._last = ""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            key = re.sub(r"\s+\S+$", "", line)  # the AGE column changes by itself
            if line and key != self._last:
                self._last = key
                self.show(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._thread.join(5)


def wait_finished(stack: Stack, name: str, timeout: float) -> dict[str, Any]:
    """Poll the CompressionJob until its phase is Succeeded or Failed; fail if a service dies or time runs out."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stack.check_alive()
        last = stack.client.get(f"{CJOBS}/{name}")
        if (last.get("status") or {}).get("phase") in TERMINAL:
            return last
        time.sleep(0.5)
    raise StackError(f"CompressionJob {name} did not finish within {timeout:.0f}s (phase {(last.get('status') or {}).get('phase')!r})")


# ---------------------------------------------------------------------------------------------
# After it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    objects: dict[str, int]  # key relative to the output prefix -> size
    manifest: Manifest | None  # as outputs.manifest.read gives it, whatever its format
    checksum_problems: list[str]

    @property
    def files_checked(self) -> int:
        return len(self.manifest["files"]) if self.manifest is not None else 0


def read_published(stack: Stack, output_uri: str, manifest_name: str = "kompress.json") -> Published:
    """Every object under the output prefix, the manifest, and each listed file's size and SHA-256 recomputed from S3."""
    bucket, prefix = s3_location(output_uri)
    client = stack.s3.client()
    objects: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            objects[obj["Key"][len(prefix) + 1:]] = obj["Size"]
    if manifest_name not in objects:
        return Published(objects, None, [f"no {manifest_name} under {output_uri}: not a finished model"])
    try:
        manifest = read_manifest(json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/{manifest_name}")["Body"].read()))
    except ValueError as err:  # not JSON, or not a manifest of a format Kompress reads (ManifestError)
        return Published(objects, None, [f"{manifest_name} under {output_uri}: {err}"])
    problems = []
    for entry in manifest["files"]:
        key = f"{prefix}/{entry['path']}"
        if entry["path"] not in objects:
            problems.append(f"{entry['path']}: listed in the manifest, missing in S3")
            continue
        digest = hashlib.sha256()
        for chunk in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
            digest.update(chunk)
        if objects[entry["path"]] != entry["size"]:
            problems.append(f"{entry['path']}: {objects[entry['path']]} bytes in S3, {entry['size']} in the manifest")
        if digest.hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: SHA-256 differs from the manifest's")
    return Published(objects, manifest, problems)


def download_checkpoint(stack: Stack, output_uri: str, folder: Path) -> Path:
    bucket, prefix = s3_location(output_uri)
    client = stack.s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            target = folder / obj["Key"][len(prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
    return folder


def container_records(stack: Stack) -> list[dict[str, Any]]:
    """The node agent's record of every ended container: exit, run time, peak memory."""
    path = stack.workdir / "node" / "containers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pod_logs(stack: Stack, lines: int = 25) -> dict[str, str]:
    """The tail of every pod's log the node agent kept, by file name (<namespace>_<pod>_<container>)."""
    found = {}
    for path in sorted(stack.node_logs.glob("*.log")) if stack.node_logs.exists() else []:
        text = path.read_text(errors="replace").splitlines()
        found[path.stem] = "\n".join(text[-lines:])
    return found
