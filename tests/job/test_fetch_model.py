"""The fetch-model stage's sources: an S3 prefix (moto over HTTP), the Hub (a local stand-in, never the live
hub), and a folder on a volume. What a user notices: the right files arrive, the exact revision is
recorded, a re-run does not download again, and bad input fails with the right reason."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil

import pytest

from kompress_api.v1alpha1 import ModelSource
from kompress_job.io import sources
from kompress_job.errors import AccessDenied, ModelNotFound, StorageUnreachable
from kompress_job.io.sources.select import wanted
from kompress_job.io.transfer import S3Transfer
from kompress_job.io.upload import UploadItem
from kompress_job.io.s3client import make_client
from kompress_api.v1alpha1 import S3Access

pytestmark = pytest.mark.integration

WANTED = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def upload_folder(s3, bucket, folder, prefix):
    client = make_client(S3Access(**s3.access()), s3.env("model"), "model")
    items = [UploadItem(p, bucket, f"{prefix}/{p.relative_to(folder).as_posix()}") for p in sorted(folder.rglob("*")) if p.is_file()]
    with S3Transfer(client) as transfer:
        transfer.upload_files(items)


def files_in(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts and ".kompress" not in p.parts}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("path", "trust", "expected"),
    [
        ("config.json", False, True),
        ("model-00001-of-00009.safetensors", False, True),
        ("model.safetensors.index.json", False, True),
        ("tokenizer.model", False, True),
        ("chat_template.jinja", False, True),
        ("pytorch_model.bin", False, False),
        ("original/consolidated.00.pth", False, False),
        ("original/params.json", False, False),
        ("README.md", False, False),
        ("modeling_glm.py", False, False),
        ("modeling_glm.py", True, True),
    ],
)
def test_only_weights_config_and_tokenizer_are_wanted(path, trust, expected):
    assert wanted(path, trust) is expected


def test_s3_prefix_is_downloaded_verified_and_pinned_to_its_etags(s3, bucket, model_folder, tmp_path):
    upload_folder(s3, bucket, model_folder, "models/tiny")
    source = ModelSource(uri=f"s3://{bucket}/models/tiny", s3=s3.access())
    seen = []

    fetched = sources.fetch_model(source, tmp_path / "model", s3.env("model"), on_bytes=lambda done, total: seen.append((done, total)))

    assert files_in(tmp_path / "model") == WANTED  # no .bin, README or original/
    for name in WANTED:
        assert (tmp_path / "model" / name).read_bytes() == (model_folder / name).read_bytes()
    assert fetched.bytes == sum((model_folder / n).stat().st_size for n in WANTED)
    assert fetched.resolved_revision.startswith("etags-sha256:")
    assert seen[-1] == (fetched.bytes, fetched.bytes)

    again = sources.fetch_model(source, tmp_path / "model", s3.env("model"))
    assert again.reused_bytes == again.bytes  # a re-run downloads nothing
    assert again.resolved_revision == fetched.resolved_revision

    (model_folder / "config.json").write_text('{"model_type": "changed"}')
    upload_folder(s3, bucket, model_folder, "models/tiny")
    s3.client().delete_object(Bucket=bucket, Key="models/tiny/tokenizer.json")
    changed = sources.fetch_model(source, tmp_path / "model", s3.env("model"))
    assert changed.resolved_revision != fetched.resolved_revision
    assert (tmp_path / "model" / "config.json").read_text() == '{"model_type": "changed"}'
    assert files_in(tmp_path / "model") == WANTED - {"tokenizer.json"}  # nothing stale from the earlier version


def test_s3_prefix_without_config_or_weights_is_model_not_found(s3, bucket, model_folder, tmp_path):
    upload_folder(s3, bucket, model_folder, "models/tiny")
    with pytest.raises(ModelNotFound, match="no config.json"):
        sources.fetch_model(ModelSource(uri=f"s3://{bucket}/models", s3=s3.access()), tmp_path / "m", s3.env("model"))
    (model_folder / "model.safetensors").unlink()
    upload_folder(s3, bucket, model_folder, "models/bin-only")
    with pytest.raises(ModelNotFound, match="pytorch_model.bin: convert the weights to safetensors"):
        sources.fetch_model(ModelSource(uri=f"s3://{bucket}/models/bin-only", s3=s3.access()), tmp_path / "m", s3.env("model"))


def test_s3_model_errors_say_what_is_wrong(s3, bucket, tmp_path):
    good = s3.access()
    with pytest.raises(AccessDenied, match="refused the credentials"):
        sources.check_model(ModelSource(uri=f"s3://{bucket}/m", s3=good), s3.env("model", secret_access_key="wrong-secret"))
    with pytest.raises(ModelNotFound, match="bucket 'no-such-bucket' does not exist"):
        sources.check_model(ModelSource(uri="s3://no-such-bucket/m", s3=good), s3.env("model"))
    with pytest.raises(StorageUnreachable, match="127.0.0.1:9"):
        sources.check_model(ModelSource(uri=f"s3://{bucket}/m", s3={**good, "endpoint": "http://127.0.0.1:9"}), s3.env("model"))
    with pytest.raises(AccessDenied, match="KOMPRESS_MODEL_S3_AWS_ACCESS_KEY_ID is not set"):
        sources.check_model(ModelSource(uri=f"s3://{bucket}/m", s3=good), {})


def test_the_standard_credential_chain_is_used_without_a_secret(s3, bucket, model_folder, tmp_path, monkeypatch):
    upload_folder(s3, bucket, model_folder, "models/tiny")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_access_key)
    source = ModelSource(uri=f"s3://{bucket}/models/tiny", s3={**s3.access(), "credentialsSecret": None})
    fetched = sources.fetch_model(source, tmp_path / "model", {})
    assert files_in(tmp_path / "model") == WANTED and fetched.bytes > 0


def test_a_volume_folder_is_used_in_place(model_folder):
    fetched = sources.fetch_model(ModelSource(uri=f"file://{model_folder}"), model_folder.parent / "unused", {})
    assert fetched.model_dir == model_folder
    assert set(fetched.files) == WANTED
    assert sources.fetch_model(ModelSource(uri=str(model_folder)), model_folder, {}).model_dir == model_folder
    with pytest.raises(ModelNotFound, match="is the volume mounted"):
        sources.check_model(ModelSource(uri="/models/absent"), {})


class TestHub:
    TOKEN = "hf_test_token_for_the_stand_in_0001"

    @pytest.fixture
    def repo(self, hub, model_folder):
        commit = hub.add_repo("zai-org/Tiny-MoE", model_folder, token=self.TOKEN)
        return commit

    def source(self, hub, **kw):
        return ModelSource(uri="hf://zai-org/Tiny-MoE", hugging_face={"endpoint": hub.endpoint}, **kw)

    def test_revision_resolves_to_a_commit_and_only_allowed_files_arrive(self, hub, repo, model_folder, tmp_path, caplog):
        caplog.set_level(logging.DEBUG)
        fetched = sources.fetch_model(self.source(hub), tmp_path / "model", {"HF_TOKEN": self.TOKEN})

        assert fetched.resolved_revision == repo
        assert set(fetched.files) == WANTED
        assert files_in(tmp_path / "model") == WANTED
        served = {p.rsplit("/", 1)[-1] for p in hub.downloaded()}
        assert served == WANTED  # .bin, README and original/ were never requested
        assert all(f"/resolve/{repo}/" in p for p in hub.downloaded())  # every file from the one commit
        assert {r.authorization for r in hub.requests} == {f"Bearer {self.TOKEN}"}  # the token was sent...
        assert self.TOKEN not in caplog.text  # ...and never logged, even at DEBUG

    def test_a_rerun_downloads_nothing_again(self, hub, repo, tmp_path):
        sources.fetch_model(self.source(hub), tmp_path / "model", {"HF_TOKEN": self.TOKEN})
        before = len(hub.downloaded())
        again = sources.fetch_model(self.source(hub), tmp_path / "model", {"HF_TOKEN": self.TOKEN})
        assert len(hub.downloaded()) == before and again.reused_bytes == again.bytes

    def test_a_dropped_connection_resumes_the_file_from_where_it_stopped(self, hub, model_folder, tmp_path):
        # huggingface_hub keeps what it received in whole 10 MiB chunks: a 24 MiB shard cut after 15 MiB
        # is resumed with a Range request from 10 MiB on, not fetched again from zero.
        big = tmp_path / "big"
        shutil.copytree(model_folder, big)
        weights = os.urandom(24 << 20)
        (big / "model.safetensors").write_bytes(weights)
        hub.add_repo("zai-org/Big-MoE", big, token=self.TOKEN)
        hub.cut_once("model.safetensors", 15 << 20)
        source = ModelSource(uri="hf://zai-org/Big-MoE", hugging_face={"endpoint": hub.endpoint})
        sources.fetch_model(source, tmp_path / "model", {"HF_TOKEN": self.TOKEN})
        gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]
        assert [r.range for r in gets] == [None, f"bytes={10 << 20}-"]
        assert (tmp_path / "model" / "model.safetensors").read_bytes() == weights

    def test_partial_files_a_killed_process_left_behind_are_deleted(self, hub, repo, tmp_path):
        # huggingface_hub names partial files per process: nothing would ever resume these, and at full scale
        # they hold gigabytes of scratch.
        stale = tmp_path / "model" / ".cache" / "huggingface" / "download" / "Xy3k9Q.0123abcd.5f0e2a71.incomplete"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"\0" * 4096)
        fetched = sources.fetch_model(self.source(hub), tmp_path / "model", {"HF_TOKEN": self.TOKEN})
        assert not stale.exists()
        assert files_in(tmp_path / "model") == set(fetched.files)

    def test_a_file_that_does_not_match_the_hubs_sha256_is_fetched_again(self, hub, repo, tmp_path):
        fetched = sources.fetch_model(self.source(hub), tmp_path / "model", {"HF_TOKEN": self.TOKEN})
        weights = tmp_path / "model" / "model.safetensors"
        good = hashlib.sha256(weights.read_bytes()).hexdigest()
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))  # same size, different content, newer mtime
        sources.fetch_model(self.source(hub), tmp_path / "model", {"HF_TOKEN": self.TOKEN})
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == good
        assert fetched.bytes > 0

    def test_a_pinned_revision_is_honoured(self, hub, repo, model_folder, tmp_path):
        newer = tmp_path / "newer"
        newer.mkdir()
        for p in model_folder.iterdir():
            if p.is_file():
                (newer / p.name).write_bytes(p.read_bytes())
        (newer / "config.json").write_text('{"model_type": "glm4_moe", "v": 2}')
        v2 = hub.add_repo("zai-org/Tiny-MoE", newer, revision="v2", token=self.TOKEN)
        fetched = sources.fetch_model(self.source(hub, revision="v2"), tmp_path / "model", {"HF_TOKEN": self.TOKEN})
        assert fetched.resolved_revision == v2 != repo
        assert '"v": 2' in (tmp_path / "model" / "config.json").read_text()
        # The planner fetches config.json at the commit preflight pinned, whatever main says by then.
        planned = sources.fetch_config(self.source(hub), tmp_path / "cfg", {"HF_TOKEN": self.TOKEN}, revision=v2)
        assert planned.resolved_revision == v2 and '"v": 2' in planned.path.read_text()

    def test_config_only_fetch_for_the_planner(self, hub, repo, tmp_path):
        got = sources.fetch_config(self.source(hub), tmp_path / "cfg", {"HF_TOKEN": self.TOKEN})
        assert got.path.read_text().startswith('{"model_type": "glm4_moe"')
        assert got.resolved_revision == repo
        assert {p.rsplit("/", 1)[-1] for p in hub.downloaded()} == {"config.json"}

    def test_hub_errors_say_what_is_wrong(self, hub, repo, tmp_path):
        with pytest.raises(AccessDenied, match="refused the token"):
            sources.check_model(self.source(hub), {"HF_TOKEN": "hf_wrong"})
        with pytest.raises(ModelNotFound, match="private and the token"):
            sources.check_model(self.source(hub), {})
        with pytest.raises(ModelNotFound, match="revision 'nope'"):
            sources.check_model(self.source(hub, revision="nope"), {"HF_TOKEN": self.TOKEN})
        with pytest.raises(AccessDenied, match="HF_TOKEN is not set"):
            secret = {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf", "key": "token"}}
            sources.check_model(ModelSource(uri="hf://zai-org/Tiny-MoE", hugging_face=secret), {})
        hub.add_repo("zai-org/Gated", tmp_path, gated=True)
        with pytest.raises(AccessDenied, match="gated"):
            sources.check_model(ModelSource(uri="hf://zai-org/Gated", hugging_face={"endpoint": hub.endpoint}), {"HF_TOKEN": self.TOKEN})
        with pytest.raises(StorageUnreachable):
            sources.check_model(ModelSource(uri="hf://zai-org/Tiny-MoE", hugging_face={"endpoint": "http://127.0.0.1:9"}), {})

    def test_hf_endpoint_variable_points_at_a_mirror(self, hub, repo, tmp_path):
        source = ModelSource(uri="hf://zai-org/Tiny-MoE")
        assert sources.check_model(source, {"HF_TOKEN": self.TOKEN, "HF_ENDPOINT": hub.endpoint}) == repo
