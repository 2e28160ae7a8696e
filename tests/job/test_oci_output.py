"""An oci:// output against a real registry (the CNCF distribution registry on loopback, htpasswd auth, the login
from a dockerconfigjson file as the operator mounts the Secret): the trained test model compressed by the real
worker and pushed as a KServe modelcar image, pulled back by digest with an independent OCI client (oras) and
every file compared with the manifest kompress.json; the modelcar's own command run in the unpacked image; a push
killed mid-way leaves no tag and a rerun sends only the missing blobs; tags are never overwritten unless asked;
a model that missed the gate gets only the `.rejected` tag; a refused login fails fast and says so, no password
anywhere."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kompress_api.exit_codes import ExitCode
from kompress_job.runner import execute
from kompress_testing import compute_runs, trained_model
from kompress_testing.jobs import ComputeStandIns, make_job, write_checkpoint
from kompress_testing.registry import UploadGate, busybox_binary
from test_secrets import assert_no_secret

pytestmark = pytest.mark.integration

LAYER = "application/vnd.oci.image.layer.v1.tar"


def oci_env(tmp_path: Path, docker_config: str) -> dict[str, str]:
    """What the operator gives the worker pod for an oci:// output: the mounted dockerconfigjson's path (and, as the
    image has it, the static busybox)."""
    auth = tmp_path / "oci-auth" / ".dockerconfigjson"
    auth.parent.mkdir(parents=True, exist_ok=True)
    auth.write_text(docker_config)
    return {"KOMPRESS_OUTPUT_OCI_AUTH": str(auth), "KOMPRESS_OCI_BUSYBOX": str(busybox_binary())}


def oci_output(host: str, repository: str, tag: str, **extra) -> dict:
    return {"uri": f"oci://{host}/{repository}:{tag}", "oci": {"credentialsSecret": "registry-push", "insecure": True}, **extra}


def oras_pull(registry, digest_ref: str, auth_file: Path, out: Path) -> dict:
    """The image by digest, with oras's own client and its own reading of the dockerconfigjson: {manifest, config,
    files: {path under /models: bytes}}, each blob checked against its digest here."""
    import oras.provider

    client = oras.provider.Registry(hostname=registry.host, insecure=True, auth_backend="basic")  # the registry asks for Basic auth
    container = client.get_container(digest_ref)
    client.auth.load_configs(container, configs=[str(auth_file)])
    manifest = client.get_manifest(container)
    out.mkdir(parents=True, exist_ok=True)

    def blob(digest: str) -> bytes:
        path = out / digest.replace(":", "-")
        client.download_blob(container, digest, str(path))
        data = path.read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} does not hash to its digest"
        return data

    files: dict[str, bytes] = {}
    layers: list[bytes] = []
    for layer in manifest["layers"]:
        data = blob(layer["digest"])
        layers.append(data)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith("models/"):
                    files[member.name[len("models/"):]] = tar.extractfile(member).read()
    return {"manifest": manifest, "config": json.loads(blob(manifest["config"]["digest"])), "files": files, "layers": layers}


# --- the trained model, through the whole real worker, as a modelcar image -------------------------


@pytest.fixture(scope="module")
def published(oci_registry, tmp_path_factory):
    """The trained GLM4-MoE compressed (fp8-dynamic, the data-free path; evaluation off to keep it short) by the real
    worker in a child process and published to the registry: (process, termination result, env, workdir)."""
    tmp = tmp_path_factory.mktemp("oci-trained")
    env = oci_env(tmp, oci_registry.docker_config())
    folder = trained_model.folder()
    doc = {
        "metadata": {"name": "trained-oci", "namespace": "ml", "uid": "0000-0c10"},
        "spec": {
            "model": {"uri": f"file://{folder}", "dtype": "float32"},
            "calibration": {"uri": f"file://{folder / trained_model.HELDOUT}", "samples": 8, "maxSequenceLength": 64},
            "recipe": {"preset": "fp8-dynamic"},
            "output": oci_output(oci_registry.host, "kompress/glm4-moe-chat", "fp8-dynamic"),
            "evaluation": {"enabled": False},
            "resources": {"gpus": 0},
        },
    }
    done, termination = compute_runs.pod_run(doc, tmp, env, timeout=500)
    assert done.returncode == 0, (done.stderr or done.stdout)[-3000:]
    return done, json.loads(termination), env, tmp


def test_the_image_is_recorded_by_digest_and_the_tag_points_to_it(oci_registry, published):
    _, result, _, _ = published
    destination = result["destination"]
    assert destination["kind"] == "oci" and destination["tag"] == "fp8-dynamic"
    assert destination["reference"] == f"oci://{oci_registry.host}/kompress/glm4-moe-chat@{destination['digest']}"
    assert result["outputUri"] == f"oci://{oci_registry.host}/kompress/glm4-moe-chat:fp8-dynamic"
    assert oci_registry.tags("kompress/glm4-moe-chat") == ["fp8-dynamic"]
    head = oci_registry.session.head(f"{oci_registry.url}/v2/kompress/glm4-moe-chat/manifests/fp8-dynamic",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert head.headers["Docker-Content-Digest"] == destination["digest"]


def test_pulled_back_by_digest_every_file_is_what_the_manifest_says(oci_registry, published, tmp_path):
    _, result, env, _ = published
    digest = result["destination"]["digest"]
    image = oras_pull(oci_registry, f"{oci_registry.host}/kompress/glm4-moe-chat@{digest}", Path(env["KOMPRESS_OUTPUT_OCI_AUTH"]), tmp_path / "pulled")
    manifest_file = json.loads(image["files"]["kompress.json"])
    assert manifest_file["status"] == "published"
    listed = {entry["path"]: entry for entry in manifest_file["files"]}
    # every file of the image is in the manifest (and the manifest itself), with its size and SHA-256
    assert set(image["files"]) == set(listed) | {"kompress.json"}
    for path, entry in listed.items():
        assert len(image["files"][path]) == entry["size"], path
        assert hashlib.sha256(image["files"][path]).hexdigest() == entry["sha256"], path
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(listed)
    # one layer per file after the base, annotated with the file it holds; the manifest's own digest on the image
    manifest = image["manifest"]
    base, *layers = manifest["layers"]
    assert base["annotations"] == {"dev.kompress.base": "busybox"}
    assert all(layer["mediaType"] == LAYER for layer in manifest["layers"])
    assert [layer["annotations"]["dev.kompress.path"] for layer in layers] == [*sorted(set(listed) - {"README.md"}), "README.md", "kompress.json"]
    for layer in layers:
        name = layer["annotations"]["dev.kompress.path"]
        assert layer["annotations"]["dev.kompress.sha256"] == hashlib.sha256(image["files"][name]).hexdigest()
        if name in listed:
            assert listed[name].get("ociLayer", layer["digest"]) == layer["digest"]
    assert manifest["annotations"]["dev.kompress.manifest.sha256"] == hashlib.sha256(image["files"]["kompress.json"]).hexdigest()
    # a runnable image: the config names the busybox's architecture and every layer (uncompressed: diff id = digest)
    config = image["config"]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]


def test_the_modelcar_command_of_kserve_runs_in_the_unpacked_image(oci_registry, published, tmp_path):
    """KServe's modelcar container runs `sh -c 'ln -sf /proc/$$/root/models /mnt/ && sleep infinity'` in the image;
    here the image's layers are unpacked in order into a root and the same link is made and read through, in a
    chroot with /proc (the serving container then reads /mnt/models)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("chroot") is None:
        pytest.skip("needs root, unshare and chroot to run the image's own shell in its root")
    _, result, env, _ = published
    image = oras_pull(oci_registry, f"{oci_registry.host}/kompress/glm4-moe-chat@{result['destination']['digest']}", Path(env["KOMPRESS_OUTPUT_OCI_AUTH"]), tmp_path / "blobs")
    root = tmp_path / "rootfs"
    root.mkdir()
    for data in image["layers"]:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(root, filter="tar")
    for mountpoint in ("proc", "mnt"):  # made by the container runtime and KServe's emptyDir
        (root / mountpoint).mkdir(exist_ok=True)
    modelcar = 'ln -sf /proc/$$/root/models /mnt/ && cat /mnt/models/config.json && echo && busybox sha256sum /mnt/models/model.safetensors'
    run = subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", 'mount --bind /proc "$0/proc" && exec chroot "$0" /bin/sh -c "$1"', str(root), modelcar],
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0 and "Operation not permitted" in run.stderr:
        pytest.skip(f"this machine does not allow a mount namespace: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout[: run.stdout.rindex("}") + 1]) == json.loads(image["files"]["config.json"])
    assert run.stdout.split()[-2] == hashlib.sha256(image["files"]["model.safetensors"]).hexdigest()


def test_the_registry_password_appears_nowhere_the_worker_writes(oci_registry, published, tmp_path):
    done, result, env, _ = published
    image = oras_pull(oci_registry, f"{oci_registry.host}/kompress/glm4-moe-chat@{result['destination']['digest']}", Path(env["KOMPRESS_OUTPUT_OCI_AUTH"]), tmp_path / "blobs")
    logs = done.stderr + done.stdout
    assert "oci: pushed" in logs  # the push was logged, and that log is scanned
    assert_no_secret([oci_registry.password], logs=logs, termination_message=json.dumps(result), model_card=image["files"]["README.md"].decode(),
                     manifest=image["files"]["kompress.json"].decode(), image_config=json.dumps(image["config"]), image_manifest=json.dumps(image["manifest"]))


# --- killed mid-push, retried; tags never overwritten; the gate's rejected tag; a refused login ------


@pytest.fixture
def checkpoint(tmp_path, tokenizer_files):
    sizes = {f"model-0000{i}-of-00004.safetensors": 400_000 + i for i in range(1, 5)}
    return write_checkpoint(tmp_path / "checkpoint", tokenizer_files, sizes)


def pod_env(job, env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KOMPRESS_", "AWS_", "HF_"))}
    return {**full, **env, "KOMPRESS_JOB": json.dumps({"metadata": job.metadata.model_dump(exclude_none=True), "spec": job.spec.wire()}),
            "KOMPRESS_SCRATCH": str(tmp_path / f"scratch-{name}"), "KOMPRESS_TERMINATION_LOG": str(tmp_path / f"termination-{name}"),
            "KOMPRESS_PROGRESS_BIND": "127.0.0.1:0", "KOMPRESS_LOG_FORMAT": "json"}


def test_a_push_killed_after_some_blobs_leaves_no_tag_and_a_rerun_sends_only_the_missing_blobs(oci_registry, model_folder, checkpoint, tmp_path):
    with UploadGate(oci_registry.host, hold_after=3) as gate:
        env = oci_env(tmp_path, oci_registry.docker_config(host=gate.host))
        job = make_job(f"file://{model_folder}", f"oci://{gate.host}/kill/tiny:v1", output=oci_output(gate.host, "kill/tiny", "v1"))
        log = tmp_path / "killed.log"
        with open(log, "w") as out:
            child = subprocess.Popen([sys.executable, "-m", "kompress_testing.worker_run", str(checkpoint)], env=pod_env(job, env, tmp_path, "killed"),
                                     stdout=out, stderr=subprocess.STDOUT)
            try:
                assert gate.held.wait(240), f"the push never got past {gate.hold_after} blobs: {log.read_text()[-3000:]}"
            finally:
                child.kill()  # SIGKILL: no handler, no cleanup, the connection left hanging
                child.wait(30)
        before_retry = oci_registry.linked_blobs("kill/tiny")
        completed = gate.completed_blobs
        # no tag: the image is not published, whatever blobs are stored
        assert oci_registry.tags("kill/tiny") == []
        assert 3 <= completed == len(before_retry)

        gate.release()
        result = execute(job, env, workdir=tmp_path / "retry", devices=0, resolve=ComputeStandIns(checkpoint).resolve, termination_log=tmp_path / "termination-retry")

        assert result.ok, result.message
        assert oci_registry.tags("kill/tiny") == ["v1"]
        manifest = oci_registry.session.get(f"{oci_registry.url}/v2/kill/tiny/manifests/{result.destination.digest}",
                                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
        image_blobs = {layer["digest"] for layer in manifest["layers"]} | {manifest["config"]["digest"]}
        # the rerun sent exactly the blobs the killed push had not stored, and none twice
        assert gate.completed_blobs - completed == len(image_blobs - before_retry)
        assert image_blobs & before_retry, "the killed push stored none of this image's blobs"

    # every file is what the manifest says (pulled with the product's own client, by digest)
    from kompress_api.v1alpha1 import Output
    from kompress_job.io.oci import client_for, pull

    output = Output.model_validate(oci_output(oci_registry.host, "kill/tiny", "v1"))
    pulled = tmp_path / "pulled"
    pull(client_for(output, oci_env(tmp_path / "direct", oci_registry.docker_config())), result.destination.digest, pulled)
    listed = json.loads((pulled / "kompress.json").read_text())["files"]
    assert {e["path"] for e in listed} == {p.name for p in checkpoint.iterdir()} | {"README.md"}
    for entry in listed:
        assert hashlib.sha256((pulled / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
        if entry["path"] != "README.md":
            assert (pulled / entry["path"]).read_bytes() == (checkpoint / entry["path"]).read_bytes()


def run(job, env, tmp_path, checkpoint, name, **stand_in_options):
    return execute(job, env, workdir=tmp_path / name, devices=0, resolve=ComputeStandIns(checkpoint, **stand_in_options).resolve,
                   termination_log=tmp_path / f"termination-{name}")


def test_a_tag_is_never_moved_unless_overwrite_is_asked_and_then_the_old_image_stays_by_digest(oci_registry, model_folder, checkpoint, tmp_path):
    env = oci_env(tmp_path, oci_registry.docker_config())
    job = make_job(f"file://{model_folder}", "", output=oci_output(oci_registry.host, "tags/tiny", "v1"))
    first = run(job, env, tmp_path, checkpoint, "first")
    assert first.ok, first.message

    again = run(job, env, tmp_path, checkpoint, "again")
    assert again.exit_code == ExitCode.OUTPUT_EXISTS.code and "spec.output.overwrite" in again.message
    assert again.stage == "preflight"  # refused in seconds, before any compute

    (checkpoint / "config.json").write_text(json.dumps({"model_type": "glm4_moe", "changed": True}))
    overwrite = make_job(f"file://{model_folder}", "", output=oci_output(oci_registry.host, "tags/tiny", "v1", overwrite=True))
    second = run(overwrite, env, tmp_path, checkpoint, "second")
    assert second.ok, second.message
    assert second.destination.digest != first.destination.digest
    head = oci_registry.session.head(f"{oci_registry.url}/v2/tags/tiny/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert head.headers["Docker-Content-Digest"] == second.destination.digest
    old = oci_registry.session.head(f"{oci_registry.url}/v2/tags/tiny/manifests/{first.destination.digest}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert old.status_code == 200


def test_a_model_that_missed_the_gate_gets_only_the_rejected_tag(oci_registry, model_folder, checkpoint, tmp_path):
    env = oci_env(tmp_path, oci_registry.docker_config())
    job = make_job(f"file://{model_folder}", "", output=oci_output(oci_registry.host, "gate/tiny", "v1"))
    result = run(job, env, tmp_path, checkpoint, "gate", gate_failures=["perplexity +40% > +5%"])
    assert result.exit_code == ExitCode.QUALITY_GATE_FAILED.code
    assert oci_registry.tags("gate/tiny") == ["v1.rejected"]
    assert result.rejected_uri.startswith(f"oci://{oci_registry.host}/gate/tiny@sha256:")


@pytest.mark.parametrize("problem", ["wrong-password", "no-entry-for-the-registry", "no-secret"])
def test_a_refused_login_fails_in_preflight_naming_the_secret_and_never_the_password(oci_registry, model_folder, checkpoint, tmp_path, problem):
    planted = "planted/Registry+pw=%41:x"
    config = {
        "wrong-password": json.dumps({"auths": {f"http://{oci_registry.host}/v2/": {"username": oci_registry.username, "password": planted}}}),
        "no-entry-for-the-registry": json.dumps({"auths": {"other.example": {"auth": "dXNlcjpwYXNz"}}}),
        "no-secret": None,
    }[problem]
    output = oci_output(oci_registry.host, "denied/tiny", "v1")
    if config is None:
        output["oci"] = {"insecure": True}
    env = oci_env(tmp_path, config) if config else {"KOMPRESS_OCI_BUSYBOX": str(busybox_binary())}
    job = make_job(f"file://{model_folder}", "", output=output)
    result = run(job, env, tmp_path, checkpoint, problem)

    assert result.exit_code == ExitCode.ACCESS_DENIED.code, result.message
    assert result.stage == "preflight"
    expected = {"wrong-password": "refused the credentials in spec.output.oci.credentialsSecret",
                "no-entry-for-the-registry": "has no credentials for the registry",
                "no-secret": "set spec.output.oci.credentialsSecret"}[problem]
    assert expected in result.message
    assert_no_secret([planted, oci_registry.password], message=result.message, termination=(tmp_path / f"termination-{problem}").read_text())
    assert oci_registry.tags("denied/tiny") == []


# --- a registry with token auth, as public registries run (Bearer tokens from a token service) ----


@pytest.mark.parametrize("login", ["password", "identity-token", "wrong-password"])
def test_a_registry_with_a_token_service_gets_a_token_for_the_repository_from_the_secrets_login(model_folder, checkpoint, tmp_path, login):
    from kompress_testing.registry import LocalRegistry

    with LocalRegistry(tmp_path / "token-registry", auth="token") as registry:
        entry = {"password": {"username": registry.username, "password": registry.password},
                 "identity-token": {"identitytoken": registry.tokens.identity_token},
                 "wrong-password": {"username": registry.username, "password": "planted-wrong/pass=1"}}[login]
        env = oci_env(tmp_path, json.dumps({"auths": {registry.host: entry}}))
        job = make_job(f"file://{model_folder}", "", output=oci_output(registry.host, "tok/tiny", "v1"))
        result = run(job, env, tmp_path, checkpoint, login)
        if login == "wrong-password":
            assert result.exit_code == ExitCode.ACCESS_DENIED.code and result.stage == "preflight"
            assert "its token service refused the credentials" in result.message
            assert_no_secret(["planted-wrong/pass=1", registry.password], message=result.message, termination=(tmp_path / f"termination-{login}").read_text())
            return
        assert result.ok, result.message
        assert "repository:tok/tiny:pull,push" in registry.tokens.issued  # the registry checked the service's token
        assert registry.tags("tok/tiny") == ["v1"]
        head = registry.session.head(f"{registry.url}/v2/tok/tiny/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert head.headers["Docker-Content-Digest"] == result.destination.digest
        assert_no_secret([registry.tokens.identity_token, registry.password], termination=(tmp_path / f"termination-{login}").read_text())


def test_on_a_laptop_any_dockerconfigjson_named_by_the_variable_logs_in_without_a_secret(oci_registry, model_folder, checkpoint, tmp_path):
    env = oci_env(tmp_path, oci_registry.docker_config())  # e.g. KOMPRESS_OUTPUT_OCI_AUTH=~/.docker/config.json
    job = make_job(f"file://{model_folder}", "", output={"uri": f"oci://{oci_registry.host}/laptop/tiny:v1", "oci": {"insecure": True}})
    result = run(job, env, tmp_path, checkpoint, "laptop")
    assert result.ok, result.message
    assert oci_registry.tags("laptop/tiny") == ["v1"]


def test_pushed_in_chunks_or_in_one_request_the_same_checkpoint_is_the_same_image(oci_registry, model_folder, tokenizer_files, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "big", tokenizer_files, {"model-00001-of-00002.safetensors": 2_621_440 + 7, "model-00002-of-00002.safetensors": 1_100_000})
    digests = {}
    for mode, extra in (("streamed", {}), ("chunked", {"KOMPRESS_OCI_CHUNK_MIB": "1"})):
        env = {**oci_env(tmp_path / mode, oci_registry.docker_config()), **extra}
        job = make_job(f"file://{model_folder}", "", output=oci_output(oci_registry.host, f"modes/{mode}", "v1"))
        result = run(job, env, tmp_path, checkpoint, mode)
        assert result.ok, result.message
        manifest = oci_registry.session.get(f"{oci_registry.url}/v2/modes/{mode}/manifests/{result.destination.digest}",
                                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
        # the card and kompress.json name the run (its URI, its timings); every other layer is the checkpoint's
        digests[mode] = [(layer["annotations"].get("dev.kompress.path"), layer["digest"]) for layer in manifest["layers"]
                         if layer["annotations"].get("dev.kompress.path") not in ("README.md", "kompress.json")]
    # the base and one layer per file, byte for byte the same tar however it was sent: the registry stores each once
    assert digests["streamed"] == digests["chunked"] and len(digests["streamed"]) == 1 + len(list(checkpoint.iterdir()))
    assert "PATCH /v2/modes/chunked/blobs/uploads/" in oci_registry.log_text() and "PATCH /v2/modes/streamed/" not in oci_registry.log_text()
