"""A real S3-compatible server on 127.0.0.1 (moto's threaded server) for tests.

The server checks signatures: ``start_s3`` creates an IAM user allowed to use S3, takes
an access key for it whose secret holds ``+`` or ``/`` (so signing is exercised with the
characters real AWS secrets carry), creates one bucket, then switches authentication on.
Import the ``s3_server`` fixture into a conftest to use it.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer

from hyperv_agent.hostfs.s3 import S3Object
from tests.ports import free_port

BUCKET = "templates"
_ALLOW_S3 = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass
class S3Server:
    """A running server: its endpoint, a bucket and keys that may use it."""

    endpoint: str  # host:port, as S3TO.endPoint gives it
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    server: ThreadedMotoServer = field(repr=False)

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=f"http://{self.endpoint}",
                            region_name="us-east-1", aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data)

    def upload(self, key: str, path: Path) -> None:
        self.client().upload_file(str(path), self.bucket, key)

    def object(self, key: str, **overrides: Any) -> S3Object:
        values: dict[str, Any] = {"endpoint": self.endpoint, "bucket": self.bucket, "key": key,
                                  "access_key": self.access_key,
                                  "secret_key": self.secret_key, "https": False}
        values.update(overrides)
        return S3Object(**values)


def start_s3() -> S3Server:
    """Start the server, create the user, keys and bucket, then require signatures."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"127.0.0.1:{port}"
    access_key, secret_key = _user_keys(endpoint)
    s3 = S3Server(endpoint, BUCKET, access_key, secret_key, server)
    s3.client().create_bucket(Bucket=BUCKET)
    request = urllib.request.Request(f"http://{endpoint}/moto-api/reset-auth", data=b"0",
                                     headers={"Content-Type": "text/plain"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    return s3


def _user_keys(endpoint: str) -> tuple[str, str]:
    iam = boto3.client("iam", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="agent")
    iam.put_user_policy(UserName="agent", PolicyName="s3", PolicyDocument=_ALLOW_S3)
    while True:
        key = iam.create_access_key(UserName="agent")["AccessKey"]
        if "/" in key["SecretAccessKey"] or "+" in key["SecretAccessKey"]:
            return str(key["AccessKeyId"]), str(key["SecretAccessKey"])
        iam.delete_access_key(UserName="agent", AccessKeyId=key["AccessKeyId"])


@contextmanager
def s3_process() -> Iterator[str]:
    """A moto server in a child process, without authentication, for measuring this
    process alone; yields its endpoint."""
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                              "-p", str(port)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, child)
        yield f"127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait(timeout=10)


def _wait_for_port(port: int, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the moto server did not start")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    s3 = start_s3()
    yield s3
    s3.server.stop()
