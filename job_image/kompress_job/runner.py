"""`kompress run JOB.yaml` and `kompress worker`: one code path for a laptop and for the Job pod.

    main_run(args)   parse a manifest file, pick a scratch folder and devices, run, print a summary
    main_worker()    the pod: job from $KOMPRESS_JOB, progress on $KOMPRESS_PROGRESS_BIND, JSON logs,
                     the WorkerResult in $KOMPRESS_TERMINATION_LOG (/dev/termination-log)
    execute(...)     what both call: context, progress (server + log sinks), pipeline, termination message

Exit codes are the result's (kompress_api.exit_codes), Terminated (143) when stopped by SIGTERM.
Must not: talk to the Kubernetes API, or print or write a secret value (every output passes the redactor).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


from kompress_api import v1alpha1
from kompress_api.exit_codes import ExitCode
from kompress_api.worker_protocol import (
    ENV_GPUS,
    ENV_LOG_FORMAT,
    ENV_PROGRESS_BIND,
    ENV_SCRATCH_DIR,
    ENV_TERMINATION_LOG,
    SCRATCH_DIR,
    TERMINATION_LOG,
    WorkerResult,
    encode_termination,
)

from kompress_job import logs, pipeline
from kompress_job.job_input import job_from_env, load_job_file
from kompress_job.context import RunContext
from kompress_job.errors import InvalidSpec
from kompress_job.progress import ProgressReporter, Sink
from kompress_job.progress_server import DEFAULT_BIND, ProgressServer
from kompress_job.redaction import Redactor

class Terminated(BaseException):
    """SIGTERM arrived (pod deleted, job suspended, node drained): stop now, report honestly (ExitCode.TERMINATED)."""


def available_devices(requested: int, log: logging.Logger) -> int:
    """`requested` accelerators, capped to what this machine has (torch is imported only when GPUs are asked for)."""
    if requested <= 0:
        return 0
    try:
        import torch

        present = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch, no driver: no GPUs
        present = 0
    if present < requested:
        log.warning("%d GPUs asked for, %d present: running on %s", requested, present, f"{present} GPUs" if present else "the CPU")
    return min(requested, present)


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


def write_termination(path: Path | None, result: WorkerResult, redact: Redactor, log: logging.Logger) -> None:
    if path is None:
        return
    text = redact(encode_termination(result))
    try:
        path.write_text(text)
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc.strerror)


def execute(
    job: v1alpha1.CompressionJob,
    env: Mapping[str, str],
    *,
    workdir: Path,
    devices: int,
    log: logging.Logger | None = None,
    progress_bind: str | None = None,
    termination_log: Path | None = None,
    sinks: list[Sink] | None = None,
    resolve: Callable[[str], pipeline.StageFunction] = pipeline.stage_function,
) -> WorkerResult:
    """Run `job` through the pipeline and leave its result where the operator reads it."""
    log = log or logging.getLogger("kompress")
    redact = Redactor.from_env(env)
    workdir.mkdir(parents=True, exist_ok=True)
    progress = ProgressReporter(pipeline.stages_for(job), sinks=list(sinks or []))
    ctx = RunContext(job=job, workdir=workdir, progress=progress, env=env, log=log, devices=devices)
    server = None
    if progress_bind:
        labels = {"job": job.metadata.name or "", "namespace": job.metadata.namespace or ""}
        try:
            server = ProgressServer(ctx.progress, progress_bind, timings=ctx.timings, labels={k: v for k, v in labels.items() if v}, redact=redact).start()
            log.info("progress at %s/progress", server.url)
        except (OSError, ValueError) as exc:
            # Progress is for watching; the job itself can still succeed without it.
            log.error("cannot serve progress on %s (%s); running without it", progress_bind, exc)
    try:
        result = pipeline.run(ctx, resolve=resolve)
    except Terminated:
        log.error("stopped by SIGTERM during stage %s", ctx.progress.snapshot().stage)
        result = pipeline.result_of(ctx, ExitCode.TERMINATED, ExitCode.TERMINATED.summary, stage=ctx.progress.snapshot().stage)
    finally:
        if server is not None:
            server.stop()
    write_termination(termination_log, result, redact, log)
    return result


def summary(result: WorkerResult) -> str:
    """What `kompress run` prints when it ends."""
    if not result.ok:
        where = f" in stage {result.stage}" if result.stage else ""
        lines = [f"Failed ({result.reason}, exit {result.exit_code}){where}: {result.message}"]
        if result.rejected_uri:
            lines.append(f"  rejected checkpoint kept at {result.rejected_uri}")
        return "\n".join(lines)
    lines = [f"Succeeded: {result.message}"]
    rows = [
        ("manifest", result.manifest_uri),
        ("revision", result.resolved_revision),
        ("checkpoint", f"{result.checkpoint_bytes / 1e9:.3f} GB" if result.checkpoint_bytes is not None else None),
        ("source", f"{result.original_bytes / 1e9:.3f} GB" if result.original_bytes is not None else None),
        ("ratio", f"{result.compression_ratio}x vs bf16" if result.compression_ratio else None),
    ]
    if result.metrics is not None:
        m = result.metrics
        figures = []
        if m.perplexity_increase is not None:
            figures.append(f"perplexity {m.perplexity_increase * 100:+.2f}%")
        if m.kl_divergence is not None:
            figures.append(f"KL {m.kl_divergence:.4f}")
        if m.top1_agreement is not None:
            figures.append(f"top-1 {m.top1_agreement:.3f}")
        rows.append(("quality", ", ".join(figures) or None))
    lines += [f"  {k:<10} {v}" for k, v in rows if v]
    return "\n".join(lines)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main_run(args: Any) -> int:
    env = os.environ
    redact = Redactor.from_env(env)
    fmt = args.log_format or env.get(ENV_LOG_FORMAT) or logs.default_format()
    log = logs.setup(fmt, redact)
    logs.take_over_stdio(fmt, sys.stderr)
    try:
        job = load_job_file(args.job)
    except InvalidSpec as err:
        log.error("%s", err.message)
        print(redact(f"Failed (InvalidSpec, exit {err.exit.code}): {err.message}"), file=logs.RESULT_STREAM)
        return err.exit.code
    sinks: list[Sink] = [logs.TqdmProgressSink()] if fmt == "text" and sys.stderr.isatty() else [logs.LogProgressSink(log)]
    temporary = args.workdir is None
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kompress-"))
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the command line's, so exit 2 and one line, not a traceback
        usage = ExitCode.USAGE
        print(f"Failed ({usage.reason}, exit {usage.code}): cannot use --workdir {workdir}: {exc.strerror or exc}", file=logs.RESULT_STREAM)
        return usage.code
    devices = available_devices(args.devices if args.devices is not None else job.spec.resources.gpus, log)
    termination = Path(env[ENV_TERMINATION_LOG]) if env.get(ENV_TERMINATION_LOG) else None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = execute(job, env, workdir=workdir, devices=devices, log=log, progress_bind=args.progress_bind, termination_log=termination, sinks=sinks)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for sink in sinks:
            if isinstance(sink, logs.TqdmProgressSink):
                sink.close()
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    print(redact(json.dumps(result.wire(), indent=2) if args.json else summary(result)), file=logs.RESULT_STREAM)
    return result.exit_code


def main_worker() -> int:
    return worker(os.environ)


def worker(env: Mapping[str, str], *, resolve: Callable[[str], pipeline.StageFunction] = pipeline.stage_function) -> int:
    """The Job pod's whole life; `resolve` is for harnesses that stand in for the compute stages."""
    redact = Redactor.from_env(env)
    fmt = env.get(ENV_LOG_FORMAT) or "json"
    log = logs.setup(fmt, redact)
    logs.take_over_stdio(fmt, sys.stderr)
    termination = Path(env.get(ENV_TERMINATION_LOG) or TERMINATION_LOG)
    try:
        job = job_from_env(env)
    except InvalidSpec as err:
        log.error("%s", err.message, extra={"reason": err.reason})
        result = WorkerResult(ok=False, exit_code=err.exit.code, reason=err.reason, message=err.message, stage="preflight")
        write_termination(termination, result, redact, log)
        return err.exit.code
    scratch = Path(env.get(ENV_SCRATCH_DIR) or SCRATCH_DIR)
    requested = int(env[ENV_GPUS]) if env.get(ENV_GPUS, "").isdigit() else job.spec.resources.gpus
    devices = available_devices(requested, log)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = execute(
            job,
            env,
            workdir=scratch / "work",
            devices=devices,
            log=log,
            progress_bind=env.get(ENV_PROGRESS_BIND) or DEFAULT_BIND,
            termination_log=termination,
            sinks=[logs.LogProgressSink(log)],
            resolve=resolve,
        )
    except Exception as exc:  # noqa: BLE001 - outside the pipeline (scratch unwritable...): still leave a result
        log.exception("the worker failed outside its stages")
        result = WorkerResult(ok=False, exit_code=ExitCode.INTERNAL.code, reason=ExitCode.INTERNAL.reason, message=f"{type(exc).__name__}: {exc}")
        write_termination(termination, result, redact, log)
    log.info("result: %s", result.reason, extra={"exit_code": result.exit_code, "ok": result.ok})
    return result.exit_code
