"""What a CompressionJob reads, kompress.dev/v1alpha1: the model to compress and its calibration data.

Owns: spec.model (ModelSource, with the model cache setting) and spec.calibration (Calibration): their
fields, docs, bounds, defaults and CEL rules, and the local mirror of those rules.
kompress_api.v1alpha1 re-exports them: import them from there.
Must not: fetch or read anything (the worker does, with these as its instructions).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from kompress_api._model import ApiModel, api_field
from kompress_api.podspec import DNS_SUBDOMAIN_RE
from kompress_api.v1alpha1_access import HubAccess, S3Access, VolumeRef

MODEL_URI_RE = r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+|/.+)$"
CALIBRATION_URI_RE = r"^(builtin://[a-z0-9-]+|hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|file:///.+|/.+)$"


class ModelCacheSetting(ApiModel):
    """The model cache: a ReadWriteMany volume shared by jobs, so no model version is downloaded twice."""

    enabled: bool = api_field(True, description="fetch the model through the cache (the operator's default claim, or claimName); with neither, the job fails before any Job (NoCacheClaim). Default true; false downloads into the job's scratch as without a cache.")
    claim_name: str | None = api_field(None, description="a ReadWriteMany PersistentVolumeClaim to use as the cache instead of the operator's default (chart cache.existingClaim).", pattern=DNS_SUBDOMAIN_RE, max_length=253)


class ModelSource(ApiModel):
    """The model to compress."""

    # A revision on an S3 prefix or a volume would be ignored, and the user would believe the model pinned.
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("!has(self.revision) || self.uri.startsWith('hf://')", "spec.model.revision applies to hf:// models only: an S3 prefix or a volume has no revisions"),
    ]

    uri: str = api_field(
        description=(
            "where the model is: hf://ORG/NAME (Hugging Face Hub), s3://BUCKET/PREFIX (a folder with config.json and "
            "*.safetensors), file:///PATH or /PATH (a folder on a mounted volume)."
        ),
        rules=[(f"self.matches('{MODEL_URI_RE}')", "spec.model.uri must be hf://ORG/NAME, s3://BUCKET/PREFIX, file:///PATH or an absolute /PATH")],
        max_length=1024,
    )
    revision: str | None = api_field(None, description="Hub revision (branch, tag or commit) to fetch. The resolved commit is recorded in status.result and the manifest. Default main.", max_length=255)
    trust_remote_code: bool = api_field(False, description="allow the model repository's own Python code to run (transformers trust_remote_code). Default false.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = api_field("auto", description="dtype the model is loaded in for compression: auto takes the checkpoint's. Default auto.")
    volume: VolumeRef | None = api_field(None, description="a volume to mount for file:// or path URIs.")
    s3: S3Access | None = api_field(None, description="S3 connection settings for s3:// URIs.")
    hugging_face: HubAccess | None = api_field(None, description="Hub connection settings for hf:// URIs.")
    cache: ModelCacheSetting | None = api_field(None, description="the model cache for hf:// and s3:// models (a volume folder is used in place). Default: the operator's cache claim when it has one.")

    @model_validator(mode="after")
    def _revision_on_the_hub_only(self) -> "ModelSource":
        _hub_only(self.revision, self.uri, "spec.model.revision applies to hf:// models only: an S3 prefix or a volume has no revisions")
        return self


def _hub_only(revision: str | None, uri: str, message: str) -> None:
    # The same rule as the cel_rules of ModelSource and Calibration, so a manifest the API server would refuse is refused locally too.
    if revision is not None and not uri.startswith("hf://"):
        raise ValueError(message)


class Calibration(ApiModel):
    """Calibration data: the text the compression algorithms observe."""

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("!has(self.revision) || self.uri.startsWith('hf://')", "spec.calibration.revision applies to hf:// datasets only"),
    ]

    uri: str = api_field(
        "builtin://chatterbot",
        description=(
            "where the data is: builtin://chatterbot (English dialogues shipped with the worker image, BSD licence), "
            "hf://ORG/NAME (a Hub dataset), s3://BUCKET/KEY.jsonl, file:///PATH.jsonl or /PATH.jsonl. JSONL rows hold "
            "plain text or chat messages. Default builtin://chatterbot."
        ),
        rules=[(f"self.matches('{CALIBRATION_URI_RE}')", "spec.calibration.uri must be builtin://NAME, hf://ORG/NAME, s3://BUCKET/KEY, file:///PATH or /PATH")],
        schema_default="builtin://chatterbot",
        max_length=1024,
    )
    revision: str | None = api_field(
        None,
        description="for hf:// datasets: the branch, tag or commit to read. It is resolved to a commit once, before any work, and recorded in the manifest (calibration.resolvedRevision). Default main.",
        max_length=255,
    )
    split: str | None = api_field(None, description="dataset split for hf:// datasets, e.g. train_sft. Default train.", max_length=128)
    column: str | None = api_field(None, description="the field holding text or chat messages. Default: 'messages' if present, else 'text'.", max_length=128)
    format: Literal["auto", "text", "messages"] = api_field("auto", description="text: plain strings; messages: chat turns rendered with the model's chat template; auto: decided per row. Default auto.", schema_default="auto")
    samples: int = api_field(512, description="number of calibration samples. 512 is a good start for large models. Default 512.", ge=1, le=100000, schema_default=512)
    max_sequence_length: int = api_field(2048, description="tokens per sample, longer samples are truncated. Default 2048.", ge=8, le=131072, schema_default=2048)
    seed: int = api_field(42, description="shuffle seed, so a re-run picks the same samples. Default 42.", ge=0, schema_default=42)
    s3: S3Access | None = api_field(None, description="S3 connection settings for s3:// URIs.")
    hugging_face: HubAccess | None = api_field(None, description="Hub connection settings for hf:// URIs.")

    @model_validator(mode="after")
    def _revision_on_the_hub_only(self) -> "Calibration":
        _hub_only(self.revision, self.uri, "spec.calibration.revision applies to hf:// datasets only")
        return self
