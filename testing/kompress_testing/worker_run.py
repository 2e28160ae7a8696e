"""Run the worker pod's entry point in a child process with the compute stages stood in for.

    python -m kompress_testing.worker_run [CHECKPOINT_DIR] [--real-compute] [--die-before-part N] [--gate-failure TEXT] [--hang-in STAGE]

The environment is the pod's ($KOMPRESS_JOB, credentials, $KOMPRESS_TERMINATION_LOG...). Everything
but the compute stages is the product's own code: JSON logs, progress server, preflight, fetch,
calibration, publish, termination message; with `--real-compute` the compute stages that exist run
too (load-model, baseline, compress, save, verify, evaluate) and only missing ones are stood in for. `--die-before-part N` ends the process the way SIGKILL
does (no cleanup, no exception handlers) when the Nth multipart part upload is about to be sent: a
fault at the transport boundary, through botocore's handler registry. `--hang-in STAGE` makes that
stand-in stage wait forever (to see what SIGTERM does mid-job).
Must not: be imported by product code.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path


def die_before_part(n: int) -> None:
    """Every botocore session made from now on kills this process as its Nth UploadPart request is about to go out."""
    from botocore import handlers

    seen = [0]
    lock = threading.Lock()

    def hook(request, **_):  # noqa: ANN001
        with lock:
            seen[0] += 1
            if seen[0] >= n:
                os._exit(137)

    handlers.BUILTIN_HANDLERS.append(("before-send.s3.UploadPart", hook))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path, nargs="?")
    parser.add_argument("--real-compute", action="store_true")
    parser.add_argument("--die-before-part", type=int)
    parser.add_argument("--gate-failure", action="append", default=[])
    parser.add_argument("--hang-in")
    args = parser.parse_args(argv)
    if args.die_before_part:
        die_before_part(args.die_before_part)

    from kompress_job import runner
    from kompress_testing.jobs import ComputeStandIns

    stand_ins = ComputeStandIns(args.checkpoint, gate_failures=args.gate_failure, real_compute=args.real_compute)

    def resolve(name: str):  # noqa: ANN202
        if name == args.hang_in:
            return lambda ctx: threading.Event().wait()
        return stand_ins.resolve(name)

    return runner.worker(os.environ, resolve=resolve)


if __name__ == "__main__":
    sys.exit(main())
