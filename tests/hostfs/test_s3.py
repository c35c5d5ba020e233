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
import time
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

from hyperv_agent.hostfs import s3, web
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
from hyperv_agent.hostfs.web import Get, Response
from tests.cramped import Cramped
from tests.ports import free_port
from tests.s3server import S3Server, s3_process

KEY = "template/tmpl/2/201/Win 2019+SP1=ü~(x).vhd"
DATA = os.urandom(2 * COPY_CHUNK_BYTES + 12345)


@pytest.fixture(scope="module")
def stored(s3_server: S3Server) -> S3Server:
    s3_server.put(KEY, DATA)
    return s3_server


def _read(obj: S3Object) -> bytes:
    with open_object(obj) as body:
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
        _read(S3Object(f"127.0.0.1:{port}", "b", "k.vhd", "AKIA", "secret", https=False,
                       max_error_retry=0))
    server.join(5)


class _FlakyStore(BaseHTTPRequestHandler):
    """An S3 store that misbehaves on purpose (signatures unchecked): ``/b/cut.vhd`` breaks
    off its first body halfway and honours a Range for the same ETag, ``/b/busy.vhd``
    answers 503 SlowDown ``busy`` times before the object, ``/b/stall.vhd`` sends its head
    and then nothing; ``/b/deaf.vhd`` breaks off its first body halfway and answers a
    Range with the whole object's head and no byte of it. ``seen`` holds (path, Range,
    If-Match) per request."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str | None, str | None]]] = []
    busy: ClassVar[list[int]] = [0]
    data = DATA
    etag = '"e-1"'

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        ranged, match = self.headers.get("Range"), self.headers.get("If-Match")
        self.seen.append((self.path, ranged, match))
        if self.path == "/b/cut.vhd" and ranged is None:
            self._head(200, len(self.data))
            self.wfile.write(self.data[:len(self.data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/b/cut.vhd":
            start = int((ranged or "").removeprefix("bytes=").rstrip("-"))
            if match != self.etag:
                self._head(412, 0)
                return
            self._head(206, len(self.data) - start,
                       f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
            self.wfile.write(self.data[start:])
        elif self.path == "/b/deaf.vhd":
            self._head(200, len(self.data))
            self.wfile.write(self.data[:len(self.data) // 2] if ranged is None else b"")
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/b/busy.vhd" and self.busy[0] > 0:
            self.busy[0] -= 1
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
            self._head(503, len(body))
            self.wfile.write(body)
        elif self.path == "/b/stall.vhd":
            self._head(200, len(self.data))
            self.wfile.flush()
            threading.Event().wait(3)
            self.close_connection = True
        else:
            self._head(200, len(self.data))
            self.wfile.write(self.data)

    def _head(self, status: int, length: int, content_range: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", self.etag)
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()


@pytest.fixture
def flaky() -> Iterator[str]:
    _FlakyStore.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyStore)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _flaky(endpoint: str, key: str, **settings: int | None) -> S3Object:
    return S3Object(endpoint, "b", key, "AKIA", "secret", https=False,
                    **settings)  # type: ignore[arg-type]


def test_body_cut_short_is_resumed_where_it_stopped_when_retries_are_allowed(
        flaky: str) -> None:
    assert _read(_flaky(flaky, "cut.vhd")) == DATA
    first, again = _FlakyStore.seen
    assert first == ("/b/cut.vhd", None, None)
    resumed_at = int((again[1] or "").removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(DATA) // 2 and again[2] == '"e-1"'


def test_body_broken_off_while_its_read_part_is_skipped_has_its_connection_closed(
        flaky: str) -> None:
    """A store that ignores Ranges sends the object from its start again, and the part read
    already is skipped; a body that breaks off there is closed with its loop thread, not
    left to its finaliser."""
    with pytest.raises(TransferError, match=r"gave up after 2 retries") as caught:
        _read(_flaky(flaky, "deaf.vhd", max_error_retry=2))
    loops = [thread for thread in threading.enumerate() if thread.name == "hyperv-agent-get"]
    assert caught.value.__context__ is not None and not loops


async def test_resumed_object_lands_whole_and_verified_when_transferred(
        flaky: str, tmp_path: Path) -> None:
    done = await transfer(LocalFiles(), _flaky(flaky, "cut.vhd"), str(tmp_path / "t.vhd"),
                          checksum=hashlib.sha256(DATA).hexdigest())
    assert (done.size, done.source_bytes) == (len(DATA), len(DATA))
    assert (tmp_path / "t.vhd").read_bytes() == DATA


@pytest.mark.parametrize(("retries", "busy", "outcome"), [
    (2, 2, None), (None, 3, None), (1, 2, "gave up after 1 retry"),
    (0, 1, r"HTTP 503 \(SlowDown: Reduce your rate\)$"),
])
def test_busy_store_is_asked_again_as_often_as_max_error_retry_allows(
        flaky: str, monkeypatch: pytest.MonkeyPatch, retries: int | None, busy: int,
        outcome: str | None) -> None:
    monkeypatch.setattr(_FlakyStore, "busy", [busy])
    obj = _flaky(flaky, "busy.vhd", max_error_retry=retries)
    if outcome is None:
        assert _read(obj) == DATA
        assert len(_FlakyStore.seen) == busy + 1
        return
    with pytest.raises(TransferError, match=outcome):
        _read(obj)
    assert len(_FlakyStore.seen) == (retries or 0) + 1


def test_stalled_body_fails_within_the_socket_timeout_in_milliseconds(flaky: str) -> None:
    started = time.monotonic()
    with pytest.raises(TransferError, match=r"failed after 0 bytes: the server stopped "
                                            r"sending \(timed out\)"):
        _read(_flaky(flaky, "stall.vhd", socket_timeout_ms=300, max_error_retry=0))
    assert time.monotonic() - started < 10  # not the default 50 s


def test_timeouts_and_retries_are_the_aws_sdk_defaults_when_the_store_leaves_them_null(
        flaky: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Get] = []
    real = web.open_get

    def recording(get: Get) -> Response:
        sent.append(get)
        return real(get)

    monkeypatch.setattr(s3, "open_get", recording)
    _read(_flaky(flaky, "plain.vhd"))
    _read(_flaky(flaky, "plain.vhd", connect_timeout_ms=0, socket_timeout_ms=1500))
    assert [(get.connect_timeout_s, get.timeout_s, get.keepalive) for get in sent] == [
        (10.0, 50.0, False), (None, 1.5, False)]


def test_tcp_keepalive_is_set_on_the_connection_when_the_store_asks(
        flaky: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = web._keepalive_socket

    def recording(address: tuple[object, ...]) -> socket.socket:
        sock = real(address)
        made.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        return sock

    monkeypatch.setattr(web, "_keepalive_socket", recording)
    _read(_flaky(flaky, "plain.vhd"))
    assert made == []
    with open_object(S3Object(flaky, "b", "plain.vhd", "AKIA", "secret", https=False,
                              tcp_keepalive=True)) as body:
        assert body.read() == DATA
    assert made == [1]


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
