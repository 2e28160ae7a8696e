"""lm-eval task scores as pure functions: reading lm-eval's results, the comparison, the gate, what fits in the
status and the termination message, the backend choice, and the model card's Hub metadata."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from kompress_api.v1alpha1 import MAX_STATUS_TASK_SCORES, EvaluationMetrics, EvaluationTask, TaskScore, parse
from kompress_api.worker_protocol import TERMINATION_LIMIT, WorkerResult, encode_termination

from kompress_job.outputs import manifest, model_card

from kompress_job.model import task_scores
from kompress_job.errors import InvalidSpec
from kompress_testing.jobs import FakeRecipe, make_job

pytestmark = pytest.mark.unit

# The shape lm_eval.simple_evaluate returns (0.4.13), trimmed to what is read.
GSM8K = {
    "results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.62, "exact_match_stderr,strict-match": 0.013, "exact_match,flexible-extract": 0.64, "exact_match_stderr,flexible-extract": "N/A"}},
    "higher_is_better": {"gsm8k": {"exact_match": True}},
    "n-samples": {"gsm8k": {"original": 1319, "effective": 1319}},
}


def record(task: str, **metrics: tuple[float, bool]) -> dict:
    return {"backend": "hf", "tasks": {task: {"samples": 48, "metrics": {m: {"value": v, "stderr": 0.05, "higherIsBetter": h} for m, (v, h) in metrics.items()}}}}


def test_lm_evals_results_become_metrics_with_their_filter_stderr_and_direction():
    entry = task_scores.parse_results(EvaluationTask(name="gsm8k", num_fewshot=5), GSM8K)
    assert entry["samples"] == 1319 and entry["numFewshot"] == 5
    assert entry["metrics"] == {
        "exact_match,strict-match": {"value": 0.62, "stderr": 0.013, "higherIsBetter": True},
        "exact_match,flexible-extract": {"value": 0.64, "stderr": None, "higherIsBetter": True},
    }


def test_a_tag_keeps_every_subtask_and_filter_none_is_left_out_of_the_name():
    res = {
        "results": {"arc_easy": {"acc,none": 0.8, "acc_stderr,none": 0.01}, "arc_challenge": {"acc,none": 0.5, "acc_stderr,none": 0.02}},
        "higher_is_better": {"arc_easy": {"acc": True}, "arc_challenge": {"acc": True}},
        "n-samples": {"arc_easy": {"effective": 2376}, "arc_challenge": {"effective": 1172}},
    }
    entry = task_scores.parse_results(EvaluationTask(name="ai2_arc"), res)
    assert set(entry["metrics"]) == {"arc_challenge/acc", "arc_easy/acc"} and entry["samples"] == 3548


def test_a_group_keeps_its_own_aggregate_and_counts_its_subtasks_documents():
    res = {
        "results": {"mmlu": {"acc,none": 0.7, "acc_stderr,none": 0.004}, "mmlu_anatomy": {"acc,none": 0.6, "acc_stderr,none": 0.04}},
        "higher_is_better": {"mmlu": {"acc": True}, "mmlu_anatomy": {"acc": True}},
        "n-samples": {"mmlu_anatomy": {"effective": 135}, "mmlu_virology": {"effective": 166}},
    }
    entry = task_scores.parse_results(EvaluationTask(name="mmlu"), res)
    assert entry["metrics"] == {"acc": {"value": 0.7, "stderr": 0.004, "higherIsBetter": True}} and entry["samples"] == 301


def test_the_drop_follows_the_metrics_direction_and_the_gate_names_both_figures():
    scores = task_scores.compare(record("t", acc=(0.875, True), word_perplexity=(10.0, False)), record("t", acc=(0.8125, True), word_perplexity=(10.5, False)))
    acc, ppl = scores
    assert (acc.difference, task_scores.drop(acc)) == (-0.0625, 0.0625)
    assert (ppl.difference, task_scores.drop(ppl)) == (0.5, 0.5)  # lower is better: a rise is a drop
    assert task_scores.gate_failures(scores, None) == []
    assert task_scores.gate_failures(scores, 0.1) == ["task t word_perplexity 10.0000 -> 10.5000 (drop 0.5000) > limit 0.1000"]
    assert len(task_scores.gate_failures(scores, 0.02)) == 2
    assert task_scores.gate_failures(scores, 0.5) == []  # at the limit passes


def test_a_metric_the_checkpoint_has_no_score_for_fails_the_gate():
    scores = task_scores.compare(record("t", acc=(0.9, True)), {"tasks": {}})
    assert scores[0].compressed is None and scores[0].difference is None
    assert task_scores.gate_failures(scores, 0.5) == ["task t acc: no score for the compressed model (original 0.9000)"]


def test_the_status_keeps_the_failures_first_and_says_how_many_it_left_out():
    scores = [TaskScore(task=f"t{i}", metric="acc", original=0.5, compressed=0.5 - (0.2 if i == 20 else 0), difference=-0.2 if i == 20 else 0.0, higher_is_better=True) for i in range(30)]
    kept, omitted = task_scores.for_status(scores, 0.1)
    assert len(kept) == MAX_STATUS_TASK_SCORES and omitted == 30 - MAX_STATUS_TASK_SCORES
    assert kept[0].task == "t20" and [s.task for s in kept[1:3]] == ["t0", "t1"]


def test_the_termination_message_fits_with_the_largest_status_and_drops_scores_only_when_it_must():
    long = "x" * 120
    scores = [TaskScore(task=f"{long}{i}", metric=f"{long}m", original=0.123456, compressed=0.123456, difference=0.0, original_stderr=0.01, compressed_stderr=0.01, higher_is_better=True) for i in range(MAX_STATUS_TASK_SCORES)]
    result = WorkerResult(ok=False, exit_code=17, reason="QualityGateFailed", message="m" * 3000, metrics=EvaluationMetrics(perplexity_increase=0.1, tasks=scores, task_backend="hf"))
    text = encode_termination(result)
    assert len(text.encode()) <= TERMINATION_LIMIT
    back = WorkerResult.model_validate(json.loads(text))
    assert back.metrics.perplexity_increase == 0.1 and 0 < len(back.metrics.tasks) < MAX_STATUS_TASK_SCORES
    assert back.metrics.task_scores_omitted == MAX_STATUS_TASK_SCORES - len(back.metrics.tasks)
    short = WorkerResult(ok=True, metrics=EvaluationMetrics(tasks=scores[:2]))
    assert WorkerResult.model_validate(json.loads(encode_termination(short))).metrics.tasks == scores[:2]


@pytest.mark.parametrize(
    ("requested", "devices", "servable", "has_vllm", "backend"),
    [("auto", 4, True, True, "vllm"), ("auto", 4, False, True, "hf"), ("auto", 0, True, True, "hf"), ("auto", 4, True, False, "hf"), ("hf", 4, True, True, "hf"), ("vllm", 2, None, True, "vllm")],
)
def test_the_backend_is_vllm_only_where_it_can_serve_the_checkpoint(requested, devices, servable, has_vllm, backend):
    assert task_scores.choose_backend(requested, devices=devices, servable=servable, has_vllm=has_vllm) == backend


def test_an_explicit_vllm_that_cannot_run_is_refused_with_every_reason():
    with pytest.raises(InvalidSpec, match="the worker image has no vLLM and the job has no GPU and vLLM cannot serve"):
        task_scores.choose_backend("vllm", devices=0, servable=False, has_vllm=False)


def test_a_task_name_neither_in_the_registry_nor_the_source_is_named():
    class Manager:
        all_tasks = ["arc_easy"]

    with pytest.raises(InvalidSpec, match=r"spec.evaluation.tasks\[1\].name 'arc_eazy'"):
        task_scores.check_names([EvaluationTask(name="arc_easy"), EvaluationTask(name="arc_eazy")], Manager(), None)


def test_a_missing_task_folder_is_a_spec_error(tmp_path):
    def source(uri):
        return make_job("/models/tiny", "s3://models/tiny", evaluation={"tasks": [{"name": "t"}], "taskSource": {"uri": uri}}).spec.evaluation.task_source

    with pytest.raises(InvalidSpec, match="is not a folder the worker can read"):
        task_scores.task_folder(source(f"file://{tmp_path}/absent"), tmp_path, {})
    assert task_scores.task_folder(source(str(tmp_path)), tmp_path, {}) == tmp_path


def test_the_model_card_carries_the_scores_as_the_hubs_model_index_with_the_base_model():
    job = make_job("hf://zai-org/GLM-4.5-Air", "s3://models/glm", evaluation={"tasks": [{"name": "gsm8k"}], "gate": {"maxTaskDrop": 0.02}})
    scores = [TaskScore(task="gsm8k", metric="exact_match,strict-match", original=0.62, compressed=0.6, difference=-0.02, original_stderr=0.013, compressed_stderr=0.0135, higher_is_better=True)]
    doc = manifest.build_manifest(
        job, status="published", resolved_revision=None, source_bytes=1, files=[], recipe=manifest.recipe_summary(FakeRecipe()), calibration_used=None,
        metrics=None, gate_failures=[], tasks={"backend": "vllm", "scores": [s.wire() for s in scores]}, timings={}, libraries={},
    )
    card = ModelCard(model_card.render(doc, output_uri="s3://models/glm"))
    data = card.data.to_dict()
    assert (data["base_model"], data["base_model_relation"]) == ("zai-org/GLM-4.5-Air", "quantized")
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "GLM-4.5-Air-w4a16-w8a8"
    (result,) = results
    assert (result.task_type, result.dataset_type, result.metric_type, result.metric_value) == ("text-generation", "gsm8k", "exact_match,strict-match", 0.6)
    assert "original 0.6200, difference -0.0200" in result.metric_name
    assert "| gsm8k | exact_match,strict-match | 0.6200 ± 0.0130 | 0.6000 ± 0.0135 | -0.0200 |" in card.text and "`vllm` backend" in card.text
    assert "Largest drop allowed per task metric: 0.02." in card.text


def test_a_card_without_task_scores_has_no_model_index_and_a_local_model_no_base_model():
    job = make_job("/models/tiny", "s3://models/tiny")
    doc = manifest.build_manifest(job, status="published", resolved_revision=None, source_bytes=1, files=[], recipe=None, calibration_used=None, metrics=None, gate_failures=[], timings={}, libraries={})
    data = ModelCard(model_card.render(doc, output_uri="s3://models/tiny")).data.to_dict()
    assert "model-index" not in data and "base_model" not in data and data["tags"][0] == "kompress"
