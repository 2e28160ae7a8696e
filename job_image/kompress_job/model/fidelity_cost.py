"""What fidelity evaluation costs a job, from config.json alone: for the plan, before any weight is downloaded.

    parameter_counts(config)         (total, active per token) parameters of a decoder (MoE: routed experts count
                                     top-k times towards the active figure); also task_scores' basis
    estimate(config, samples, len)   the time, device memory and scratch disk the baseline and evaluate stages add
                                     (EvaluationCost)

Owns: the cost model of fidelity_record.record and fidelity_comparison.compare (two forward passes, one batch of
logits, the record on disk). Must not: load a model or need torch: the plan calls it with config.json alone.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from kompress_job.model.fidelity_passes import ACCELERATOR_LOGITS_BUDGET, DRIFT_TOKENS, SKETCH_DIM, plan_batches
from kompress_job.model.fidelity_record import TOP_K


class EvaluationCost(NamedTuple):
    seconds: float  # baseline + evaluate, both forward passes, weight streaming included
    memory_bytes: int  # peak working memory on the execution device beyond the weights (logits, activations)
    disk_bytes: int  # the baseline record in scratch


def parameter_counts(config: dict[str, Any]) -> tuple[int, int]:
    """(total, active per token) parameters of a decoder from its config.json (MoE: routed experts count
    top-k times towards the active figure). An approximation for planning, within a few percent."""
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    layers = int(text["num_hidden_layers"])
    vocab = int(text.get("vocab_size", 32000))
    heads = int(text.get("num_attention_heads", max(1, hidden // 128)))
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    dense_mlp = 3 * hidden * int(text.get("intermediate_size", 4 * hidden))
    experts = int(text.get("n_routed_experts") or text.get("num_experts") or text.get("num_local_experts") or 0)
    if experts:
        moe_inter = int(text.get("moe_intermediate_size") or text.get("intermediate_size"))
        expert = 3 * hidden * moe_inter
        shared_count = int(text.get("n_shared_experts") or 0)
        shared = shared_count * expert + (3 * hidden * int(text["shared_expert_intermediate_size"]) if text.get("shared_expert_intermediate_size") else 0)
        top_k = int(text.get("num_experts_per_tok") or 1)
        dense_layers = int(text.get("first_k_dense_replace") or 0)
        sparse_step = int(text.get("decoder_sparse_step") or 1)
        moe_layers = len([i for i in range(dense_layers, layers) if (i + 1) % sparse_step == 0])
        mlp_total = (layers - moe_layers) * dense_mlp + moe_layers * (experts * expert + shared + experts * hidden)
        mlp_active = (layers - moe_layers) * dense_mlp + moe_layers * (top_k * expert + shared + experts * hidden)
    else:
        mlp_total = mlp_active = layers * dense_mlp
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings") else 2)
    total = layers * attention + mlp_total + embeddings
    active = layers * attention + mlp_active + vocab * hidden
    return total, active


def estimate(
    config: dict[str, Any],
    samples: int,
    seq_len: int,
    *,
    dtype_bytes: int = 2,
    top_k: int = TOP_K,
    flops_per_second: float = 2e14,
    weight_bandwidth: float = 2.5e10,
    logits_budget: int = ACCELERATOR_LOGITS_BUDGET,
) -> EvaluationCost:
    """What baseline + evaluate add to a job: two forward passes over `samples` rows of `seq_len` tokens.

    Time: per pass, 2 x active parameters x tokens FLOPs at `flops_per_second` (default: an H100 at about a
    quarter of its bf16 peak, what a batch of long rows reaches), plus, per batch, streaming every weight from
    host memory to the device at `weight_bandwidth` (PCIe 4/5), since the worker keeps the model in host memory.
    Memory: one batch's fp32 logits and log-probabilities (at most `logits_budget`, the evaluation's own
    figure on an accelerator) plus activations.
    Disk: the record, (k ids + k log-probs + loss + tail) x 4 bytes per position, plus the drift projections.
    """
    text = config.get("text_config") or config
    total, active = parameter_counts(config)
    vocab = int(text.get("vocab_size", 32000))
    hidden = int(text["hidden_size"])
    layers = int(text["num_hidden_layers"])
    tokens = samples * seq_len
    batches = len(plan_batches([seq_len] * samples, vocab, budget=logits_budget))
    per_pass = 2 * active * tokens / flops_per_second + batches * total * dtype_bytes / weight_bandwidth
    rows_per_batch = math.ceil(samples / batches)
    logits = rows_per_batch * seq_len * vocab * 4
    activations = rows_per_batch * seq_len * max(hidden, int(text.get("intermediate_size", 4 * hidden))) * dtype_bytes * 4
    memory = 2 * logits + activations  # logits in fp32, and one chunk's log-softmax beside them
    drift = min(DRIFT_TOKENS, tokens) * 3 * layers * min(hidden, SKETCH_DIM) * 4
    disk = tokens * (2 * top_k + 2) * 4 + drift
    return EvaluationCost(seconds=round(2 * per_pass, 1), memory_bytes=int(memory), disk_bytes=int(disk))
