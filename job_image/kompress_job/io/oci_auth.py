"""How an oci:// registry client authenticates: the answer to a registry's WWW-Authenticate challenge.

Owns: parsing the challenge; Basic auth from the dockerconfigjson's user and password; a Bearer token for pull and
push on the repository, as the registry token is given, or from the token service the challenge names (docker's
OAuth2 refresh-token grant for an identity token, else a GET with Basic auth or none); the messages that say which
credentials a registry refused and where the user sets them.
Must not: log, return or put in a message any credential; send anything but to the token service (the API calls
themselves are kompress_job.io.oci_registry's).
"""

from __future__ import annotations

import base64
import re

import requests

from kompress_job.errors import AccessDenied, StorageUnreachable
from kompress_job.io.credentials import RegistryLogin


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="..."` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', rest)}
    return scheme.lower(), params


class RegistryAuth:
    """The credentials of one repository (`login`, None for anonymous) and what to tell the user when they fail;
    `where` names the field or file they came from."""

    def __init__(self, registry: str, repository: str, login: RegistryLogin | None, *, where: str, timeout: float) -> None:
        self.registry = registry
        self.repository = repository
        self.login = login
        self.where = where
        self.timeout = timeout

    def authorization(self, challenge: str, session: requests.Session) -> str:
        """The Authorization header value that answers the WWW-Authenticate header `challenge`; AccessDenied when
        these credentials cannot."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            basic = self.basic()
            if basic is None:
                raise AccessDenied(self.refused("it wants a user and password"))
            return basic
        if scheme == "bearer":
            return "Bearer " + self.token(params, session)
        raise AccessDenied(self.refused(f"it asked for {scheme or 'an unknown'} authentication"))

    def basic(self) -> str | None:
        if self.login is None or not self.login.username or not self.login.password:
            return None
        return "Basic " + base64.b64encode(f"{self.login.username}:{self.login.password}".encode()).decode()

    def token(self, params: dict[str, str], session: requests.Session) -> str:
        """A Bearer token from the registry's token service for push and pull on the repository."""
        if self.login is not None and self.login.registry_token:
            return self.login.registry_token
        realm = params.get("realm")
        if not realm:
            raise AccessDenied(f"the registry {self.registry} asked for a Bearer token but named no token service (realm)")
        scope = f"repository:{self.repository}:pull,push"
        query = {"scope": scope, **({"service": params["service"]} if params.get("service") else {})}
        try:
            if self.login is not None and self.login.identity_token:
                # docker's OAuth2 refresh-token grant (what `docker login` leaves as identitytoken).
                form = {"grant_type": "refresh_token", "refresh_token": self.login.identity_token, "client_id": "kompress", **query}
                response = session.post(realm, data=form, timeout=self.timeout)
            else:
                basic = self.basic()
                response = session.get(realm, params=query, headers={"Authorization": basic} if basic else {}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise StorageUnreachable(f"the token service of {self.registry} did not answer: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise AccessDenied(self.refused("its token service refused the credentials"))
        if response.status_code >= 400:
            raise StorageUnreachable(f"the token service of {self.registry} answered HTTP {response.status_code}")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise AccessDenied(f"the token service of {self.registry} gave no token")
        return token

    def refused(self, what: str) -> str:
        """The message for a refusal: set the Secret when there are no credentials, check them when there are."""
        if self.login is None:
            return f"the registry {self.registry} wants credentials for {self.repository} ({what}): set {self.where} to a Secret of type kubernetes.io/dockerconfigjson"
        return f"the registry {self.registry} refused the credentials in {self.where} for {self.repository} ({what}); check the user, password or token and its push rights"
