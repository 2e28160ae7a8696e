"""Publishing to the Hugging Face Hub (hf:// outputs): the trained test model goes into one commit through huggingface_hub's
commit API (large files through the LFS upload path) against the Hub stand-in over real HTTP, and is read back with
`snapshot_download` and compared file by file with the manifest; a repository or branch that holds files is refused
unless overwrite; a kill mid-upload leaves no commit and a retry completes it, re-sending only what never arrived.
The compute stages are stood in for (kompress_testing.jobs); preflight, fetch-model, calibration and publish are the
product's own code."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download
from huggingface_hub import errors as hf_errors

from kompress_api.exit_codes import ExitCode
from kompress_job.runner import execute
from kompress_testing import trained_model
from kompress_testing.hub import LocalHub
from kompress_testing.jobs import ComputeStandIns, make_job

pytestmark = pytest.mark.integration

TOKEN = "hf_PLANTEDwriteTOKEN0123456789abcdef"
SOURCE = "kompress-testing/glm4-moe-chat"
REPO = "kompress/glm4-moe-chat-w4a16-w8a8"


@pytest.fixture
def hub():
    with LocalHub(write_token=TOKEN) as server:
        server.add_repo(SOURCE, trained_model.folder())  # the source model, public
        yield server


def hub_job(hub, repo=REPO, **output):
    settings = {"endpoint": hub.endpoint, "tokenSecret": {"name": "hub-write", "key": "token"}, **output.pop("huggingFace", {})}
    return make_job(
        f"hf://{SOURCE}",
        f"hf://{repo}",
        model={"huggingFace": {"endpoint": hub.endpoint}, "dtype": "float32"},
        output={"huggingFace": settings, **output},
    )


ENV = {"KOMPRESS_OUTPUT_HF_TOKEN": TOKEN + "\n"}  # as a Secret made from a file holds it


def run(job, tmp_path, checkpoint=None, env=ENV):
    stand_ins = ComputeStandIns(checkpoint or trained_model.folder())
    result = execute(job, env, workdir=tmp_path / "work", devices=0, resolve=stand_ins.resolve, termination_log=tmp_path / "termination-log")
    return result, stand_ins


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_back(hub, tmp_path, revision, repo=REPO) -> dict:
    """The repository at `revision` as a user downloads it, checked against its manifest file by file: the manifest."""
    folder = tmp_path / f"download-{revision[:8]}"
    snapshot_download(repo, revision=revision, local_dir=folder, endpoint=hub.endpoint, token=TOKEN)
    manifest = json.loads((folder / "kompress.json").read_text())
    downloaded = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert downloaded == {f["path"] for f in manifest["files"]} | {"kompress.json", ".gitattributes"} | ({"model.sig"} if manifest.get("signature") else set())
    for entry in manifest["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert (len(data), sha256(data)) == (entry["size"], entry["sha256"]), entry["path"]
    return manifest


def test_the_trained_model_is_published_in_one_commit_and_reads_back_with_snapshot_download(hub, tmp_path):
    result, _ = run(hub_job(hub), tmp_path)

    assert result.ok, result.message
    head = hub.head(REPO)
    assert result.destination.kind == "hf" and result.destination.commit == head and result.destination.revision == "main"
    assert result.destination.reference == f"hf://{REPO}@{head}" and head in result.message
    assert result.manifest_uri == f"hf://{REPO}@{head}/kompress.json"
    [commit] = [c for c in hub.commits if c.repo_id == REPO]  # one commit holds everything
    manifest = read_back(hub, tmp_path, head)
    assert set(commit.added) == {f["path"] for f in manifest["files"]} | {"kompress.json"}
    published = {p.name for p in trained_model.folder().iterdir()} - {"README.md"}
    assert {f["path"] for f in manifest["files"]} == published | {"README.md"}
    for name in published:  # what was published is the checkpoint, byte for byte
        assert hub.files(REPO, head)[name] == (trained_model.folder() / name).read_bytes(), name
    # The weights went through the LFS upload path (stored by SHA-256, committed as an LFS pointer), the rest in the commit.
    weights = sha256((trained_model.folder() / "model.safetensors").read_bytes())
    assert hub.lfs_uploads == [weights]
    assert any(r.method == "PUT" and r.path.endswith(f"/{weights}") for r in hub.requests)
    # Private by default: nobody without the token sees it.
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).repo_info(REPO)
    assert {r.authorization for r in hub.requests if r.method in ("POST", "PUT") and "/lfs-upload/" not in r.path} == {f"Bearer {TOKEN}"}


def test_the_model_card_says_what_the_checkpoint_is_a_quantization_of(hub, tmp_path):
    result, _ = run(hub_job(hub), tmp_path)
    assert result.ok, result.message

    card = hub.files(REPO)["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == SOURCE and front["base_model_relation"] == "quantized"
    assert {"kompress", "llm-compressor", "compressed-tensors", "w4a16", "w8a8", "vllm"} <= set(front["tags"])
    assert "`w4a16-w8a8` preset" in card and "| perplexity increase | +5.00 % |" in card and "| top-1 agreement | 95.0% |" in card
    assert f"hf download {REPO} --local-dir" in card
    manifest = json.loads(hub.files(REPO)["kompress.json"])
    assert manifest["source"]["uri"] == f"hf://{SOURCE}" and manifest["source"]["resolvedRevision"] == hub.head(SOURCE)


def _seed(hub, repo, files: dict[str, bytes], branch="main") -> str:
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(repo, private=False, exist_ok=True)
    if branch != "main":
        api.create_branch(repo, branch=branch, exist_ok=True)
    return api.create_commit(repo, [CommitOperationAdd(name, data) for name, data in files.items()], commit_message="someone's model", revision=branch).oid


def test_a_repository_that_holds_files_is_refused_unless_overwrite_naming_the_field(hub, tmp_path):
    before = _seed(hub, REPO, {"config.json": b'{"someone": "else"}', "notes.txt": b"mine"})

    result, stand_ins = run(hub_job(hub), tmp_path)

    assert result.exit_code == ExitCode.OUTPUT_EXISTS.code and result.stage == "preflight", result.message
    assert "spec.output.overwrite" in result.message and "2 files on branch main" in result.message and "config.json" in result.message
    assert stand_ins.ran == [] and hub.head(REPO) == before  # refused before any work, nothing committed


def test_a_new_branch_of_a_repository_that_holds_files_gets_exactly_the_published_files(hub, tmp_path):
    main = _seed(hub, REPO, {"config.json": b'{"the": "base"}', "notes.txt": b"mine"})

    result, _ = run(hub_job(hub, huggingFace={"revision": "w4a16-w8a8"}), tmp_path)

    assert result.ok, result.message
    assert result.destination.revision == "w4a16-w8a8" and result.destination.commit == hub.head(REPO, "w4a16-w8a8")
    manifest = read_back(hub, tmp_path, result.destination.commit)  # notes.txt, inherited from main, is gone from the branch
    assert "notes.txt" not in {f["path"] for f in manifest["files"]}
    assert hub.head(REPO) == main and set(hub.files(REPO)) == {".gitattributes", "config.json", "notes.txt"}  # main untouched
    assert "--revision w4a16-w8a8" in hub.files(REPO, "w4a16-w8a8")["README.md"].decode()


def test_overwrite_replaces_the_branch_in_one_commit_and_removes_what_the_old_model_had(hub, tmp_path):
    old = _seed(hub, REPO, {"model-00001-of-00002.safetensors": os.urandom(2000), "config.json": b"{}"})

    result, _ = run(hub_job(hub, overwrite=True), tmp_path)

    assert result.ok, result.message
    [commit] = [c for c in hub.commits if c.repo_id == REPO and c.parent == old]
    assert commit.deleted == ("model-00001-of-00002.safetensors",)  # config.json is replaced, not deleted
    read_back(hub, tmp_path, result.destination.commit)


def test_a_model_that_missed_the_gate_goes_to_a_private_rejected_repository_only(hub, tmp_path):
    stand_ins = ComputeStandIns(trained_model.folder(), gate_failures=["perplexity +31% > +25%"])
    result = execute(hub_job(hub, huggingFace={"private": False}), ENV, workdir=tmp_path / "work", devices=0, resolve=stand_ins.resolve)

    assert result.reason == "QualityGateFailed"
    rejected = f"{REPO}.rejected"
    assert result.rejected_uri == f"hf://{rejected}@{hub.head(rejected)}"
    assert (("model", REPO) not in hub.repos) and hub.repos[("model", rejected)].token == TOKEN  # private, whatever the spec said
    assert json.loads(hub.files(rejected)["kompress.json"])["status"] == "rejected"


def test_no_token_is_refused_in_preflight_naming_the_secret(hub, tmp_path):
    result, stand_ins = run(hub_job(hub), tmp_path, env={})

    assert result.reason == "AccessDenied" and result.stage == "preflight"
    assert "spec.output.huggingFace.tokenSecret" in result.message and "KOMPRESS_OUTPUT_HF_TOKEN" in result.message
    assert stand_ins.ran == []


def test_a_token_that_may_not_write_is_refused_in_preflight(hub, tmp_path):
    _seed(hub, REPO, {})  # the repository exists (empty but for .gitattributes); the job's token may read, not write
    hub.repos[("model", REPO)].token = None

    result, _ = run(hub_job(hub), tmp_path, env={"KOMPRESS_OUTPUT_HF_TOKEN": "hf_readonlyTOKEN0123456789"})

    assert result.reason == "AccessDenied" and result.stage == "preflight", result.message
    assert "hf_readonly" not in result.message


def test_a_kill_mid_upload_leaves_no_commit_and_a_retry_completes_it_resending_only_what_never_arrived(hub, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(trained_model.folder(), checkpoint)
    (checkpoint / "model-extra.safetensors").write_bytes(os.urandom(3 << 20))
    first = sha256((checkpoint / "model-extra.safetensors").read_bytes())
    held = sha256((checkpoint / "model.safetensors").read_bytes())
    hold = hub.hold_upload(held)
    job = hub_job(hub)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KOMPRESS_", "AWS_", "HF_"))},
        **ENV,
        "KOMPRESS_JOB": json.dumps({"metadata": job.metadata.model_dump(exclude_none=True), "spec": job.spec.wire()}),
        "KOMPRESS_SCRATCH": str(tmp_path / "scratch"),
        "KOMPRESS_TERMINATION_LOG": str(tmp_path / "killed-termination-log"),
        "KOMPRESS_PROGRESS_BIND": "127.0.0.1:0",
    }
    child = subprocess.Popen([sys.executable, "-m", "kompress_testing.worker_run", str(checkpoint)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert hold.reached.wait(240), "the upload of model.safetensors never started"
        # The other weights file arrives whole (it is never held), then the pod dies with model.safetensors half sent.
        for _ in range(2400):
            if first in hub.lfs_uploads or child.poll() is not None:
                break
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(60)
        hold.release()
    assert child.returncode == -signal.SIGKILL

    assert [c for c in hub.commits if c.repo_id == REPO] == []  # a partial upload never becomes a commit
    assert set(hub.files(REPO)) == {".gitattributes"} and not hub.lfs_object(held).exists()
    assert hub.lfs_uploads == [first]

    result, _ = run(job, tmp_path, checkpoint)

    assert result.ok, result.message
    assert hub.lfs_uploads == [first, held]  # the retry sent only what never arrived
    [commit] = [c for c in hub.commits if c.repo_id == REPO]
    assert commit.oid == result.destination.commit
    read_back(hub, tmp_path, commit.oid)
