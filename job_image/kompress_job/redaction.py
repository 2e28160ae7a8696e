"""Secret values, and the one function that removes them from any text the worker emits.

Owns: which environment variables hold secrets (the Hugging Face token and every S3 credential,
with or without the per-location prefixes of kompress_api.worker_protocol) and replacing their
values in text: log lines, the manifest, the model card, the termination message.
Must not: log, or keep secret values anywhere but in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from kompress_api.worker_protocol import ENV_HF_TOKEN, S3_ENV_PREFIX

MASK = "***"
# Values this short can't be told apart from ordinary words; credentials are never this short.
MIN_SECRET_LENGTH = 4
_CREDENTIAL_SUFFIXES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_OTHER_SECRET_NAMES = (ENV_HF_TOKEN, "HUGGING_FACE_HUB_TOKEN", "AWS_WEB_IDENTITY_TOKEN")


def is_secret_variable(name: str) -> bool:
    """Whether an environment variable holds a credential (its value must never be shown)."""
    if name in _OTHER_SECRET_NAMES:
        return True
    if name in _CREDENTIAL_SUFFIXES:
        return True
    return any(name.startswith(prefix) and name[len(prefix):] in _CREDENTIAL_SUFFIXES for prefix in S3_ENV_PREFIX.values())


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Every credential value in `env`, longest first (so a value containing another is masked whole)."""
    values = {value for name, value in env.items() if is_secret_variable(name) and value and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


class Redactor:
    """Replaces known secret values in text. Cheap when there are none."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Redactor":
        return cls(secret_values(env))

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH} - set(self._values)
        if not new:
            return
        self._values = sorted(set(self._values) | new, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in self._values))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return bool(self._values)
