"""The pure parts of planning: what a resolved recipe will cost before anything runs.

    model        config.json -> the model on the meta device; dtypes; the multi-token-prediction layer
    checkpoint   every tensor the compressed checkpoint will hold (compressed-tensors 0.19's formats), and
                 its size by exact byte arithmetic
    footprint    host RAM, GPU memory per device, /dev/shm, scratch disk and time per stage, each with its basis
    serving      what vLLM can load: 2:4, static INT8 experts, mixed schemes, fused projections, TP alignment
    problems     the Problem record (severity, stable code, message, fix) and the codes

kompress_job.planning.plan puts them together (make_plan). Nothing here reads weights, downloads anything, or
imports llm-compressor or compressed-tensors (planning GLM-4.5-Air takes about a second).
"""
