"""What a child pod is handed to reach its data: credentials by reference, and the volumes it mounts.

Owns: the env and envFrom that carry the Hub token, the Hub endpoint, the hf:// output's write token and the S3
credentials (as secretKeyRef / envFrom references), the Secret volumes of spec.output.signing's key and an oci://
output's dockerconfigjson, the task source's ConfigMap or claim, the model and output claims' mounts, the model
cache (which claim, and why a job that asks for one cannot have it), and the names of every volume a child pod has.
Must not: call the API, read a clock or the environment, or touch a Secret's value: credentials reach pods only as
references or as a Secret volume, never as a value in an environment variable or an object the operator writes.
"""

from __future__ import annotations

from typing import Any

from kompress_api import v1alpha1 as api
from kompress_api import worker_protocol

from kompress_operator.config import OperatorConfig

SHM_VOLUME = "dshm"
SCRATCH_VOLUME = "scratch"
MODEL_VOLUME = "model"
CACHE_VOLUME = "model-cache"
OUTPUT_VOLUME = "output"
TASKS_VOLUME = "tasks"
SIGNING_VOLUME = "signing-key"
OCI_AUTH_VOLUME = "oci-auth"


# ---------------------------------------------------------------------------------------------
# Credentials, by reference
# ---------------------------------------------------------------------------------------------


def _hub_access(spec: api.CompressionJobSpec, locations: tuple[str, ...]) -> list[api.HubAccess]:
    return [hub for loc in locations if (hub := getattr(spec, loc).hugging_face) is not None]


def credential_env(spec: api.CompressionJobSpec, locations: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, envFrom) that hand the pod its credentials by reference only.

    The Hub token is one variable (HF_TOKEN): the model's Secret if it names one, else the
    calibration data's. S3 credentials arrive per location with the prefixes of worker_protocol.
    """
    env: list[dict[str, Any]] = []
    hubs = _hub_access(spec, tuple(loc for loc in locations if loc in ("model", "calibration")))
    token = next((hub.token_secret for hub in hubs if hub.token_secret is not None), None)
    if token is not None:
        env.append({"name": worker_protocol.ENV_HF_TOKEN, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    endpoint = next((hub.endpoint for hub in hubs if hub.endpoint), None)
    if endpoint:
        env.append({"name": worker_protocol.ENV_HF_ENDPOINT, "value": endpoint})
    # An hf:// output's write token is a variable of its own: never the model's read token, never sent to the model's mirror.
    output_hub = spec.output.hugging_face if "output" in locations and spec.output.uri.startswith("hf://") else None
    if output_hub is not None and output_hub.token_secret is not None:
        ref = output_hub.token_secret
        env.append({"name": worker_protocol.ENV_OUTPUT_HF_TOKEN, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env_from = []
    for loc in locations:
        s3 = _s3_access(spec, loc)
        if s3 is not None and s3.credentials_secret:
            env_from.append({"prefix": worker_protocol.S3_ENV_PREFIX[loc], "secretRef": {"name": s3.credentials_secret}})
    return env, env_from


def _s3_access(spec: api.CompressionJobSpec, location: str) -> api.S3Access | None:
    if location == "tasks":
        source = spec.evaluation.task_source
        return source.s3 if source is not None else None
    return getattr(spec, location).s3


def signing_key(spec: api.CompressionJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes, env) that give the worker spec.output.signing's key: the Secret's signing files mounted
    read-only at SIGNING_DIR (the certificate files optional) and a variable naming the folder. The key stays in the
    Secret and the mounted files, never in an environment variable or an object the operator writes. Mode 0440 with the
    pod's fsGroup the worker's group: readable by the worker, by nobody else in the pod."""
    signing = spec.output.signing
    if signing is None:
        return [], [], []
    files = (worker_protocol.SIGNING_PRIVATE_KEY, worker_protocol.SIGNING_CERTIFICATE, worker_protocol.SIGNING_CERTIFICATE_CHAIN)
    mount = {"name": SIGNING_VOLUME, "mountPath": worker_protocol.SIGNING_DIR, "readOnly": True}
    items = [{"key": worker_protocol.SIGNING_PRIVATE_KEY, "path": worker_protocol.SIGNING_PRIVATE_KEY}]
    if signing.method == "certificate":
        items += [{"key": name, "path": name} for name in files[1:]]
    # optional: certificate-chain.pem may be absent, and a missing Secret or key is named by the worker in preflight
    # (AccessDenied, the Secret and the file), not left as a pod that never starts.
    volume = {"name": SIGNING_VOLUME, "secret": {"secretName": signing.key_secret, "items": items, "defaultMode": 0o440, "optional": True}}
    return [mount], [volume], [{"name": worker_protocol.ENV_OUTPUT_SIGNING_DIR, "value": worker_protocol.SIGNING_DIR}]


def oci_auth(spec: api.CompressionJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes, env) that give the worker an oci:// output's registry Secret: the dockerconfigjson mounted
    read-only at OCI_AUTH_DIR and a variable naming the file. The values stay in the Secret and the mounted file, never
    in an environment variable or an object the operator writes."""
    oci = spec.output.oci
    if oci is None or not oci.credentials_secret or not spec.output.uri.startswith("oci://"):
        return [], [], []
    key = worker_protocol.OCI_AUTH_KEY
    mount = {"name": OCI_AUTH_VOLUME, "mountPath": worker_protocol.OCI_AUTH_DIR, "readOnly": True}
    volume = {"name": OCI_AUTH_VOLUME, "secret": {"secretName": oci.credentials_secret, "items": [{"key": key, "path": key}], "defaultMode": 0o444}}
    return [mount], [volume], [{"name": worker_protocol.ENV_OUTPUT_OCI_AUTH, "value": f"{worker_protocol.OCI_AUTH_DIR}/{key}"}]


# ---------------------------------------------------------------------------------------------
# Claims: the model's, the output's, the task source's
# ---------------------------------------------------------------------------------------------


def volume_mount(ref: api.VolumeRef, volume: str, read_only: bool) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": volume, "mountPath": ref.mount_path, "readOnly": read_only}
    if ref.sub_path:
        mount["subPath"] = ref.sub_path
    return mount


def pvc_volume(ref: api.VolumeRef, volume: str, read_only: bool) -> dict[str, Any]:
    return {"name": volume, "persistentVolumeClaim": {"claimName": ref.claim_name, "readOnly": read_only}}


def task_source_mounts(spec: api.CompressionJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) that give the worker spec.evaluation.taskSource: a ConfigMap at TASK_CONFIG_MAP_MOUNT or
    a claim at its mountPath, both read-only (lm-eval only reads them); an S3 prefix needs none (the worker downloads it)."""
    source = spec.evaluation.task_source
    if source is None or not spec.evaluation.enabled or not spec.evaluation.tasks:
        return [], []
    if source.config_map is not None:
        mount = {"name": TASKS_VOLUME, "mountPath": api.TASK_CONFIG_MAP_MOUNT, "readOnly": True}
        return [mount], [{"name": TASKS_VOLUME, "configMap": {"name": source.config_map}}]
    if source.volume is not None:
        return [volume_mount(source.volume, TASKS_VOLUME, read_only=True)], [pvc_volume(source.volume, TASKS_VOLUME, read_only=True)]
    return [], []


# ---------------------------------------------------------------------------------------------
# The model cache
# ---------------------------------------------------------------------------------------------


def cache_claim(spec: api.CompressionJobSpec, config: OperatorConfig) -> str | None:
    """The model cache claim this job mounts: the spec's, else the operator's; none when disabled or for a volume folder."""
    setting = spec.model.cache
    if setting is not None and not setting.enabled:
        return None
    if api.model_uri_scheme(spec.model.uri) == "file":
        return None  # used in place, never cached
    return (setting.claim_name if setting is not None else None) or config.cache_claim or None


def cache_refusal(spec: api.CompressionJobSpec, config: OperatorConfig) -> str | None:
    """Why this job cannot run as written: it asks for the model cache (spec.model.cache.enabled true) and there is
    no claim to mount, neither its own nor the operator's. None when it can (a volume folder is never cached, so
    it never needs one)."""
    setting = spec.model.cache
    if setting is None or not setting.enabled or api.model_uri_scheme(spec.model.uri) == "file":
        return None
    if setting.claim_name or config.cache_claim:
        return None
    return (
        "spec.model.cache.enabled is true, but there is no model cache to use: spec.model.cache.claimName is not set and "
        "this operator has no default cache claim (chart cache.enabled with cache.existingClaim or cache.storageClass). "
        "Set spec.model.cache.claimName to a ReadWriteMany PersistentVolumeClaim in this namespace, have the chart's cache "
        "installed (docs/install.md, Model cache), or set spec.model.cache.enabled: false to download into the job's scratch"
    )


def with_cache(pod: dict[str, Any], container: dict[str, Any], spec: api.CompressionJobSpec, config: OperatorConfig) -> None:
    """Mount the model cache claim read-write, tell the worker where it is, and make the worker's UID's group own it.

    fsGroupChangePolicy OnRootMismatch: the kubelet re-owns the volume only when its root is not the group's yet,
    not every file of a terabyte cache at every pod start.
    """
    claim = cache_claim(spec, config)
    if claim is None:
        return
    container.setdefault("volumeMounts", []).append({"name": CACHE_VOLUME, "mountPath": worker_protocol.CACHE_DIR})
    pod.setdefault("volumes", []).append({"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    container["env"].append({"name": worker_protocol.ENV_CACHE_DIR, "value": worker_protocol.CACHE_DIR})
    container["env"].append({"name": worker_protocol.ENV_CACHE_CLAIM, "value": claim})
    if config.cache_max_bytes:
        container["env"].append({"name": worker_protocol.ENV_CACHE_MAX_BYTES, "value": str(config.cache_max_bytes)})
    pod["securityContext"] = pod["securityContext"] | {"fsGroup": worker_protocol.WORKER_UID, "fsGroupChangePolicy": "OnRootMismatch"}
