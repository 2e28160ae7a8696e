"""Searching text for a secret value in every encoding a library or a format could give it, for the secret-scan tests.

    encodings(secret)                   what a leak of `secret` would contain: the value (and trimmed), repr/ascii/JSON/URL
                                        escapes, and the middle of base64 of it alone and inside a wrapper (Basic auth's
                                        user:secret, a JSON body), which is there whatever the wrapper's length
    key_secrets(pem_text)               the parts of a PEM private key that must never show: each base64 line, the body joined
    assert_no_secret(secrets, **texts)  fails naming the text (never the value) where one appears

Development harness, not product: product code never imports this module.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus


def encodings(secret: str) -> set[str]:
    found: set[str] = set()
    for value in {secret, secret.strip()}:
        found |= {value, repr(value)[1:-1], ascii(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
        found |= {quote(value, safe=""), quote(value, safe="").replace("%2F", "%2f"), quote(value), quote_plus(value), value.replace("\n", "\\n")}
        for before, after in (("", ""), ("user:", ""), ("AWS:", ""), ('{"token": "', '"}')):
            start, end = len(before.encode()), len(before.encode()) + len(value.encode())
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                text = encode((before + value + after).encode()).decode()
                found.add(text[-(-8 * start // 6) : 8 * end // 6])  # the characters made of the value's bits alone
    return {f for f in found if len(f) >= 6}


def key_secrets(pem_text: str) -> list[str]:
    body = [line.strip() for line in pem_text.splitlines() if line.strip() and not line.startswith("-----")]
    return ["".join(body), *body]


def assert_no_secret(secrets: list[str], **texts: str) -> None:
    for name, text in texts.items():
        assert text, f"{name} is empty: nothing was scanned"
        for secret in secrets:
            for form in encodings(secret):
                assert form not in text, f"a secret value appears in the {name} (as {len(form)} characters of an encoding)"
