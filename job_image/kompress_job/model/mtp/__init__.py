"""Multi-token-prediction (MTP) layers: the draft head vLLM's speculative decoding (`method: mtp`) runs.

    layers    which tensors of a checkpoint are MTP layers, from config.json and the tensor names (one table
              of supported families); shared by the planner and the worker
    carry     the save stage's step: MTP tensors copied byte for byte from the source into the compressed
              checkpoint (own shard, index, quantization_config.ignore), or left out; and the check that they
              are there unchanged (verify stage)

Why Kompress does this itself: transformers drops these layers at load (each model class lists their prefix in
`_keys_to_ignore_on_load_unexpected`), so llm-compressor never sees them, and llm-compressor 0.14 copies back
only tensors whose names start with `mtp` (GLM-4.5 and DeepSeek-V3 store theirs as the decoder layer after the
last one, `model.layers.46.*` on GLM-4.5-Air).
"""
