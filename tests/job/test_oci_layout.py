"""The pieces of an oci:// output that need no registry: the reference grammar, the dockerconfigjson a Secret holds
(as `kubectl create secret docker-registry` and `docker login` write it), the redactor learning its values from the
mounted file, and the image's layers (valid tars, the same bytes for the same file at the same path, so registries
store a file once across images; the base layer's busybox with the applets KServe's modelcar runs)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile

import pytest

from kompress_job.errors import AccessDenied, InvalidSpec
from kompress_job.io.credentials import registry_login
from kompress_job.io.oci_layout import FileLayer, _tar_header, base_layer, elf_architecture
from kompress_job.io.oci_registry import parse_reference
from kompress_job.redaction import Redactor
from kompress_testing.registry import busybox_binary

pytestmark = pytest.mark.unit


def test_references_parse_into_registry_repository_and_tag_or_digest():
    ref = parse_reference("oci://registry.example:5000/team/glm-4.5-air:w4a16-w8a8")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("registry.example:5000", "team/glm-4.5-air", "w4a16-w8a8", None)
    digest = "sha256:" + "ab" * 32
    assert ref.at(digest).uri == f"oci://registry.example:5000/team/glm-4.5-air@{digest}"
    assert parse_reference(f"oci://ghcr.io/team/model@{digest}").digest == digest
    with pytest.raises(InvalidSpec, match="spec.output.uri must be oci://REGISTRY/REPOSITORY:TAG"):
        parse_reference("oci://team/model:v1")


def config(tmp_path, doc):
    path = tmp_path / ".dockerconfigjson"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_a_dockerconfigjson_gives_the_login_of_the_registry_however_its_key_is_written(tmp_path):
    auth = base64.b64encode(b"bot:pa:ss/word+=").decode()
    for key in ("registry.example:5000", "https://registry.example:5000", "registry.example:5000/v2/", "HTTPS://Registry.Example:5000/"):
        login = registry_login(config(tmp_path, {"auths": {key: {"auth": auth}}}), "registry.example:5000")
        assert (login.username, login.password) == ("bot", "pa:ss/word+=")  # split at the first colon only
    # explicit username/password win; `docker login` to Docker Hub files it under the v1 index
    login = registry_login(config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"username": "u", "password": " p\n", "auth": auth}}}), "docker.io")
    assert (login.username, login.password) == ("u", "p")  # surrounding whitespace is not part of it
    login = registry_login(config(tmp_path, {"auths": {"ghcr.io": {"identitytoken": "refresh-token-value"}}}), "ghcr.io")
    assert login.identity_token == "refresh-token-value" and "refresh-token-value" not in repr(login)
    assert registry_login(config(tmp_path, {"auths": {"other.example": {"auth": auth}}}), "registry.example:5000") is None


@pytest.mark.parametrize("doc, says", [
    ("{not json", "are not a dockerconfigjson"),
    ({"registry.example": {"auth": "x"}}, 'hold no "auths" object'),
    ({"auths": {"registry.example": {"auth": "!!!not-base64"}}}, "is not base64 of USER:PASSWORD"),
    ({"auths": {"registry.example": {"auth": base64.b64encode(b"no-colon-here").decode()}}}, "is not base64 of USER:PASSWORD"),
    ({"auths": {"registry.example": {"username": "bot", "password": "pass\u0000word-planted"}}}, "a control character (U+0000)"),
    ({"auths": {"registry.example": {"username": "bot"}}}, "but no password"),
])
def test_a_malformed_secret_is_refused_naming_it_and_never_showing_a_value(tmp_path, doc, says):
    with pytest.raises(AccessDenied, match=None) as refused:
        registry_login(config(tmp_path, doc), "registry.example", where="Secret registry-push")
    assert says in refused.value.message and "Secret registry-push" in refused.value.message
    assert "planted" not in refused.value.message and "!!!" not in refused.value.message


def test_the_redactor_masks_the_values_of_the_mounted_dockerconfigjson(tmp_path):
    path = config(tmp_path, {"auths": {"registry.example": {"username": "bot", "password": "planted-pass/word+1", "auth": base64.b64encode(b"bot:planted-pass/word+1").decode()}}})
    redact = Redactor.from_env({"KOMPRESS_OUTPUT_OCI_AUTH": str(path)})
    header = "Authorization: Basic " + base64.b64encode(b"bot:planted-pass/word+1").decode()
    assert "planted" not in redact(f"password planted-pass/word+1 in {json.dumps({'p': 'planted-pass/word+1'})}")
    assert redact(header) != header and "cGxhbnRlZC1wYXNz" not in redact(header)
    assert not Redactor.from_env({"KOMPRESS_OUTPUT_OCI_AUTH": str(tmp_path / "missing")})


def layer_bytes(layer: FileLayer) -> bytes:
    layer.hash()
    data = b"".join(layer.chunks())
    assert len(data) == layer.layer_size and "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
    return data


def test_a_file_layer_is_a_tar_holding_the_file_under_models_the_same_bytes_for_the_same_file(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"\x01" * 1000)
    (tmp_path / "b.safetensors").write_bytes(b"\x01" * 1000)
    layer = FileLayer("shards/a.safetensors", tmp_path / "a.safetensors")
    with tarfile.open(fileobj=io.BytesIO(layer_bytes(layer)), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == ["models", "models/shards", "models/shards/a.safetensors"] and members["models/shards"].isdir()
        entry = members["models/shards/a.safetensors"]
        assert tar.extractfile(entry).read() == b"\x01" * 1000
        assert (entry.uid, entry.gid, entry.mtime, entry.mode) == (0, 0, 0, 0o644)
    assert layer.sha256 == hashlib.sha256(b"\x01" * 1000).hexdigest()
    # identical content at the same path: identical layer (the registry stores it once); at another path: another layer
    again = FileLayer("shards/a.safetensors", tmp_path / "b.safetensors")
    elsewhere = FileLayer("b.safetensors", tmp_path / "b.safetensors")
    assert layer_bytes(again) and again.digest == layer.digest and layer_bytes(elsewhere) and elsewhere.digest != layer.digest


def test_a_file_over_8_gib_gets_a_pax_size_header(tmp_path):
    header = _tar_header("models/model-00001-of-00047.safetensors", size=9 << 30)
    # a PAX extended header holds the size the 11-octal-digit field cannot
    assert b"size=9663676416" in header
    info = tarfile.TarInfo.frombuf(header[-512:], "utf-8", "surrogateescape")
    assert info.name == "models/model-00001-of-00047.safetensors"


def test_the_base_layer_is_busybox_with_the_modelcar_applets_and_an_empty_models_folder():
    busybox = busybox_binary()
    data = base_layer(busybox)
    assert base_layer(busybox) == data  # deterministic: every image shares it
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["bin/busybox"].mode == 0o755 and tar.extractfile("bin/busybox").read() == busybox.read_bytes()
        for applet in ("sh", "ln", "sleep"):
            assert members[f"bin/{applet}"].issym() and members[f"bin/{applet}"].linkname == "busybox"
        assert members["models"].isdir()
        assert "usr/share/doc/busybox/copyright" in members  # busybox is GPL-2.0: its notice travels with it
    assert elf_architecture(busybox) == "amd64"


def test_docker_hub_references_reach_its_api_host_and_its_v1_index_credentials(tmp_path):
    from kompress_api.v1alpha1 import Output
    from kompress_job.io.oci import client_for

    auth = config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"hubuser:hubpass").decode()}}})
    client = client_for(Output(uri="oci://docker.io/team/model:v1"), {"KOMPRESS_OUTPUT_OCI_AUTH": str(auth)})
    assert client.base == "https://registry-1.docker.io" and client.login.username == "hubuser"
