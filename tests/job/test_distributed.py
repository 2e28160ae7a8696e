"""More than one device: llm-compressor's distributed oneshot under torchrun. The launch is a pure function;
the real run is tested on this CPU with 2 ranks over gloo (the GPU path differs only in init_dist/NCCL)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from _worker_helpers import make_ctx, make_job, run_stages, tiny_models

from kompress_job.model import distributed


@pytest.mark.unit
def test_launch_plan_runs_one_rank_per_device_with_torchrun():
    plan = distributed.launch_plan(devices=4, work=Path("/scratch/distributed"), python="/usr/bin/python3", cpu_threads=64)
    assert plan.argv == [
        "/usr/bin/python3", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4",
        "-m", "kompress_job.model.distributed", "--work", "/scratch/distributed",
    ]
    assert plan.env["OMP_NUM_THREADS"] == "16"
    assert plan.checkpoint == Path("/scratch/distributed/checkpoint")
    with pytest.raises(ValueError):
        distributed.launch_plan(devices=1, work=Path("/x"))


@pytest.mark.unit
def test_a_ranks_error_becomes_the_same_kompress_error_in_the_parent(tmp_path):
    from kompress_job.errors import NoCalibrationSamples

    (tmp_path / distributed.RESULT).write_text('{"ok": false, "exit_code": 13, "reason": "NoCalibrationSamples", "message": "no rows"}')
    plan = distributed.LaunchPlan(argv=[sys.executable, "-c", "raise SystemExit(1)"], env={}, work=tmp_path)
    with pytest.raises(NoCalibrationSamples, match="no rows"):
        distributed.run(plan)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        ({"exit_code": 24, "reason": "CompressionMismatch", "message": "resolved differently"}, "CompressionMismatch"),
        ({"exit_code": 99, "reason": "ModelFileCorrupt", "message": "resolved differently"}, "ModelFileCorrupt"),  # the reason wins
        ({"exit_code": 1, "reason": "WorkerError", "message": "resolved differently"}, "WorkerError"),
    ],
)
def test_the_parent_keeps_the_reason_and_message_the_rank_reported(tmp_path, reported, expected):
    from kompress_api.exit_codes import ExitCode
    from kompress_job.errors import KompressError

    (tmp_path / distributed.RESULT).write_text(json.dumps({"ok": False, **reported}))
    plan = distributed.LaunchPlan(argv=[sys.executable, "-c", "raise SystemExit(1)"], env={}, work=tmp_path)
    with pytest.raises(KompressError) as err:
        distributed.run(plan)
    assert err.value.reason == expected and err.value.message == "resolved differently"
    assert err.value.exit.retriable is (expected == ExitCode.INTERNAL.reason)


@pytest.mark.slow
def test_two_ranks_compress_the_founding_preset_and_the_checkpoint_verifies(tiny_models, tmp_path):
    ctx = make_ctx(make_job(tiny_models["glm4-moe"], gpus=2), tiny_models["glm4-moe"], tmp_path, devices=2)
    snapshots = []
    ctx.progress.add_sink(snapshots.append)
    run_stages(ctx, "load-model")
    assert next(ctx.model.parameters()).device.type == "meta"  # the parent never holds the weights
    run_stages(ctx, "compress", "save", "verify")
    assert ctx.checkpoint_dir == tmp_path / "distributed" / "checkpoint"
    assert ctx.verification["ok"], ctx.verification["failures"]
    assert ctx.verification["by_group"]["w8a8-int8-static+sparse2:4"] == 10
    relayed = [s for s in snapshots if s.stage == "compress" and s.total_steps]
    assert relayed and relayed[-1].step == relayed[-1].total_steps


@pytest.mark.slow
def test_a_data_free_recipe_runs_in_one_process_even_with_several_devices(tiny_models, tmp_path):
    ctx = make_ctx(make_job(tiny_models["llama"], preset="fp8-dynamic", gpus=2), tiny_models["llama"], tmp_path, devices=2)
    run_stages(ctx, "load-model", "compress", "save", "verify")
    assert not (tmp_path / "distributed").exists()
    assert ctx.verification["ok"], ctx.verification["failures"]


@pytest.mark.unit
def test_a_partly_written_progress_line_waits_for_its_end_and_the_relay_goes_on(tmp_path):
    import threading
    import time

    path = tmp_path / distributed.PROGRESS
    seen: list[tuple[int, int, str]] = []
    stop = threading.Event()
    relay = threading.Thread(target=distributed._relay_progress, args=(path, lambda d, t, m: seen.append((d, t, m)), stop), daemon=True)
    path.write_text('{"done": 1, "total": 4, "message": "layer 1"}\n{"done": 2, "tot')  # rank 0 is mid-write
    relay.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    wait_for(1)
    time.sleep(0.7)  # at least one more poll with the half line there
    with path.open("a") as f:
        f.write('al": 4, "message": "layer 2"}\nnot json\n{"done": 3, "total": 4, "message": "layer 3"}\n')
    wait_for(3)
    stop.set()
    relay.join(timeout=5)
    assert seen == [(1, 4, "layer 1"), (2, 4, "layer 2"), (3, 4, "layer 3")]
    assert not relay.is_alive()


FAKE_TORCHRUN = """
import signal, subprocess, sys, time
from pathlib import Path
work = Path(sys.argv[1])
rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a rank, in torchrun's group
(work / "rank.pid").write_text(str(rank.pid))
if sys.argv[2] == "polite":
    signal.signal(signal.SIGTERM, lambda *_: ((work / "got-sigterm").write_text("yes"), sys.exit(143)))  # leaves its rank behind
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("[rank0] calibrating layer 1/4", flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class _Stopped(BaseException):
    """What runner.Terminated is to the worker: raised in the main thread by the SIGTERM handler."""


@pytest.mark.unit
@pytest.mark.parametrize("child", ["polite", "stubborn"])
def test_rank_output_is_logged_as_it_comes_and_sigterm_stops_the_whole_group(tmp_path, child):
    import signal
    import threading
    import time

    script = tmp_path / "fake_torchrun.py"
    script.write_text(FAKE_TORCHRUN)
    plan = distributed.LaunchPlan(argv=[sys.executable, str(script), str(tmp_path), child], env={}, work=tmp_path)
    logged: list[str] = []

    def stop_when_logged() -> None:
        deadline = time.monotonic() + 30
        while not logged and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the fake torchrun is sleeping, still running
        os.kill(os.getpid(), signal.SIGTERM)  # the pod is deleted

    def on_sigterm(signum, frame):
        raise _Stopped()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    threading.Thread(target=stop_when_logged, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(_Stopped):
            distributed.run(plan, log=logged.append, grace_seconds=1.0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert logged == ["[rank0] calibrating layer 1/4"]  # streamed while it ran, not collected at the end
    assert time.monotonic() - started < 30
    assert (tmp_path / "got-sigterm").exists() is (child == "polite")  # SIGTERM first, not SIGKILL
    rank = int((tmp_path / "rank.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(rank) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(rank)  # no orphaned rank holding a GPU
