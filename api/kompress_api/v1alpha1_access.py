"""How the worker reaches what a CompressionJob names, kompress.dev/v1alpha1: stores, Secrets and volumes.

Owns: the connection settings shared by the spec's parts (S3Access, HubAccess, OciAccess), references to
a Secret's key (SecretKeyRef) and mounted PersistentVolumeClaims (VolumeRef), with their docs, bounds and
CEL rules. The model, the calibration data, the output and the evaluation tasks use them;
kompress_api.v1alpha1 re-exports them: import them from there.
Must not: know which part of the spec uses them, or hold any credential's value (only references).
"""

from __future__ import annotations

from kompress_api._model import ApiModel, api_field
from kompress_api.paths import WORKER_PATHS
from kompress_api.podspec import DNS_SUBDOMAIN_RE, WORKER_PATH_RE

ABS_PATH_RE = r"^/.*$"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace. Kompress never copies the value anywhere."""

    name: str = api_field(description="name of the Secret, in the CompressionJob's namespace.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
    key: str = api_field(description="key inside the Secret whose value is used.", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class S3Access(ApiModel):
    """How to reach an S3 or S3-compatible store (MinIO, Ceph, GCS interop, R2...)."""

    endpoint: str | None = api_field(None, description="endpoint URL for S3-compatible stores, e.g. https://minio.example:9000. Empty means AWS S3.", pattern=r"^https?://.+$", max_length=1024)
    region: str | None = api_field(None, description="region name, e.g. us-east-1. Empty means the credential chain's default.", max_length=64)
    path_style: bool = api_field(False, description="use path-style addressing (https://host/bucket/key), which most S3-compatible stores need. Default false.")
    credentials_secret: str | None = api_field(
        None,
        description=(
            "name of a Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optional AWS_SESSION_TOKEN), "
            "passed to the worker by reference. Leave empty to use the standard AWS credential chain (workload identity, IRSA)."
        ),
        pattern=DNS_SUBDOMAIN_RE,
        max_length=253,
    )


class HubAccess(ApiModel):
    """How to reach the Hugging Face Hub or a mirror of it."""

    endpoint: str | None = api_field(None, description="Hub endpoint (HF_ENDPOINT) for mirrors, e.g. https://hf-mirror.example. Empty means huggingface.co.", pattern=r"^https?://.+$", max_length=1024)
    token_secret: SecretKeyRef | None = api_field(None, description="Secret key holding a Hugging Face token (HF_TOKEN), for gated or private repositories.")


class OciAccess(ApiModel):
    """How to reach the OCI registry of an oci:// output."""

    credentials_secret: str | None = api_field(
        None,
        description=(
            "name of a Secret of type kubernetes.io/dockerconfigjson (key .dockerconfigjson, as `kubectl create secret docker-registry` "
            "makes it) with the registry's credentials, mounted read-only into the worker by reference. Empty: push anonymously."
        ),
        pattern=DNS_SUBDOMAIN_RE,
        max_length=253,
    )
    insecure: bool = api_field(False, description="talk plain HTTP to the registry (a test registry on loopback or inside the cluster). Default false: HTTPS, certificates checked.")


class VolumeRef(ApiModel):
    """A PersistentVolumeClaim mounted into the worker."""

    claim_name: str = api_field(description="name of the PersistentVolumeClaim.", pattern=DNS_SUBDOMAIN_RE, max_length=253)
    mount_path: str = api_field(
        description=f"absolute path where the claim is mounted in the worker, e.g. /models. Not on, above or inside {', '.join(WORKER_PATHS)} (the worker's own).",
        pattern=ABS_PATH_RE,
        rules=[(f"!self.matches(r'{WORKER_PATH_RE}')", f"mountPath must not be on, above or inside {', '.join(WORKER_PATHS)}: the worker mounts its own volumes there")],
        max_length=1024,
    )
    sub_path: str | None = api_field(
        None,
        description="relative path inside the volume to mount instead of its root (no '..').",
        rules=[
            ("!self.startsWith('/')", "subPath must be a relative path inside the volume, not an absolute one"),
            (r"!self.matches(r'(^|/)\.\.(/|$)')", "subPath must not contain '..': it must stay inside the volume"),
        ],
        max_length=1024,
    )
    read_only: bool = api_field(True, description="mount read-only. Default true.")
