"""Where a CompressionJob publishes, kompress.dev/v1alpha1: spec.output.

Owns: Output and its publishing settings (HubOutput for hf://, Signing), the grammar of every output URI
(s3://, file://, hf://ORG/NAME, oci://REGISTRY/REPOSITORY:TAG) and the messages of the rules that hold
them, with their local mirror (hub_output_uri_problem).
kompress_api.v1alpha1 re-exports them: import them from there.
Must not: publish or sign anything (the worker's outputs do).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import field_validator, model_validator

from kompress_api._model import ApiModel, api_field, re2_search
from kompress_api.podspec import DNS_SUBDOMAIN_RE
from kompress_api.v1alpha1_access import OciAccess, S3Access, SecretKeyRef, VolumeRef

OUTPUT_URI_RE = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+|oci://.+|hf://.+)$"
# hf://ORG/NAME, a Hub repository id as huggingface_hub validates one (letters, digits, '.', '_', '-'; no '--' or '..', not
# ending in .git); the name leaves room for `.rejected` (the repository a model that missed the quality gate goes to)
# within the Hub's 96 characters. A branch is spec.output.huggingFace.revision, not part of the URI.
HUB_NAME_MAX = 96 - len(".rejected")
HUB_OUTPUT_URI_RE = r"^hf://[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?/[A-Za-z0-9]([A-Za-z0-9._-]{0,%d}[A-Za-z0-9])?$" % (HUB_NAME_MAX - 2)
HUB_OUTPUT_URI_MESSAGE = (
    "spec.output.uri must be hf://ORG/NAME for the Hugging Face Hub: an organization or user and a repository name of letters, "
    f"digits, '.', '_' or '-' (starting and ending with a letter or digit, no '--' or '..', not ending in .git; the name at most "
    f"{HUB_NAME_MAX} characters); the branch goes in spec.output.huggingFace.revision"
)
HUB_OUTPUT_URI_RULE = f"!self.startsWith('hf://') || (self.matches('{HUB_OUTPUT_URI_RE}') && !self.contains('--') && !self.contains('..') && !self.endsWith('.git'))"
# A git branch name the Hub accepts: no '..', no trailing '/' or '.lock', not a ref path, not a commit id.
HUB_BRANCH_RE = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
# oci://REGISTRY/REPOSITORY:TAG, the distribution spec's grammar (github.com/distribution/reference): a registry host that
# is one (a dot or a port in it, or localhost: `oci://team/model:v1` is no host), lowercase path components, and a tag.
# The tag leaves room for `.rejected` (the tag a model that missed the quality gate gets), which is a tag too.
OCI_REGISTRY_RE = r"(localhost|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?([.][A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+)(:[0-9]{1,5})?|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?:[0-9]{1,5}"
OCI_REPOSITORY_RE = r"[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*"
OCI_TAG_MAX = 119
OCI_TAG_RE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}" % (OCI_TAG_MAX - 1)
OCI_OUTPUT_URI_RE = f"^oci://({OCI_REGISTRY_RE})/({OCI_REPOSITORY_RE}):({OCI_TAG_RE})$"
OCI_OUTPUT_URI_MESSAGE = (
    "spec.output.uri must be oci://REGISTRY/REPOSITORY:TAG for an OCI image: a registry host (with a dot or a port, or localhost, "
    "e.g. ghcr.io or registry.example:5000), a lowercase repository path (a-z, 0-9, '.', '_', '-' between them), and a tag of at most "
    f"{OCI_TAG_MAX} letters, digits, '_', '.' or '-' (not a digest: the job pushes a tag and records the image's digest)"
)


def hub_output_uri_problem(uri: str) -> str | None:
    """HUB_OUTPUT_URI_MESSAGE when `uri` is an hf:// output the CRD refuses (HUB_OUTPUT_URI_RULE), else None."""
    if not uri.startswith("hf://"):
        return None
    if not re2_search(HUB_OUTPUT_URI_RE, uri) or "--" in uri or ".." in uri or uri.endswith(".git"):
        return HUB_OUTPUT_URI_MESSAGE
    return None


class HubOutput(ApiModel):
    """Where and how an hf:// output is committed on the Hugging Face Hub (or a mirror)."""

    endpoint: str | None = api_field(
        None,
        description="Hub endpoint to publish to, e.g. https://hub.example for a private Hub. Empty means https://huggingface.co (never the model's mirror).",
        pattern=r"^https?://.+$",
        max_length=1024,
    )
    token_secret: SecretKeyRef | None = api_field(
        None,
        description=(
            "Secret key holding a Hugging Face token with write access to the repository (or the right to create it), passed "
            "to the worker by reference as KOMPRESS_OUTPUT_HF_TOKEN. Without it the worker uses HF_TOKEN (kompress run on a laptop)."
        ),
    )
    private: bool = api_field(True, description="create the repository private (only when the job creates it; an existing repository keeps its visibility). Default true.")
    revision: str = api_field(
        "main",
        description=(
            "the branch to commit to, created from main when missing. Every file goes in one commit whose id is recorded in "
            "status.result.destination. Default main."
        ),
        pattern=HUB_BRANCH_RE,
        rules=[
            (r"!self.matches(r'\.\.|/$|\.lock$|^refs/')", "spec.output.huggingFace.revision must be a branch name: no '..', no trailing '/' or '.lock', not a refs/ path"),
            (r"!self.matches(r'^[0-9a-f]{40}$')", "spec.output.huggingFace.revision must be a branch name, not a commit id: a commit cannot be committed to"),
        ],
        max_length=255,
        schema_default="main",
    )


class Signing(ApiModel):
    """OpenSSF model signing (the model-signing library) of every published file, with a key the cluster holds."""

    key_secret: str = api_field(
        description=(
            "name of a Secret in the job's namespace, mounted read-only into the worker: private-key.pem (an elliptic-curve "
            "private key, PEM, unencrypted: P-256, P-384 or P-521); with method certificate also certificate.pem (the signing "
            "certificate, for that key) and optionally certificate-chain.pem (its intermediates and root). Never copied anywhere."
        ),
        pattern=DNS_SUBDOMAIN_RE,
        max_length=253,
    )
    method: Literal["key", "certificate"] = api_field(
        "key",
        description=(
            "key: a signature verified with the public key (kompress verify --key); certificate: the signature carries the "
            "certificate chain, verified against a trusted root (kompress verify --certificate-chain). Keyless Sigstore signing "
            "needs its public services (Fulcio, Rekor) and an OIDC identity, and is not offered. Default key."
        ),
        schema_default="key",
    )


OUTPUT_NEEDS_VOLUME = (
    "spec.output.uri is a file:// path but spec.output.volume is not set: in a cluster the checkpoint would be written "
    "inside the worker's container and lost; mount a PersistentVolumeClaim there, or publish to s3:// (kompress run on "
    "a laptop needs no volume)"
)
OUTPUT_INSIDE_VOLUME = "spec.output.uri must lie inside spec.output.volume.mountPath, or the checkpoint is not written to the volume"
HUB_SETTINGS_NEED_HUB = "spec.output.huggingFace applies to an hf:// uri only"
OCI_SETTINGS_NEED_OCI = "spec.output.oci applies to an oci:// uri only"


class Output(ApiModel):
    """Where the compressed checkpoint is published."""

    # The first rule holds in a cluster only: the typed model (and so `kompress run`) accepts a file:// output
    # without a volume, which on a laptop is simply a folder.
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("!self.uri.startsWith('file://') || has(self.volume)", OUTPUT_NEEDS_VOLUME),
        ("!has(self.volume) || !self.uri.startsWith('file://') || (self.uri + '/').startsWith('file://' + self.volume.mountPath.find('^.*[^/]') + '/')",
         OUTPUT_INSIDE_VOLUME),
        ("!has(self.huggingFace) || self.uri.startsWith('hf://')", HUB_SETTINGS_NEED_HUB),
        ("!has(self.oci) || self.uri.startsWith('oci://')", OCI_SETTINGS_NEED_OCI),
    ]

    uri: str = api_field(
        description=(
            "s3://BUCKET/PREFIX (any S3-compatible store), file:///PATH (local runs, or a mounted volume), hf://ORG/NAME (a Hugging "
            "Face Hub repository: every file in one commit, see huggingFace) or oci://REGISTRY/REPOSITORY:TAG (an OCI image in KServe's "
            "modelcar layout: the files under /models, one layer each; the tag is pushed last and the image's digest recorded in "
            "status.result.destination). The manifest kompress.json is written last: a prefix without it is never a finished model."
        ),
        rules=[
            (f"self.matches('{OUTPUT_URI_RE}')", "spec.output.uri must be s3://BUCKET/PREFIX, file:///PATH, hf://ORG/NAME or oci://REGISTRY/REPOSITORY:TAG"),
            (HUB_OUTPUT_URI_RULE, HUB_OUTPUT_URI_MESSAGE),
            (f"!self.startsWith('oci://') || self.matches('{OCI_OUTPUT_URI_RE}')", OCI_OUTPUT_URI_MESSAGE),
        ],
        max_length=1024,
    )
    s3: S3Access | None = api_field(None, description="S3 connection settings for s3:// URIs.")
    hugging_face: HubOutput | None = api_field(None, description="Hub settings for hf:// URIs: endpoint, the write token's Secret (by reference), private, the branch.")
    oci: OciAccess | None = api_field(None, description="registry settings for oci:// URIs: the credentials Secret (by reference), plain HTTP for a test registry.")
    volume: VolumeRef | None = api_field(None, description="a volume to mount for file:// URIs (mounted read-write).")
    signing: Signing | None = api_field(
        None,
        description=(
            "sign every published file with OpenSSF model signing (model-signing): the signature model.sig goes beside the model "
            "at any destination, and kompress verify checks it."
        ),
    )
    overwrite: bool = api_field(
        False,
        description=(
            "replace a finished model already at the destination. Default false: the job fails rather than overwrite (for hf://, "
            "an existing repository whose branch holds any file)."
        ),
    )

    @field_validator("uri")
    @classmethod
    def _hub_repository(cls, uri: str) -> str:
        # The second rule of `uri` (a compound CEL rule, which the base model does not mirror).
        problem = hub_output_uri_problem(uri)
        if problem:
            raise ValueError(problem)
        return uri

    @field_validator("uri")
    @classmethod
    def _oci_reference(cls, uri: str) -> str:
        # The second rule of `uri` (a compound CEL rule, which the base model does not mirror).
        if uri.startswith("oci://") and not re2_search(OCI_OUTPUT_URI_RE, uri):
            raise ValueError(OCI_OUTPUT_URI_MESSAGE)
        return uri

    @model_validator(mode="after")
    def _inside_its_volume(self) -> "Output":
        # The second and third of cel_rules (the first is for clusters only).
        if self.volume is not None and self.uri.startswith("file://"):
            if not (self.uri[len("file://") :] + "/").startswith(self.volume.mount_path.rstrip("/") + "/"):
                raise ValueError(OUTPUT_INSIDE_VOLUME)
        if self.hugging_face is not None and not self.uri.startswith("hf://"):
            raise ValueError(HUB_SETTINGS_NEED_HUB)
        if self.oci is not None and not self.uri.startswith("oci://"):
            raise ValueError(OCI_SETTINGS_NEED_OCI)
        return self
