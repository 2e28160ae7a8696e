"""Credential values as the worker reads them from its environment (Secrets arrive there by secretKeyRef/envFrom).

Owns: one rule for every credential (the S3 keys of each location, the Hub token): surrounding whitespace is
not part of it (`echo KEY > f; kubectl create secret generic --from-file=f` stores `KEY\\n`, and a newline sent
in an HTTP header is refused by the client with the header, key id included, in its error), and a value that
still holds a control character is refused, naming the variable, never showing the value.
Must not: log a value, or put one in a message.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from kompress_job.errors import AccessDenied

# Not whitespace to str.strip(), but what a Secret made from a file saved by a Windows editor begins with.
_BYTE_ORDER_MARK = "\ufeff"


def clean(value: str) -> str:
    """`value` without surrounding whitespace (or byte-order mark): what the Secret's author meant."""
    return value.strip().strip(_BYTE_ORDER_MARK).strip()


def _unsendable(value: str, in_header: bool) -> str | None:
    """The first character no store can take, described (never the value): a control character anywhere; in a
    value sent as an HTTP header (key id, session token, Hub token), anything outside ASCII too."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"a control character (U+{ord(char):04X})"
        if in_header and not char.isascii():
            return f"a non-ASCII character (U+{ord(char):04X}), which an HTTP header cannot carry"
    return None


def read(env: Mapping[str, str], name: str, *, where: str = "", in_header: bool = True) -> str | None:
    """The credential in `env[name]`, cleaned; None when unset or blank.

    AccessDenied (not retried: the Secret is wrong, a retry sends it again) when a character no store accepts is
    left inside, e.g. a key and secret pasted into one value. `where`: which Secret it came from, for the message.
    `in_header`: the value is sent as is (an S3 secret access key only signs, so it may hold any printable text)."""
    raw = env.get(name)
    if raw is None:
        return None
    value = clean(raw)
    if not value:
        return None
    problem = _unsendable(value, in_header)
    if problem is not None:
        source = f" ({where})" if where else ""
        raise AccessDenied(
            f"the credential in ${name}{source} has {problem} inside it; "
            "recreate the Secret with the value alone (surrounding whitespace and newlines are ignored)"
        )
    return value
