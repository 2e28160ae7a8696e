"""A CompressionJob publishing to the Hub, signed, through the whole system: the real operator on the real control plane,
the node agent playing the kubelet (pods are local processes: Secret volumes as files, secretKeyRef values in the
environment), the real planner, and the real worker with its compute stages stood in for (kompress_testing.worker_run:
the trained test model is the checkpoint; preflight, fetch from the Hub stand-in, calibration and publish are the
product's). The status names the commit; the repository read back with snapshot_download holds exactly the manifest's
files; `kompress verify` checks the signature; and neither the Hub token nor the signing key appears in the
CompressionJob, its children, ConfigMaps, events, pod logs, the status or anything published."""

from __future__ import annotations

import hashlib
import json
import stat
import sys
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from kompress_job import cli
from kompress_testing import signing_keys, trained_model
from kompress_testing.hub import LocalHub
from kompress_testing.pytest_plugin import start_node_agent
from kompress_testing.secret_scan import assert_no_secret, key_secrets
from kompress_testing.wrappers import make_cjob

from operator_cluster import wait_for

pytestmark = pytest.mark.integration

TOKEN = "hf_PLANTEDoperatorWRITE/token+0123456789"
SOURCE = "kompress-testing/glm4-moe-chat"
REPO = "kompress/glm4-moe-chat-w4a16-w8a8"


def stand_in_bin(folder: Path, checkpoint: Path) -> Path:
    """A `kompress` first on the pods' PATH: the worker with its compute stages stood in for, the planner as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "kompress"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = worker ]; then exec {sys.executable} -m kompress_testing.worker_run {checkpoint}; fi\n'
        f'exec {sys.executable} -m kompress_job.cli "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def secret(name: str, data: dict[str, str]) -> dict:
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_a_signed_hub_publication_through_the_operator(cluster, operator, tmp_path, capsys, monkeypatch):
    keys = signing_keys.key_folder(tmp_path / "keys")
    with LocalHub(write_token=TOKEN) as hub:
        hub.add_repo(SOURCE, trained_model.folder())
        agent = start_node_agent(cluster.api, tmp_path / "node", bin_dirs=(stand_in_bin(tmp_path / "bin", trained_model.folder()), Path(sys.executable).parent))
        try:
            cluster.apply(secret("hf-write", {"token": TOKEN + "\n"}))
            cluster.apply(signing_keys.secret("model-signing", keys))
            cjob = make_cjob("chat", namespace="ml").with_spec(
                model={"uri": f"hf://{SOURCE}", "huggingFace": {"endpoint": hub.endpoint}, "dtype": "float32"},
                recipe={"preset": "w4a16-w8a8"},
                calibration={"samples": 8, "maxSequenceLength": 64},
                evaluation={"samples": 4},
                output={"uri": f"hf://{REPO}", "huggingFace": {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf-write", "key": "token"}},
                        "signing": {"keySecret": "model-signing"}},
                resources={"gpus": 0, "cpu": "1", "memory": "6Gi", "scratch": "2Gi"},
            )
            cluster.apply(cjob.manifest())

            status = wait_for("the job to succeed", lambda: (s := cluster.status("chat")).get("phase") in ("Succeeded", "Failed") and s, timeout=420, interval=1)
            assert status["phase"] == "Succeeded", json.dumps(status.get("conditions"), indent=1)
            commit = hub.head(REPO)
            assert status["result"]["destination"] == {"kind": "hf", "reference": f"hf://{REPO}@{commit}", "commit": commit, "revision": "main", "signature": "model.sig"}
            assert status["result"]["manifestUri"] == f"hf://{REPO}@{commit}/kompress.json"
            assert f"(hf: hf://{REPO}@{commit}), signed (model.sig)" in cluster.condition("chat", "Succeeded")["message"]
            assert [c.oid for c in hub.commits if c.repo_id == REPO] == [commit]

            folder = tmp_path / "download"
            snapshot_download(REPO, revision=commit, local_dir=folder, endpoint=hub.endpoint, token=TOKEN)
            manifest = json.loads((folder / "kompress.json").read_text())
            files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}
            assert files == {f["path"] for f in manifest["files"]} | {"kompress.json", "model.sig", ".gitattributes"}
            for entry in manifest["files"]:
                data = (folder / entry["path"]).read_bytes()
                assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"]), entry["path"]

            monkeypatch.setenv("HF_TOKEN", TOKEN)
            code = cli.main(["verify", f"hf://{REPO}@{commit}", "--hf-endpoint", hub.endpoint, "--key", str(keys / signing_keys.PUBLIC_KEY), "--require-signature"])
            line = capsys.readouterr().out
            assert code == 0 and "model.sig verified" in line, line

            # Where a secret could have gone: the resources the operator and the Job controller wrote, events, pod logs, outputs.
            texts = {
                kind: cluster.kubectl("get", kind, "-o", "json").stdout
                for kind in ("compressionjobs", "configmaps", "jobs", "pods", "events")
            }
            logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "node").rglob("*.log"))
            published = "\n".join(data.decode("latin-1") for data in hub.files(REPO).values())
            assert_no_secret([TOKEN, *key_secrets((keys / "private-key.pem").read_text())], **texts, pod_logs=logs, published=published)
            # The Secrets themselves are the only place: referenced by name in the pod spec, never by value.
            [pod] = [p["spec"] for p in json.loads(texts["pods"])["items"] if p["spec"]["containers"][0]["name"] == "worker"]
            assert {"name": "signing-key", "secret": {"secretName": "model-signing", "items": [{"key": "private-key.pem", "path": "private-key.pem"}], "defaultMode": 0o440, "optional": True}} in pod["volumes"]
        finally:
            agent.stop()
