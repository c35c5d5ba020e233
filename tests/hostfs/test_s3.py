"""open_object and transfer() from S3 against a real S3-compatible server on 127.0.0.1
that checks signatures."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import logging
import os
import re
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hostfs.s3 import (
    EMPTY_PAYLOAD_SHA256,
    S3Object,
    object_path,
    open_object,
    region_of,
    signed_headers,
)
from hyperv_agent.hostfs.transfer import TransferError, transfer
from tests.cramped import Cramped
from tests.s3server import S3Server, free_port, s3_process

KEY = "template/tmpl/2/201/Win 2019+SP1=ü~(x).vhd"
DATA = os.urandom(2 * COPY_CHUNK_BYTES + 12345)


@pytest.fixture(scope="module")
def stored(s3_server: S3Server) -> S3Server:
    s3_server.put(KEY, DATA)
    return s3_server


def _read(obj: S3Object) -> bytes:
    with open_object(obj, timeout_s=10) as body:
        return body.read()


def test_object_bytes_arrive_when_the_key_and_secret_hold_special_characters(
        stored: S3Server) -> None:
    assert any(mark in stored.secret_key for mark in "+/")
    assert _read(stored.object(KEY)) == DATA


def test_signature_matches_the_published_aws_example_when_given_its_inputs() -> None:
    headers = signed_headers(
        method="GET", host="examplebucket.s3.amazonaws.com", path="/test.txt",
        headers={"Range": "bytes=0-9"}, payload_hash=EMPTY_PAYLOAD_SHA256,
        access_key="AKIAIOSFODNN7EXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1", when=dt.datetime(2013, 5, 24, tzinfo=dt.UTC))
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


@pytest.mark.parametrize(("access_key", "secret_key", "region"), [
    ("AKIA+/=EXAMPLE", "s3cr/t+key=with spaces & ünïcode", "eu-west-3"),
    ("minio", "p@ss:w0rd%2F", "us-east-1"),
])
def test_signature_matches_botocore_when_keys_hold_special_characters(
        access_key: str, secret_key: str, region: str) -> None:
    path = object_path("bucket", KEY)
    request = AWSRequest(method="GET", url=f"http://s3.example.net:9000{path}")
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", region).add_auth(request)
    when = dt.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    ours = signed_headers(method="GET", host="s3.example.net:9000", path=path, headers={},
                          payload_hash=request.headers["X-Amz-Content-SHA256"],
                          access_key=access_key, secret_key=secret_key, region=region,
                          when=when.replace(tzinfo=dt.UTC))
    assert ours["Authorization"] == request.headers["Authorization"]


@pytest.mark.parametrize(("change", "message"), [
    ({"secret_key": "wrong/secret+key"}, f"access denied for templates/{KEY} "
                                         "(check the access and secret keys"),
    ({"access_key": "AKIANOSUCHKEY0000000"}, "access denied for templates/"),
    ({"key": "template/missing.vhd"}, "no such object templates/template/missing.vhd"),
    ({"bucket": "no-such-bucket"}, "no such bucket no-such-bucket"),
    ({"https": True}, "TLS with S3 endpoint 127.0.0.1:"),
])
def test_refused_get_says_why_in_one_line_when_the_store_says_no(
        stored: S3Server, change: dict[str, object], message: str) -> None:
    options = dict(change)
    with pytest.raises(TransferError) as caught:
        _read(stored.object(str(options.pop("key", KEY)), **options))
    text = str(caught.value)
    assert text.startswith(message) or message in text, text
    assert "\n" not in text and stored.secret_key not in text and "wrong/secret" not in text


@pytest.mark.parametrize(("endpoint", "message"), [
    (f"127.0.0.1:{free_port()}", "connection refused"),
    ("s3.example.net/path", "is not host[:port]"),
    ("s3.example.net:port", "is not host[:port]"),
    ("AKIA:pass-in-url@s3.example.net", "must be host[:port], without credentials"),
])
def test_unreachable_endpoint_fails_with_a_clear_line_when_nothing_answers(
        endpoint: str, message: str) -> None:
    obj = S3Object(endpoint, "b", "k", "AKIA", "top-secret", https=False)
    with pytest.raises(TransferError, match=re.escape(message)) as caught:
        _read(obj)
    assert "top-secret" not in repr(obj) and "pass-in-url" not in str(caught.value)


@pytest.mark.parametrize("https", [True, False])
def test_scheme_in_the_endpoint_wins_over_the_https_flag_when_given(
        stored: S3Server, https: bool) -> None:
    assert _read(stored.object(KEY, endpoint=f"http://{stored.endpoint}/",
                               https=https)) == DATA
    with pytest.raises(TransferError, match="TLS with S3 endpoint") as caught:
        _read(stored.object(KEY, endpoint=f"HTTPS://{stored.endpoint}", https=https))
    assert "the endpoint names https:// (it overrides httpsFlag)" in str(caught.value)
    assert "is httpsFlag right" not in str(caught.value)


def test_tls_failure_asks_about_the_https_flag_when_the_endpoint_names_no_scheme(
        stored: S3Server) -> None:
    with pytest.raises(TransferError, match="TLS with S3 endpoint") as caught:
        _read(stored.object(KEY, https=True))
    assert str(caught.value).endswith("; is httpsFlag right for this endpoint?")


@pytest.mark.parametrize(("endpoint", "region"), [
    ("s3.eu-west-1.amazonaws.com", "eu-west-1"),
    ("s3-ap-southeast-2.amazonaws.com", "ap-southeast-2"),
    ("https://s3.dualstack.ca-central-1.amazonaws.com/", "ca-central-1"),
    ("S3.US-GOV-WEST-1.AMAZONAWS.COM:443", "us-gov-west-1"),
    ("s3.cn-north-1.amazonaws.com.cn", "cn-north-1"),
    ("s3.amazonaws.com", "us-east-1"),
    ("s3-external-1.amazonaws.com", "us-east-1"),
    ("minio.lab:9000", "us-east-1"),
    ("s3.eu-west-1.example.net", "us-east-1"),
])
def test_region_is_the_one_an_aws_endpoint_names_else_us_east_1(
        endpoint: str, region: str) -> None:
    assert region_of(endpoint) == region


class _RegionalStore(BaseHTTPRequestHandler):
    """An S3 store in ``eu-central-1`` that refuses requests signed for another region
    as AWS does (HTTP 400 AuthorizationHeaderMalformed naming its region), or, with
    ``names_region`` false, without naming it."""

    region = "eu-central-1"
    names_region = True
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        scope = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request",
                          self.headers.get("Authorization", ""))
        signed = scope[1] if scope else ""
        self.seen.append(signed)
        if signed == self.region:
            self._answer(200, b"the template")
            return
        where = f"<Region>{self.region}</Region>" if self.names_region else ""
        self._answer(400, (
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AuthorizationHeaderMalformed"
            f"</Code><Message>The authorization header is malformed; the region '{signed}' "
            f"is wrong; expecting '{self.region}'</Message>{where}</Error>").encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def regional() -> Iterator[tuple[str, list[str]]]:
    _RegionalStore.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RegionalStore)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", _RegionalStore.seen
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_object_arrives_when_the_store_names_its_own_region_in_a_refusal(
        regional: tuple[str, list[str]]) -> None:
    endpoint, seen = regional
    assert _read(S3Object(endpoint, "b", "k.vhd", "AKIA", "secret", https=False)) \
        == b"the template"
    assert seen == ["us-east-1", "eu-central-1"]


def test_refusal_that_names_no_region_fails_after_one_request(
        regional: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, seen = regional
    monkeypatch.setattr(_RegionalStore, "names_region", False)
    with pytest.raises(TransferError, match=r"HTTP 400 \(AuthorizationHeaderMalformed"):
        _read(S3Object(endpoint, "b", "k.vhd", "AKIA", "secret", https=False))
    assert seen == ["us-east-1"]


def _cut_short_server(port: int, ready: threading.Event) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        ready.set()
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)


def test_body_cut_short_fails_when_the_connection_closes_early() -> None:
    port, ready = free_port(), threading.Event()
    server = threading.Thread(target=_cut_short_server, args=(port, ready), daemon=True)
    server.start()
    assert ready.wait(5)
    with pytest.raises(TransferError, match="after 10 of 100000 bytes"):
        _read(S3Object(f"127.0.0.1:{port}", "b", "k.vhd", "AKIA", "secret", https=False))
    server.join(5)


async def test_compressed_object_lands_expanded_and_verified_when_transferred(
        s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    packed = gzip.compress(DATA)
    s3_server.put("template/t.vhd.gz", packed)
    done = await transfer(LocalFiles(), s3_server.object("template/t.vhd.gz"),
                          str(tmp_path / "t.vhd"), checksum=hashlib.sha1(packed).hexdigest(),
                          progress_every_s=0)
    assert (tmp_path / "t.vhd").read_bytes() == DATA
    assert (done.size, done.source_bytes) == (len(DATA), len(packed))
    assert f"s3://{s3_server.endpoint}/templates/template/t.vhd.gz" in caplog.text
    assert s3_server.secret_key not in caplog.text


async def test_refused_object_leaves_the_target_when_the_secret_is_wrong(
        stored: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "t.vhd").write_bytes(b"old")
    with pytest.raises(TransferError, match="access denied"):
        await transfer(LocalFiles(), stored.object(KEY, secret_key="wrong/secret"),
                       str(tmp_path / "t.vhd"))
    assert os.listdir(tmp_path) == ["t.vhd"] and (tmp_path / "t.vhd").read_bytes() == b"old"
    assert "wrong/secret" not in caplog.text


async def test_object_larger_than_the_room_is_refused_before_a_byte_is_written(
        stored: S3Server, tmp_path: Path) -> None:
    files = Cramped(len(DATA) - 1)
    with pytest.raises(TransferError, match=f"not enough free space .* holds {len(DATA)} "
                                            f"bytes.* only {len(DATA) - 1} may be written"):
        await transfer(files, stored.object(KEY), str(tmp_path / "t.vhd"))
    assert files.writes == 0 and os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def big_object() -> Iterator[tuple[S3Object, int, str]]:
    size = 96 * COPY_CHUNK_BYTES
    block = os.urandom(COPY_CHUNK_BYTES)
    with s3_process() as endpoint:
        client = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                              aws_access_key_id="AKIA", aws_secret_access_key="any")
        client.create_bucket(Bucket="big")
        client.put_object(Bucket="big", Key="big.raw", Body=block * 96)
        yield (S3Object(endpoint, "big", "big.raw", "AKIA", "any", https=False), size,
               hashlib.sha256(block * 96).hexdigest())


async def test_large_object_streams_with_little_memory_when_transferred(
        big_object: tuple[S3Object, int, str], tmp_path: Path) -> None:
    obj, size, digest = big_object
    tracemalloc.start()
    try:
        done = await transfer(LocalFiles(), obj, str(tmp_path / "big.raw"), checksum=digest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.size == done.source_bytes == size == (tmp_path / "big.raw").stat().st_size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"
