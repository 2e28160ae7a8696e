"""`kompress verify URI`: a published model checked where it is, against its manifest and its signature.

    kompress verify URI [--key PUBLIC.pem | --certificate-chain ROOT.pem ...] [--require-signature]
                        [--s3-endpoint URL] [--s3-region R] [--s3-path-style] [--hf-endpoint URL] [--oci-insecure] [--json]

URI: file:///PATH, s3://BUCKET/PREFIX, hf://ORG/NAME[@REVISION], oci://REGISTRY/REPOSITORY@sha256:DIGEST or :TAG
(status.result.destination.reference as is), or any
scheme a reader was registered for (kompress_job.io.published). Checks, in order: kompress.json is there and is a
manifest of a format it reads (outputs.manifest.read: 1 or 2); the files there are exactly the ones it lists (plus
itself and the signature; the Hub's own .gitattributes is allowed: a reader's own_files), each with the manifest's
size and SHA-256; the signature model.sig, when the model has one, verified with the public key or against the
certificate chain given (when neither is given it is reported as not checked; --require-signature makes a missing or
unchecked signature a failure). One line on the outcome, naming the files that differ. Exit codes: VerifyExit.
Must not: write to the destination.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from kompress_api.exit_codes import ExitCode
from kompress_api.v1alpha1 import S3Access

from kompress_job.errors import KompressError, ModelNotFound, one_line
from kompress_job.io.checksums import sha256_file
from kompress_job.io.published import ReaderOptions, open_reader
from kompress_job.io.storage import MANIFEST, SIGNATURE
from kompress_job.outputs import signing
from kompress_job.outputs.manifest import ManifestError
from kompress_job.outputs.manifest import read as read_manifest


class VerifyExit(Enum):
    OK = (0, "Verified")
    USAGE = (ExitCode.USAGE.code, ExitCode.USAGE.reason)
    NOT_A_MODEL = (40, "NotAFinishedModel")
    CHECKSUM_MISMATCH = (41, "ChecksumMismatch")
    SIGNATURE_INVALID = (42, "SignatureInvalid")
    SIGNATURE_MISSING = (43, "SignatureMissing")
    ACCESS_DENIED = (ExitCode.ACCESS_DENIED.code, ExitCode.ACCESS_DENIED.reason)
    UNREACHABLE = (ExitCode.STORAGE_UNREACHABLE.code, ExitCode.STORAGE_UNREACHABLE.reason)
    ERROR = (ExitCode.INTERNAL.code, "VerifyError")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


@dataclass
class Outcome:
    exit: VerifyExit
    message: str
    files: int = 0
    signature: str = "none"  # none | verified | unchecked

    def line(self) -> str:
        return ("verified: " if self.exit is VerifyExit.OK else f"FAILED ({self.exit.reason}): ") + one_line(self.message)

    def wire(self) -> dict[str, Any]:
        return {"ok": self.exit is VerifyExit.OK, "exitCode": self.exit.code, "reason": self.exit.reason, "message": one_line(self.message), "files": self.files, "signature": self.signature}


class _Failed(Exception):
    def __init__(self, exit: VerifyExit, message: str) -> None:
        super().__init__(message)
        self.exit = exit
        self.message = message


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="file:///PATH, s3://BUCKET/PREFIX, hf://ORG/NAME[@REVISION] or oci://REGISTRY/REPOSITORY@DIGEST (status.result.destination.reference)")
    anchor = parser.add_mutually_exclusive_group()
    anchor.add_argument("--key", type=Path, help="the signer's public key (PEM), for a signature made with spec.output.signing.method key")
    anchor.add_argument("--certificate-chain", type=Path, action="append", help="a trusted root (PEM; repeatable), for method certificate")
    parser.add_argument("--require-signature", action="store_true", help="fail unless the model has a signature and it verifies")
    parser.add_argument("--s3-endpoint", help="endpoint of an S3-compatible store (credentials: the AWS_* variables or chain)")
    parser.add_argument("--s3-region", help="S3 region")
    parser.add_argument("--s3-path-style", action="store_true", help="path-style S3 addressing (MinIO, Ceph...)")
    parser.add_argument("--hf-endpoint", help="Hub endpoint (default $HF_ENDPOINT, else https://huggingface.co; token: $HF_TOKEN)")
    parser.add_argument("--oci-insecure", action="store_true", help="plain HTTP to the registry (login: $KOMPRESS_OUTPUT_OCI_AUTH or ~/.docker/config.json)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def check(uri: str, options: ReaderOptions, *, key: Path | None = None, chain: list[Path] | None = None, require_signature: bool = False) -> Outcome:
    """What `kompress verify` finds at `uri`."""
    if require_signature and key is None and not chain:
        return Outcome(VerifyExit.USAGE, "--require-signature needs --key or --certificate-chain to check the signature with")
    try:
        with tempfile.TemporaryDirectory(prefix="kompress-verify-") as scratch:
            return _check(uri, options, Path(scratch), key=key, chain=chain, require_signature=require_signature)
    except _Failed as failed:
        return Outcome(failed.exit, failed.message)
    except ModelNotFound as err:
        return Outcome(VerifyExit.NOT_A_MODEL, err.message)
    except KompressError as err:
        mapped = {ExitCode.ACCESS_DENIED: VerifyExit.ACCESS_DENIED, ExitCode.STORAGE_UNREACHABLE: VerifyExit.UNREACHABLE,
                  ExitCode.INVALID_SPEC: VerifyExit.USAGE}.get(err.exit, VerifyExit.ERROR)
        return Outcome(mapped, err.message)
    except ValueError as err:
        return Outcome(VerifyExit.USAGE, str(err))


def _check(uri: str, options: ReaderOptions, scratch: Path, *, key: Path | None, chain: list[Path] | None, require_signature: bool) -> Outcome:
    reader = open_reader(uri, options)
    pinned = getattr(reader, "pinned", None)
    shown = f"{reader.uri}" + (f" (at {pinned})" if pinned and pinned not in reader.uri else "")
    text = reader.read_text(MANIFEST)
    if text is None:
        raise _Failed(VerifyExit.NOT_A_MODEL, f"no {MANIFEST} at {shown}: not a finished model (or not published by Kompress)")
    try:
        manifest = read_manifest(json.loads(text))
    except ManifestError as err:
        raise _Failed(VerifyExit.NOT_A_MODEL, f"{MANIFEST} at {shown}: {err}") from None
    except ValueError:
        raise _Failed(VerifyExit.NOT_A_MODEL, f"{MANIFEST} at {shown} is not a Kompress manifest (not JSON)") from None
    entries = {f["path"]: f for f in manifest["files"]}
    signed = manifest["signature"]
    signature_name = signed["path"] if signed else SIGNATURE
    present = set(reader.names())

    missing = sorted(set(entries) - present)
    if missing:
        raise _Failed(VerifyExit.CHECKSUM_MISMATCH, f"{_names(missing)} listed in {MANIFEST} but missing at {shown}")
    # A destination's own files are not the model's (the Hub's .gitattributes in every repository).
    extra = sorted(present - set(entries) - {MANIFEST, signature_name} - getattr(reader, "own_files", frozenset()))
    if extra:
        raise _Failed(VerifyExit.CHECKSUM_MISMATCH, f"{_names(extra)} at {shown} but not in {MANIFEST}: not what was published")
    has_signature = signature_name in present
    if signed and not has_signature:
        raise _Failed(VerifyExit.SIGNATURE_MISSING, f"{MANIFEST} says {signature_name} signs this model, but there is no {signature_name} at {shown}")
    if require_signature and not has_signature:
        raise _Failed(VerifyExit.SIGNATURE_MISSING, f"no signature at {shown} (--require-signature)")

    fetched = sorted(entries) + [MANIFEST] + ([signature_name] if has_signature else [])
    folder = reader.folder(fetched, scratch)
    differ = []
    for name in sorted(entries):
        path, entry = folder / name, entries[name]
        size = path.stat().st_size
        if size != entry["size"]:
            differ.append(f"{name} ({size} bytes, {entry['size']} in {MANIFEST})")
        elif sha256_file(path) != entry["sha256"]:
            differ.append(f"{name} (SHA-256 differs from {MANIFEST})")
    if differ:
        raise _Failed(VerifyExit.CHECKSUM_MISMATCH, f"{'; '.join(differ)} at {shown}")

    summary = f"{shown}: {len(entries)} files match {MANIFEST} (size and SHA-256)"
    if not has_signature:
        return Outcome(VerifyExit.OK, summary + "; no signature", files=len(entries))
    if key is None and not chain:
        return Outcome(VerifyExit.OK, summary + f"; {signature_name} NOT checked (give --key or --certificate-chain)", files=len(entries), signature="unchecked")
    try:
        signing.verify(folder, folder / signature_name, public_key=key, certificate_chain=chain)
    except signing.SignatureInvalid as bad:
        raise _Failed(VerifyExit.SIGNATURE_INVALID, f"{bad.message} at {shown}") from None
    anchor = f"key {key}" if key is not None else f"certificate chain {', '.join(str(c) for c in chain or [])}"
    return Outcome(VerifyExit.OK, summary + f"; {signature_name} verified with the {anchor}", files=len(entries), signature="verified")


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def main(args: argparse.Namespace, env: dict[str, str]) -> int:
    s3 = S3Access(endpoint=args.s3_endpoint, region=args.s3_region, path_style=args.s3_path_style) if (args.s3_endpoint or args.s3_region or args.s3_path_style) else None
    options = ReaderOptions(env=env, s3=s3, hf_endpoint=args.hf_endpoint, oci_insecure=args.oci_insecure)
    outcome = check(args.uri, options, key=args.key, chain=args.certificate_chain, require_signature=args.require_signature)
    print(json.dumps(outcome.wire()) if args.json else outcome.line())
    return outcome.exit.code
