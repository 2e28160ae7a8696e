"""Credential values as the worker reads them from its environment (Secrets arrive there by secretKeyRef/envFrom),
and a registry's login from a mounted dockerconfigjson (an oci:// output's Secret, never in the environment).

Owns: one rule for every credential (the S3 keys of each location, the Hub token, a registry's password): surrounding whitespace is
not part of it (`echo KEY > f; kubectl create secret generic --from-file=f` stores `KEY\\n`, and a newline sent
in an HTTP header is refused by the client with the header, key id included, in its error), and a value that
still holds a control character is refused, naming the variable, never showing the value.
Must not: log a value, or put one in a message.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------------------------------------
# A registry's credentials: the dockerconfigjson of a kubernetes.io/dockerconfigjson Secret, mounted as a file
# ---------------------------------------------------------------------------------------------

# Docker Hub's credentials are filed under its v1 index, whichever of its names a reference uses.
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_DOCKER_HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class RegistryLogin:
    """What a dockerconfigjson holds for one registry: a user and password, or an identity (refresh) token, or a
    registry (bearer) token. `repr` never shows a value."""

    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    registry_token: str | None = field(default=None, repr=False)


def _config_key(key: str) -> str:
    """A dockerconfigjson key as a registry host: `https://ghcr.io`, `ghcr.io/v2/` and `ghcr.io` are one registry."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB else host


def _load_docker_config(path: Path, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise AccessDenied(f"the registry credentials ({where}) are not mounted at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        # json's message names a line and column, never the text.
        raise AccessDenied(f"the registry credentials ({where}) are not a dockerconfigjson: {type(exc).__name__} at {path}; "
                           "recreate the Secret with `kubectl create secret docker-registry`") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        raise AccessDenied(f"the registry credentials ({where}) hold no \"auths\" object: a Secret of type kubernetes.io/dockerconfigjson is needed")
    return auths


def _checked(value: Any, what: str, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AccessDenied(f"the {what} in the registry credentials ({where}) is not a string")
    value = clean(value)
    problem = _unsendable(value, in_header=False)
    if problem is not None:
        raise AccessDenied(f"the {what} in the registry credentials ({where}) has {problem} inside it; recreate the Secret with the value alone")
    return value or None


def registry_login(path: Path, registry: str, *, where: str = "") -> RegistryLogin | None:
    """The login for `registry` (host[:port]) in the dockerconfigjson at `path`; None when it names none.

    `auth` (base64 of user:password, as `kubectl create secret docker-registry` writes it) is decoded; explicit
    `username`/`password` win over it. AccessDenied, naming the Secret and never a value, when the file is not a
    dockerconfigjson or a value cannot be sent."""
    auths = _load_docker_config(path, where)
    wanted = _config_key(registry)
    entry = next((v for k, v in auths.items() if _config_key(k) == wanted), None)
    if entry is None and wanted == "docker.io":
        entry = auths.get(_DOCKER_HUB_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise AccessDenied(f"the entry for {registry} in the registry credentials ({where}) is not an object")
    username, password = _checked(entry.get("username"), "username", where), _checked(entry.get("password"), "password", where)
    encoded = _checked(entry.get("auth"), "auth", where)
    if encoded and not (username and password):
        try:
            user, sep, secret = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AccessDenied(f"the auth of {registry} in the registry credentials ({where}) is not base64 of USER:PASSWORD") from None
        if not sep:
            raise AccessDenied(f"the auth of {registry} in the registry credentials ({where}) is not base64 of USER:PASSWORD")
        username, password = _checked(user, "username", where), _checked(secret, "password", where)
    login = RegistryLogin(
        username=username,
        password=password,
        identity_token=_checked(entry.get("identitytoken"), "identitytoken", where),
        registry_token=_checked(entry.get("registrytoken"), "registrytoken", where),
    )
    if username and not (password or login.identity_token) and username != "<token>":
        raise AccessDenied(f"the registry credentials ({where}) name a user for {registry} but no password")
    return login


def docker_config_secrets(path: Path) -> list[str]:
    """Every secret string of the dockerconfigjson at `path` (passwords, auth and its decoded password, tokens), for the
    redactor; [] when there is no such file or it does not parse (the stage that reads it says why)."""
    try:
        auths = json.loads(path.read_text(encoding="utf-8-sig")).get("auths") or {}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return []
    values: list[str] = []
    for entry in auths.values() if isinstance(auths, dict) else ():
        if not isinstance(entry, dict):
            continue
        for key in ("password", "auth", "identitytoken", "registrytoken"):
            if isinstance(entry.get(key), str):
                values.append(entry[key])
        try:
            values.append(base64.b64decode(entry.get("auth") or "").decode("utf-8").partition(":")[2])
        except (ValueError, UnicodeDecodeError):
            pass
    return [v for v in values if v]
