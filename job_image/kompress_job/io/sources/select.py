"""Which files of a model repository the worker needs: weights, config and tokenizer, nothing else.

Owns: the allow-list used for every source (Hub, S3 prefix, volume), so a repository's extra
weights in other formats (.bin, .pth, .gguf, original/), images and docs are never downloaded.
Must not: do I/O.
"""

from __future__ import annotations

from fnmatch import fnmatch

# config.json, generation_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
# *.safetensors(.index.json), sentencepiece/tiktoken vocabularies, BPE merges, chat templates.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]
# Model code runs only with trust_remote_code; without it, don't even fetch it.
REMOTE_CODE_PATTERNS = ["*.py"]
IGNORE_PATTERNS = [
    "original/*",
    "*/original/*",
    ".cache/*",
    ".kompress/*",
    "*.partial",
    "*.partial.json",
    "README*",
    "LICENSE*",
]


def allow_patterns(trust_remote_code: bool) -> list[str]:
    return ALLOW_PATTERNS + (REMOTE_CODE_PATTERNS if trust_remote_code else [])


def wanted(path: str, trust_remote_code: bool = False) -> bool:
    """Whether a file at `path` (relative, / separated) belongs in the model folder the worker loads."""
    name = path.rsplit("/", 1)[-1]
    if any(fnmatch(path, pattern) or fnmatch(name, pattern) for pattern in IGNORE_PATTERNS):
        return False
    # Patterns match the file name anywhere in the tree, as the Hub's allow_patterns do for "*.ext".
    return any(fnmatch(name, pattern) for pattern in allow_patterns(trust_remote_code))


def check_complete(paths: list[str], where: str, everything: list[str] | None = None) -> str | None:
    """Why the wanted files `paths` are not a loadable model, or None if they are. `everything`: all files there, for hints."""
    names = {p.rsplit("/", 1)[-1] for p in paths}
    if "config.json" not in paths:
        return f"no config.json at {where}: the URI must point at the model's folder (the one holding config.json)"
    if not any(n.endswith(".safetensors") for n in names):
        others = sorted(p.rsplit("/", 1)[-1] for p in (everything or []) if p.endswith((".bin", ".pt", ".pth", ".gguf")))
        hint = f" (found {', '.join(others[:3])}: convert the weights to safetensors first)" if others else ""
        return f"no *.safetensors weights at {where}{hint}"
    return None
