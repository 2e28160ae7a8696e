"""Signed publications (spec.output.signing, OpenSSF model signing with a local key or certificate) and `kompress verify`
at each destination: a folder, S3 (moto's server) and the Hub stand-in. A signed publication verifies; one byte changed
in one file fails, naming the file, by checksum, and by signature when the manifest was changed to match; extra or
missing files fail; the exit codes tell the failures apart, in one line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kompress_job import cli
from kompress_job.runner import execute
from kompress_testing import signing_keys, trained_model
from kompress_testing.hub import LocalHub
from kompress_testing.jobs import ComputeStandIns, make_job

pytestmark = pytest.mark.integration

SOURCE = trained_model.folder()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    return signing_keys.key_folder(tmp_path_factory.mktemp("signing-key"))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    return signing_keys.certificate_folder(tmp_path_factory.mktemp("signing-certificate"))


def publish(tmp_path, output_uri, keys, *, method="key", env=None, gate_failures=None, **output):
    job = make_job(f"file://{SOURCE}", output_uri, model={"dtype": "float32"}, output={"signing": {"keySecret": "model-signing", "method": method}, **output})
    stand_ins = ComputeStandIns(SOURCE, gate_failures=gate_failures)
    env = {"KOMPRESS_OUTPUT_SIGNING_DIR": str(keys), **(env or {})}
    return execute(job, env, workdir=tmp_path / "work", devices=0, resolve=stand_ins.resolve, termination_log=tmp_path / "termination-log"), stand_ins


def verify(capsys, *args: str, env: dict | None = None, monkeypatch=None) -> tuple[int, str]:
    if env and monkeypatch is not None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    code = cli.main(["verify", *args])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one line
    return code, out.strip()


def flip_one_byte(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_signed_folder_verifies_and_one_changed_byte_fails_naming_the_file(tmp_path, keys, capsys):
    out = tmp_path / "published"
    result, _ = publish(tmp_path, f"file://{out}", keys)

    assert result.ok, result.message
    assert result.destination.kind == "file" and result.destination.signature == "model.sig"
    manifest = json.loads((out / "kompress.json").read_text())
    public = (keys / signing_keys.PUBLIC_KEY).read_bytes()
    assert manifest["signature"]["method"] == "key" and manifest["signature"]["publicKeySha256"] == hashlib.sha256(public).hexdigest()
    assert "model.sig" not in {f["path"] for f in manifest["files"]} and (out / "model.sig").is_file()
    assert "kompress verify" in (out / "README.md").read_text()  # the card says how to check it

    code, line = verify(capsys, f"file://{out}", "--key", str(keys / signing_keys.PUBLIC_KEY), "--require-signature")
    assert code == 0 and line.startswith("verified: ") and "model.sig verified" in line and f"{len(manifest['files'])} files" in line

    flip_one_byte(out / "model.safetensors", at=5000)
    code, line = verify(capsys, f"file://{out}", "--key", str(keys / signing_keys.PUBLIC_KEY))
    assert code == 41 and line.startswith("FAILED (ChecksumMismatch): ") and "model.safetensors" in line and "SHA-256" in line


def test_a_file_changed_with_its_manifest_entry_fails_the_signature_naming_the_file(tmp_path, keys, capsys):
    out = tmp_path / "published"
    assert publish(tmp_path, f"file://{out}", keys)[0].ok
    flip_one_byte(out / "config.json", at=3)
    manifest = json.loads((out / "kompress.json").read_text())
    for entry in manifest["files"]:  # the checksums made to match: only the signature can tell
        if entry["path"] == "config.json":
            entry["sha256"] = hashlib.sha256((out / "config.json").read_bytes()).hexdigest()
    (out / "kompress.json").write_text(json.dumps(manifest))

    assert verify(capsys, f"file://{out}")[0] == 0  # checksums alone cannot tell: the signature is not checked without a key
    code, line = verify(capsys, f"file://{out}", "--key", str(keys / signing_keys.PUBLIC_KEY))

    assert code == 42 and line.startswith("FAILED (SignatureInvalid): ") and "config.json" in line and "kompress.json" in line


def test_the_wrong_key_an_extra_file_a_missing_signature_and_no_manifest_each_have_their_code(tmp_path, keys, capsys):
    out = tmp_path / "published"
    assert publish(tmp_path, f"file://{out}", keys)[0].ok
    other = signing_keys.key_folder(tmp_path / "other-key")

    code, line = verify(capsys, f"file://{out}", "--key", str(other / signing_keys.PUBLIC_KEY))
    assert code == 42 and "SignatureInvalid" in line and "key" in line.lower()

    code, line = verify(capsys, f"file://{out}", "--require-signature")
    assert code == 2 and "--key or --certificate-chain" in line

    (out / "modeling_backdoor.py").write_text("import os\n")
    code, line = verify(capsys, f"file://{out}", "--key", str(keys / signing_keys.PUBLIC_KEY))
    assert code == 41 and "modeling_backdoor.py" in line and "not in kompress.json" in line
    (out / "modeling_backdoor.py").unlink()

    (out / "model.sig").unlink()
    code, line = verify(capsys, f"file://{out}", "--key", str(keys / signing_keys.PUBLIC_KEY))
    assert code == 43 and "SignatureMissing" in line and "model.sig" in line

    (out / "kompress.json").unlink()
    code, line = verify(capsys, f"file://{out}")
    assert code == 40 and "not a finished model" in line


def test_an_unsigned_model_verifies_by_checksum_and_fails_when_a_signature_is_required(tmp_path, keys, capsys):
    out = tmp_path / "published"
    job = make_job(f"file://{SOURCE}", f"file://{out}", model={"dtype": "float32"})
    assert execute(job, {}, workdir=tmp_path / "work", devices=0, resolve=ComputeStandIns(SOURCE).resolve).ok

    code, line = verify(capsys, f"file://{out}")
    assert code == 0 and "no signature" in line
    code, line = verify(capsys, f"file://{out}", "--key", str(keys / signing_keys.PUBLIC_KEY), "--require-signature")
    assert code == 43 and "no signature" in line


def test_a_certificate_signature_verifies_against_its_root_only(tmp_path, certificates, capsys):
    out = tmp_path / "published"
    result, _ = publish(tmp_path, f"file://{out}", certificates, method="certificate")
    assert result.ok, result.message
    assert json.loads((out / "kompress.json").read_text())["signature"]["certificateSubject"] == "CN=model-publisher,O=Kompress tests"

    code, line = verify(capsys, f"file://{out}", "--certificate-chain", str(certificates / signing_keys.ROOT), "--require-signature")
    assert code == 0 and "model.sig verified" in line, line

    stranger = signing_keys.certificate_folder(tmp_path / "stranger")
    code, line = verify(capsys, f"file://{out}", "--certificate-chain", str(stranger / signing_keys.ROOT))
    assert code == 42 and "SignatureInvalid" in line


def test_an_s3_publication_verifies_where_it_is_and_names_a_changed_object(s3, bucket, tmp_path, keys, capsys, monkeypatch):
    result, _ = publish(tmp_path, f"s3://{bucket}/glm/signed", keys, env=s3.env("output"), s3=s3.access())
    assert result.ok, result.message
    assert f"glm/signed/model.sig" in s3.keys(bucket, "glm/signed/")
    for name, value in s3.env("output").items():  # kompress verify reads the standard AWS variables
        monkeypatch.setenv(name.removeprefix("KOMPRESS_OUTPUT_S3_"), value)
    args = ("--s3-endpoint", s3.endpoint, "--s3-path-style", "--key", str(keys / signing_keys.PUBLIC_KEY), "--require-signature")

    code, line = verify(capsys, f"s3://{bucket}/glm/signed", *args)
    assert code == 0 and "model.sig verified" in line, line

    client = s3.client()
    body = bytearray(client.get_object(Bucket=bucket, Key="glm/signed/tokenizer.json")["Body"].read())
    body[100] ^= 0x20
    client.put_object(Bucket=bucket, Key="glm/signed/tokenizer.json", Body=bytes(body))
    code, line = verify(capsys, f"s3://{bucket}/glm/signed", *args)
    assert code == 41 and "tokenizer.json" in line


def test_a_hub_publication_verifies_at_its_commit_and_a_later_change_on_the_branch_is_named(tmp_path, keys, capsys, monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi

    token = "hf_PLANTEDverifyTOKEN0123456789"
    with LocalHub(write_token=token) as hub:
        result, _ = publish(tmp_path, "hf://kompress/signed", keys, env={"KOMPRESS_OUTPUT_HF_TOKEN": token},
                            huggingFace={"endpoint": hub.endpoint, "tokenSecret": {"name": "hub", "key": "token"}})
        assert result.ok, result.message
        assert "model.sig" in hub.files("kompress/signed")
        monkeypatch.setenv("HF_TOKEN", token)
        args = ("--hf-endpoint", hub.endpoint, "--key", str(keys / signing_keys.PUBLIC_KEY), "--require-signature")

        code, line = verify(capsys, result.destination.reference, *args)
        assert code == 0 and "model.sig verified" in line and result.destination.commit in line

        changed = bytearray((SOURCE / "config.json").read_bytes())
        changed[2] ^= 0x01
        HfApi(endpoint=hub.endpoint, token=token).create_commit("kompress/signed", [CommitOperationAdd("config.json", bytes(changed))], commit_message="edit")
        code, line = verify(capsys, "hf://kompress/signed", *args)  # main has moved on
        assert code == 41 and "config.json" in line
        assert verify(capsys, result.destination.reference, *args)[0] == 0  # the published commit is what it was


def test_a_model_that_missed_the_gate_is_not_signed(tmp_path, keys):
    out = tmp_path / "published"
    result, _ = publish(tmp_path, f"file://{out}", keys, gate_failures=["perplexity +31% > +25%"])

    assert result.reason == "QualityGateFailed"
    rejected = Path(f"{out}.rejected")
    assert (rejected / "kompress.json").is_file() and not (rejected / "model.sig").exists()
    assert "signature" not in json.loads((rejected / "kompress.json").read_text())


@pytest.mark.parametrize("problem", ["no-folder", "no-key", "rsa-key", "encrypted-key", "no-certificate", "someone-elses-certificate"])
def test_a_signing_key_that_cannot_sign_is_refused_in_preflight_naming_it(tmp_path, keys, certificates, problem):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    folder = tmp_path / "secret"
    folder.mkdir()
    method = "key"
    if problem == "rsa-key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (folder / "private-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    if problem == "encrypted-key":
        key = ec.generate_private_key(ec.SECP256R1())
        (folder / "private-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    if problem == "no-certificate":
        (folder / "private-key.pem").write_bytes((certificates / "private-key.pem").read_bytes())
        method = "certificate"
    if problem == "someone-elses-certificate":
        (folder / "private-key.pem").write_bytes((keys / "private-key.pem").read_bytes())
        (folder / "certificate.pem").write_bytes((certificates / "certificate.pem").read_bytes())
        method = "certificate"
    env = {} if problem == "no-folder" else None
    job = make_job(f"file://{SOURCE}", f"file://{tmp_path / 'out'}", output={"signing": {"keySecret": "model-signing", "method": method}})
    stand_ins = ComputeStandIns(SOURCE)
    result = execute(job, env if env is not None else {"KOMPRESS_OUTPUT_SIGNING_DIR": str(folder)}, workdir=tmp_path / "work", devices=0, resolve=stand_ins.resolve)

    assert result.reason == "AccessDenied" and result.stage == "preflight", result.message
    assert stand_ins.ran == [] and not (tmp_path / "out" / "kompress.json").exists()
    expected = {
        "no-folder": "KOMPRESS_OUTPUT_SIGNING_DIR",
        "no-key": "has no key private-key.pem",
        "rsa-key": "RSAPrivateKey key",
        "encrypted-key": "encrypted",
        "no-certificate": "has no key certificate.pem",
        "someone-elses-certificate": "is not the certificate of its private-key.pem",
    }[problem]
    assert expected in result.message and "model-signing" in result.message


def test_the_kompress_command_verifies(tmp_path, keys):
    out = tmp_path / "published"
    assert publish(tmp_path, f"file://{out}", keys)[0].ok
    kompress = Path(sys.executable).parent / "kompress"

    done = subprocess.run([str(kompress), "verify", f"file://{out}", "--key", str(keys / signing_keys.PUBLIC_KEY), "--json"], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) | {"message": ""} == {"ok": True, "exitCode": 0, "reason": "Verified", "message": "", "files": 9, "signature": "verified"}


def test_a_signed_oci_image_carries_its_signature_and_verifies_by_digest(oci_registry, tmp_path, keys, capsys, monkeypatch):
    from kompress_testing.registry import busybox_binary

    auth = tmp_path / "oci-auth" / ".dockerconfigjson"
    auth.parent.mkdir(parents=True)
    auth.write_text(oci_registry.docker_config())
    env = {"KOMPRESS_OUTPUT_OCI_AUTH": str(auth), "KOMPRESS_OCI_BUSYBOX": str(busybox_binary())}
    uri = f"oci://{oci_registry.host}/kompress/signed:w4a16-w8a8"
    result, _ = publish(tmp_path, uri, keys, env=env, oci={"credentialsSecret": "registry-push", "insecure": True})

    assert result.ok, result.message
    assert result.destination.kind == "oci" and result.destination.signature == "model.sig"
    monkeypatch.setenv("KOMPRESS_OUTPUT_OCI_AUTH", str(auth))
    args = ("--oci-insecure", "--key", str(keys / signing_keys.PUBLIC_KEY), "--require-signature")

    code, line = verify(capsys, result.destination.reference, *args)
    assert code == 0 and "model.sig verified" in line, line
    code, line = verify(capsys, uri, *args)  # by tag: pinned to the digest it points to
    assert code == 0 and result.destination.digest in line, line
    other = signing_keys.key_folder(tmp_path / "other-key")
    code, line = verify(capsys, result.destination.reference, "--oci-insecure", "--key", str(other / signing_keys.PUBLIC_KEY))
    assert code == 42, line
