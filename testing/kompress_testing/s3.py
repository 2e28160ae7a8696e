"""A local S3: moto's server over real HTTP on a free loopback port, with real credential checks.

Owns: starting and stopping `moto.server.ThreadedMotoServer`, an IAM user whose key may do
anything in S3 (so a wrong key is refused as on AWS), buckets, and the environment a worker pod
would get (the per-location credential variables of kompress_api.worker_protocol).
Must not: be imported by product code.

With auth on, moto checks every request's signature against the keys it knows. moto keeps that
switch in one process-wide setting, so only one authenticating server should run per process.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from kompress_api.worker_protocol import S3_ENV_PREFIX

# S3, plus IAM so a later server in the same process can create its own user with these keys (moto is process-wide).
_ALLOW_ALL_S3 = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "iam:*"], "Resource": "*"}]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """`with MotoS3() as s3:` a running S3 endpoint at `s3.endpoint` with a valid key pair."""

    _running: list["MotoS3"] = []  # servers started in this process and not stopped

    def __init__(self, *, auth: bool = True, region: str = "us-east-1") -> None:
        self.auth = auth
        self.region = region
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key_id = "kompress-test-key"
        self.secret_access_key = "kompress-test-secret"
        self._server: Any = None
        self._saved_auth_count: float | None = None

    def start(self) -> "MotoS3":
        import logging

        from moto import settings
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        if self.auth:
            # moto authenticates once this many requests were served; create the user first.
            # moto's backends are process-wide: every server in this process shares users (and buckets), so
            # each server gets a user of its own.
            user = f"kompress-{self.port}"
            # While another server of this process enforces keys, bootstrap keys are refused: use that server's.
            admin = next((other for other in MotoS3._running if other.auth), None)
            iam = self._boto("iam", admin.access_key_id, admin.secret_access_key) if admin else self._boto("iam", "bootstrap", "bootstrap")
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=_ALLOW_ALL_S3)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
            self._saved_auth_count = settings.INITIAL_NO_AUTH_ACTION_COUNT
            settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        MotoS3._running.append(self)
        return self

    def stop(self) -> None:
        from moto import settings

        if self in MotoS3._running:
            MotoS3._running.remove(self)
        if self._saved_auth_count is not None:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = self._saved_auth_count
            self._saved_auth_count = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _boto(self, service: str, key_id: str, secret: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
        )

    def client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None) -> Any:
        """A plain boto3 S3 client for this server (the test's own view of the bucket)."""
        return self._boto("s3", access_key_id or self.access_key_id, secret_access_key or self.secret_access_key)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, location: str, *, access_key_id: str | None = None, secret_access_key: str | None = None) -> dict[str, str]:
        """The variables a worker pod gets for `location` (model, calibration, output) from a credentials Secret."""
        prefix = S3_ENV_PREFIX[location]
        return {
            prefix + "AWS_ACCESS_KEY_ID": access_key_id or self.access_key_id,
            prefix + "AWS_SECRET_ACCESS_KEY": secret_access_key or self.secret_access_key,
        }

    def access(self, **overrides: Any) -> dict[str, Any]:
        """The spec's `s3:` block (wire form) for this server."""
        return {"endpoint": self.endpoint, "region": self.region, "pathStyle": True, "credentialsSecret": "s3-credentials", **overrides}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
