"""lm-evaluation-harness task scores (spec.evaluation.tasks): the original before compression, the checkpoint after.

    task_folder(ctx)       the folder of spec.evaluation.taskSource (a mounted ConfigMap or volume, a local path,
                           or an S3 prefix downloaded into scratch); None without one
    choose_backend(...)    hf or vllm, from what was asked, the GPUs, the image and whether the checkpoint is servable
    score(...)             run lm-eval as a library, task by task (each with its own numFewshot and limit); a
                           JSON-able record {backend, seconds, tasks: {task: {samples, metrics: {metric: {value,
                           stderr, higherIsBetter}}}}}
    compare(...)           per task and metric: original, compressed, difference, both stderrs (TaskScore)
    gate_failures(...)     one line per metric that dropped more than spec.evaluation.gate.maxTaskDrop
    for_status(...)        the scores bounded for the status and the termination message, failures first
    estimate(...)          what the tasks add to a job (time, device memory), for the plan, or which it cannot tell

The baseline stage scores the original and writes the record to disk (evaluation/tasks-original.json), so the
evaluate stage needs only that file, never the original model. Both models are scored by the same backend, or the
difference would measure the backends.

Data: with a taskSource, lm-eval runs with the Hub offline (HF_HUB_OFFLINE for datasets and huggingface_hub), so a
task that would download fails at once instead of hanging in an air-gapped cluster; relative `data_files` in the
YAML are read from the task folder (the working directory while lm-eval runs, as the `datasets` json builder
resolves them against it). Without one, registry tasks fetch their datasets from the Hub (or HF_ENDPOINT).
Must not: hold both models, or let lm-eval write anywhere but scratch.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from kompress_api.v1alpha1 import MAX_STATUS_TASK_SCORES, TASK_CONFIG_MAP_MOUNT, EvaluationTask, TaskScore, TaskSource

from kompress_job.errors import InvalidSpec, KompressError


class TaskRunSummary(TypedDict):
    """What the manifest records of the two lm-eval runs besides their scores (RunContext.task_summary)."""

    backend: str
    secondsOriginal: float | None
    secondsCompressed: float | None
    samples: dict[str, int]


ORIGINAL_RECORD = "evaluation/tasks-original.json"
SOURCE_DIR = "evaluation/task-source"
RECORD_FORMAT = 1
CPU_BATCH = 8
_NOT_METRICS = {"alias", "name", "sample_len", "samples"}


# ---------------------------------------------------------------------------------------------
# Where the tasks are, and which backend scores them
# ---------------------------------------------------------------------------------------------


def task_folder(source: TaskSource | None, workdir: Path, env: dict[str, str]) -> Path | None:
    """The folder lm-eval reads task YAML and data from (include_path and working directory)."""
    if source is None:
        return None
    if source.config_map is not None:
        folder = Path(TASK_CONFIG_MAP_MOUNT)
    elif source.volume is not None:
        folder = Path(source.volume.mount_path)
    elif source.uri.startswith("s3://"):
        folder = download_prefix(source, workdir / SOURCE_DIR, env)
    else:
        folder = Path(source.uri[len("file://"):] if source.uri.startswith("file://") else source.uri)
    if not folder.is_dir():
        raise InvalidSpec(f"spec.evaluation.taskSource: {folder} is not a folder the worker can read (is the ConfigMap or volume mounted?)")
    return folder


def download_prefix(source: TaskSource, dest: Path, env: dict[str, str]) -> Path:
    """Every object under the S3 prefix into `dest` (task files are small: one request each)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from kompress_job.io.s3client import make_client, parse_s3_uri, raise_storage_error
    from kompress_job.io.s3objects import list_objects

    loc = parse_s3_uri(source.uri)
    client = make_client(source.s3, env, "tasks")
    prefix = f"{loc.key.rstrip('/')}/" if loc.key else ""
    try:
        keys = [obj["Key"] for obj in list_objects(client, loc.bucket, prefix) if not obj["Key"].endswith("/")]
        if not keys:
            raise InvalidSpec(f"spec.evaluation.taskSource.uri {source.uri} holds no files")
        for key in keys:
            target = dest / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(loc.bucket, key, str(target))
    except (ClientError, BotoCoreError) as exc:
        raise_storage_error(exc, what="task source", uri=source.uri, not_found=InvalidSpec, endpoint=source.s3.endpoint if source.s3 else None)
        raise
    return dest


def vllm_installed() -> bool:
    return find_spec("vllm") is not None


def choose_backend(requested: str, *, devices: int, servable: bool | None, has_vllm: bool) -> str:
    """hf or vllm; an explicit vllm that cannot run is a spec error, said before any model is scored."""
    missing = [why for ok, why in ((has_vllm, "the worker image has no vLLM"), (devices > 0, "the job has no GPU"), (servable is not False, "vLLM cannot serve this recipe's checkpoint")) if not ok]
    if requested == "vllm" and missing:
        raise InvalidSpec(f"spec.evaluation.taskBackend is vllm, but {' and '.join(missing)}; use hf (or auto)")
    if requested == "hf" or missing:
        return "hf"
    return "vllm"


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


@contextmanager
def _lm_eval_environment(folder: Path | None) -> Iterator[None]:
    """Offline Hub and the task folder as working directory while lm-eval runs (see the module's docstring)."""
    import datasets.config
    import huggingface_hub.constants

    saved = (os.getcwd(), datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE"))
    try:
        if folder is not None:
            datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
            os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
            os.chdir(folder)
        yield
    finally:
        os.chdir(saved[0])
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved[1], saved[2]
        for name, value in (("HF_HUB_OFFLINE", saved[3]), ("HF_DATASETS_OFFLINE", saved[4])):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def task_manager(folder: Path | None) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder) if folder is not None else None)


def check_names(tasks: Sequence[EvaluationTask], manager: Any, folder: Path | None) -> None:
    known = set(manager.all_tasks)
    unknown = [f"spec.evaluation.tasks[{i}].name {t.name!r}" for i, t in enumerate(tasks) if t.name not in known]
    if unknown:
        where = f"lm-eval's registry nor the task YAML under {folder}" if folder is not None else "lm-eval's registry (no spec.evaluation.taskSource is given)"
        raise InvalidSpec(f"{', '.join(unknown)}: neither in {where}")


def _metrics_of(results: dict[str, Any], higher: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{metric[,filter]: {value, stderr, higherIsBetter}} of one task's lm-eval results; filter 'none' is left out."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in results.items():
        if key in _NOT_METRICS or "_stderr," in key or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric, _, filt = key.partition(",")
        stderr = results.get(f"{metric}_stderr,{filt}")
        name = metric if filt in ("", "none") else f"{metric},{filt}"
        out[name] = {
            "value": _finite(value),
            "stderr": _finite(stderr) if isinstance(stderr, (int, float)) else None,
            "higherIsBetter": higher.get(metric) if isinstance(higher.get(metric), bool) else None,
        }
    return out


def _finite(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def parse_results(task: EvaluationTask, res: dict[str, Any]) -> dict[str, Any]:
    """One task's entry of the record from what lm_eval.simple_evaluate returned for it (the group's own
    aggregate when the name is a group; every subtask when it is a tag)."""
    results, higher = res.get("results") or {}, res.get("higher_is_better") or {}
    names = [task.name] if task.name in results else sorted(results)
    metrics: dict[str, dict[str, Any]] = {}
    for name in names:
        prefix = "" if name == task.name else f"{name}/"
        metrics |= {prefix + m: v for m, v in _metrics_of(results[name], higher.get(name) or {}).items()}
    counted = res.get("n-samples") or {}  # leaf tasks only: a group's documents are its subtasks'
    samples = sum(counted.get(n, {}).get("effective", 0) for n in (names if any(n in counted for n in names) else counted)) or None
    return {"samples": samples, "numFewshot": task.num_fewshot, "limit": task.limit, "metrics": metrics}


def _evaluate(lm: Any, tasks: Sequence[EvaluationTask], manager: Any, on_task: Callable[[int, int, str], None] | None) -> dict[str, Any]:
    import lm_eval

    scored: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        if on_task is not None:
            on_task(i, len(tasks), task.name)
        res = lm_eval.simple_evaluate(
            model=lm, tasks=[task.name], num_fewshot=task.num_fewshot, limit=task.limit, task_manager=manager,
            log_samples=False, bootstrap_iters=1000, verbosity="WARNING",
        )
        scored[task.name] = parse_results(task, res or {})
    return scored


def score_hf(model: Any, tokenizer: Any, tasks: Sequence[EvaluationTask], folder: Path | None, *, on_task: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """lm-eval's Hugging Face backend on the model in memory, onloaded to the accelerator as fidelity runs it."""
    from lm_eval.models.huggingface import HFLM

    from kompress_job.model import fidelity_passes

    started = time.monotonic()
    with _lm_eval_environment(folder):
        manager = task_manager(folder)
        check_names(tasks, manager, folder)
        device, dispatched = fidelity_passes.onload(model)
        try:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=CPU_BATCH if device.type == "cpu" else "auto", max_batch_size=64)
            lm._device = device  # a model passed in is run where its weights are; ours are onloaded per module
            scored = _evaluate(lm, tasks, manager, on_task)
        finally:
            if dispatched:
                fidelity_passes.undo_onload(model)
    return {"format": RECORD_FORMAT, "backend": "hf", "seconds": round(time.monotonic() - started, 1), "tasks": scored}


def score_vllm(model_dir: Path, tasks: Sequence[EvaluationTask], folder: Path | None, *, devices: int, out: Path, trust_remote_code: bool = False) -> dict[str, Any]:
    """lm-eval's vLLM backend on a folder, in a child process: vLLM's GPU memory is surely released when it exits."""
    request = {"model": str(model_dir), "tasks": [t.wire() for t in tasks], "folder": str(folder) if folder else None, "devices": devices, "trustRemoteCode": trust_remote_code}
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kompress_job.model.task_scores", json.dumps(request), str(out)], check=False)
    if done.returncode != 0 or not out.is_file():
        raise KompressError(f"lm-eval's vLLM backend exited with code {done.returncode} scoring {model_dir} (see the log above); taskBackend: hf avoids vLLM")
    record = json.loads(out.read_text())
    return record | {"seconds": round(time.monotonic() - started, 1)}


def _vllm_child(request: dict[str, Any], out: Path) -> None:
    from lm_eval.models.vllm_causallms import VLLM

    folder = Path(request["folder"]) if request["folder"] else None
    tasks = [EvaluationTask.model_validate(t) for t in request["tasks"]]
    with _lm_eval_environment(folder):
        manager = task_manager(folder)
        check_names(tasks, manager, folder)
        lm = VLLM(pretrained=request["model"], tensor_parallel_size=request["devices"], gpu_memory_utilization=0.85, trust_remote_code=request["trustRemoteCode"])
        scored = _evaluate(lm, tasks, manager, None)
    out.write_text(json.dumps({"format": RECORD_FORMAT, "backend": "vllm", "tasks": scored}))


def write_record(record: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# Comparison, gate, and what fits in the status
# ---------------------------------------------------------------------------------------------


def compare(original: dict[str, Any], compressed: dict[str, Any]) -> list[TaskScore]:
    """Every task metric either record has, in the original record's order."""
    scores = []
    for task, entry in original["tasks"].items():
        after = (compressed["tasks"].get(task) or {}).get("metrics") or {}
        for metric, before in entry["metrics"].items():
            now = after.get(metric) or {}
            a, b = before.get("value"), now.get("value")
            scores.append(
                TaskScore(
                    task=task, metric=metric, original=a, compressed=b,
                    difference=round(b - a, 6) if a is not None and b is not None else None,
                    original_stderr=before.get("stderr"), compressed_stderr=now.get("stderr"),
                    higher_is_better=before.get("higherIsBetter"),
                )
            )
    return scores


def drop(score: TaskScore) -> float | None:
    """How much worse the compressed model is, in the metric's units (positive: worse)."""
    if score.difference is None:
        return None
    return -score.difference if score.higher_is_better is not False else score.difference


def gate_failures(scores: Sequence[TaskScore], max_drop: float | None) -> list[str]:
    if max_drop is None:
        return []
    failures = []
    for s in scores:
        d = drop(s)
        if d is None and s.original is not None:
            failures.append(f"task {s.task} {s.metric}: no score for the compressed model (original {s.original:.4f})")
        elif d is not None and d > max_drop + 1e-9:
            failures.append(f"task {s.task} {s.metric} {s.original:.4f} -> {s.compressed:.4f} (drop {d:.4f}) > limit {max_drop:.4f}")
    return failures


def failing(score: TaskScore, max_drop: float | None) -> bool:
    d = drop(score)
    return max_drop is not None and (d is None or d > max_drop + 1e-9)


def for_status(scores: Sequence[TaskScore], max_drop: float | None, limit: int = MAX_STATUS_TASK_SCORES) -> tuple[list[TaskScore], int]:
    """(at most `limit` scores, those missing the gate first, then in order; how many were left out)."""
    ordered = sorted(scores, key=lambda s: not failing(s, max_drop))
    rounded = [s.model_copy(update={k: round(v, 4) for k in ("original", "compressed", "difference", "original_stderr", "compressed_stderr") if (v := getattr(s, k)) is not None}) for s in ordered]
    return rounded[:limit], max(0, len(rounded) - limit)


# ---------------------------------------------------------------------------------------------
# What the tasks cost, from config.json and the task names (for the plan: it cannot read a task source)
# ---------------------------------------------------------------------------------------------

# Well-known registry tasks: (documents scored, requests per document, tokens per request at zero-shot, tokens
# generated per document), from their lm-eval 0.4.13 test or validation splits.
KNOWN_TASKS: dict[str, tuple[int, int, int, int]] = {
    "arc_easy": (2376, 4, 60, 0),
    "arc_challenge": (1172, 4, 70, 0),
    "hellaswag": (10042, 4, 120, 0),
    "mmlu": (14042, 4, 150, 0),
    "winogrande": (1267, 2, 40, 0),
    "piqa": (1838, 2, 60, 0),
    "boolq": (3270, 2, 180, 0),
    "lambada_openai": (5153, 1, 100, 0),
    "truthfulqa_mc2": (817, 8, 80, 0),
    "gsm8k": (1319, 1, 200, 256),
}
ASSUMED = (4, 200, 0)  # requests, tokens, generated, for a task whose size is known only from its limit
CPU_OR_AUTO_BATCH = 8


class TaskCost(NamedTuple):
    seconds: float  # both models, the tasks whose size is known
    memory_bytes: int  # one batch's fp32 logits on the device
    unknown: list[str]  # tasks of unknown size and no limit: not in `seconds`
    basis: str


def estimate(config: dict[str, Any], tasks: Sequence[EvaluationTask], *, flops_per_second: float = 2e14) -> TaskCost:
    """Forward passes of both models over every request: 2 x active parameters x tokens FLOPs (fidelity_cost.estimate's
    rate), a token of context recomputed for every generated token; few-shot examples multiply the context."""
    from kompress_job.model.fidelity_cost import parameter_counts

    text = config.get("text_config") or config
    _total, active = parameter_counts(config)
    vocab = int(text.get("vocab_size", 32000))
    tokens, longest, unknown, assumed = 0, 0, [], []
    for task in tasks:
        if task.name in KNOWN_TASKS:
            docs, requests, length, generated = KNOWN_TASKS[task.name]
            docs = min(docs, task.limit or docs)
        elif task.limit is not None:
            (requests, length, generated), docs = ASSUMED, task.limit
            assumed.append(task.name)
        else:
            unknown.append(task.name)
            continue
        context = length * (1 + (task.num_fewshot or 0))
        tokens += docs * (requests * context + generated * (context + generated // 2))
        longest = max(longest, context + generated)
    seconds = 2 * 2 * active * tokens / flops_per_second
    basis = f"lm-eval: {tokens:,} tokens through each of the two models at fidelity's rate"
    if assumed:
        basis += f"; {', '.join(assumed)}: sized from limit, {ASSUMED[0]} requests of {ASSUMED[1]} tokens per document assumed"
    if unknown:
        basis += f"; {', '.join(unknown)}: size unknown to the plan (not counted)"
    return TaskCost(round(seconds, 1), CPU_OR_AUTO_BATCH * longest * vocab * 4, unknown, basis)


if __name__ == "__main__":  # the vLLM child process of score_vllm
    _vllm_child(json.loads(sys.argv[1]), Path(sys.argv[2]))
