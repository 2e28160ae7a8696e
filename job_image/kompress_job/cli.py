"""`kompress`: the command line of the worker image, and of a laptop.

    kompress run JOB.yaml        run a CompressionJob here, the same code path as the Job pod
    kompress plan JOB.yaml       plan it from config.json alone: sizes, memory, problems
    kompress worker              the Job pod's entry point (job from $KOMPRESS_JOB)
    kompress plan-pod            the planning pod's entry point (job from $KOMPRESS_JOB)
    kompress verify URI          check a published model where it is: every file against kompress.json, and its
                                 signature (kompress_job.outputs.verify has its own exit codes: 40-43)

Exit codes are kompress_api.exit_codes: 0 success, 2 bad arguments, 10-22 bad input (the job
would fail the same way again), 1 and 30 may succeed on retry.
"""

from __future__ import annotations

import argparse
import os
import sys

from kompress_api.exit_codes import ExitCode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kompress", description="Compress large language models with llm-compressor, on a laptop or as a Kubernetes Job.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a CompressionJob manifest locally")
    run.add_argument("job", help="path to a CompressionJob YAML manifest (- for stdin)")
    run.add_argument("--workdir", help="scratch folder for the download and the checkpoint (default: a temporary folder)")
    run.add_argument("--devices", type=int, help="accelerators to use (default: spec.resources.gpus, capped to what is present)")
    run.add_argument("--log-format", choices=["text", "json"], help="text with progress bars (default on a terminal) or JSON lines")
    run.add_argument("--progress-bind", help="serve progress JSON and metrics on HOST:PORT (default: off for run)")
    run.add_argument("--json", action="store_true", help="print the result as JSON")

    plan = sub.add_parser("plan", help="plan a CompressionJob from the model's config.json: no weights are read")
    plan.add_argument("job", help="path to a CompressionJob YAML manifest (- for stdin)")
    plan.add_argument("--model-config", help="a local config.json to plan with, instead of fetching it (offline planning)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    verify = sub.add_parser("verify", help="check a published model where it is: checksums against kompress.json, and the signature")
    from kompress_job.outputs.verify import add_arguments

    add_arguments(verify)

    sub.add_parser("worker", help="the Job pod's entry point: the job comes from $KOMPRESS_JOB")
    sub.add_parser("plan-pod", help="the planning pod's entry point: the job comes from $KOMPRESS_JOB")
    return parser


def _passive_openmp_threads() -> None:
    # torch's CPU kernels run on GNU OpenMP, whose idle threads spin. With more busy processes than cores
    # (a laptop doing other work, a shared CI runner), spinning threads starve the working ones: a tiny
    # compression measured 65 s instead of 2 s. Passive waiting costs nothing measurable when the cores are free.
    # libgomp reads this once, when torch is first imported, so it is set before anything imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    _passive_openmp_threads()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, which is ExitCode.USAGE already
        return int(exc.code or 0)

    if args.command in ("run", "worker"):
        from kompress_job import runner

        return runner.main_run(args) if args.command == "run" else runner.main_worker()
    if args.command == "verify":
        from kompress_job.outputs import verify

        return verify.main(args, dict(os.environ))
    if args.command in ("plan", "plan-pod"):
        from kompress_job import collector
        from kompress_job.planning import cli as planner_cli

        collector.off_for_this_process()  # plans once and exits: see kompress_job.collector

        return planner_cli.main_plan(args) if args.command == "plan" else planner_cli.main_plan_pod()
    parser.error(f"unknown command {args.command}")
    return ExitCode.USAGE.code


if __name__ == "__main__":
    sys.exit(main())
