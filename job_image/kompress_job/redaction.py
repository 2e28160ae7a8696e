"""Secret values, and the one function that removes them from any text the worker emits.

Owns: which environment variables hold secrets (the Hugging Face tokens, the model's and an hf:// output's, and every S3
credential, with or without the per-location prefixes of kompress_api.worker_protocol; an oci:// output's registry login,
from the mounted file the environment names), the signing key the operator mounts (spec.output.signing: the PEM text,
its base64 body whole and line by line), and replacing their
values, in every escaped form a library or a format could give them (repr, JSON, URL, base64...),
in text: log lines, the manifest, the model card, the termination message, the progress JSON.
Must not: log, or keep secret values anywhere but in memory.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

from kompress_api.worker_protocol import ENV_HF_TOKEN, ENV_OUTPUT_HF_TOKEN, ENV_OUTPUT_OCI_AUTH, ENV_OUTPUT_SIGNING_DIR, S3_ENV_PREFIX, SIGNING_PRIVATE_KEY

from kompress_job.io.credentials import clean, docker_config_secrets

MASK = "***"
# Values this short can't be told apart from ordinary words; credentials are never this short.
MIN_SECRET_LENGTH = 4
# A base64 run shorter than this could be anything (a checksum holds every 6-character run sooner or later).
MIN_BASE64_CORE = 8
_URLSAFE = str.maketrans("+/", "-_")
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_CREDENTIAL_SUFFIXES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_OTHER_SECRET_NAMES = (ENV_HF_TOKEN, ENV_OUTPUT_HF_TOKEN, "HUGGING_FACE_HUB_TOKEN", "AWS_WEB_IDENTITY_TOKEN")


def is_secret_variable(name: str) -> bool:
    """Whether an environment variable holds a credential (its value must never be shown)."""
    if name in _OTHER_SECRET_NAMES:
        return True
    if name in _CREDENTIAL_SUFFIXES:
        return True
    return any(name.startswith(prefix) and name[len(prefix):] in _CREDENTIAL_SUFFIXES for prefix in S3_ENV_PREFIX.values())


def key_file_secrets(path: Path) -> set[str]:
    """What of a PEM private key must never be shown: the text, its base64 body joined and each of its lines."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return set()
    body = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("-----")]
    return {text, text.strip(), "".join(body), *(line for line in body if len(line) >= MIN_BASE64_CORE)} - {""}


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Every credential value in `env` (and the signing key its folder holds), longest first (so a value containing
    another is masked whole)."""
    values = {value for name, value in env.items() if is_secret_variable(name) and value and len(value) >= MIN_SECRET_LENGTH}
    if env.get(ENV_OUTPUT_SIGNING_DIR):
        values |= key_file_secrets(Path(env[ENV_OUTPUT_SIGNING_DIR]) / SIGNING_PRIVATE_KEY)
    # An oci:// output's registry login is a mounted file, named by the environment, never in it.
    if env.get(ENV_OUTPUT_OCI_AUTH):
        values |= {value for value in docker_config_secrets(Path(env[ENV_OUTPUT_OCI_AUTH])) if len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def _base64_cores(data: bytes) -> set[str]:
    """What base64 of any text holding `data` contains for certain, whatever comes before or after it (`user:`
    in a Basic auth header, a JSON document): for each of the three alignments, the characters made of `data`'s
    bits alone, in both alphabets."""
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode()
        bits = 8 * (shift + len(data))
        core = encoded[-(-8 * shift // 6): bits // 6]  # from the first char free of the prefix to the last full one
        if len(core) >= MIN_BASE64_CORE:
            cores |= {core, core.translate(_URLSAFE)}
    return cores


def escaped_forms(value: str) -> set[str]:
    """`value` as it can appear in text the worker writes: itself and without surrounding whitespace (what
    kompress_job.io.credentials sends), Python repr/ascii, \\n-escaped, JSON-escaped, URL-encoded (either case of
    hex, + or %20 for spaces, / kept or not), and base64 of it inside anything (kompress_job.redaction)."""
    forms: set[str] = set()
    for v in {value, clean(value)}:
        if len(v) < MIN_SECRET_LENGTH:
            continue
        quoted = {quote(v, safe=""), quote(v), quote_plus(v), quote_plus(v, safe="/")}
        forms |= {v, repr(v)[1:-1], ascii(v)[1:-1], v.encode("unicode_escape").decode("ascii")}
        forms |= {json.dumps(v)[1:-1], json.dumps(v, ensure_ascii=False)[1:-1]}
        forms |= quoted | {_PERCENT.sub(lambda m: m.group().lower(), q) for q in quoted}
        forms |= _base64_cores(v.encode())
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


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
        new = set().union(*(escaped_forms(v) for v in values if v)) - set(self._values)
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
