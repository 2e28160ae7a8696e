"""GLM-4.5-Air planned from its config.json alone, checked against figures computed by hand below.

The hand arithmetic is written out from the config (hidden 4096, 46 layers with layer 0 dense, 128 routed
experts + 1 shared of width 1408, dense width 10944, 96 query / 8 KV heads of 128, vocabulary 151552, untied
embeddings, bf16) and from compressed-tensors' formats as docs/plan.md states them: INT4 packs 8 weights into
an int32 (half a byte each) with one bf16 scale per group of 128 (64 for the 10944-wide down_proj) and a
2-int64 weight_shape; INT8 stores one byte per weight with one bf16 scale per output channel (+ one bf16 input
scale when activations are static); 16-bit stays 2 bytes per weight. From config.json alone the
multi-token-prediction layer is not in these figures (no index says the checkpoint holds it: MtpLayerUnverified);
planned with the safetensors index (a synthetic one naming layer 46's tensors) it is, in every preset, as the
source stores it (the last tests here).
"""

from __future__ import annotations

import pytest
from kompress_api.v1alpha1 import CompressionJob, Preset

from kompress_job.planning.plan import make_plan, read_config
from kompress_testing.models import config_dir

pytestmark = pytest.mark.unit

H, LAYERS, DENSE_LAYERS = 4096, 46, 1
EXPERTS, SHARED, MOE_W, DENSE_W = 128, 1, 1408, 10944
Q, KV = 96 * 128, 8 * 128
VOCAB = 151552
MOE_LAYERS = LAYERS - DENSE_LAYERS
BF16 = 2

# -- parameters -----------------------------------------------------------------------------------------------
ATTENTION = {"q": (Q, H), "k": (KV, H), "v": (KV, H), "o": (H, Q)}  # (out, in) per layer
ATTENTION_BIASES = Q + KV + KV  # q, k, v have biases
NORMS = LAYERS * 2 * H + H  # input and post-attention norm per layer, final norm
DENSE_MLP = {"gate": (DENSE_W, H), "up": (DENSE_W, H), "down": (H, DENSE_W)}
EXPERT = {"gate": (MOE_W, H), "up": (MOE_W, H), "down": (H, MOE_W)}
ROUTER = (EXPERTS, H)


def n(shape):
    return shape[0] * shape[1]


ATTENTION_PARAMS = LAYERS * (sum(n(s) for s in ATTENTION.values()) + ATTENTION_BIASES)
DENSE_PARAMS = DENSE_LAYERS * sum(n(s) for s in DENSE_MLP.values())
EXPERT_PARAMS = MOE_LAYERS * (EXPERTS + SHARED) * sum(n(s) for s in EXPERT.values())
ROUTER_PARAMS = MOE_LAYERS * n(ROUTER)
EMBEDDINGS = 2 * VOCAB * H  # embed_tokens and lm_head
TOTAL = ATTENTION_PARAMS + DENSE_PARAMS + EXPERT_PARAMS + ROUTER_PARAMS + EMBEDDINGS + NORMS
GATE_PROJ = MOE_LAYERS * (EXPERTS + SHARED) * n(EXPERT["gate"]) + DENSE_LAYERS * n(DENSE_MLP["gate"])


# -- bytes per module under each format ----------------------------------------------------------------------
def int4(out, inp, group=128):
    return out * inp // 2 + out * (inp // group) * BF16 + 16


def int8(out, inp, static):
    return out * inp + out * BF16 + (BF16 if static else 0)


def fp8(out, inp):
    return out * inp + out * BF16


def dense(out, inp):
    return out * inp * BF16


# Tensors outside the quantized weights, the same in every preset: embeddings, biases, norms, the routers (16-bit)
# with their float32 correction biases, and lm_head (16-bit).
COMMON = VOCAB * H * BF16 + LAYERS * ATTENTION_BIASES * BF16 + NORMS * BF16 + MOE_LAYERS * (n(ROUTER) * BF16 + EXPERTS * 4) + dense(VOCAB, H)


def attention_int4():
    return LAYERS * sum(int4(*s) for s in ATTENTION.values())


def founding_bytes():
    """sparse24-w4a16-w8a8: attention and dense up/down INT4 (down_proj in groups of 64), expert and shared up/down
    INT8 with static activations, every gate_proj 16-bit; 2:4 adds nothing (the zeros are stored)."""
    dense_mlp = int4(*DENSE_MLP["up"]) + int4(*DENSE_MLP["down"], group=64) + dense(*DENSE_MLP["gate"])
    expert = int8(*EXPERT["up"], static=True) + int8(*EXPERT["down"], static=True) + dense(*EXPERT["gate"])
    return attention_int4() + dense_mlp + MOE_LAYERS * (EXPERTS + SHARED) * expert + COMMON


def servable_int8_bytes():
    """w4a16-w8a8: attention and the dense MLP INT4, every expert projection (gate too) INT8 with dynamic activations."""
    dense_mlp = int4(*DENSE_MLP["gate"]) + int4(*DENSE_MLP["up"]) + int4(*DENSE_MLP["down"], group=64)
    expert = sum(int8(*s, static=False) for s in EXPERT.values())
    return attention_int4() + dense_mlp + MOE_LAYERS * (EXPERTS + SHARED) * expert + COMMON


def w4a16_bytes():
    dense_mlp = int4(*DENSE_MLP["gate"]) + int4(*DENSE_MLP["up"]) + int4(*DENSE_MLP["down"], group=64)
    expert = sum(int4(*s) for s in EXPERT.values())
    return attention_int4() + dense_mlp + MOE_LAYERS * (EXPERTS + SHARED) * expert + COMMON


def fp8_bytes():
    linear = [*ATTENTION.values()] * LAYERS + [*DENSE_MLP.values()] + [*EXPERT.values()] * MOE_LAYERS * (EXPERTS + SHARED)
    return sum(fp8(*s) for s in linear) + COMMON


EXPECTED = {
    "sparse24-w4a16-w8a8": (founding_bytes, 140e9),
    "w4a16-w8a8": (servable_int8_bytes, 105.6e9),
    "w4a16": (w4a16_bytes, 57e9),
    "fp8-dynamic": (fp8_bytes, 108e9),
}


def glm_job(preset: str, recipe_mtp: str = "keep", **spec) -> CompressionJob:
    return CompressionJob.model_validate(
        {
            "metadata": {"name": "glm"},
            "spec": {"model": {"uri": "hf://zai-org/GLM-4.5-Air"}, "recipe": {"preset": preset, "mtp": recipe_mtp}, "output": {"uri": "s3://bucket/glm"}, **spec},
        }
    )


_plans: dict = {}


def plan_for(preset: str):
    if preset not in _plans:
        _plans[preset] = make_plan(glm_job(preset), read_config(config_dir("glm-4.5-air")))
    return _plans[preset]


def codes(plan) -> dict[str, str]:
    return {p.code: p for p in plan.problems}


def close(a: float, b: float, tolerance: float = 0.01) -> bool:
    return abs(a - b) <= tolerance * b


def test_hand_figures_match_the_published_ones():
    # The hand arithmetic above agrees with the figures the issue and field notes quote.
    assert close(TOTAL, 106.85e9, 0.001) and close(GATE_PROJ, 33.5e9, 0.005)
    for preset, (bytes_of, quoted) in EXPECTED.items():
        assert close(bytes_of(), quoted), (preset, bytes_of() / 1e9)


def test_parameters_as_loaded():
    plan = plan_for("w4a16-w8a8")
    assert plan.total_parameters == TOTAL  # exact: every tensor of the meta model counted
    assert plan.roles["gate_proj"]["parameters"] == GATE_PROJ
    assert plan.roles["routed_experts"]["parameters"] == MOE_LAYERS * EXPERTS * sum(n(s) for s in EXPERT.values())
    assert plan.bf16_bytes == TOTAL * BF16


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_checkpoint_size_per_preset(preset):
    plan = plan_for(preset)
    bytes_of, _quoted = EXPECTED[preset]
    assert close(plan.estimated_checkpoint_bytes, bytes_of()), (plan.estimated_checkpoint_bytes / 1e9, bytes_of() / 1e9)
    # groups + untouched tensors + file headers add up to the total, and the JSON carries every group's figures
    assert sum(g.estimated_bytes for g in plan.groups) + plan.other_bytes + plan.file_overhead_bytes == plan.estimated_checkpoint_bytes
    doc = plan.to_json()
    assert {"total_parameters", "estimated_checkpoint_bytes", "host_memory_bytes", "gpu_memory_bytes", "disk_bytes", "groups", "problems"} <= set(doc)
    for group in doc["groups"]:
        assert {"name", "modules", "parameters", "scheme", "estimated_bytes"} <= set(group)
    assert plan.compression_ratio == pytest.approx(TOTAL * BF16 / plan.estimated_checkpoint_bytes, rel=1e-3)


def test_founding_preset_groups_and_what_stays_16bit():
    plan = plan_for("sparse24-w4a16-w8a8")
    groups = {g.name: g for g in plan.groups}
    kept = groups["16bit"]
    # every gate_proj (5,760 routed + 45 shared + 1 dense), the 45 routers and lm_head
    assert kept.modules == 5806 + 45 + 1
    assert kept.parameters == GATE_PROJ + ROUTER_PARAMS + VOCAB * H
    static = groups["w8a8-int8-static+sparse2:4"]
    assert static.scheme.activations.dynamic is False and static.sparsity == "2:4" and static.format == "int-quantized"
    assert groups["w4a16-g64+sparse2:4"].modules == 1  # the 10944-wide dense down_proj
    warning = codes(plan)["LargeShareKept16Bit"]
    assert "34.17 B" in warning.message and "gate_proj" in warning.message


def test_memory_and_disk():
    plan = plan_for("sparse24-w4a16-w8a8")
    f = plan.footprint
    assert f.host_memory_bytes >= TOTAL * BF16  # the whole bf16 model lives in host RAM (~214 GB)
    # one MoE layer onloaded (~4.7 GB) with SparseGPT's float32 Hessians of its pruned modules: q, k, v (4096²),
    # o (12288²), every expert's and the shared expert's up (4096²) and down (1408²)
    hessians = (3 * H * H + Q * Q + (EXPERTS + SHARED) * (H * H + MOE_W * MOE_W)) * 4
    assert f.gpu_parts["hessians"] == hessians
    layer = (sum(n(s) for s in ATTENTION.values()) + (EXPERTS + SHARED) * sum(n(s) for s in EXPERT.values()) + n(ROUTER)) * BF16
    assert f.gpu_parts["layer_weights"] == layer
    assert layer + hessians < f.gpu_memory_bytes < 80e9  # fits one 80 GB GPU
    # scratch: the download (with the MTP layer) and the checkpoint at least
    assert f.disk_bytes >= f.disk_parts["download"] + plan.estimated_checkpoint_bytes
    # without an index the MTP layer's download is its lower bound: one MoE decoder layer + eh_proj + 3 norms
    assert f.disk_parts["download"] == (TOTAL + MTP_DECODER - EXPERTS + 2 * H * H + 3 * H) * BF16  # (parameters: no router bias)
    # evaluation (16 x 1024 held-out tokens by default): two forward passes; on the GPU at least one row's float32
    # logits and log-probabilities (the evaluation batches rows up to its budget: its own estimate decides how many);
    # on disk the baseline's record, 32 ids + 32 log-probs + loss + tail (4 bytes each) per token, plus drift sketches;
    # no host RAM beyond the reloaded model verify holds
    from kompress_job.model import fidelity_cost

    own = fidelity_cost.estimate(read_config(config_dir("glm-4.5-air")), 16, 1024)
    assert f.evaluation["tokens"] == 16 * 1024 and f.evaluation["host_bytes"] == 0
    assert f.evaluation["gpu_bytes"] == own.memory_bytes >= 2 * 1024 * VOCAB * 4
    assert f.evaluation["disk_bytes"] == own.disk_bytes >= 16 * 1024 * (2 * 32 + 2) * 4
    assert f.disk_parts["evaluation_record"] == own.disk_bytes
    assert f.gpu_parts["lm_head_with_logits"] >= 2 * 1024 * VOCAB * 4  # the least evaluation needs: one row's logits
    assert f.evaluation["seconds"] == next(t.seconds for t in f.times if t.stage == "baseline+evaluate") > 0
    off = make_plan(glm_job("sparse24-w4a16-w8a8", evaluation={"enabled": False}), read_config(config_dir("glm-4.5-air"))).footprint
    assert off.evaluation == {"enabled": False} and "baseline+evaluate" not in {t.stage for t in off.times}
    # a data-free preset holds no calibration activations and no Hessians
    fp8 = plan_for("fp8-dynamic").footprint
    assert fp8.gpu_parts["hessians"] == 0 and fp8.gpu_memory_bytes < f.gpu_memory_bytes
    # ... and its evaluation keeps both models on scratch disk but one file's worth (kompress_job.model.disk_offload)
    assert fp8.host_memory_bytes < 0.2 * TOTAL * BF16 and "baseline+verify+evaluate (disk-offloaded)" in fp8.host_phases
    assert fp8.disk_parts["evaluation_offload"] >= TOTAL * BF16
    # an FP4 checkpoint is reloaded whole (compressed-tensors cannot reload it offloaded): the model's size again
    assert plan_for("nvfp4a16").footprint.host_memory_bytes >= TOTAL * BF16


# one more MoE decoder layer (attention with biases, 2 norms, 128 experts + shared, router)
MTP_DECODER = sum(n(s) for s in ATTENTION.values()) + ATTENTION_BIASES + 2 * H + (EXPERTS + SHARED) * sum(n(s) for s in EXPERT.values()) + n(ROUTER) + EXPERTS
# ... plus eh_proj (2H -> H), enorm, hnorm, shared_head.norm, and its own embed_tokens and shared_head.head: ≈ 3.62 B
MTP_PARAMS = MTP_DECODER + 2 * H * H + 3 * H + 2 * VOCAB * H


def glm_index_names() -> list[str]:
    import json

    from kompress_testing.models import synthetic_index

    return sorted(json.loads(synthetic_index(read_config(config_dir("glm-4.5-air"))))["weight_map"])


def test_without_an_index_the_mtp_layer_is_not_counted_and_the_plan_says_so():
    plan = plan_for("w4a16-w8a8")
    assert plan.mtp.layers.prefixes == ("model.layers.46.",) and plan.mtp.in_source is None and not plan.mtp.checkpoint_tensors
    assert "model.layers.46.*" in codes(plan)["MtpLayerUnverified"].message
    assert "MtpLayerDropped" not in codes(plan)
    assert plan.bf16_bytes == TOTAL * BF16


@pytest.mark.parametrize("preset", ["sparse24-w4a16-w8a8", "w4a16-w8a8", "w4a16", "fp8-dynamic"])
def test_every_preset_counts_the_kept_mtp_layer_in_the_checkpoint(preset):
    config = read_config(config_dir("glm-4.5-air"))
    names = glm_index_names()
    kept = make_plan(glm_job(preset), config, weight_names=names)
    dropped = make_plan(glm_job(preset, recipe_mtp="drop"), config, weight_names=names)
    assert kept.mtp.parameters == MTP_PARAMS and len(kept.mtp.checkpoint_tensors) == len(names) == 404
    assert kept.mtp.bytes == MTP_PARAMS * BF16 - EXPERTS * BF16 + EXPERTS * 4  # the router's correction bias is float32
    # the layer in its own shard: its bytes plus its header and index entries, nothing else changes
    grown = kept.estimated_checkpoint_bytes - dropped.estimated_checkpoint_bytes
    assert kept.mtp.bytes < grown < kept.mtp.bytes + 200_000
    assert kept.checkpoint_shards == dropped.checkpoint_shards + 1
    assert not {"MtpLayerDropped", "MtpLayerUnverified", "MtpLayerMissing"} & set(codes(kept))
    assert "model.layers.46" in codes(dropped)["MtpLayerDropped"].message and not dropped.mtp.checkpoint_tensors
    assert kept.bf16_bytes == (TOTAL + MTP_PARAMS) * BF16 and dropped.bf16_bytes == TOTAL * BF16
    assert kept.to_json()["mtp"]["source_bytes"] == kept.mtp.bytes


def test_quantizing_the_mtp_layer_is_refused_with_the_reason():
    plan = make_plan(glm_job("w4a16", recipe_mtp="quantize"), read_config(config_dir("glm-4.5-air")), weight_names=glm_index_names())
    (error,) = plan.errors
    assert error.code == "MtpQuantizeUnsupported" and "transformers does not build them" in error.message and "keep" in error.fix


def test_vllm_serving_problems_of_the_founding_preset_are_warnings():
    plan = plan_for("sparse24-w4a16-w8a8")
    found = codes(plan)
    assert not plan.errors  # what users asked for stays runnable
    assert plan.servable is False
    for code in ("Sparse24NotServable", "StaticInt8ExpertsNotLoadable", "MixedSchemesInExpert", "FusedProjectionSchemeMismatch", "GroupSizeFallback"):
        assert found[code].severity == "warning" and found[code].fix, code
    assert "static" in found["StaticInt8ExpertsNotLoadable"].message and "w4a16-w8a8" in found["StaticInt8ExpertsNotLoadable"].fix
    fallback = found["GroupSizeFallback"].message
    assert "model.layers.0.mlp.down_proj" in fallback and "10944" in fallback and "group 64" in fallback


@pytest.mark.parametrize("preset", ["w4a16-w8a8", "w4a16"])
def test_dense_down_proj_flagged_for_marlin(preset):
    plan = plan_for(preset)
    assert plan.servable is True
    alignment = codes(plan)["KernelAlignment"]
    assert "model.layers.0.mlp.down_proj" in alignment.message and "10944" in alignment.message
    assert "model.layers.0.mlp.down_proj" in alignment.fix  # keep it 16-bit
    assert "Sparse24NotServable" not in codes(plan) and "StaticInt8ExpertsNotLoadable" not in codes(plan)


def test_tensor_parallel_4_misalignment():
    plan = plan_for("w4a16")
    problem = codes(plan)["TensorParallelMisalignment"]
    assert "TP 4" in problem.message and "expert parallel" in problem.fix
    tp4 = " ".join(plan.tensor_parallel["4"]["examples"])
    assert "2736" in tp4  # 10944 / 4 dense width
    assert "352" in tp4  # 1408 / 4 expert width
    assert plan.tensor_parallel["1"]["misaligned"] == 1  # only the dense down_proj on one GPU
    assert plan.tensor_parallel["4"]["misaligned"] > 17000  # every expert projection at TP 4


def test_memory_below_the_model_is_an_error_and_shm_is_sized():
    job = glm_job("w4a16-w8a8", resources={"gpus": 4, "memory": "128Gi", "scratch": "100Gi", "shm": "16Gi"})
    plan = make_plan(job, read_config(config_dir("glm-4.5-air")))
    found = codes(plan)
    assert found["HostMemoryTooSmall"].severity == "error" and "spec.resources.memory" in found["HostMemoryTooSmall"].fix
    assert found["ScratchTooSmall"].severity == "error"
    assert found["ShmTooSmallForDistributed"].severity == "warning"
    assert plan.errors[0].code in ("HostMemoryTooSmall", "ScratchTooSmall")  # errors come first
    roomy = make_plan(glm_job("w4a16-w8a8", resources={"gpus": 4, "shm": "230Gi"}), read_config(config_dir("glm-4.5-air")))
    assert "ShmTooSmallForDistributed" not in codes(roomy) and roomy.footprint.offload_bytes == 0
    # Left unset, /dev/shm is sized like memory and scratch: the whole bf16 model plus compressed-tensors' 5 GB reserve.
    sized = make_plan(glm_job("w4a16-w8a8", resources={"gpus": 4}), read_config(config_dir("glm-4.5-air")))
    assert "ShmTooSmallForDistributed" not in codes(sized) and sized.footprint.offload_bytes == 0
    assert sized.summary().shm_bytes == TOTAL * BF16 + 5 * 10**9
    assert make_plan(glm_job("w4a16-w8a8", resources={"gpus": 1}), read_config(config_dir("glm-4.5-air"))).summary().shm_bytes is None


def test_lm_eval_tasks_add_their_time_to_the_plan_or_it_says_it_cannot():
    config = read_config(config_dir("glm-4.5-air"))
    base = make_plan(glm_job("w4a16"), config).footprint
    tasks = [{"name": "arc_easy"}, {"name": "gsm8k", "numFewshot": 5, "limit": 100}]
    planned = make_plan(glm_job("w4a16", evaluation={"tasks": tasks}), config)
    times = {t.stage: t for t in planned.footprint.times}
    # arc_easy: 2376 documents x 4 choices x 60 tokens; gsm8k: 100 documents, 6 x 200 tokens of context, 256 generated
    # tokens each recomputing the context; both models, 2 x active parameters FLOPs per token at 2e14 FLOP/s
    from kompress_job.model.fidelity_cost import parameter_counts

    _total, active = parameter_counts(config)
    tokens = 2376 * 4 * 60 + 100 * (1200 + 256 * (1200 + 128))
    added = times["baseline+evaluate"].seconds - next(t.seconds for t in base.times if t.stage == "baseline+evaluate")
    assert added == pytest.approx(4 * active * tokens / 2e14, abs=1)
    assert "lm-eval: " in times["baseline+evaluate"].basis and not any(p.code == "TaskSizeUnknown" for p in planned.problems)
    # one batch of the longest request's fp32 logits, when it is more than the fidelity evaluation's own
    assert planned.footprint.evaluation["gpu_bytes"] >= 8 * (1200 + 256) * VOCAB * 4

    unknown = make_plan(glm_job("w4a16", evaluation={"tasks": [{"name": "my_private_eval"}]}), config)
    (problem,) = [p for p in unknown.problems if p.code == "TaskSizeUnknown"]
    assert problem.severity == "warning" and "my_private_eval" in problem.message and "limit" in problem.fix


@pytest.mark.parametrize("preset", [p.value for p in Preset])
def test_the_presets_page_quotes_the_planners_glm_figures(preset):
    """docs/presets.md's GLM-4.5-Air column (kept beside the generator, which cannot import the planner) is what
    `kompress plan` says, to the 0.1 GB it prints, and the MTP layer's size too."""
    from kompress_job.recipe import presets_doc

    assert round(plan_for(preset).estimated_checkpoint_bytes / 1e9, 1) == presets_doc.GLM_4_5_AIR_CHECKPOINT_GB[Preset(preset)]
    with_index = make_plan(glm_job(preset), read_config(config_dir("glm-4.5-air")), weight_names=glm_index_names())
    assert round(with_index.mtp.bytes / 1e9, 1) == presets_doc.GLM_4_5_AIR_MTP_GB
