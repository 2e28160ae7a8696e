"""`kompress plan` (table, JSON, exit codes), the planning pod (`kompress plan-pod`: config.json fetched from a Hub
stand-in with the job's token, a PlannerResult the operator can read), and the worker's plan stage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _worker_helpers import make_ctx, make_job, tiny_models  # noqa: F401 - fixture
from kompress_api.exit_codes import ExitCode
from kompress_api.worker_protocol import TERMINATION_LIMIT, PlannerResult

from kompress_job import cli, pipeline
from kompress_job.errors import UnsupportedArchitecture
from kompress_testing.models import config_dir

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GLM_CONFIG = str(config_dir("glm-4.5-air") / "config.json")
SERVABLE = str(ROOT / "examples" / "glm-4.5-air-servable.yaml")
TOKEN = "hf_plan_pod_test_token_0123456789"


def glm_manifest(tmp_path: Path, preset: str = "w4a16-w8a8", overrides: dict | None = None, **spec) -> Path:
    doc = {
        "apiVersion": "kompress.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "glm-plan"},
        "spec": {"model": {"uri": "hf://zai-org/GLM-4.5-Air"}, "recipe": {"preset": preset}, "output": {"uri": "s3://bucket/glm"}, **spec},
    }
    if overrides:
        doc["spec"]["recipe"]["overrides"] = overrides
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_plan_prints_a_table(capsys):
    assert cli.main(["plan", SERVABLE, "--model-config", GLM_CONFIG]) == 0
    out = capsys.readouterr().out
    for text in ("w8a8-int8-dynamic", "w4a16-g64", "16bit", "checkpoint ≈ 105.7 GB", "host RAM", "GPU memory", "scratch disk", "compress"):
        assert text in out, text
    assert "WARNING KernelAlignment" in out and "fix: keep them 16-bit" in out
    assert "model.layers.46" in out  # the multi-token-prediction line


def test_plan_json(capsys):
    assert cli.main(["plan", SERVABLE, "--model-config", str(config_dir("glm-4.5-air")), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total_parameters"] == 106_852_245_504
    assert abs(doc["estimated_checkpoint_bytes"] - 105.7e9) < 0.1e9
    assert doc["host_memory_bytes"] >= 2 * doc["total_parameters"] and doc["gpu_memory_bytes"] > 0 and doc["disk_bytes"] > 0
    assert {g["name"] for g in doc["groups"]} == {"w4a16-g128", "w4a16-g64", "w8a8-int8-dynamic", "16bit"}
    int8 = next(g for g in doc["groups"] if g["name"] == "w8a8-int8-dynamic")
    assert int8["scheme"]["bits"] == 8 and int8["scheme"]["activations"]["dynamic"] is True and int8["modules"] == 17415
    assert all({"severity", "code", "message", "fix"} <= set(p) for p in doc["problems"])
    assert all(t["basis"] for t in doc["footprint"]["times"])


def test_plan_with_errors_exits_20_and_says_what_to_change(tmp_path, capsys):
    job = glm_manifest(tmp_path, overrides={"ignore": ["model.layers.0.mlp.nothing_here"]}, resources={"memory": "64Gi"})
    assert cli.main(["plan", str(job), "--model-config", GLM_CONFIG, "--json"]) == ExitCode.PLAN_REJECTED.code
    problems = json.loads(capsys.readouterr().out)["problems"]
    errors = [p for p in problems if p["severity"] == "error"]
    assert {p["code"] for p in errors} == {"TargetsMatchNothing", "HostMemoryTooSmall"}
    assert problems[: len(errors)] == errors  # errors first
    assert "model.layers.0.mlp.nothing_here" in next(p["message"] for p in errors if p["code"] == "TargetsMatchNothing")


UNKNOWN_FIELD = """
quant_stage:
  quant_modifiers:
    QuantizationModifier: {scheme: W4A16, targets: [Linear], ignore: [lm_head], no_such_field: 1}
"""


def test_a_plan_whose_errors_are_of_one_kind_exits_with_that_kinds_code_in_one_line(tmp_path, capsys):
    """The exit-code table says TargetsMatchNothing is 14 and InvalidRecipe 21: `kompress plan` and the worker's
    plan stage end with those, and a recipe llm-compressor refuses is one readable line (no pydantic dump)."""
    job = glm_manifest(tmp_path, overrides={"ignore": ["model.layers.0.mlp.nothing_here"]})
    assert cli.main(["plan", str(job), "--model-config", GLM_CONFIG]) == ExitCode.TARGETS_MATCH_NOTHING.code
    capsys.readouterr()

    doc = yaml.safe_load(glm_manifest(tmp_path).read_text())
    doc["spec"]["recipe"] = {"custom": UNKNOWN_FIELD}
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump(doc))
    # A process of its own: llm-compressor, imported for the first time there, prints its warnings, never into the JSON.
    kompress = Path(sys.executable).with_name("kompress")
    proc = subprocess.run([str(kompress), "plan", str(tmp_path / "custom.yaml"), "--model-config", GLM_CONFIG, "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == ExitCode.INVALID_RECIPE.code, proc.stderr[-2000:]
    [error] = [p for p in json.loads(proc.stdout)["problems"] if p["severity"] == "error"]
    assert error["code"] == "InvalidRecipe" and "no_such_field" in error["message"]
    assert "\n" not in error["message"] and "errors.pydantic.dev" not in error["message"]


def test_exit_codes_for_a_bad_manifest_a_missing_config_and_an_unknown_architecture(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: CompressionJob\napiVersion: kompress.dev/v1alpha1\nspec: {recipe: {preset: nonsense}}\n")
    assert cli.main(["plan", str(bad), "--model-config", GLM_CONFIG]) == ExitCode.INVALID_SPEC.code
    assert "spec" in capsys.readouterr().err

    job = glm_manifest(tmp_path)
    assert cli.main(["plan", str(job), "--model-config", str(tmp_path / "missing.json")]) == ExitCode.MODEL_NOT_FOUND.code
    (tmp_path / "broken.json").write_text("{not json")
    assert cli.main(["plan", str(job), "--model-config", str(tmp_path / "broken.json"), "--json"]) == ExitCode.MODEL_NOT_FOUND.code
    doc = json.loads(capsys.readouterr().out)
    assert not doc["ok"] and doc["exit_code"] == 11 and doc["reason"] == "ModelNotFound" and "broken.json" in doc["message"]

    (tmp_path / "alien.json").write_text(json.dumps({"model_type": "no-such-model", "architectures": ["AlienForCausalLM"]}))
    assert cli.main(["plan", str(job), "--model-config", str(tmp_path / "alien.json")]) == ExitCode.UNSUPPORTED_ARCHITECTURE.code
    assert "no-such-model" in capsys.readouterr().err


GPT2_CONFIG = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 128, "vocab_size": 512}


def test_an_architecture_transformers_knows_but_kompress_does_not_is_unsupported_in_one_line(tmp_path, capsys):
    """GPT-2: transformers builds it (Conv1D layers, n_embd for hidden_size), Kompress cannot compress it."""
    (tmp_path / "gpt2.json").write_text(json.dumps(GPT2_CONFIG))
    job = glm_manifest(tmp_path, "w4a16")
    assert cli.main(["plan", str(job), "--model-config", str(tmp_path / "gpt2.json")]) == ExitCode.UNSUPPORTED_ARCHITECTURE.code
    out = capsys.readouterr()
    assert "KeyError" not in out.out + out.err  # (transformers' own log handler may complain about pytest's closed streams)
    [line] = [line for line in out.out.splitlines() if "ERROR" in line]
    assert "PresetDoesNotApply" in line and "GPT2LMHeadModel" in line

    # a field of the wrong type (transformers 5 checks them): the same code, the field named, one line
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": None, "vocab_size": 256}
    (tmp_path / "null.json").write_text(json.dumps(llama))
    assert cli.main(["plan", str(job), "--model-config", str(tmp_path / "null.json")]) == ExitCode.UNSUPPORTED_ARCHITECTURE.code
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kompress plan:")]
    assert line.startswith("kompress plan: UnsupportedArchitecture:") and "num_hidden_layers" in line


def test_the_console_script(tmp_path):
    kompress = Path(sys.executable).with_name("kompress")
    proc = subprocess.run([str(kompress), "plan", str(glm_manifest(tmp_path, "w4a16")), "--model-config", GLM_CONFIG, "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout)["estimated_checkpoint_bytes"] - 57.0e9) < 0.1e9


# ---------------------------------------------------------------------------------------------------------------
# The planning pod
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def glm_on_hub(hub, tmp_path):
    """A Hub repository holding GLM-4.5-Air's config.json, a safetensors index naming its MTP layer's tensors
    (kompress_testing.models.synthetic_index), and a weight file the planner must never fetch."""
    from kompress_testing.models import synthetic_index

    folder = tmp_path / "repo"
    folder.mkdir()
    shutil.copy(GLM_CONFIG, folder / "config.json")
    (folder / "model.safetensors.index.json").write_text(synthetic_index(json.loads(Path(GLM_CONFIG).read_text())))
    (folder / "model-00001-of-00047.safetensors").write_bytes(b"\0" * 4096)
    hub.add_repo("zai-org/GLM-4.5-Air", folder, token=TOKEN)
    return hub


def pod_env(hub, tmp_path: Path, preset: str = "w4a16-w8a8", **spec) -> dict[str, str]:
    job = {
        "metadata": {"name": "glm", "namespace": "ml", "uid": "1234"},
        "spec": {
            "model": {"uri": "hf://zai-org/GLM-4.5-Air", "huggingFace": {"endpoint": hub.endpoint, "tokenSecret": {"name": "hf", "key": "token"}}},
            "recipe": {"preset": preset},
            "output": {"uri": "s3://bucket/glm"},
            **spec,
        },
    }
    return {"KOMPRESS_JOB": json.dumps(job), "HF_TOKEN": TOKEN, "KOMPRESS_TERMINATION_LOG": str(tmp_path / "termination-log")}


def test_plan_pod_fetches_only_config_json_and_the_index_and_leaves_a_plan(glm_on_hub, tmp_path, capsys):
    from kompress_job.planning.cli import main_plan_pod

    assert main_plan_pod(pod_env(glm_on_hub, tmp_path)) == 0
    message = (tmp_path / "termination-log").read_text()
    assert len(message.encode()) <= TERMINATION_LIMIT
    result = PlannerResult.model_validate_json(message)
    assert result.ok and result.exit_code == 0 and result.reason == "Planned"
    assert result.plan.total_parameters == 106_852_245_504 and result.plan.servable is True
    # 105.7 GB of compressed model and the 7.2 GB MTP layer, kept as the source stores it (the index says it is there)
    assert abs(result.plan.estimated_checkpoint_bytes - 112.9e9) < 0.1e9 and result.plan.host_memory_bytes > 213e9
    codes = {p.code for p in result.plan.problems}
    assert "KernelAlignment" in codes and not codes & {"MtpLayerDropped", "MtpLayerUnverified", "MtpLayerMissing"}
    assert {p.rsplit("/", 1)[-1] for p in glm_on_hub.downloaded()} == {"config.json", "model.safetensors.index.json"}  # no weights
    assert {r.authorization for r in glm_on_hub.requests} == {f"Bearer {TOKEN}"}  # with the job's token
    out = capsys.readouterr()
    assert TOKEN not in message + out.out + out.err


def test_plan_pod_rejection_keeps_errors_within_4096_bytes(glm_on_hub, tmp_path):
    from kompress_job.planning.cli import main_plan_pod

    env = pod_env(glm_on_hub, tmp_path, "sparse24-w4a16-w8a8", resources={"memory": "100Gi"})
    assert main_plan_pod(env) == ExitCode.PLAN_REJECTED.code
    message = (tmp_path / "termination-log").read_text()
    assert len(message.encode()) <= TERMINATION_LIMIT
    result = PlannerResult.model_validate_json(message)
    assert not result.ok and result.reason == "PlanRejected" and result.exit_code == 20
    assert result.plan.problems[0].severity == "error" and result.plan.problems[0].code == "HostMemoryTooSmall"
    assert "spec.resources.memory" in result.plan.problems[0].fix


def test_plan_pod_without_the_model_says_so(glm_on_hub, tmp_path):
    from kompress_job.planning.cli import main_plan_pod

    env = pod_env(glm_on_hub, tmp_path)
    env["KOMPRESS_JOB"] = env["KOMPRESS_JOB"].replace("GLM-4.5-Air", "No-Such-Model")
    code = main_plan_pod(env)
    result = PlannerResult.model_validate_json((tmp_path / "termination-log").read_text())
    assert code == result.exit_code == ExitCode.MODEL_NOT_FOUND.code and not result.ok and result.plan is None
    assert "No-Such-Model" in result.message


# ---------------------------------------------------------------------------------------------------------------
# The worker's plan stage
# ---------------------------------------------------------------------------------------------------------------


def test_worker_plan_stage_sets_the_plan_and_refuses_errors(tiny_models, tmp_path):
    ctx = make_ctx(make_job(tiny_models["glm4-moe"], preset="w4a16-w8a8"), None, tmp_path)
    pipeline.stage_function("plan")(ctx)
    assert ctx.plan.total_parameters > 0 and ctx.plan.bf16_bytes == 2 * ctx.plan.total_parameters
    ctx.checkpoint_bytes = ctx.plan.estimated_checkpoint_bytes
    assert pipeline.result_of(ctx, ExitCode.OK, "done").compression_ratio == pytest.approx(ctx.plan.compression_ratio, rel=1e-3)

    bad = make_ctx(make_job(tiny_models["llama"], preset="w4a16-w8a8"), None, tmp_path / "bad")  # a dense model
    with pytest.raises(UnsupportedArchitecture) as err:  # exit 12, as docs/presets.md says
        pipeline.stage_function("plan")(bad)
    assert "PresetDoesNotApply" in err.value.message and "w4a16" in err.value.message


# ---------------------------------------------------------------------------------------------------------------
# Custom recipes (parsed by llm-compressor itself)
# ---------------------------------------------------------------------------------------------------------------

OVERLAPPING = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      config_groups:
        everything: {targets: [Linear], weights: {num_bits: 8, type: int, strategy: channel, symmetric: true}}
        experts: {targets: ['re:.*mlp\\.experts\\..*'], weights: {num_bits: 4, type: int, strategy: group, group_size: 32, symmetric: true}}
      ignore: [lm_head]
"""
W8A16_CUSTOM = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      config_groups:
        int8: {targets: [Linear], weights: {num_bits: 8, type: int, strategy: channel, symmetric: false}}
      ignore: [lm_head]
"""


def tiny_config(name: str) -> dict:
    from kompress_testing.models import build_config

    return build_config(name).to_dict()


def test_custom_recipe_refusals_are_plan_errors_and_valid_ones_are_sized(tmp_path):
    from kompress_job.planning.plan import make_plan

    rejected = make_plan(make_job(tmp_path, preset=None, custom=OVERLAPPING), tiny_config("glm4-moe"))
    assert [p.code for p in rejected.errors] == ["OverlappingGroups"]
    assert "everything and experts" in rejected.errors[0].message and rejected.errors[0].fix
    assert rejected.estimated_checkpoint_bytes is None and rejected.footprint.host_memory_bytes > 0

    planned = make_plan(make_job(tmp_path, preset=None, custom=W8A16_CUSTOM), tiny_config("qwen3-moe"))
    assert not planned.errors and planned.servable is None  # custom: as far as known
    (int8,) = [g for g in planned.groups if g.scheme is not None]
    # asymmetric 8-bit weight-only: packed into int32, with zero points packed too
    assert int8.format == "pack-quantized" and int8.scheme.weights.symmetric is False
    names = {t.name.rsplit(".", 1)[-1] for t in planned.layout.tensors}
    assert {"weight_packed", "weight_scale", "weight_zero_point", "weight_shape"} <= names


def test_plan_pod_without_an_index_plans_without_the_mtp_layer_and_says_so(hub, tmp_path):
    from kompress_job.planning.cli import main_plan_pod

    folder = tmp_path / "repo"
    folder.mkdir()
    shutil.copy(GLM_CONFIG, folder / "config.json")
    hub.add_repo("zai-org/GLM-4.5-Air", folder, token=TOKEN)
    assert main_plan_pod(pod_env(hub, tmp_path)) == 0
    result = PlannerResult.model_validate_json((tmp_path / "termination-log").read_text())
    assert abs(result.plan.estimated_checkpoint_bytes - 105.7e9) < 0.1e9
    assert "MtpLayerUnverified" in {p.code for p in result.plan.problems}
    assert {p.rsplit("/", 1)[-1] for p in hub.downloaded()} == {"config.json"}


def test_worker_plan_stage_reads_the_index_from_s3_and_counts_the_mtp_layer(tiny_models, s3, bucket, tmp_path):
    source = tiny_models["glm4-moe+mtp"]
    client = s3.client()
    for path in source.iterdir():
        client.upload_file(str(path), bucket, f"tiny/{path.name}")
    doc = make_job(source, preset="w4a16").wire()
    doc["spec"]["model"].update({"uri": f"s3://{bucket}/tiny", "s3": s3.access()})
    from kompress_api.v1alpha1 import CompressionJob

    ctx = make_ctx(CompressionJob.model_validate(doc), None, tmp_path)
    ctx.env = s3.env("model")
    pipeline.stage_function("plan")(ctx)
    assert ctx.plan.mtp.in_source and len(ctx.plan.mtp.checkpoint_tensors) == 32
    assert sorted(p.name for p in (tmp_path / "plan").iterdir()) == ["config.json", "model.safetensors.index.json"]  # no weights
