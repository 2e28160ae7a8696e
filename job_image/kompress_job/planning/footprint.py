"""What the worker will need: host RAM, GPU memory per device, /dev/shm, scratch disk, and time per stage.

Owns: the arithmetic, and the basis of every figure, as text a user can check:

host RAM      the peak of the worker's phases (each: what it holds at once), plus a per-process allowance
  calibrate   llm-compressor holds the whole model in host RAM and onloads one decoder layer at a time; its
              sequential pipeline keeps every calibration sample's activations (inputs and outputs of the
              current layer: 2 · samples · length · hidden) in host RAM, and AWQ caches one more set of them
              there for MoE models. With several GPUs (DDP) rank 0 loads the weights into /dev/shm (shared by
              the ranks, compressed-tensors' load_offloaded_model) and every rank is a process of its own.
  save        the compressed model, plus one shard (≤ 50 GB) that safetensors serializes in memory
  verify      the checkpoint reloaded the way users load it (decompressed: the model's size again), kept for
              the evaluation stage
  data-free   (spec.recipe.path, auto for fp8-dynamic, fp8-block, nvfp4a16, mxfp4a16) no calibrate or save phase:
              each of `workers` threads holds one source file and its quantized copy (on a GPU the file is read
              onto the device, and only the quantized copy is serialized in host memory). The source's file size
              is not in config.json: Hub checkpoints shard at about 5 GB (ASSUMED_SOURCE_SHARD). Without evaluation,
              verify streams the files tensor by tensor (no reload), so nothing holds the model; with evaluation,
              the baseline's original and verify's reload keep all but one file's worth of their weights on scratch
              disk, one layer read back at a time (an FP4 checkpoint is reloaded whole: compressed-tensors 0.19
              cannot reload it offloaded).
GPU memory    the largest subgraph onloaded at once: a decoder layer's weights (or embeddings / lm_head with
              the logits of one sample), the Hessians of the layer's pruned (SparseGPT) or GPTQ-quantized
              modules (in² float32 each: the published "2× a layer"), AWQ's activation cache for dense models,
              one sample's activations, and an allowance for the CUDA context. The same on every device (DDP
              replicates the layer and its Hessians; it splits the samples).
/dev/shm      with DDP only: the model plus the 5 GB compressed-tensors keeps free; what does not fit is
              offloaded to scratch disk (and read back for every layer). A memory-backed volume: it counts
              against the pod's memory, which the host figure already includes.
scratch disk  the download (Hub or S3; a volume is used in place), the compressed checkpoint, DDP's disk
              offload when /dev/shm is too small, and an allowance for calibration data and caches
time          from published llm-compressor figures, scaled linearly by parameters × calibration tokens (MoE
              experts all see every token: moe_calibrate_all_experts), and assumed transfer rates: every
              estimate carries its basis. They are orders of magnitude, not promises.

Must not: read weights or know a recipe's details beyond the few facts passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kompress_job.recipe.resolved import STATIC_ACTIVATIONS, WEIGHTS_ONLY

GB = 10**9
GIB = 2**30
# Python, torch, tokenizer, datasets and llm-compressor in each worker process: a tiny model's whole CPU run peaks
# at ~0.6 GB RSS on this machine (measured); the CUDA runtime adds 2-4 GB per process on a GPU node. Allowances.
PROCESS_ALLOWANCE_CPU = 2 * GIB
PROCESS_ALLOWANCE_GPU = 6 * GIB
# CUDA context and allocator fragmentation on each GPU.
GPU_ALLOWANCE = 2 * GIB
# Every memory and disk figure leaves this much headroom: a job that is killed for memory costs hours.
HEADROOM = 1.10
# compressed-tensors' load_offloaded_model keeps this much of /dev/shm free (extra_cpu_mem).
SHM_RESERVE = 5 * GB
# The operator's default size of /dev/shm (KOMPRESS_DEFAULT_SHM) when spec.resources.shm is unset.
DEFAULT_SHM = 16 * GIB
# Scratch besides the model and the checkpoint: calibration data (a Hub dataset's files are downloaded there too),
# caches and logs. An allowance: their size is not in config.json.
SCRATCH_ALLOWANCE = 4 * GIB
# transformers' save_pretrained shard size; safetensors builds each shard's bytes in memory before writing.
SAVE_SHARD = 50 * GB
# The source's safetensors files on the data-free path: the Hub's usual size (GLM-4.5-Air: 47 files of <= 5 GB).
ASSUMED_SOURCE_SHARD = 5 * GB

# Published figures (llm-compressor docs, "Runtime requirements": Meta-Llama-3-8B-Instruct on one A100, at its
# examples' 512 samples × 2048 tokens), seconds for one run of each kind of modifier.
REFERENCE_PARAMETERS = 8.03e9
REFERENCE_TOKENS = 512 * 2048
PASS_SECONDS = {
    "GPTQModifier": 1800,  # "GPTQ (weights only) ~ 30 minutes"
    "SparseGPTModifier": 1800,  # the same Hessian-based method as GPTQ; no separate published figure
    "AWQModifier": 1800,  # "AWQ (weights only) ~ 30 minutes"
    "AutoRoundModifier": 1800,  # no published figure: counted as GPTQ's, the other per-layer optimisation of weights
    STATIC_ACTIVATIONS: 1200,  # "RTN weights and activations ~ 20 minutes"
    WEIGHTS_ONLY: 60,  # "RTN weights only ~ 1 minute"
}
# Published DDP figure (Qwen3-30B-A3B GPTQ: 14,208 s on 1 GPU, 3,694 s on 4): 3.8x on 4 GPUs, 95 % per GPU.
DDP_EFFICIENCY = 0.95
# Assumptions, not measurements: a good link to the Hub or S3, and a local NVMe disk.
NETWORK_BYTES_PER_SECOND = 500 * 10**6
DISK_BYTES_PER_SECOND = 1 * GB


@dataclass(frozen=True)
class Workload:
    """The facts of one job that its footprint depends on (all sizes in bytes)."""

    model_bytes: int  # the model as loaded (parameters × load dtype), without layers transformers drops
    parameters: int
    download_bytes: int  # 0 when the model is used in place on a volume
    checkpoint_bytes: int
    hidden_size: int
    vocab_size: int
    layer_bytes: int  # the largest decoder layer's weights
    layer_hessian_bytes: int  # Hessians of that layer's SparseGPT/GPTQ modules (float32)
    widest: int  # the widest activation inside a decoder layer
    dtype_bytes: int
    devices: int
    calibration_samples: int
    calibration_length: int
    needs_calibration: bool
    passes: list[str]  # what each modifier runs (kompress_job.recipe.resolved.modifier_pass), keys of PASS_SECONDS
    awq: bool
    moe: bool
    evaluation_samples: int  # 0: evaluation off
    evaluation_length: int
    shm_bytes: int  # /dev/shm as configured (spec.resources.shm or the operator's default)
    evaluation_cost: Any = None  # kompress_job.model.fidelity_cost.EvaluationCost: baseline + evaluate, by their own model; None when off
    data_free: bool = False  # the recipe runs on the data-free path (kompress_job.model.data_free)
    source_shard_bytes: int = ASSUMED_SOURCE_SHARD  # the largest source safetensors file
    reloads_whole: bool = False  # data-free: verify reloads the checkpoint whole (FP4: kompress_job.model.disk_offload)
    task_cost: Any = None  # kompress_job.model.task_scores.TaskCost: spec.evaluation.tasks on both models; None without tasks

    @property
    def distributed(self) -> bool:
        """What the compress stage does: several GPUs run DDP when the recipe learns from data."""
        return self.devices > 1 and self.needs_calibration and not self.data_free

    @property
    def workers(self) -> int:
        """Files the data-free path quantizes at once: one per GPU (one on the CPU)."""
        return max(1, self.devices)


@dataclass(frozen=True)
class StageTime:
    stage: str
    seconds: int | None
    basis: str

    def summary(self) -> dict[str, Any]:
        return {"stage": self.stage, "seconds": self.seconds, "basis": self.basis}


@dataclass
class Footprint:
    host_memory_bytes: int
    gpu_memory_bytes: int
    disk_bytes: int
    shm_needed_bytes: int  # for DDP to keep the model in memory; 0 without DDP
    offload_bytes: int  # DDP weights that go to scratch disk with the /dev/shm configured
    host_phases: dict[str, int] = field(default_factory=dict)
    gpu_parts: dict[str, int] = field(default_factory=dict)
    disk_parts: dict[str, int] = field(default_factory=dict)
    times: list[StageTime] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)  # what spec.evaluation adds

    def summary(self) -> dict[str, Any]:
        return {
            "host_memory_bytes": self.host_memory_bytes,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "disk_bytes": self.disk_bytes,
            "shm_bytes": self.shm_needed_bytes,
            "disk_offload_bytes": self.offload_bytes,
            "host_phases": self.host_phases,
            "gpu_parts": self.gpu_parts,
            "disk_parts": self.disk_parts,
            "times": [t.summary() for t in self.times],
            "evaluation": self.evaluation,
            "headroom": HEADROOM,
        }


def footprint(w: Workload) -> Footprint:
    allowance = PROCESS_ALLOWANCE_GPU if w.devices else PROCESS_ALLOWANCE_CPU
    activations = w.calibration_samples * w.calibration_length * w.hidden_size * w.dtype_bytes if w.needs_calibration else 0
    processes = w.devices if w.distributed else 1

    # Host RAM, phase by phase (what each holds at once).
    shm_needed = w.model_bytes + SHM_RESERVE if w.distributed else 0
    in_memory = min(w.model_bytes, max(0, w.shm_bytes - SHM_RESERVE)) if w.distributed else w.model_bytes
    offload = w.model_bytes - in_memory
    if w.data_free:
        shard = min(w.source_shard_bytes, w.model_bytes)
        phases = {"data-free compress": w.workers * shard * (1 if w.devices else 2) + allowance}
        if w.evaluation_samples:
            # The original for the baseline, then verify's reload for evaluate, each with all but `shard` bytes of its
            # weights on scratch disk and one layer read back at a time (kompress_job.model.disk_offload).
            offloaded = shard + w.layer_bytes + allowance
            if w.reloads_whole:
                phases["baseline (disk-offloaded)"] = offloaded
                phases["verify+evaluate (FP4, reloaded whole)"] = w.model_bytes + allowance
            else:
                phases["baseline+verify+evaluate (disk-offloaded)"] = offloaded
        else:
            phases["verify (streamed)"] = shard + allowance
    else:
        calibrate = in_memory + 2 * activations + (activations if w.awq and w.moe else 0) + processes * allowance
        save = w.checkpoint_bytes + min(SAVE_SHARD, w.checkpoint_bytes) + allowance
        verify = w.model_bytes + allowance
        phases = {"calibrate": calibrate, "save": save, "verify": verify}
    host = _headroom(max(phases.values()))

    # GPU memory per device: the largest subgraph onloaded at once.
    per_sample = max(w.calibration_length, w.evaluation_length) * w.widest * 6 * w.dtype_bytes if w.devices else 0
    awq_cache = activations if w.awq and not w.moe else 0  # llm-compressor offloads it to the CPU for MoE models
    layer = w.layer_bytes + w.layer_hessian_bytes + awq_cache + per_sample
    longest = max(w.calibration_length if w.needs_calibration else 0, w.evaluation_length if w.evaluation_samples else 0)
    head = w.vocab_size * w.hidden_size * w.dtype_bytes + 2 * longest * w.vocab_size * 4  # float32 logits, log-softmax
    # Evaluation needs no more than `head` (one row's logits): it batches rows into whatever GPU memory is free.
    gpu_parts = {
        "layer_weights": w.layer_bytes,
        "hessians": w.layer_hessian_bytes,
        "awq_cache": awq_cache,
        "activations": per_sample,
        "lm_head_with_logits": head,
        "cuda_allowance": GPU_ALLOWANCE,
    }
    gpu = _headroom(max(layer, head) + GPU_ALLOWANCE) if w.devices else 0

    # Scratch disk.
    calibration_copy = w.calibration_samples * w.calibration_length * 16 if w.distributed else 0  # ids + mask, int64
    disk_parts = {
        "download": w.download_bytes,
        "checkpoint": w.checkpoint_bytes,
        "distributed_offload": offload,
        "distributed_calibration_copy": calibration_copy,
        "data_and_caches": SCRATCH_ALLOWANCE,
        "evaluation_record": w.evaluation_cost.disk_bytes if w.evaluation_cost else 0,
        # compressed-tensors' disk offload of the original, then of the reload (the first is removed before): at most the model
        "evaluation_offload": w.model_bytes if w.data_free and w.evaluation_samples else 0,
    }
    disk = _headroom(sum(disk_parts.values()))

    return Footprint(
        host_memory_bytes=host,
        gpu_memory_bytes=gpu,
        disk_bytes=disk,
        shm_needed_bytes=shm_needed,
        offload_bytes=offload,
        host_phases=phases,
        gpu_parts=gpu_parts,
        disk_parts=disk_parts,
        times=stage_times(w),
        evaluation=evaluation_cost(w),
    )


def _headroom(n: int) -> int:
    return int(math.ceil(n * HEADROOM))


def stage_times(w: Workload) -> list[StageTime]:
    out = []
    if w.download_bytes:
        out.append(StageTime("fetch-model", round(w.download_bytes / NETWORK_BYTES_PER_SECOND), f"{_gb(w.download_bytes)} at an assumed {NETWORK_BYTES_PER_SECOND / 1e6:.0f} MB/s"))
    else:
        out.append(StageTime("fetch-model", 0, "the model is used in place on its volume"))
    if w.data_free:
        io = w.model_bytes + w.checkpoint_bytes
        out.append(StageTime("load-model", 0, "the data-free path builds only the structure (meta device)"))
        out.append(StageTime("compress", round(io / DISK_BYTES_PER_SECOND / w.workers), f"data-free: {_gb(w.model_bytes)} read and {_gb(w.checkpoint_bytes)} written at an assumed {DISK_BYTES_PER_SECOND / 1e9:.0f} GB/s, {w.workers} file(s) at a time (rounding weights is cheap beside the I/O)"))
        out.append(StageTime("save", 0, "written by the compress stage, file by file"))
    else:
        out.append(StageTime("load-model", round(w.model_bytes / DISK_BYTES_PER_SECOND), f"{_gb(w.model_bytes)} read at an assumed {DISK_BYTES_PER_SECOND / 1e9:.0f} GB/s"))
        out.append(compress_time(w))
        out.append(StageTime("save", round(w.checkpoint_bytes / DISK_BYTES_PER_SECOND), f"{_gb(w.checkpoint_bytes)} written at an assumed {DISK_BYTES_PER_SECOND / 1e9:.0f} GB/s"))
    out.append(StageTime("verify", round(w.checkpoint_bytes / DISK_BYTES_PER_SECOND), f"the checkpoint read back at an assumed {DISK_BYTES_PER_SECOND / 1e9:.0f} GB/s, plus decompression (not estimated)"))
    if w.evaluation_samples:
        out.append(evaluation_time(w))
    out.append(StageTime("publish", round(w.checkpoint_bytes / NETWORK_BYTES_PER_SECOND), f"{_gb(w.checkpoint_bytes)} at an assumed {NETWORK_BYTES_PER_SECOND / 1e6:.0f} MB/s"))
    return out


def _speedup(devices: int, distributed: bool) -> float:
    return devices * DDP_EFFICIENCY if distributed else 1.0


def compress_time(w: Workload) -> StageTime:
    if w.devices == 0:
        return StageTime("compress", None, "no estimate without a GPU (the published figures are GPU runs)")
    scale = w.parameters / REFERENCE_PARAMETERS
    tokens = w.calibration_samples * w.calibration_length / REFERENCE_TOKENS
    kinds = w.passes or [WEIGHTS_ONLY]
    seconds = sum(PASS_SECONDS[k] * scale * (1 if k == WEIGHTS_ONLY else tokens) for k in kinds)
    speedup = _speedup(w.devices, w.distributed)
    basis = (
        f"llm-compressor's published A100 runtimes for Llama-3-8B (GPTQ/AWQ ~30 min, static activations ~20 min, weights only "
        f"~1 min at 512 x 2048 tokens) scaled by parameters ({scale:.1f}x) and calibration tokens ({tokens:.2f}x) for "
        f"{' + '.join(kinds)}"
    )
    if speedup > 1:
        basis += f"; DDP over {w.devices} GPUs at the published 3.8x on 4 ({speedup:.1f}x)"
    return StageTime("compress", round(seconds / speedup), basis)


def evaluation_time(w: Workload) -> StageTime:
    if w.devices == 0:
        return StageTime("baseline+evaluate", None, "no estimate without a GPU")
    cost = w.evaluation_cost
    tasks = w.task_cost
    return StageTime(
        "baseline+evaluate",
        round(cost.seconds + (tasks.seconds if tasks else 0)),
        f"two forward passes (original before compression, compressed after) over {w.evaluation_samples} x {w.evaluation_length} "
        "held-out tokens: 2 x active parameters x tokens FLOPs at a quarter of an H100's bf16 peak, plus every weight streamed "
        f"from {'scratch disk (data-free: disk-offloaded)' if w.data_free else 'host memory'} once per batch (kompress_job.model.fidelity_cost.estimate)" + (f"; {tasks.basis} (kompress_job.model.task_scores.estimate)" if tasks else ""),
    )


def evaluation_cost(w: Workload) -> dict[str, Any]:
    """What spec.evaluation adds: two forward passes of time, one batch's logits and activations on the device,
    the baseline record on scratch disk, and no host RAM beyond the reloaded model the verify stage already holds."""
    if not w.evaluation_samples or w.evaluation_cost is None:
        return {"enabled": False}
    timing = evaluation_time(w)
    return {
        "enabled": True,
        "tokens": w.evaluation_samples * w.evaluation_length,
        "seconds": timing.seconds,
        "gpu_bytes": max(w.evaluation_cost.memory_bytes, w.task_cost.memory_bytes if w.task_cost else 0),
        "disk_bytes": w.evaluation_cost.disk_bytes,
        "host_bytes": 0,
        "basis": timing.basis + "; GPU memory: what its batches of rows take at most (fp32 logits, log-probabilities, "
        "activations); it batches into free memory, so it needs no more than one row's logits (counted in lm_head_with_logits); "
        "disk: the baseline's top-k record; the compressed model is the one verify reloaded",
    }


def _gb(n: int) -> str:
    return f"{n / GB:.1f} GB"
