"""Signing material made here for tests, as a team would put it in the Secret of spec.output.signing.

    key_folder(folder)                  private-key.pem (P-256) and public-key.pem beside it (the public half, not in the Secret)
    certificate_folder(folder)          the same with certificate.pem (a code-signing leaf) and certificate-chain.pem, and
                                        root.pem: the CA a verifier trusts (not in the Secret)
    secret(name, folder)                the Secret holding the folder's Secret files (what the operator mounts)

Development harness, not product: product code never imports this module.
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

PRIVATE_KEY = "private-key.pem"
PUBLIC_KEY = "public-key.pem"
CERTIFICATE = "certificate.pem"
CHAIN = "certificate-chain.pem"
ROOT = "root.pem"
SECRET_FILES = (PRIVATE_KEY, CERTIFICATE, CHAIN)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _public_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_folder(folder: Path, curve: str = "secp256r1") -> Path:
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(getattr(ec, curve.upper())())
    (folder / PRIVATE_KEY).write_bytes(_key_pem(key))
    (folder / PUBLIC_KEY).write_bytes(_public_pem(key))
    return folder


def certificate_folder(folder: Path) -> Path:
    """A root CA, an intermediate and a leaf for code signing, the leaf's key as private-key.pem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kompress tests"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def certificate(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = certificate("Kompress test root", root_key, "Kompress test root", root_key, True)
    inter = certificate("Kompress test intermediate", inter_key, "Kompress test root", root_key, True)
    leaf = certificate("model-publisher", leaf_key, "Kompress test intermediate", inter_key, False)
    pem = serialization.Encoding.PEM
    (folder / PRIVATE_KEY).write_bytes(_key_pem(leaf_key))
    (folder / PUBLIC_KEY).write_bytes(_public_pem(leaf_key))
    (folder / CERTIFICATE).write_bytes(leaf.public_bytes(pem))
    (folder / CHAIN).write_bytes(inter.public_bytes(pem))
    (folder / ROOT).write_bytes(root.public_bytes(pem))
    return folder


def secret(name: str, folder: Path) -> dict[str, Any]:
    """The Secret a team would create with `kubectl create secret generic NAME --from-file=...` from the folder."""
    data = {f: base64.b64encode((folder / f).read_bytes()).decode() for f in SECRET_FILES if (folder / f).is_file()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": data}
