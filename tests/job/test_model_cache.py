"""The model cache shared by jobs and retries (issue 20), against a local S3 (moto) behind a counting proxy:
what the store served is counted on the store's side of the wire, not taken from the worker.

What a user notices: a second job on the same model downloads nothing; two jobs started at once download each
file once; a worker killed mid-download resumes and the bytes fetched stay within 1.1x the model; a cache too
small for the model is refused by the plan, naming the sizes; eviction is least recently used and never takes
what a running job uses."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from kompress_api.v1alpha1 import CompressionJob, ModelSource, S3Access
from kompress_job.io.cache.fetch import fetch_cached
from kompress_job.io.cache.lock import SourceLock
from kompress_job.io.cache.metrics import STATS
from kompress_job.io.cache.store import ModelCache
from kompress_job.context import RunContext
from kompress_job.errors import PlanRejected
from kompress_job.progress import ProgressReporter
from kompress_job.io.s3client import make_client
from kompress_job.io.s3objects import TransferSettings
from kompress_job.io.transfer import S3Transfer
from kompress_job.io.upload import UploadItem
from kompress_testing.counting_proxy import CountingProxy

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def proxy(s3):
    with CountingProxy(s3.endpoint) as p:
        yield p


def upload(s3, bucket, folder, prefix, part_mib=16):
    client = make_client(S3Access(**s3.access()), s3.env("model"), "model")
    items = [UploadItem(p, bucket, f"{prefix}/{p.relative_to(folder).as_posix()}") for p in sorted(folder.rglob("*")) if p.is_file()]
    with S3Transfer(client, TransferSettings(part_size=part_mib * MiB, threshold=part_mib * MiB)) as transfer:
        transfer.upload_files(items)


def model_bytes(folder, names):
    return sum((folder / n).stat().st_size for n in names)


def job_for(uri, s3, proxy, preset="w4a16", **model):
    return CompressionJob.model_validate({
        "metadata": {"name": f"cache-{preset}", "namespace": "default", "uid": "u-1"},
        "spec": {
            "model": {"uri": uri, "s3": s3.access(endpoint=proxy.endpoint), **model},
            "recipe": {"preset": preset},
            "output": {"uri": "file:///tmp/kompress-cache-test-out"},
        },
    })


def fetch_stage(job, env, workdir):
    from kompress_job.stages import fetch_model

    ctx = RunContext(job=job, workdir=workdir, progress=ProgressReporter(["fetch-model"]), env=env, log=logging.getLogger("kompress.test"))
    with ctx.progress.stage("fetch-model"):
        fetch_model.run(ctx)
    return ctx


def test_a_second_job_with_another_preset_downloads_nothing_and_its_plan_says_cached(s3, bucket, proxy, tmp_path, capsys):
    from kompress_testing.models import write_model

    folder = write_model("glm4-moe", tmp_path / "src")
    upload(s3, bucket, folder, "models/glm")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    env = {**s3.env("model"), "KOMPRESS_CACHE_DIR": str(cache_dir)}
    uri = f"s3://{bucket}/models/glm"

    first = fetch_stage(job_for(uri, s3, proxy, "w4a16"), env, tmp_path / "w1")
    weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors"))
    served_first = proxy.body_bytes(f"/{bucket}/models/glm/")
    assert served_first == first.source_bytes  # every byte of the model once
    assert Path(first.model_dir).is_relative_to(cache_dir)
    proxy.reset()
    hits_before = STATS.hits

    job_file = tmp_path / "job.yaml"
    second = job_for(uri, s3, proxy, "fp8-dynamic")
    job_file.write_text(yaml.safe_dump(second.model_dump(by_alias=True, exclude_none=True, mode="json")))
    from kompress_job.planning.cli import main_plan

    assert main_plan(SimpleNamespace(job=str(job_file), model_config=None, json=False), env) == 0
    assert f"cached: {first.source_bytes:,} of {first.source_bytes:,} bytes (0 to download)" in capsys.readouterr().out
    assert proxy.body_bytes(f"/{bucket}/models/glm/") == 0  # the plan read config.json from the cache, not the store
    again = fetch_stage(second, env, tmp_path / "w2")

    assert proxy.body_bytes(f"/{bucket}/models/glm/") == 0  # the store served nothing, to the plan or the fetch
    assert again.model_dir == first.model_dir and again.resolved_revision == first.resolved_revision
    for name in weights:
        assert (again.model_dir / name).read_bytes() == (folder / name).read_bytes()
    assert STATS.hits - hits_before == len(list(p for p in Path(again.model_dir).iterdir() if p.is_file()))
    from prometheus_client import generate_latest

    from kompress_job.progress_server import ProgressServer

    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(ProgressServer(ProgressReporter(["fetch-model"])).registry).decode()
    metrics = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert metrics["kompress_cache_bytes_saved_total"] >= first.source_bytes  # the second job's whole model
    assert metrics["kompress_cache_hits_total"] >= STATS.hits - hits_before
    assert metrics["kompress_cache_bytes_on_volume"] >= first.source_bytes


def test_the_first_plan_keeps_config_json_in_the_cache_for_every_later_plan_and_the_fetch(s3, bucket, proxy, tmp_path, capsys):
    from kompress_job.planning.cli import main_plan
    from kompress_testing.models import write_model

    folder = write_model("llama", tmp_path / "src")
    upload(s3, bucket, folder, "models/planned")
    (tmp_path / "cache").mkdir()
    env = {**s3.env("model"), "KOMPRESS_CACHE_DIR": str(tmp_path / "cache")}
    job = job_for(f"s3://{bucket}/models/planned", s3, proxy)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job.model_dump(by_alias=True, exclude_none=True, mode="json")))
    for _ in range(2):  # the planning pods of two jobs started at once
        assert main_plan(SimpleNamespace(job=str(job_file), model_config=None, json=False), env) == 0
    capsys.readouterr()
    fetch_stage(job, env, tmp_path / "w1")

    from kompress_job.io.sources.select import wanted

    for path in sorted(p for p in folder.iterdir() if p.is_file()):  # each file of the model served once, in all
        assert proxy.body_bytes(f"/{bucket}/models/planned/{path.name}") == (path.stat().st_size if wanted(path.name) else 0), path.name
    assert proxy.requests.count(f"GET /{bucket}/models/planned/config.json") == 1  # the first plan's, kept for the rest


FETCH_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from kompress_api.v1alpha1 import ModelSource
    from kompress_job.io.cache.fetch import fetch_cached
    from kompress_job.io.cache.store import ModelCache
    source = ModelSource.model_validate(json.loads(sys.argv[1]))
    cache = ModelCache.from_env(os.environ)
    out = fetch_cached(source, cache, os.environ, on_wait=lambda holder: print("waited for", holder, flush=True))
    print(json.dumps({"dir": str(out.fetched.model_dir), "cached": out.before.cached, "bytes": out.fetched.bytes}), flush=True)
""")


def start_fetch(source, env, **extra):
    full = {**os.environ, **env, **extra, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", FETCH_SCRIPT, source.model_dump_json(by_alias=True, exclude_none=True)], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def big_model(folder, size):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(os.urandom(size))
    return folder


def test_two_workers_started_at_once_download_each_file_once(s3, bucket, tmp_path):
    folder = big_model(tmp_path / "src", 12 * MiB)
    upload(s3, bucket, folder, "m/two", part_mib=5)
    env = {**s3.env("model"), "KOMPRESS_CACHE_DIR": str(tmp_path / "cache")}
    with CountingProxy(s3.endpoint, bytes_per_second=8 * MiB) as proxy:  # slow enough that both overlap
        source = ModelSource(uri=f"s3://{bucket}/m/two", s3=s3.access(endpoint=proxy.endpoint))
        workers = [start_fetch(source, env) for _ in range(2)]
        outputs = [w.communicate(timeout=180) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
        results = [json.loads(o[0].strip().splitlines()[-1]) for o in outputs]
        for name in ("model.safetensors", "config.json"):
            assert proxy.body_bytes(f"/{bucket}/m/two/{name}") == (folder / name).stat().st_size  # once, not twice
    assert results[0]["dir"] == results[1]["dir"]
    assert sum("waited for" in o[0] for o in outputs) == 1  # the second waited for the first, then read its files
    assert sorted(r["cached"] for r in results) == [0, results[0]["bytes"]]
    got = Path(results[0]["dir"]) / "model.safetensors"
    assert got.read_bytes() == (folder / "model.safetensors").read_bytes()


def test_a_worker_killed_mid_download_resumes_within_1_1x_of_the_model(s3, bucket, tmp_path):
    size = 30 * MiB
    folder = big_model(tmp_path / "src", size)
    upload(s3, bucket, folder, "m/kill", part_mib=5)
    cache_dir = tmp_path / "cache"
    env = {**s3.env("model"), "KOMPRESS_CACHE_DIR": str(cache_dir), "KOMPRESS_CACHE_STALE_SECONDS": "2",
           "KOMPRESS_TRANSFER_WORKERS": "1", "KOMPRESS_TRANSFER_RANGE_MIB": "5"}
    with CountingProxy(s3.endpoint, bytes_per_second=6 * MiB) as proxy:
        source = ModelSource(uri=f"s3://{bucket}/m/kill", s3=s3.access(endpoint=proxy.endpoint))
        worker = start_fetch(source, env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = list(cache_dir.rglob("model.safetensors.partial.json"))
            done = json.loads(states[0].read_text())["done"] if states else {}
            if len(done) >= 2:
                break
            time.sleep(0.02)
        worker.kill()  # SIGKILL: no cleanup, its lock and in-use mark stay behind and go stale
        worker.wait()
        assert len(done) >= 2, "the download never got two ranges in"
        assert not list(cache_dir.rglob("models/**/model.safetensors"))  # no half file under the real name
        proxy.bytes_per_second = None
        retry = start_fetch(source, env)
        out, err = retry.communicate(timeout=180)
        assert retry.returncode == 0, err[-3000:]
        fetched = proxy.body_bytes(f"/{bucket}/m/kill/model.safetensors")
    result = json.loads(out.strip().splitlines()[-1])
    got = Path(result["dir"]) / "model.safetensors"
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256((folder / "model.safetensors").read_bytes()).digest()
    print(f"resumed download: {fetched / size:.3f}x the file fetched in all")
    assert size <= fetched <= 1.1 * size, f"{fetched / size:.3f}x the file"


def test_a_download_killed_inside_its_one_range_resumes_from_the_bytes_written(s3, bucket, tmp_path):
    # A file smaller than one ranged GET (64 MiB by default): resuming per range would fetch it all again.
    size = 24 * MiB
    folder = big_model(tmp_path / "src", size)
    upload(s3, bucket, folder, "m/inside", part_mib=8)
    cache_dir = tmp_path / "cache"
    env = {**s3.env("model"), "KOMPRESS_CACHE_DIR": str(cache_dir), "KOMPRESS_CACHE_STALE_SECONDS": "2"}
    with CountingProxy(s3.endpoint, bytes_per_second=4 * MiB) as proxy:
        source = ModelSource(uri=f"s3://{bucket}/m/inside", s3=s3.access(endpoint=proxy.endpoint))
        worker = start_fetch(source, env)
        written, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline and written < size // 2:
            states = list(cache_dir.rglob("model.safetensors.partial.json"))
            try:
                state = json.loads(states[0].read_text()) if states else {}
            except ValueError:
                continue  # read while being replaced
            written = sum(state.get("progress", {}).values())
            time.sleep(0.02)
        worker.kill()
        worker.wait()
        assert size // 2 <= written < size, "the download never got half way, or finished before the kill"
        proxy.bytes_per_second = None
        retry = start_fetch(source, env)
        out, err = retry.communicate(timeout=180)
        assert retry.returncode == 0, err[-3000:]
        fetched = proxy.body_bytes(f"/{bucket}/m/inside/model.safetensors")
    got = Path(json.loads(out.strip().splitlines()[-1])["dir"]) / "model.safetensors"
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256((folder / "model.safetensors").read_bytes()).digest()
    print(f"resumed inside a range: {fetched / size:.3f}x the file fetched in all")
    assert size <= fetched <= 1.1 * size, f"{fetched / size:.3f}x the file"


def test_a_cache_too_small_is_refused_in_the_plan_naming_the_sizes(s3, bucket, proxy, tmp_path, capsys):
    from kompress_job.io.sources.select import wanted
    from kompress_testing.models import write_model

    folder = write_model("llama", tmp_path / "src")
    upload(s3, bucket, folder, "m/small")
    total = model_bytes(folder, [p.name for p in folder.iterdir() if p.is_file() and wanted(p.name)])
    limit = total // 2
    env = {**s3.env("model"), "KOMPRESS_CACHE_DIR": str(tmp_path / "cache"), "KOMPRESS_CACHE_MAX_BYTES": str(limit)}
    (tmp_path / "cache").mkdir()
    job = job_for(f"s3://{bucket}/m/small", s3, proxy)
    from kompress_job.planning import cache as cache_plan

    view = cache_plan.assess(job, env)
    assert view.total == total and view.cached == 0
    assert f"{total:,} bytes" in view.problem and f"{limit:,} bytes" in view.problem
    with pytest.raises(PlanRejected, match="CacheTooSmall"):
        fetch_cached(job.spec.model, ModelCache.from_env(env), env)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job.model_dump(by_alias=True, exclude_none=True, mode="json")))
    from kompress_job.planning.cli import main_plan

    capsys.readouterr()
    assert main_plan(SimpleNamespace(job=str(job_file), model_config=None, json=True), env) == 20  # PlanRejected
    refused = json.loads(capsys.readouterr().out)
    (problem,) = [p for p in refused["problems"] if p["code"] == "CacheTooSmall"]
    assert f"{total:,} bytes" in problem["message"] and refused["cache"] == {"cached_bytes": 0, "total_bytes": total, "download_bytes": total, "problem": view.problem, "volume_bytes": ModelCache.from_env(env).used_bytes(), "claim": None}
    assert proxy.body_bytes("model.safetensors") == 0  # refused before a byte of weights moved


def make_entry(cache, name, size, used):
    entry = cache.root / "models" / "s3" / "aws" / name
    (entry / ".kompress").mkdir(parents=True)
    (entry / "model.safetensors").write_bytes(b"\1" * size)
    meta = entry / ".kompress" / "entry.json"
    meta.write_text("{}")
    os.utime(meta, (used, used))
    return entry


@pytest.mark.unit
def test_eviction_is_least_recently_used_and_spares_what_a_running_job_uses(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=3 * MiB)
    now = time.time()
    oldest = make_entry(cache, "oldest", MiB, now - 300)
    older = make_entry(cache, "older", MiB, now - 200)
    recent = make_entry(cache, "recent", MiB, now - 100)
    mark = cache.use(oldest, "running-job", "s3://b/oldest", SimpleNamespace(revision="r", bytes=MiB))  # a job reads it
    os.utime(oldest / ".kompress" / "entry.json", (now - 300, now - 300))
    try:
        evicted = cache.make_room(MiB // 2)
    finally:
        mark.release()
    assert [e.path for e in evicted] == [older]  # not the in-use one, not the recent one
    assert oldest.exists() and recent.exists() and not older.exists()
    dead = oldest / ".kompress" / "users" / "killed-pod"
    dead.write_text("{}")
    os.utime(dead, (now - 3600, now - 3600))  # a pod killed an hour ago: its mark was never refreshed
    assert [e.path for e in cache.make_room(MiB + MiB // 2)] == [oldest] and not dead.exists()


@pytest.mark.unit
def test_a_lock_whose_holder_stopped_heart_beating_is_taken_over(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    first = SourceLock(path, "pod-a", heartbeat=0.1, stale_after=0.5)
    assert first.try_acquire()
    second = SourceLock(path, "pod-b", heartbeat=0.1, stale_after=0.5)
    time.sleep(0.8)
    assert not second.try_acquire()  # alive: the heartbeat keeps it fresh
    first._beat.stop()  # the holder dies without releasing
    waits = []
    second.acquire(on_wait=waits.append, timeout=10)
    assert waits == ["pod-a"] and json.loads(path.read_text())["owner"] == "pod-b"
    second.release()
    first.release()  # a dead holder's late release does not remove the new holder's lock (already gone here)
    assert not path.exists()


def test_a_hub_model_is_cached_by_commit_and_a_second_job_fetches_no_file(hub, model_folder, tmp_path):
    hub.add_repo("zai-org/Tiny-MoE", model_folder)
    cache = ModelCache(tmp_path / "cache")
    source = ModelSource(uri="hf://zai-org/Tiny-MoE", hugging_face={"endpoint": hub.endpoint})

    first = fetch_cached(source, cache, {})
    served = len(hub.downloaded())
    assert served == len(first.fetched.files) and first.before.cached == 0
    assert first.fetched.resolved_revision in str(first.fetched.model_dir)  # the entry is the commit's
    first.use.release()
    second = fetch_cached(source, cache, {})

    assert len(hub.downloaded()) == served  # the Hub's own log: no file requested again
    assert second.fetched.model_dir == first.fetched.model_dir and second.before.cached == second.before.total > 0
    (model_folder / "config.json").write_text('{"model_type": "changed"}')
    hub.add_repo("zai-org/Tiny-MoE", model_folder)  # a new commit on main
    third = fetch_cached(source, cache, {})
    assert third.fetched.model_dir != first.fetched.model_dir  # a new version is a new entry, the old one untouched
    assert (first.fetched.model_dir / "config.json").read_text() != '{"model_type": "changed"}'


@pytest.mark.unit
def test_a_volume_without_room_for_the_missing_bytes_is_refused_counting_what_eviction_frees(tmp_path, monkeypatch):
    from kompress_job.io.cache import store
    from kompress_job.io.cache.fetch import too_small
    from kompress_job.io.cache.store import Holdings

    cache = ModelCache(tmp_path)
    old = make_entry(cache, "old", MiB, time.time() - 60)  # unused: eviction may free it
    real = os.statvfs(tmp_path)
    monkeypatch.setattr(store.os, "statvfs", lambda _: SimpleNamespace(f_bavail=2, f_frsize=MiB, f_blocks=real.f_blocks))
    wanted = Holdings(total=10 * MiB, cached=7 * MiB, files_cached=1, files=2)  # 3 MiB missing
    assert too_small(cache, wanted, "s3://b/m", cache.root / "models" / "new") is None  # 2 MiB free + 1 MiB evictable
    mark = cache.use(old, "running-job", "s3://b/old", SimpleNamespace(revision="r", bytes=MiB))
    try:
        problem = too_small(cache, wanted, "s3://b/m", cache.root / "models" / "new")
    finally:
        mark.release()
    assert problem is not None and f"({3 * MiB:,} bytes) to download" in problem and f"{2 * MiB:,} bytes) free or evictable" in problem


@pytest.mark.unit
def test_a_killed_downloads_partial_bytes_are_not_asked_for_twice(tmp_path):
    # Found end to end: the retry of a worker killed mid-download was refused CacheTooSmall, its own .partial file
    # counted once as used and again as missing.
    from kompress_job.io.cache.fetch import too_small
    from kompress_job.io.cache.store import Holdings

    cache = ModelCache(tmp_path, max_bytes=10 * MiB)
    entry = cache.root / "models" / "s3" / "aws" / "m" / "digest"
    (entry / ".kompress").mkdir(parents=True)
    (entry / ".kompress" / "entry.json").write_text("{}")
    (entry / "model.safetensors.partial").write_bytes(os.urandom(4 * MiB))  # 4 of 8 MiB written before the kill
    wanted = Holdings(total=8 * MiB, cached=0, files_cached=0, files=1)
    assert too_small(cache, wanted, "s3://b/m", entry) is None  # 6 MiB free under the limit, 4 MiB still to come
    assert cache.needed_bytes(entry, wanted) == 4 * MiB
    assert too_small(cache, Holdings(total=11 * MiB, cached=0, files_cached=0, files=1), "s3://b/m", entry) is not None
