"""The baseline of bench_worker_overhead.py: a bare llm-compressor script of the tutorial's shape.

load the model -> load and tokenize the calibration text -> the recipe -> oneshot -> a sample generation ->
save compressed. (llm-compressor's own examples, e.g. examples/quantization_w4a16/llama3_example.py, print a
"SAMPLE GENERATION" of 100 new tokens between oneshot and saving; Kompress's verify stage does its check too.)
Same data and the same recipe as the Kompress run it is compared with (the recipe file Kompress resolved);
on a machine without an accelerator it applies the same two CPU workarounds Kompress needs, or it would
not run at all (llm-compressor pins AWQ's cached activations; transformers' MoE patching needs torchvision).

    python bench/bare_llmcompressor.py MODEL_DIR DATA.jsonl RECIPE.yaml OUT_DIR [MAX_SEQ_LEN]
"""

from __future__ import annotations

import json
import sys


def main(model_dir: str, data: str, recipe: str, out_dir: str, max_seq_length: int = 64) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcompressor import oneshot
    from llmcompressor.utils import dispatch_for_generation
    from llmcompressor.modeling.moe.linearize import load_quantizable_moe

    if not torch.accelerator.is_available():
        from kompress_job.model import cpu_workarounds

        cpu_workarounds.apply()

    with load_quantizable_moe():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    with open(data) as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()]
    ds = Dataset.from_dict({"text": texts})
    ds = ds.map(lambda row: tokenizer(row["text"], max_length=max_seq_length, truncation=True, add_special_tokens=False), remove_columns=["text"])

    oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=max_seq_length, num_calibration_samples=len(ds), moe_calibrate_all_experts=True)

    print("========== SAMPLE GENERATION ==============")
    dispatch_for_generation(model)
    input_ids = tokenizer("Hello my name is", return_tensors="pt").input_ids.to(model.device)
    output = model.generate(input_ids, max_new_tokens=100)
    print(tokenizer.decode(output[0]))

    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(a) for a in sys.argv[5:6]))
