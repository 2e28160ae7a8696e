"""A small lm-evaluation-harness task the trained test model can answer, so task scores are tested offline.

    python -m kompress_testing.lmeval_task [DIR]     regenerate it (default: the committed folder)

One lm-eval task (YAML) over a local JSONL, made from conversations the trained model
(`kompress_testing.trained_model`, glm4-moe-chat) was trained on: kompress_chat_mc, multiple choice with
4 choices: a user's line, then which of four replies the assistant gives, the wrong ones being the right
reply with two neighbouring words swapped (chance: 25 %). A 1.2 M-parameter model knows English word order but not which
reply goes with which line, nor can it generate a reply exactly (both were tried: chance, and no exact match
in 40), so the items ask what it knows; a compression that breaks the model sends it towards chance.

Prompts are rendered with the model's chat template (`<|user|>` ... `<|assistant|>`), as it was trained.
The items are derived from chatterbot-corpus English (BSD licence; see README.md in the folder). The YAML
reads its data with `dataset_path: json` and a `data_files` path relative to the task folder, which the
worker resolves in the folder it is given (spec.evaluation.taskSource), so nothing is downloaded.

Development harness, not product: product code never imports this module.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

FOLDER = Path(__file__).parent / "trained" / "lmeval-chat"
TASK = "kompress_chat_mc"
DATA = "chat_mc.jsonl"
ITEMS = 48
CHOICES = 4
MIN_WORDS = 4  # distinct words in a reply, so that three different shufflings exist
SEED = 7
PROMPT = "<|user|>\\n{{question}}<|end|>\\n<|assistant|>\\n"  # escaped for a double-quoted YAML string

YAML = f"""\
# Multiple choice over conversations glm4-moe-chat was trained on (made by kompress_testing.lmeval_task).
task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {DATA}
test_split: test
output_type: multiple_choice
doc_to_text: "{PROMPT}"
# the reply follows the prompt's newline directly, as in training (lm-eval would put a space before it)
target_delimiter: ""
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def first_exchanges() -> list[tuple[str, str]]:
    """(user line, reply) of each distinct trained conversation's first exchange, in corpus order."""
    from kompress_testing.trained_model import split_conversations

    train, _held = split_conversations()
    seen: set[tuple[str, str]] = set()
    pairs = []
    for turns in train:
        if len(turns) >= 2 and (turns[0], turns[1]) not in seen:
            seen.add((turns[0], turns[1]))
            pairs.append((turns[0], turns[1]))
    return pairs


def items(pairs: list[tuple[str, str]], rng: random.Random) -> list[dict]:
    # Same words, same length (neither acc nor acc_norm can favour a choice for its length); one swap of
    # neighbouring words each, so the task is neither trivial for the model nor hopeless.
    usable = [(q, r.split()) for q, r in pairs if len(set(r.split())) >= MIN_WORDS]
    rng.shuffle(usable)
    out = []
    for question, words in usable[:ITEMS]:
        right = " ".join(words)
        wrong = []
        for i in sorted(rng.sample(range(len(words) - 1), CHOICES - 1)):
            swapped = [*words[:i], words[i + 1], words[i], *words[i + 2 :]]
            wrong.append(" ".join(swapped))
        choices = [right, *wrong]
        rng.shuffle(choices)
        out.append({"question": question, "choices": choices, "answer": choices.index(right)})
    return out


def write(folder: Path = FOLDER) -> dict[str, int]:
    rows = items(first_exchanges(), random.Random(SEED))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DATA).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    (folder / f"{TASK}.yaml").write_text(YAML)
    return {DATA: len(rows)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(write(Path(args[0]) if args else FOLDER)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
