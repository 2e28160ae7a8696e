"""S3 clients for the three places a job touches (model, calibration, output), and what their errors mean.

Owns: turning spec S3Access + the pod's environment into a boto3 client (endpoint, region,
path-style addressing, credentials from the per-location env prefix or else the standard AWS
chain: env, profile, IRSA/workload identity, instance role), parsing s3:// URIs, and mapping
botocore failures to the worker's errors with messages that say what to change.
Must not: import torch or anything heavy; the planner and the demo import this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kompress_api.v1alpha1 import S3Access
from kompress_api.worker_protocol import S3_ENV_PREFIX

from kompress_job.io import credentials
from kompress_job.errors import AccessDenied, InvalidSpec, KompressError, StorageUnreachable

# Codes S3 and S3-compatible stores use when the caller is not allowed (bad key, bad signature...).
_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "403",
    "401",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_BUCKET_MISSING_CODES = {"NoSuchBucket"}
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500", "502", "504"}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # an object key, or a prefix without leading or trailing slash

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def child(self, name: str) -> str:
        """The key of `name` under this location taken as a folder."""
        return f"{self.key}/{name}" if self.key else name


def parse_s3_uri(uri: str) -> S3Location:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return S3Location(bucket=bucket, key=key.strip("/"))


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def credentials_from_env(location: str, env: Mapping[str, str], prefix: str | None = None) -> Credentials | None:
    """The credentials the operator passed for `location` (model, calibration, output), if any. `prefix` "": the
    standard AWS_* variables instead (a laptop's `kompress run`). Read by kompress_job.io.credentials' rule (surrounding
    whitespace stripped, control characters refused), which boto3's own chain would not apply."""
    prefix = S3_ENV_PREFIX[location] if prefix is None else prefix
    where = f"the {location}'s s3.credentialsSecret" if prefix else "the standard AWS variables"
    key_id = credentials.read(env, prefix + "AWS_ACCESS_KEY_ID", where=where)
    secret = credentials.read(env, prefix + "AWS_SECRET_ACCESS_KEY", where=where, in_header=False)
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        missing = prefix + ("AWS_ACCESS_KEY_ID" if not key_id else "AWS_SECRET_ACCESS_KEY")
        raise AccessDenied(f"incomplete S3 credentials for the {location}: {missing} is not set; the Secret needs both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return Credentials(key_id, secret, credentials.read(env, prefix + "AWS_SESSION_TOKEN", where=where))


def make_client(
    access: S3Access | None,
    env: Mapping[str, str],
    location: str,
    *,
    max_attempts: int = 5,
    connect_timeout: float = 10.0,
    read_timeout: float = 120.0,
    max_pool_connections: int = 32,
) -> Any:
    """A boto3 S3 client for `location` ("model", "calibration" or "output").

    Credentials: the per-location variables (KOMPRESS_<LOCATION>_S3_AWS_*) when present; a
    credentialsSecret in the spec without them is a configuration error; otherwise the standard AWS_*
    variables, then boto3's own chain (profile, IRSA / workload identity, instance role).
    """
    import boto3
    from botocore.config import Config

    access = access or S3Access()
    creds = credentials_from_env(location, env)
    if creds is None and access.credentials_secret:
        prefix = S3_ENV_PREFIX[location]
        raise AccessDenied(
            f"the {location}'s s3.credentialsSecret is '{access.credentials_secret}', but {prefix}AWS_ACCESS_KEY_ID is not set "
            f"in the worker's environment: the Secret must hold keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if creds is None:
        creds = credentials_from_env(location, env, prefix="")  # else boto3's chain: profile, IRSA, instance role
    config = Config(
        # Bodies are not hashed a second time for the signature: every upload carries an x-amz-checksum-sha256
        # header, which is signed and which the store checks the body against (over http too).
        s3={"addressing_style": "path" if access.path_style else "auto", "payload_signing_enabled": False},
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        # We send SHA-256 checksums ourselves where we want them; no extra CRC pass over every byte.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    region = access.region or session.region_name or "us-east-1"
    kwargs: dict[str, Any] = {"region_name": region, "config": config}
    if access.endpoint:
        kwargs["endpoint_url"] = access.endpoint
    if creds is not None:
        kwargs.update(aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key, aws_session_token=creds.session_token)
    try:
        return session.client("s3", **kwargs)
    except ValueError as err:  # botocore: "Invalid endpoint: ...", "Provided region_name ... doesn't match a supported format"
        raise InvalidSpec(f"the {location}'s S3 settings are refused (s3.endpoint {access.endpoint or 'unset'}, s3.region {region}): {err}") from None


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(status) if status else None
    return None


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in _NOT_FOUND_CODES


def storage_error(
    exc: BaseException,
    *,
    what: str,
    uri: str,
    not_found: type[KompressError] | None = None,
    endpoint: str | None = None,
    bucket_level: bool = False,
) -> KompressError | None:
    """The worker error for a botocore failure while touching `what` at `uri`, or None if it isn't one.

    `not_found`: the error for a missing key or bucket (ModelNotFound, CalibrationNotFound); None
    means a missing bucket is AccessDenied (the output) and a missing key is not an error here.
    `bucket_level`: the call addressed the bucket itself (HeadBucket), so a bare 404 means no bucket.
    """
    from botocore import exceptions

    where = endpoint or (getattr(exc, "kwargs", {}) or {}).get("endpoint_url") or "AWS S3"
    if isinstance(exc, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError, exceptions.CredentialRetrievalError)):
        return AccessDenied(f"no S3 credentials for the {what} ({uri}): set s3.credentialsSecret or give the worker's ServiceAccount workload identity")
    if isinstance(exc, (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError, exceptions.ConnectionClosedError, exceptions.ProxyConnectionError)):
        return StorageUnreachable(f"cannot reach the S3 endpoint {where} for the {what} ({uri}): {type(exc).__name__}; check s3.endpoint and the network path from the worker")
    if isinstance(exc, exceptions.SSLError):
        return StorageUnreachable(f"TLS to the S3 endpoint {where} failed for the {what} ({uri}); check s3.endpoint (http vs https) and its certificate")
    if isinstance(exc, exceptions.ClientError):
        code = error_code(exc) or "unknown"
        if bucket_level and code in _NOT_FOUND_CODES:
            code = "NoSuchBucket"
        if bucket_level and code == "400":
            # A HEAD carries no error body: on a bucket this is a malformed auth (bad session token, wrong region).
            return AccessDenied(f"the S3 store rejected the request for the {what} ({uri}) with HTTP 400; check the credentials (session token) and s3.region")
        if code in _DENIED_CODES or code in ("InvalidToken", "AuthorizationHeaderMalformed"):
            return AccessDenied(f"the S3 store refused the credentials for the {what} ({uri}): {code}; check the access key, secret and the bucket policy")
        if code in _BUCKET_MISSING_CODES:
            bucket = parse_s3_uri(uri).bucket if uri.startswith("s3://") else uri
            message = f"the bucket '{bucket}' does not exist ({what}: {uri}); create it or fix the URI"
            return not_found(message) if not_found is not None else AccessDenied(message)
        if code in _NOT_FOUND_CODES and not_found is not None:
            return not_found(f"nothing at {uri} ({what})")
        if code in _UNAVAILABLE_CODES:
            return StorageUnreachable(f"the S3 store at {where} is unavailable for the {what} ({uri}): {code}")
    return None


def missing_object_message(client: Any, uri: str, what: str) -> str:
    """Why a HEAD of an object under `uri` found nothing: the bucket itself may be missing (HEAD can't say)."""
    from botocore.exceptions import ClientError

    loc = parse_s3_uri(uri)
    try:
        client.head_bucket(Bucket=loc.bucket)
    except ClientError as exc:
        if error_code(exc) in _NOT_FOUND_CODES | _BUCKET_MISSING_CODES:
            return f"the bucket '{loc.bucket}' does not exist ({what}: {uri}); create it or fix the URI"
        raise
    return f"nothing at {uri} ({what})"


def raise_storage_error(exc: BaseException, **kwargs: Any) -> None:
    """Re-raise `exc` as the worker error it means, or unchanged when it means nothing specific."""
    mapped = storage_error(exc, **kwargs)
    if mapped is not None:
        raise mapped from None
    raise exc
