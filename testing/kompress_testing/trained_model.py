"""A small GLM4-MoE trained on English dialogue, so that perplexity, KL and top-1 agreement mean something.

    python -m kompress_testing.trained_model [DIR]      regenerate it (default: the committed folder, ~2.5 min
                                                        on one CPU thread)

The model is `kompress_testing.models`' glm4-moe (GLM-4.5-Air's shape: dense first layer, then MoE layers
with a shared expert, 4 routed experts, top-2, sigmoid router with correction bias) with 4 layers instead
of 2, and its tokenizer (byte-level BPE, 512 tokens). It is trained from the seeded initialisation of
`models.build_model` on chatterbot-corpus's English conversations (BSD licence; a PyPI package), rendered
with the chat template as the calibration stage renders chat rows. Every 4th distinct conversation is held out:
never trained on, written to heldout.jsonl as chat rows, for tests and benchmarks to calibrate and
evaluate on (pass it as spec.calibration.uri). The tokenizer is trained on the whole corpus, held-out
conversations included (a vocabulary effect only; the weights never see them).

Deterministic: seeded data order and initialisation, one CPU thread. provenance.json records the SHA-256 of
this script and of the training and held-out text, the settings, the final loss, the held-out perplexity
before and after, and every file's SHA-256; tests/testing/test_trained_model.py fails when this script or
the corpus changes without the model being regenerated.

Development harness, not product: product code never imports this module.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

NAME = "glm4-moe-chat"
FOLDER = Path(__file__).parent / "trained" / NAME
HELDOUT = "heldout.jsonl"
PROVENANCE = "provenance.json"

LAYERS = 4
HOLDOUT_EVERY = 4  # distinct conversation i is held out when i % HOLDOUT_EVERY == 0
SEED = 1234
STEPS = 500
BATCH = 16
SEQUENCE = 128
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.1
WARMUP = 50
CLIP = 1.0


def folder() -> Path:
    """The committed model folder (config, safetensors, tokenizer, heldout.jsonl, provenance.json)."""
    return FOLDER


def heldout_uri() -> str:
    return f"file://{FOLDER / HELDOUT}"


def split_conversations() -> tuple[list[list[str]], list[list[str]]]:
    """(training, held-out) conversations of chatterbot-corpus English, in the corpus's stable order.

    The corpus repeats many conversations (2026 of them, 899 distinct), so the split is made on distinct
    conversations: every HOLDOUT_EVERY-th distinct one is held out, and no copy of it is trained on.
    Training keeps the corpus's repetitions of the rest."""
    from kompress_testing.models import corpus_conversations

    conversations = list(corpus_conversations())
    distinct: dict[str, int] = {}
    for turns in conversations:
        distinct.setdefault(_key(turns), len(distinct))
    held_keys = {key for key, index in distinct.items() if index % HOLDOUT_EVERY == 0}
    train = [turns for turns in conversations if _key(turns) not in held_keys]
    held = [json.loads(key) for key, index in distinct.items() if index % HOLDOUT_EVERY == 0]
    return train, held


def _key(turns: list[str]) -> str:
    return json.dumps(turns, ensure_ascii=False)


def as_messages(turns: list[str]) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def text_sha256(conversations: list[list[str]]) -> str:
    """SHA-256 of conversations as canonical JSON (what the model was trained on, before rendering)."""
    return hashlib.sha256(json.dumps(conversations, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def script_sha256() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _token_stream(tokenizer: Any, conversations: list[list[str]]):
    import torch

    ids: list[int] = []
    for turns in conversations:
        text = tokenizer.apply_chat_template(as_messages(turns), tokenize=False)
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def _perplexity(model: Any, stream: Any) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stream) - SEQUENCE - 1, SEQUENCE):
            window = stream[start : start + SEQUENCE].unsqueeze(0)
            loss = model(input_ids=window, labels=window).loss
            total += float(loss) * (SEQUENCE - 1)
            count += SEQUENCE - 1
    model.train()
    return math.exp(total / count)


def train(out: Path, *, log=print) -> dict[str, Any]:  # noqa: ANN001
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import transformers

    from kompress_testing import models

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    started = time.monotonic()
    train_convs, held_convs = split_conversations()
    tokenizer = models.build_tokenizer()
    train_stream = _token_stream(tokenizer, train_convs)
    held_stream = _token_stream(tokenizer, held_convs)

    config = models.build_config("glm4-moe")
    config.num_hidden_layers = LAYERS
    model = models.seeded_model(config)  # the same seeded initialisation as the untrained tiny models
    untrained = _perplexity(model, held_stream)
    log(f"untrained: held-out perplexity {untrained:.2f}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * min(s, STEPS) / STEPS)))
    order = torch.Generator().manual_seed(SEED)
    model.train()
    losses: list[float] = []
    for step in range(STEPS):
        starts = torch.randint(0, len(train_stream) - SEQUENCE - 1, (BATCH,), generator=order)
        batch = torch.stack([train_stream[s : s + SEQUENCE] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 100 == 99:
            log(f"step {step + 1}: loss {losses[-1]:.3f}, held-out perplexity {_perplexity(model, held_stream):.2f}")
    model.eval()
    trained = _perplexity(model, held_stream)
    log(f"trained: held-out perplexity {trained:.2f}")

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with (out / HELDOUT).open("w", encoding="utf-8") as f:
        for turns in held_convs:
            f.write(json.dumps({"messages": as_messages(turns)}, ensure_ascii=False) + "\n")
    from importlib import metadata

    provenance = {
        "name": NAME,
        "script": "testing/kompress_testing/trained_model.py",
        "scriptSha256": script_sha256(),
        "data": {
            "package": "chatterbot-corpus",
            "version": metadata.version("chatterbot-corpus"),
            "licence": "BSD (package metadata: License :: OSI Approved :: BSD License)",
            "language": "english",
            "split": f"distinct conversation i (in corpus order, files by name) is held out when i % {HOLDOUT_EVERY} == 0; no copy of a held-out conversation is trained on",
            "trainingConversations": len(train_convs),
            "trainingTokens": int(len(train_stream)),
            "trainingTextSha256": text_sha256(train_convs),
            "heldOutConversations": len(held_convs),
            "heldOutTokens": int(len(held_stream)),
            "heldOutTextSha256": text_sha256(held_convs),
        },
        "model": {"family": "glm4-moe (kompress_testing.models)", "layers": LAYERS, "parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32"},
        "training": {
            "seed": SEED,
            "steps": STEPS,
            "batchSize": BATCH,
            "sequenceLength": SEQUENCE,
            "learningRate": LEARNING_RATE,
            "weightDecay": WEIGHT_DECAY,
            "warmupSteps": WARMUP,
            "schedule": "linear warmup, cosine decay to 0",
            "optimizer": "AdamW(betas=(0.9, 0.95)), gradient norm clipped at 1.0",
            "finalLoss": round(losses[-1], 4),
            "meanLossLast50Steps": round(sum(losses[-50:]) / len(losses[-50:]), 4),
            "seconds": round(time.monotonic() - started, 1),
        },
        "heldOutPerplexity": {"untrained": round(untrained, 3), "trained": round(trained, 3)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    provenance["files"] = {p.name: file_sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name not in (PROVENANCE, "README.md")}
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n")
    return provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kompress_testing.trained_model", description="Train the small GLM4-MoE test model on chatterbot-corpus English.")
    parser.add_argument("dir", nargs="?", type=Path, default=FOLDER)
    args = parser.parse_args(argv)
    provenance = train(args.dir)
    print(json.dumps(provenance["heldOutPerplexity"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
