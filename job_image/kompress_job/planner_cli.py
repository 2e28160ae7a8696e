"""`kompress plan JOB.yaml` and `kompress plan-pod`: a plan from config.json alone, on a laptop or in the
operator's CPU-only planning pod.

    main_plan(args)   the manifest from a file; config.json from --model-config or fetched from spec.model.uri
                      with the credentials in this environment; a table (or --json) on stdout
    main_plan_pod()   the job from $KOMPRESS_JOB, credentials from the pod's env; the PlannerResult
                      (≤ 4096 bytes, errors kept before warnings) in $KOMPRESS_TERMINATION_LOG
                      (/dev/termination-log), the table in the log

Exit codes (kompress_api.exit_codes): 0 planned; 20 PlanRejected (the plan has errors: each with its fix);
10 a bad manifest; 11 no readable config.json; 12 an architecture transformers cannot build; 19/30 the
model's store refused or could not be reached; 1 anything unexpected.
Must not: print or write a secret value (only the job's references to Secrets are ever read here).
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
from kompress_api.worker_protocol import ENV_JOB, ENV_TERMINATION_LOG, TERMINATION_LOG, PlannerResult, encode_termination

from kompress_job.errors import InvalidSpec, KompressError

log = logging.getLogger("kompress.plan")


def _plan(job: Any, config_path: str | None, env: Mapping[str, str]) -> Any:
    from kompress_job import plan as planner

    if config_path is not None:
        return planner.make_plan(job, planner.read_config(config_path))
    with tempfile.TemporaryDirectory(prefix="kompress-plan-") as tmp:
        config, _revision = planner.fetch_config(job, env, Path(tmp))
    return planner.make_plan(job, config)


def main_plan(args: Any) -> int:
    from kompress_job.planning.report import render

    try:
        job = load_job_file(args.job)
        plan = _plan(job, args.model_config, os.environ)
    except KompressError as err:
        if args.json:
            print(json.dumps({"ok": False, "exit_code": err.exit.code, "reason": err.reason, "message": err.message}, indent=1))
        else:
            print(f"kompress plan: {err.reason}: {err.message}", file=sys.stderr)
        return err.exit.code
    print(json.dumps(plan.to_json(), indent=1) if args.json else render(plan), end="" if not args.json else "\n")
    return ExitCode.PLAN_REJECTED.code if plan.errors else ExitCode.OK.code


def main_plan_pod(env: Mapping[str, str] | None = None) -> int:
    from kompress_job.planning.report import render

    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    termination = Path(env.get(ENV_TERMINATION_LOG) or TERMINATION_LOG)
    try:
        job = job_from_env(env)
        plan = _plan(job, None, env)
    except KompressError as err:
        log.error("planning failed: %s: %s", err.reason, err.message)
        return _finish(termination, PlannerResult(ok=False, exit_code=err.exit.code, reason=err.reason, message=err.message))
    except Exception as err:  # noqa: BLE001 - still leave the operator a reason
        log.exception("planning failed unexpectedly")
        return _finish(termination, PlannerResult(ok=False, exit_code=ExitCode.INTERNAL.code, reason=ExitCode.INTERNAL.reason, message=f"{type(err).__name__}: {err}"))
    sys.stdout.write(render(plan))
    code = ExitCode.PLAN_REJECTED if plan.errors else ExitCode.OK
    return _finish(termination, PlannerResult(ok=not plan.errors, exit_code=code.code, reason=code.reason if plan.errors else "Planned", message=plan.headline(), plan=plan.summary()))


def _finish(termination: Path, result: PlannerResult) -> int:
    try:
        termination.write_text(encode_termination(result))
    except OSError as err:
        log.error("cannot write the termination message to %s: %s", termination, err)
    return result.exit_code


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------


def _parse(doc: Any, where: str) -> Any:
    from pydantic import ValidationError

    from kompress_api import v1alpha1

    if not isinstance(doc, dict):
        raise InvalidSpec(f"{where} is not a CompressionJob object")
    try:
        return v1alpha1.parse(doc)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()[:10])
        raise InvalidSpec(f"{where} is not a valid CompressionJob: {problems}") from None


def load_job_file(path: str) -> Any:
    """The one CompressionJob in a YAML file (- for stdin); other documents (a Secret, ...) are ignored."""
    import yaml

    from kompress_api import v1alpha1

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise InvalidSpec(f"cannot read {path}: {err.strerror or err}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise InvalidSpec(f"{path} is not valid YAML: {err}") from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == v1alpha1.KIND]
    if len(jobs) != 1:
        raise InvalidSpec(f"{path} must hold exactly one {v1alpha1.KIND}, found {len(jobs)}")
    return _parse(jobs[0], path)


def job_from_env(env: Mapping[str, str]) -> Any:
    """The pod's job: $KOMPRESS_JOB (metadata and spec as JSON, references to Secrets only)."""
    from kompress_api import v1alpha1

    raw = env.get(ENV_JOB)
    if not raw:
        raise InvalidSpec(f"${ENV_JOB} is not set: the operator passes the CompressionJob to the pod in it")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise InvalidSpec(f"${ENV_JOB} is not JSON: {err}") from None
    if isinstance(doc, dict):
        doc.setdefault("apiVersion", v1alpha1.API_VERSION)
        doc.setdefault("kind", v1alpha1.KIND)
        doc.pop("status", None)
    return _parse(doc, f"${ENV_JOB}")
