"""The model cache end to end (issue 20): the chart installed with `cache.enabled` and an existing claim, the claim
bound to a hostPath PersistentVolume by kube-controller-manager's PV binder, planning and worker pods placed by
kube-scheduler and run by the played kubelet, which mounts the PV's folder; the operator, planner and worker run
their real code against moto's S3 server.

What is downloaded is counted on the store's side: every S3 request of the pods goes through a counting proxy in
front of moto (the jobs' S3 endpoint), which counts the body bytes it sent per object, whoever asked.
Shown: two jobs started at once on one model fetch each of its files once; a third job with another preset then
downloads 0 bytes (the plan reads config.json from the cache too, and the calibration data is not read again);
a worker killed (SIGKILL) mid-download is retried by the Job controller and resumes, and the bytes fetched stay
within 1.1x the model's size; a model larger than the cache is refused by the plan, naming both sizes."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1 << 20
CLAIM = "kompress-model-cache"
MAX_BYTES = 64 * MiB  # the chart's cache.maxBytes: the chat and wide models fit together, the huge one alone does not
BUCKET = "kompress-demo"
CHAT, BIG, HUGE = "models/chat", "models/wide", "models/huge"


@dataclass
class Env:
    stack: Any
    proxy: Any
    cache: Path  # the PV's hostPath: what the pods see at /var/cache/kompress
    sizes: dict[str, dict[str, int]]  # model prefix -> file -> bytes


def wide_llama(folder: Path, vocab: int) -> Path:
    """A small llama with a wide vocabulary: one safetensors file of about vocab x 2 KiB + 5 MB (fp32); 24576 stays
    below one ranged GET (64 MiB), so a kill inside it shows the resume from the bytes written, not from the range's start."""
    from transformers import LlamaConfig

    from kompress_testing.models import build_tokenizer, seeded_model

    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=512)
    model = seeded_model(config)
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from kompress_testing.counting_proxy import CountingProxy
    from kompress_testing.demo import flow
    from kompress_testing.demo.stack import running_stack
    from kompress_job.io.sources.select import wanted
    from kompress_testing.volumes import delete_volume, hostpath_claim

    workdir = tmp_path_factory.mktemp("cache-e2e")
    values = ["cache.enabled=true", f"cache.existingClaim={CLAIM}", f"cache.maxBytes={MAX_BYTES}"]
    with running_stack(workdir, helm_values=values) as stack:
        pv = hostpath_claim(stack.client, "default", CLAIM, workdir / "cache-pv")
        try:
            models = {CHAT: flow.model_files(), BIG: sorted(wide_llama(workdir / "wide", 24576).iterdir()),
                      HUGE: sorted(wide_llama(workdir / "huge", 32768).iterdir())}
            sizes = {}
            for prefix, files in models.items():
                files = [f for f in files if f.is_file()]
                flow.upload_folder(stack.s3, files, f"s3://{BUCKET}/{prefix}")
                sizes[prefix] = {f.name: f.stat().st_size for f in files if wanted(f.name)}  # what a worker fetches of it
            flow.upload_file(stack.s3, flow.DEMO_DATA, f"s3://{BUCKET}/data/heldout.jsonl")
            flow.create_secret(stack)
            stack.kubectl("create", "serviceaccount", "kompress-worker")
            with CountingProxy(stack.s3.endpoint) as proxy:
                yield Env(stack, proxy, workdir / "cache-pv", sizes)
        finally:
            delete_volume(stack.client, pv)


def job(env: Env, name: str, preset: str, model: str, *, evaluation: bool = True) -> dict[str, Any]:
    from kompress_testing.demo import flow

    doc = flow.with_endpoint(flow.demo_job(), env.proxy.endpoint)
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["model"]["uri"] = f"s3://{BUCKET}/{model}"
    spec["recipe"] = {"preset": preset}
    spec["calibration"].update(samples=8, maxSequenceLength=64)
    spec["evaluation"] = {"samples": 4} if evaluation else {"enabled": False}
    spec["output"]["uri"] = f"s3://{BUCKET}/compressed/{name}"
    spec["backoffLimit"] = 2
    return doc


def apply(env: Env, doc: dict[str, Any]) -> None:
    import yaml

    env.stack.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc, sort_keys=False))


def finished(env: Env, name: str, timeout: float = 600) -> dict[str, Any]:
    from kompress_testing.demo import flow

    final = flow.wait_finished(env.stack, name, timeout=timeout)
    if final["status"]["phase"] != "Succeeded" and final["status"].get("conditions"):
        logs = flow.pod_logs(env.stack, lines=60)
        print(json.dumps(final["status"], indent=1), *(f"--- {pod}\n{text}" for pod, text in logs.items()), sep="\n")
    return final


def served(env: Env, model: str, name: str = "") -> int:
    """Body bytes the store sent for the model's objects (or one of them), to anyone."""
    return env.proxy.body_bytes(f"/{BUCKET}/{model}/{name}")


def condition(cjob: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in cjob["status"]["conditions"] if c["type"] == ctype)


def test_a_model_larger_than_the_cache_is_refused_by_the_plan_with_both_sizes(env: Env) -> None:
    env.proxy.reset()
    apply(env, job(env, "too-big", "fp8-dynamic", HUGE))
    final = finished(env, "too-big", timeout=300)
    total = sum(env.sizes[HUGE].values())
    assert final["status"]["phase"] == "Failed" and condition(final, "Failed")["reason"] == "PlanRejected"
    (problem,) = [p for p in final["status"]["plan"]["problems"] if p["code"] == "CacheTooSmall"]
    assert f"{MAX_BYTES:,} bytes" in problem["message"] and f"{total:,} bytes" in problem["message"]
    assert final["status"]["plan"]["cache"] == {"claimName": CLAIM, "cachedBytes": 0, "totalBytes": total, "downloadBytes": total, "volumeBytes": 0}
    pods = env.stack.client.get("/api/v1/namespaces/default/pods", labelSelector="kompress.dev/role=worker")["items"]
    assert not [p for p in pods if "too-big" in p["metadata"]["name"]]  # no worker ever started
    assert served(env, HUGE, "model.safetensors") == 0  # refused before a byte of weights moved


def test_two_jobs_started_at_once_download_each_file_once(env: Env) -> None:
    env.proxy.reset()
    env.proxy.bytes_per_second = 512 * 1024  # a download of about 10 s, so the second worker comes while the first fetches
    apply(env, job(env, "chat-fp8", "fp8-dynamic", CHAT))
    apply(env, job(env, "chat-block", "fp8-block", CHAT))
    try:
        results = [finished(env, name) for name in ("chat-fp8", "chat-block")]
    finally:
        env.proxy.bytes_per_second = None
    assert [r["status"]["phase"] for r in results] == ["Succeeded", "Succeeded"]
    for name, size in env.sizes[CHAT].items():
        # config.json too: the first planning pod keeps it in the cache, where the other plans and both workers read it.
        assert served(env, CHAT, name) == size, f"{name}: {served(env, CHAT, name)} bytes served for a {size}-byte file"
    entries = [p.parent for p in env.cache.glob("models/s3/*/kompress-demo/models/chat/*/model.safetensors")]
    assert len(entries) == 1  # one copy of the model version on the volume, read by both


def test_a_third_job_with_another_preset_downloads_nothing(env: Env) -> None:
    env.proxy.reset()
    apply(env, job(env, "chat-nvfp4", "nvfp4a16", CHAT))
    final = finished(env, "chat-nvfp4")
    assert final["status"]["phase"] == "Succeeded"
    total = sum(env.sizes[CHAT].values())
    assert served(env, CHAT) == 0  # nothing of the model, to the planning pod or the worker
    assert env.proxy.body_bytes(f"/{BUCKET}/data/heldout.jsonl") == 0  # the calibration samples came from the cache too
    cache = final["status"]["plan"]["cache"]
    assert (cache["cachedBytes"], cache["totalBytes"], cache["downloadBytes"], cache["claimName"]) == (total, total, 0, CLAIM)
    assert cache["volumeBytes"] >= total
    assert "0 B to download" in condition(final, "Planned")["message"]


def worker_process(env: Env, pod: str) -> Any:
    """The worker container's main process: the node agent runs pods as processes of this test's stack."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.environ().get("HOSTNAME") == pod and "worker" in " ".join(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return None


def test_a_worker_killed_mid_download_resumes_within_1_1x_of_the_model(env: Env) -> None:
    env.proxy.reset()
    size = sum(env.sizes[BIG].values())
    weights = env.sizes[BIG]["model.safetensors"]
    env.proxy.bytes_per_second = 2 * MiB  # slow enough to kill it mid-way
    apply(env, job(env, "killed", "fp8-dynamic", BIG, evaluation=False))
    written, deadline = 0, time.monotonic() + 300
    while written < weights * 0.4 and time.monotonic() < deadline:
        for state in env.cache.glob(f"models/s3/*/{BUCKET}/models/wide/*/model.safetensors.partial.json"):
            try:
                written = sum(json.loads(state.read_text()).get("progress", {}).values())
            except (OSError, ValueError):
                pass  # being replaced
        time.sleep(0.05)
    assert written >= weights * 0.4, "the worker never got 40 % into the weights"
    pods = env.stack.client.get("/api/v1/namespaces/default/pods", labelSelector="kompress.dev/role=worker")["items"]
    (first,) = [p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith("killed-")]
    proc = worker_process(env, first)
    assert proc is not None, f"no process of pod {first}"
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup: its lock and in-use mark stay behind until they go stale
    print(f"killed with {written:,} bytes of the weights written and {served(env, BIG):,} bytes of the model served")
    env.proxy.bytes_per_second = None

    final = finished(env, "killed")
    assert final["status"]["phase"] == "Succeeded" and final["status"]["attempts"] == 2
    fetched = served(env, BIG)
    print(f"resumed after SIGKILL: {fetched / size:.3f}x the model fetched in all ({fetched:,} of {size:,} bytes)")
    assert size <= fetched <= 1.1 * size, f"{fetched / size:.3f}x the model"
    pods = env.stack.client.get("/api/v1/namespaces/default/pods", labelSelector="kompress.dev/role=worker")["items"]
    killed = next(p for p in pods if p["metadata"]["name"] == first)
    assert killed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
