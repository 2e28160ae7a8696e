"""OpenSSF model signing of what is published, and the check of such a signature, with the model-signing library.

Owns: the signing material as the operator mounts it (spec.output.signing.keySecret at $KOMPRESS_OUTPUT_SIGNING_DIR, a
folder with the same files on a laptop): private-key.pem, and for method certificate certificate.pem (and
certificate-chain.pem); checking it in preflight (an elliptic-curve key model-signing takes, a certificate for that key)
so a bad Secret fails in seconds, not after compression; signing a folder that holds exactly the published files (model
card and kompress.json included) into model-signing's Sigstore bundle (model.sig); the manifest's record of it (method,
the public key's SHA-256 as the bundle hints it, the certificate's subject); checking a signature over a folder with a
public key or a certificate chain, naming the files that differ. Keyless Sigstore signing is not offered: it needs
Sigstore's public services (Fulcio, Rekor) and an OIDC identity over the network.
Must not: put the private key, or anything derived from it but its public half, into a log line or a message.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import Signing
from kompress_api.worker_protocol import ENV_OUTPUT_SIGNING_DIR, SIGNING_CERTIFICATE, SIGNING_CERTIFICATE_CHAIN, SIGNING_PRIVATE_KEY

from kompress_job.errors import AccessDenied, KompressError, one_line

SIGNATURE_FORMAT = "application/vnd.dev.sigstore.bundle.v0.3+json"
# The curves model-signing signs with (its _check_supported_ec_key).
CURVES = ("secp256r1", "secp384r1", "secp521r1")


class SignatureInvalid(Exception):
    """The signature does not hold for the files (or for the key or chain given)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))
        self.message = one_line(message)


@dataclass(frozen=True)
class SigningMaterial:
    method: str
    private_key: Path
    certificate: Path | None = None
    chain: Path | None = None
    public_key_sha256: str = ""
    certificate_subject: str | None = None


def _where(signing: Signing) -> str:
    return f"Secret '{signing.key_secret}' (spec.output.signing.keySecret)"


def load_material(signing: Signing, env: Mapping[str, str]) -> SigningMaterial:
    """The mounted key (and certificate), checked as model-signing will use them; AccessDenied naming what is wrong."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = env.get(ENV_OUTPUT_SIGNING_DIR)
    if not folder:
        raise AccessDenied(f"spec.output.signing names {_where(signing)}, but ${ENV_OUTPUT_SIGNING_DIR} (the folder it is mounted at) is not set")
    root = Path(folder)
    key_path = root / SIGNING_PRIVATE_KEY
    if not key_path.is_file():
        raise AccessDenied(f"{_where(signing)} has no key {SIGNING_PRIVATE_KEY}: put the PEM private key there")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        why = "it is encrypted (give it unencrypted: the Secret protects it)" if "encrypted" in str(exc).lower() or "password" in str(exc).lower() else "it is not a PEM private key"
        raise AccessDenied(f"{SIGNING_PRIVATE_KEY} of {_where(signing)} cannot be read: {why}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in CURVES:
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__.lstrip("_")
        raise AccessDenied(f"{SIGNING_PRIVATE_KEY} of {_where(signing)} is a {kind} key; model signing takes an elliptic-curve key on P-256, P-384 or P-521")
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_sha = hashlib.sha256(public_pem).hexdigest()
    if signing.method == "key":
        return SigningMaterial("key", key_path, public_key_sha256=public_sha)
    cert_path = root / SIGNING_CERTIFICATE
    if not cert_path.is_file():
        raise AccessDenied(f"spec.output.signing.method is certificate, but {_where(signing)} has no key {SIGNING_CERTIFICATE}")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        raise AccessDenied(f"{SIGNING_CERTIFICATE} of {_where(signing)} is not a PEM certificate") from None
    if cert.public_key() != key.public_key():
        raise AccessDenied(f"{SIGNING_CERTIFICATE} of {_where(signing)} is not the certificate of its {SIGNING_PRIVATE_KEY} (their public keys differ)")
    chain = root / SIGNING_CERTIFICATE_CHAIN
    return SigningMaterial("certificate", key_path, cert_path, chain if chain.is_file() else None, public_sha, cert.subject.rfc4514_string())


def record(material: SigningMaterial, signature_name: str) -> dict[str, Any]:
    """What the manifest says of the signature (it cannot hold the signature's checksum: the signature covers the manifest)."""
    doc: dict[str, Any] = {
        "path": signature_name,
        "format": SIGNATURE_FORMAT,
        "library": f"model-signing {_version()}",
        "method": material.method,
        "covers": "every file of the manifest and kompress.json itself",
        "publicKeySha256": material.public_key_sha256,
    }
    if material.certificate_subject:
        doc["certificateSubject"] = material.certificate_subject
    return doc


def _version() -> str:
    try:
        return metadata.version("model-signing")
    except metadata.PackageNotFoundError:
        return "?"


def stage(folder: Path, files: list[tuple[Path, str]], texts: dict[str, str]) -> Path:
    """A folder holding exactly what is published, the way it is published: links to the files (copies across
    filesystems), and `texts` (the model card, the manifest) written out. What is signed is this folder."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    for source, name in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def sign(folder: Path, signature: Path, material: SigningMaterial) -> None:
    """model.sig over every file of `folder`."""
    from model_signing import signing

    config = signing.Config()
    if material.method == "certificate":
        config.use_certificate_signer(
            private_key=material.private_key, signing_certificate=material.certificate, certificate_chain=[material.chain] if material.chain else []
        )
    else:
        config.use_elliptic_key_signer(private_key=material.private_key)
    signature.parent.mkdir(parents=True, exist_ok=True)
    try:
        config.sign(folder, signature)
    except (ValueError, OSError) as exc:  # model-signing's messages name files and keys' kinds, never key material
        raise KompressError(f"model signing failed: {type(exc).__name__}: {exc}") from None


# model-signing raises ValueError(f"Signature mismatch: {list_of_lines}"): the lines as a list's repr, where a line holding
# both kinds of quote has its single quotes escaped.
_MISMATCH = re.compile(r"Hash mismatch for \\?'([^'\\]+)\\?'")
_EXTRA = re.compile(r"(Extra|Missing) files (?:found )?in model \\?'[^'\\]*\\?': ([^\]\"'\\]+)")


def verify(folder: Path, signature: Path, *, public_key: Path | None = None, certificate_chain: list[Path] | None = None) -> None:
    """The signature holds for the files of `folder` that it covers, for `public_key` or a chain to `certificate_chain`'s
    roots; SignatureInvalid naming the files that differ (or why the key or the chain does not fit) otherwise."""
    from model_signing import verifying

    config = verifying.Config().set_ignore_unsigned_files(True)
    if public_key is not None:
        config.use_elliptic_key_verifier(public_key=public_key)
    else:
        config.use_certificate_verifier(certificate_chain=certificate_chain or [])
    try:
        config.verify(Path(folder), Path(signature))
    except Exception as exc:  # noqa: BLE001 - model-signing raises ValueError, OpenSSL's errors, KeyError for a bad bundle...
        text = str(exc)
        files = _MISMATCH.findall(text)
        if files:
            raise SignatureInvalid(f"{', '.join(files)}: the content differs from what {signature.name} signed") from None
        missing = _EXTRA.findall(text)
        if missing:
            raise SignatureInvalid("; ".join(f"{kind.lower()} files: {names.strip()}" for kind, names in missing)) from None
        if "FileNotFoundError" in type(exc).__name__ or isinstance(exc, FileNotFoundError):
            raise SignatureInvalid(f"a file {signature.name} signed is missing: {exc}") from None
        raise SignatureInvalid(f"{signature.name} does not verify: {type(exc).__name__}: {text or 'the signature or its certificate chain does not hold'}") from None
