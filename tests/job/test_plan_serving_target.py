"""GLM-4.5-Air planned for where it will be served (spec.serving): the data-free path's host RAM, the FP8-block
checkpoint to the byte (hand arithmetic as in test_plan_glm), and vLLM's verdict per GPU generation."""

from __future__ import annotations

import pytest
from kompress_api.v1alpha1 import CompressionJob
from test_plan_glm import ATTENTION, BF16, COMMON, DENSE_MLP, EXPERT, EXPERTS, LAYERS, MOE_LAYERS, SHARED, fp8

from kompress_job.planning.plan import make_plan, read_config
from kompress_job.planning import kernels
from kompress_job.planning.report import render
from kompress_testing.models import config_dir

pytestmark = pytest.mark.unit

GB = 10**9


def glm(preset: str, serving: dict | None = None, evaluation: bool = True, **spec):
    job = CompressionJob.model_validate(
        {
            "metadata": {"name": "glm"},
            "spec": {
                "model": {"uri": "hf://zai-org/GLM-4.5-Air", "dtype": "bfloat16"},
                "recipe": {"preset": preset},
                "output": {"uri": "s3://bucket/glm"},
                "resources": {"gpus": 4},
                "evaluation": {"enabled": evaluation},
                **({"serving": serving} if serving else {}),
                **spec,
            },
        }
    )
    return make_plan(job, read_config(config_dir("glm-4.5-air")))


def fp8_block(out, inp):
    return out * inp + -(-out // 128) * -(-inp // 128) * BF16


def test_fp8_block_on_4_hoppers_is_a_few_gb_of_host_ram_the_exact_size_and_servable_at_tp_4():
    plan = glm("fp8-block", {"gpu": "hopper", "tensorParallel": 4, "expertParallel": True}, evaluation=False)
    f = plan.footprint
    assert plan.recipe_path == "data-free"
    # 4 workers, one ~5 GB source file each (read onto the GPUs, the FP8 copy serialized in host memory), the runtime
    assert f.host_memory_bytes < 40 * GB and set(f.host_phases) == {"data-free compress", "verify (streamed)"}
    # Every byte by hand: attention and routed experts (whole, with expert parallelism) in 128x128 blocks; the shared
    # experts (1408 wide: 352 per GPU at TP 4) and the 10944-wide dense layer fall back to FP8 channels
    hand = (
        LAYERS * sum(fp8_block(*s) for s in ATTENTION.values())
        + sum(fp8(*s) for s in DENSE_MLP.values())
        + MOE_LAYERS * EXPERTS * sum(fp8_block(*s) for s in EXPERT.values())
        + MOE_LAYERS * SHARED * sum(fp8(*s) for s in EXPERT.values())
        + COMMON
    )
    assert plan.estimated_checkpoint_bytes - plan.file_overhead_bytes == hand
    assert plan.serving_verdict == "servable by vLLM at TP 4 on hopper with expert parallelism"
    text = render(plan)
    assert "servable by vLLM at TP 4 on hopper" in text and "path          data-free" in text
    assert f"{plan.estimated_checkpoint_bytes / 1e9:.1f} GB" in text


def test_fp8_block_without_expert_parallelism_keeps_experts_servable_with_fp8_channels():
    """At TP 4 without expert parallelism vLLM splits every expert's 1408 to 352 per GPU: not whole blocks, which
    vLLM refuses for block-scaled MoE; the experts fall back (recorded), and the plan says how to keep blocks."""
    plan = glm("fp8-block", {"gpu": "hopper", "tensorParallel": 4})
    schemes = {g.name: g.modules for g in plan.groups}
    assert schemes["fp8-dynamic"] >= MOE_LAYERS * EXPERTS * 3
    assert plan.servable is True
    fallback = [p for p in plan.problems if p.code == "GroupSizeFallback" and "experts" in p.message]
    assert fallback and "352 per GPU" in fallback[0].message and "expertParallel" in fallback[0].message


def test_nvfp4_on_hopper_is_not_served_and_the_plan_names_the_preset_that_is():
    plan = glm("nvfp4", {"gpu": "hopper"})
    problem = next(p for p in plan.problems if p.code == "NoKernelOnTargetGpu")
    assert "W4A4 FP4 is not served on hopper" in problem.message and "nvfp4a16" in problem.fix
    assert plan.servable is False and plan.serving_verdict.startswith("NOT servable by vLLM at TP 4 on hopper")
    assert plan.recipe_path == "loaded"  # its global activation scales are calibrated
    assert glm("nvfp4a16", {"gpu": "hopper"}).servable is True  # FP4 Marlin, weight-only
    assert glm("nvfp4", {"gpu": "blackwell"}).servable is True


def test_serving_defaults_come_from_the_job():
    def target(**spec):
        job = CompressionJob.model_validate(
            {"metadata": {"name": "t"}, "spec": {"model": {"uri": "hf://a/b"}, "recipe": {"preset": "fp8-block"}, "output": {"uri": "s3://bucket/x"}, **spec}}
        )
        return kernels.target_of(job)

    assert (target().gpu.value, target().tensor_parallel, target().expert_parallel) == ("hopper", 4, False)
    assert target(resources={"gpus": 0}).tensor_parallel == 1
    assert target(scheduling={"nodeSelector": {"nvidia.com/gpu.family": "ampere"}}).gpu.value == "ampere"
    assert target(scheduling={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"}}).gpu.value == "blackwell"
    assert target(serving={"gpu": "ada", "tensorParallel": 2}).tensor_parallel == 2


def test_fp8_on_ampere_is_served_weight_only_and_int8_experts_not_on_blackwell():
    ok, why = kernels.kernel(glm_scheme("fp8-block"), kernels.GpuArchitecture.AMPERE, expert=True)
    assert ok and "weight-only" in why
    plan = glm("w4a16-w8a8", {"gpu": "blackwell"})
    assert any(p.code == "NoKernelOnTargetGpu" and "Blackwell" in p.message for p in plan.problems)


def glm_scheme(name):
    from kompress_job.recipe import schemes

    return {"fp8-block": schemes.FP8_BLOCK}[name]
