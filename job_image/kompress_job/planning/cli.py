"""`kompress plan JOB.yaml` and `kompress plan-pod`: a plan from config.json alone, on a laptop or in the
operator's CPU-only planning pod.

    main_plan(args)   the manifest from a file; config.json (and the safetensors index beside it, which says
                      whether the checkpoint holds its MTP layers) from --model-config or fetched from
                      spec.model.uri with the credentials in this environment; a table (or --json) on stdout
    main_plan_pod()   the job from $KOMPRESS_JOB, credentials from the pod's env; the PlannerResult
                      (≤ 4096 bytes, errors kept before warnings) in $KOMPRESS_TERMINATION_LOG
                      (/dev/termination-log), the table in the log

Exit codes (kompress_api.exit_codes): 0 planned; a plan with errors (each with its fix) ends with their own
code when they are all of one kind (14 TargetsMatchNothing, 15 OverlappingGroups, 21 InvalidRecipe, 12 a preset
that does not apply), else 20 PlanRejected; 10 a bad manifest; 11 no readable config.json; 12 an architecture
transformers cannot build or Kompress cannot plan; 19/30 the model's store refused or could not be reached;
1 anything unexpected.
Must not: print or write a secret value (everything written passes the redactor, as the worker's output does).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kompress_api.exit_codes import ExitCode
from kompress_api.worker_protocol import ENV_TERMINATION_LOG, TERMINATION_LOG, PlannerResult, encode_termination

from kompress_job.errors import KompressError, describe
from kompress_job.redaction import Redactor

log = logging.getLogger("kompress.plan")
PLANNED = "Planned"  # the reason of a plan without errors (PlannerResult's default)


def _plan(job: Any, config_path: str | None, env: Mapping[str, str]) -> Any:
    from kompress_job.planning import plan as planner

    if config_path is not None:
        return planner.make_plan(job, planner.read_config(config_path), weight_names=planner.local_weight_names(config_path))
    from kompress_job.planning import cache as cache_plan

    view = cache_plan.assess(job, env)
    with tempfile.TemporaryDirectory(prefix="kompress-plan-") as tmp:
        config, names, _ = cache_plan.plan_inputs(job, env, Path(tmp), view)
    return cache_plan.apply(planner.make_plan(job, config, weight_names=names), view)


def main_plan(args: Any, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    out = sys.stdout
    # stdout is the plan's alone (`--json` must parse): what libraries print while planning (llm-compressor's
    # loguru sink, made on stdout when it is first imported, for custom recipes) goes to stderr.
    sys.stdout = sys.stderr
    try:
        return _plan_command(args, env, out)
    finally:
        sys.stdout = out


def _plan_command(args: Any, env: Mapping[str, str], out: Any) -> int:
    from kompress_job.planning.report import render
    from kompress_job.job_input import load_job_file

    redact = Redactor.from_env(env)
    try:
        job = load_job_file(args.job)
        plan = _plan(job, args.model_config, env)
    except KompressError as err:
        if args.json:
            print(redact(json.dumps({"ok": False, "exit_code": err.exit.code, "reason": err.reason, "message": err.message}, indent=1)), file=out)
        else:
            print(redact(f"kompress plan: {err.reason}: {err.message}"), file=sys.stderr)
        return err.exit.code
    out.write(redact(json.dumps(plan.to_json(), indent=1) + "\n" if args.json else render(plan)))
    return plan.exit.code


def main_plan_pod(env: Mapping[str, str] | None = None) -> int:
    from kompress_job.planning.report import render
    from kompress_job.job_input import job_from_env

    env = os.environ if env is None else env
    redact = Redactor.from_env(env)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    termination = Path(env.get(ENV_TERMINATION_LOG) or TERMINATION_LOG)
    try:
        job = job_from_env(env)
        plan = _plan(job, None, env)
    except KompressError as err:
        log.error("%s", redact(f"planning failed: {err.reason}: {err.message}"))
        return _finish(termination, PlannerResult(ok=False, exit_code=err.exit.code, reason=err.reason, message=err.message), redact)
    except Exception as err:  # noqa: BLE001 - still leave the operator a reason
        log.error("%s", redact(f"planning failed unexpectedly: {type(err).__name__}: {err}"))
        result = PlannerResult(ok=False, exit_code=ExitCode.INTERNAL.code, reason=ExitCode.INTERNAL.reason, message=describe(err))
        return _finish(termination, result, redact)
    sys.stdout.write(redact(render(plan)))
    code = plan.exit
    result = PlannerResult(ok=not plan.errors, exit_code=code.code, reason=code.reason if plan.errors else PLANNED, message=plan.headline(), plan=plan.summary())
    return _finish(termination, result, redact)


def _finish(termination: Path, result: PlannerResult, redact: Redactor) -> int:
    try:
        termination.write_text(redact(encode_termination(result)))
    except OSError as err:
        log.error("cannot write the termination message to %s: %s", termination, err.strerror or err)
    return result.exit_code
