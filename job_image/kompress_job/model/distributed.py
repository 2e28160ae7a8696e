"""Several accelerators: llm-compressor's distributed (DDP) oneshot, launched with torchrun.

llm-compressor 0.14 has no tensor parallelism; it speeds up with several GPUs only when the same
script runs once per GPU under torchrun (its examples/*_ddp_example.py): every rank calls
`compressed_tensors.offload.init_dist()`, loads the model inside `load_offloaded_model()` (rank 0
reads the weights, the others build on meta and receive them), gets the *same* calibration dataset
(llm-compressor notices identical datasets and gives each rank its share), runs `oneshot`, and calls
`save_pretrained` (only the source rank writes). Hessians, AWQ statistics and observer ranges are
reduced across ranks inside llm-compressor.

This module is that script, driven by files in a work folder the parent writes:

    request.json        model folder, dtype, trust_remote_code, spec.recipe, sequence length, the
                        resolved module table (each rank re-resolves and must get the same plan)
    calibration/        the calibration Dataset (datasets' save_to_disk), when the recipe needs data
    progress.jsonl      rank 0 appends {"done", "total", "message"} lines; the parent relays them
    result.json         rank 0: {"ok": true} or {"ok": false, "exit_code", "reason", "message"}
    checkpoint/         the compressed checkpoint (written by the source rank)

    launch_plan(...)    pure: the torchrun command line and environment
    run(...)            the parent side: write the request, run torchrun (its own process group), relay progress
                        and stream every rank's output into the worker's log as it comes, read the result;
                        stopped (SIGTERM), it passes SIGTERM to the whole group, then SIGKILL after a grace
    python -m kompress_job.model.distributed --work DIR     one rank

Without an accelerator (tests on CPU) ranks join a gloo process group instead of init_dist(), which
insists on an accelerator; everything else is the GPU path.
Must not: decide the recipe (the resolver does) or publish anything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kompress_api.exit_codes import ExitCode

from kompress_job import errors

REQUEST = "request.json"
PROGRESS = "progress.jsonl"
RESULT = "result.json"
CALIBRATION = "calibration"
CHECKPOINT = "checkpoint"
# How long torchrun and the ranks get to stop after SIGTERM before they are killed: inside Kubernetes' default
# 30 s termination grace, so the worker still writes its termination message.
TERMINATE_GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    env: dict[str, str]
    work: Path
    checkpoint: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", self.work / CHECKPOINT)


def launch_plan(*, devices: int, work: Path, python: str = sys.executable, cpu_threads: int | None = None) -> LaunchPlan:
    """The torchrun invocation for `devices` ranks on this node. Pure."""
    if devices < 2:
        raise ValueError("a distributed launch needs at least 2 devices")
    argv = [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",  # single node: a local rendezvous on a free port, nothing to configure
        f"--nproc-per-node={devices}",
        "-m",
        "kompress_job.model.distributed",
        "--work",
        str(work),
    ]
    env = {
        # each rank gets an equal share of the CPU cores (torchrun defaults to 1 thread per rank)
        "OMP_NUM_THREADS": str(max(1, (cpu_threads or os.cpu_count() or devices) // devices)),
        "TOKENIZERS_PARALLELISM": "false",
        # NCCL collectives wait on rank 0 while it writes the checkpoint; llm-compressor extends its own
        # timeouts for saving, this keeps a slow disk from killing a multi-hour run at the last step
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }
    return LaunchPlan(argv=argv, env=env, work=work)


def write_request(work: Path, *, model_dir: Path, dtype: str, trust_remote_code: bool, recipe: dict[str, Any], max_seq_length: int, modules: dict[str, str], calibration: Any) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for stale in (PROGRESS, RESULT):
        (work / stale).unlink(missing_ok=True)
    if calibration is not None:
        calibration.save_to_disk(str(work / CALIBRATION))
    request = {
        "model_dir": str(model_dir),
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
        "recipe": recipe,
        "max_seq_length": max_seq_length,
        "modules": modules,
        "calibration": str(work / CALIBRATION) if calibration is not None else None,
        "checkpoint": str(work / CHECKPOINT),
    }
    (work / REQUEST).write_text(json.dumps(request))


def run(
    plan: LaunchPlan,
    *,
    report: Callable[[int, int, str], None] | None = None,
    log: Callable[[str], None] | None = None,
    grace_seconds: float = TERMINATE_GRACE_SECONDS,
) -> Path:
    """Run the ranks; relay rank 0's progress and every rank's output (to `log`, line by line as it comes);
    return the checkpoint folder or raise the rank's error.

    torchrun and its ranks run in a process group of their own. When this process is stopped (SIGTERM raises
    runner.Terminated here, or any other exception), the whole group gets SIGTERM, `grace_seconds` to exit,
    then SIGKILL: no rank is left running on the GPUs after the worker is gone."""
    env = {**os.environ, **plan.env}
    stop = threading.Event()
    relay = threading.Thread(target=_relay_progress, args=(plan.work / PROGRESS, report, stop), daemon=True)
    relay.start()
    output = subprocess.PIPE if log is not None else None
    try:
        proc = subprocess.Popen(plan.argv, env=env, stdout=output, stderr=subprocess.STDOUT if log else None, text=True, errors="replace", start_new_session=True)
        reader = threading.Thread(target=_stream_lines, args=(proc.stdout, log), daemon=True) if log is not None else None
        if reader is not None:
            reader.start()
        try:
            returncode = proc.wait()
        except BaseException:
            _stop_group(proc, grace_seconds)
            raise
        finally:
            if reader is not None:
                reader.join(timeout=5)
    finally:
        stop.set()
        relay.join(timeout=5)
    result = _read_json(plan.work / RESULT)
    if result and not result.get("ok"):
        raise _error_from(result)
    if returncode != 0 or not result:
        raise RuntimeError(f"distributed compression failed (torchrun exit code {returncode}); see the worker log for each rank's output")
    return plan.checkpoint


def _stream_lines(stream: Any, log: Callable[[str], None]) -> None:
    """Every line the ranks print, into the worker's log (which redacts it) as it comes, not at the end."""
    for line in stream:
        line = line.rstrip("\n").rsplit("\r", 1)[-1].rstrip()  # a progress bar redrawing itself: its last state
        if line:
            log(line)
    stream.close()


def _stop_group(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM to torchrun and every rank (one process group), then SIGKILL to what is left after the grace."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # torchrun is gone; a rank that outlived it would still hold its GPU
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def _error_from(result: dict[str, Any]) -> Exception:
    """The error rank 0 reported, with its reason and message as it reported them."""
    by_reason = {m.reason: m for m in ExitCode}
    code = result.get("exit_code")
    member = by_reason.get(str(result.get("reason"))) or (ExitCode.from_code(code) if isinstance(code, int) else None) or ExitCode.INTERNAL
    return errors.error_for(member, str(result.get("message") or "a distributed rank failed"))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _relay_progress(path: Path, report: Callable[[int, int, str], None] | None, stop: threading.Event, interval: float = 0.5) -> None:
    """Relay each complete line rank 0 appended to `path`; a line still being written waits for the next poll.

    The file is read by byte offset (a text file's tell() is refused after iterating it), and a line that is
    not what rank 0 writes is skipped, never retried for ever: progress must not freeze for a multi-hour run."""
    offset = 0
    while True:
        finished = stop.is_set()  # read once more after the ranks ended: their last lines
        if report is not None and path.exists():
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.splitlines():
                try:
                    item = json.loads(line)
                    done, total, message = int(item["done"]), int(item["total"]), str(item.get("message", ""))
                except (ValueError, KeyError, TypeError):
                    continue
                report(done, total, message)
        if finished:
            return
        stop.wait(interval)


# ------------------------------------------------------------------------------------------------
# One rank
# ------------------------------------------------------------------------------------------------


def _init_process_group() -> None:
    import torch
    import torch.distributed as dist

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        from compressed_tensors.offload import init_dist

        init_dist()
        return
    # compressed-tensors' init_dist() requires an accelerator; on a CPU the same env:// rendezvous over gloo
    dist.init_process_group(backend="gloo", init_method="env://", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    dist.barrier()


def rank_main(work: Path) -> int:
    import torch.distributed as dist

    _init_process_group()
    rank = dist.get_rank()
    try:
        _rank_work(work, rank)
        if rank == 0:
            (work / RESULT).write_text(json.dumps({"ok": True}))
        return 0
    except errors.KompressError as err:
        if rank == 0:
            (work / RESULT).write_text(json.dumps({"ok": False, "exit_code": err.exit.code, "reason": err.reason, "message": err.message}))
        return err.exit.code
    except Exception as err:  # noqa: BLE001 - reported to the parent, which fails the stage
        if rank == 0:
            (work / RESULT).write_text(json.dumps({"ok": False, "exit_code": 1, "reason": "WorkerError", "message": f"rank 0: {errors.describe(err)}"}))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _rank_work(work: Path, rank: int) -> None:
    from kompress_api.v1alpha1 import Recipe

    from kompress_job.model import modelio
    from kompress_job.model.compression import run_oneshot
    from kompress_job.recipe import resolve

    request = json.loads((work / REQUEST).read_text())
    model = modelio.load_causal_lm(
        request["model_dir"], dtype=request["dtype"], trust_remote_code=request["trust_remote_code"], offloaded=True, offload_folder=work / "offload"
    )
    tokenizer = modelio.load_tokenizer(request["model_dir"], trust_remote_code=request["trust_remote_code"])
    resolved = resolve(Recipe.model_validate(request["recipe"]), model)
    if resolved.module_table() != request["modules"]:
        differ = sorted(name for name in set(request["modules"]) | set(resolved.module_table()) if request["modules"].get(name) != resolved.module_table().get(name))
        raise errors.CompressionMismatch(
            f"the recipe resolved differently on the loaded model than in the parent process, for {len(differ)} module(s): {', '.join(differ[:5])}"
        )
    dataset = None
    if request["calibration"]:
        from datasets import load_from_disk

        dataset = load_from_disk(request["calibration"])

    progress_file = work / PROGRESS

    def report(done: int, total: int, message: str) -> None:
        if rank == 0:
            with progress_file.open("a") as handle:
                handle.write(json.dumps({"done": done, "total": total, "message": message}) + "\n")

    run_oneshot(model, resolved, dataset=dataset, tokenizer=tokenizer, max_seq_length=request["max_seq_length"], trust_remote_code=request["trust_remote_code"], report=report)
    model.save_pretrained(request["checkpoint"], save_compressed=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kompress_job.model.distributed", description="one rank of a distributed compression (run by torchrun)")
    parser.add_argument("--work", required=True, type=Path)
    args = parser.parse_args(argv)
    return rank_main(args.work)


if __name__ == "__main__":
    sys.exit(main())
