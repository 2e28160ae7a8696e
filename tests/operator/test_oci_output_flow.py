"""An oci:// output through the whole cluster path: a registry Secret made by `kubectl create secret docker-registry`,
a CompressionJob naming it, the real operator, the Job controller and scheduler, and the played kubelet running the
real planner and worker as processes, the Secret mounted into the worker as a file. The trained test model ends
up as an image in the real registry (the session's, htpasswd auth), the status names it by digest, and the
password is in none of the objects, statuses, events, ConfigMaps or pod logs."""

from __future__ import annotations

import json
import os

import pytest
from kompress_testing import trained_model
from kompress_testing.pytest_plugin import start_node_agent
from kompress_testing.registry import busybox_binary

from operator_cluster import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def leaks(password: str) -> set[str]:
    """The password as a leak could show it: as is, JSON-escaped, and inside base64 (the dockerconfigjson's `auth` and
    Basic auth headers: the middle of base64("user:" + password), which holds bits of the password alone)."""
    import base64

    forms = {password, json.dumps(password)[1:-1]}
    for before in ("", "a", "ab"):  # each alignment of base64's 3-byte groups
        encoded = base64.b64encode((before + password).encode()).decode()
        start = -(-8 * len(before) // 6)
        forms.add(encoded[start : (8 * (len(before) + len(password))) // 6])
    return {f for f in forms if len(f) >= 8}


def test_an_oci_job_publishes_by_digest_with_its_secret_mounted_and_never_shown(cluster, operator, oci_registry, tmp_path):
    secret = "registry-push"
    cluster.kubectl("create", "secret", "docker-registry", secret, f"--docker-server={oci_registry.host}",
                    f"--docker-username={oci_registry.username}", f"--docker-password={oci_registry.password}")
    # The image's environment as the played kubelet gives it: the worker image's busybox (/bin/busybox there), and
    # the code under test (a worktree's, where PYTHONPATH names it).
    extra_env = {"KOMPRESS_OCI_BUSYBOX": str(busybox_binary()), "OMP_NUM_THREADS": "1",
                 **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})}
    agent = start_node_agent(cluster.api, tmp_path / "node", extra_env=extra_env)
    try:
        folder = trained_model.folder()
        job = {
            "apiVersion": "kompress.dev/v1alpha1",
            "kind": "CompressionJob",
            "metadata": {"name": "chat-oci", "namespace": cluster.namespace},
            "spec": {
                "model": {"uri": f"file://{folder}", "dtype": "float32"},
                "calibration": {"uri": f"file://{folder / trained_model.HELDOUT}", "samples": 8, "maxSequenceLength": 64},
                "recipe": {"preset": "fp8-dynamic"},
                "output": {"uri": f"oci://{oci_registry.host}/cluster/chat:fp8-dynamic", "oci": {"credentialsSecret": secret, "insecure": True}},
                "evaluation": {"enabled": False},
                "resources": {"gpus": 0, "cpu": "1", "memory": "6Gi"},
            },
        }
        cluster.apply(job)
        status = wait_for("the job to finish", lambda: (s := cluster.status("chat-oci")).get("phase") in ("Succeeded", "Failed") and s, timeout=420, interval=0.5)
        pods = cluster.client.get(cluster.pods_path)["items"]
        logs = {p["metadata"]["name"]: cluster.kubectl("logs", p["metadata"]["name"], check=False).stdout for p in pods}
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1) + "\n".join(text[-2000:] for text in logs.values())
    finally:
        agent.stop()

    # The status names the image by digest, and the tag the registry holds points to it.
    destination = status["result"]["destination"]
    assert destination["kind"] == "oci" and destination["tag"] == "fp8-dynamic"
    assert destination["reference"] == f"oci://{oci_registry.host}/cluster/chat@{destination['digest']}"
    assert destination["reference"] in cluster.condition("chat-oci", "Succeeded")["message"]
    head = oci_registry.session.head(f"{oci_registry.url}/v2/cluster/chat/manifests/fp8-dynamic", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert head.headers["Docker-Content-Digest"] == destination["digest"]
    wide = cluster.kubectl("get", "compressionjob", "chat-oci", "-o", "wide").stdout
    assert destination["reference"] in wide  # the Published column

    # The Secret reached the worker as a read-only file, by reference; the planner got none of it.
    [worker] = [p for p in pods if p["metadata"]["labels"].get("kompress.dev/role") == "worker"]
    [plan] = [p for p in pods if p["metadata"]["labels"].get("kompress.dev/role") == "plan"]
    volumes = {v["name"]: v for v in worker["spec"]["volumes"]}
    assert volumes["oci-auth"]["secret"]["secretName"] == secret
    assert {"name": "oci-auth", "mountPath": "/kompress/oci-auth", "readOnly": True} in worker["spec"]["containers"][0]["volumeMounts"]
    assert "oci-auth" not in {v["name"] for v in plan["spec"].get("volumes", [])}

    # The password is nowhere but in the Secret: not in the CompressionJob (spec, status), the Jobs, the pods, the
    # events, the namespace's ConfigMaps, the pods' logs.
    texts = {
        "compressionjob": cluster.kubectl("get", "compressionjob", "chat-oci", "-o", "json").stdout,
        "jobs": json.dumps(cluster.client.get(cluster.jobs_path)),
        "pods": json.dumps(pods),
        "events": json.dumps(cluster.client.get(f"/api/v1/namespaces/{cluster.namespace}/events")),
        "configmaps": json.dumps(cluster.client.get(f"/api/v1/namespaces/{cluster.namespace}/configmaps")),
        **{f"log of {name}": text for name, text in logs.items()},
    }
    assert any("oci: pushed" in text for text in logs.values()), "the worker's log was not read"
    for what, text in texts.items():
        for form in leaks(oci_registry.password):
            assert form not in text, f"the registry password appears in {what}"
    # ...while the Secret itself does hold it (the scan would find it there)
    stored = cluster.client.get(f"/api/v1/namespaces/{cluster.namespace}/secrets/{secret}")
    assert any(form in json.dumps(stored) for form in leaks(oci_registry.password))
