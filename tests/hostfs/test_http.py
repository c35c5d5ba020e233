"""open_url and transfer() from http(s) against a real web server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hyperv_agent import tls
from hyperv_agent.emulator import vhd
from hyperv_agent.hostfs import web
from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES
from hyperv_agent.hostfs.http import MAX_REDIRECTS, HttpObject, _get, open_url
from hyperv_agent.hostfs.images import disk_suffix, not_standalone, sniff
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hostfs.transfer import TransferError, transfer
from hyperv_agent.hostfs.web import StartOver
from tests.conftest import requires_tool
from tests.cramped import Cramped
from tests.ports import free_port

USER, PASSWORD = "cloud", "p@ss:w0rd/ü"
DATA = os.urandom(2 * COPY_CHUNK_BYTES + 4321)
CHANGED = DATA[::-1] + b"more"  # what a /flaky file changes to
_DATED = "Wed, 21 Oct 2026 07:28:00 GMT"


class FileServer(ThreadingHTTPServer):
    """Files under ``root`` at ``/files/<path>``, plus routes that misbehave on purpose:
    ``/redirect/<n>/<path>`` (n hops, then the file), ``/goto?<url>``,
    ``/status/<code>[/<name>]``, ``/auth/<path>`` (Basic authentication), ``/cut[/<name>]``
    (body shorter than announced), ``/unsized/<n>/<path>`` (the file's first n bytes,
    without Content-Length, then the connection closes),
    ``/silent`` (answers after 3 s), ``/nowhere`` (a redirect without Location), and
    ``/flaky/<how>/<key>`` (``DATA``, with a strong ETag; ``how`` says how it misbehaves,
    ``key`` keeps a test's requests apart from another's): ``once`` breaks its first body
    off halfway and honours a Range whose If-Range names the ETag; ``dated`` is ``once``
    with a Last-Modified instead of the ETag; ``twice`` breaks off its first body too, and
    its first Range answer before any byte; ``ignores`` breaks off its first body and
    answers every Range with the whole file; ``norange`` is ``ignores`` saying
    ``Accept-Ranges: none``; ``changed`` breaks off its first body, then holds another file
    (``CHANGED``, another ETag) and answers a Range for the old one with all of it;
    ``sloppy`` is ``changed`` but answers the Range with a part of the new file; ``busy``
    answers 503 once; ``down`` answers 503 always."""

    daemon_threads = True

    def __init__(self, root: Path, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization) per request
        self.ranges: list[tuple[str, str | None, str | None]] = []  # (path, Range, If-Range)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if context is not None else "http"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up or fails TLS is part of the tests


class _Handler(BaseHTTPRequestHandler):
    server: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        route, _, rest = self.path.lstrip("/").partition("/")
        handler = getattr(self, f"_{route.partition('?')[0]}", None)
        if handler is None:
            self.send_error(404)
            return
        handler(rest)

    def _files(self, rest: str) -> None:
        path = self.server.root / rest.partition("?")[0]
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as source:
            shutil.copyfileobj(source, self.wfile, COPY_CHUNK_BYTES)

    def _redirect(self, rest: str) -> None:
        hops, _, name = rest.partition("/")
        left = int(hops) - 1
        self._moved(f"/redirect/{left}/{name}" if left > 0 else f"../../../files/{name}")

    def _goto(self, rest: str) -> None:
        self._moved(self.path.partition("?")[2])

    def _moved(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _nowhere(self, rest: str) -> None:
        self.send_response(302)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _status(self, rest: str) -> None:
        self.send_error(int(rest.partition("/")[0]))

    def _auth(self, rest: str) -> None:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {token}":
            self.send_error(401, "Unauthorized")
            return
        self._files(rest)

    def _cut(self, rest: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True

    def _unsized(self, rest: str) -> None:
        count, _, name = rest.partition("/")
        data = (self.server.root / name).read_bytes()[:int(count)]
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    def _flaky(self, rest: str) -> None:
        how = rest.partition("/")[0]
        ranged, validator = self.headers.get("Range"), self.headers.get("If-Range")
        self.server.ranges.append((self.path, ranged, validator))
        asked = sum(1 for path, _, _ in self.server.ranges if path == self.path)
        if how == "down" or (how == "busy" and asked == 1):
            self.send_error(503)
            return
        data, tag = (CHANGED, '"v2"') if how in ("changed", "sloppy") and asked > 1 \
            else (DATA, '"v1"')
        start = int(ranged.removeprefix("bytes=").rstrip("-")) if ranged else 0
        honoured = how in ("once", "dated", "twice") and validator == (
            _DATED if how == "dated" else tag)
        partial = honoured or (how == "sloppy" and ranged is not None)
        start = start if partial else 0
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if how == "dated":
            self.send_header("Last-Modified", _DATED)
        else:
            self.send_header("ETag", tag)
        if how == "norange":
            self.send_header("Accept-Ranges", "none")
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if asked == 1 or (how == "twice" and asked == 2):
            self.wfile.write(data[:len(data) // 2] if asked == 1 else b"")
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def _silent(self, rest: str) -> None:
        time.sleep(3)
        self.send_error(500)


def serve(root: Path, context: ssl.SSLContext | None = None) -> Iterator[FileServer]:
    server = FileServer(root, context)
    server.thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def identity(folder: Path) -> tls.Identity:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    return tls.ensure_identity(folder)


def tls_server_context(folder: Path) -> ssl.SSLContext:
    return tls.server_context(identity(folder))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("site")
    (root / "t").mkdir()
    (root / "t" / "disk.vhd").write_bytes(DATA)
    (root / "t" / "disk.vhd.gz").write_bytes(gzip.compress(DATA))
    (root / "t" / "zeros.vhd.gz").write_bytes(gzip.compress(bytes(8 * COPY_CHUNK_BYTES)))
    (root / "t" / "bad.vhd.bz2").write_bytes(b"BZh91AY&SY" + b"\0" * 4096)
    yield from serve(root)


@pytest.fixture(scope="module")
def secure_site(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[FileServer, Path]]:
    root = tmp_path_factory.mktemp("secure")
    (root / "disk.vhd").write_bytes(DATA)
    state = tmp_path_factory.mktemp("tls")
    yield from ((server, identity(state).cert_path)
                for server in serve(root, tls_server_context(state)))


def _read(obj: HttpObject, timeout_s: float = 10.0) -> bytes:
    """The file, read as ``transfer`` reads it: from its first byte again on StartOver."""
    stream = open_url(obj, timeout_s=timeout_s)
    while True:
        try:
            with stream:
                return stream.read()
        except StartOver as again:
            stream = again.stream


def _one_line(error: pytest.ExceptionInfo[TransferError]) -> str:
    text = str(error.value)
    assert "\n" not in text and PASSWORD not in text and "token=" not in text, text
    return text


# --- reading --------------------------------------------------------------------------------


def test_file_bytes_arrive_when_the_url_is_plain_http(site: FileServer) -> None:
    obj = HttpObject.from_url(site.url("/files/t/disk.vhd?token=abc"))
    assert _read(obj) == DATA
    assert (obj.https, obj.name) == (False, "disk.vhd")
    assert obj.label == site.url("/files/t/disk.vhd")  # no query: it may carry a token


def test_redirects_are_followed_when_there_are_few_enough(
        site: FileServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert _read(HttpObject.from_url(site.url(f"/redirect/{MAX_REDIRECTS}/t/disk.vhd"))) == DATA
    assert caplog.text.count("redirects (HTTP 302)") == MAX_REDIRECTS


@pytest.mark.parametrize(("path", "message"), [
    (f"/redirect/{MAX_REDIRECTS + 1}/t/disk.vhd", f"redirects more than {MAX_REDIRECTS} times"),
    ("/nowhere", "redirects (HTTP 302 Found) without saying where to"),
    ("/files/t/missing.vhd?token=abc", "/files/t/missing.vhd does not exist on the server "
                                       "(HTTP 404 Not Found)"),
    ("/status/403", "the server refused access to"),
    ("/auth/t/disk.vhd", "(HTTP 401 Unauthorized; check the credentials)"),
    ("/status/503", "the server failed to send"),
    ("/status/418", "the server refused"),
    ("/cut", "the server closed the connection after 10 of 100000 bytes"),
])
def test_failed_get_says_why_in_one_line_when_the_server_says_no(
        site: FileServer, path: str, message: str) -> None:
    with pytest.raises(TransferError) as caught:
        _read(HttpObject.from_url(site.url(path)))
    assert message in _one_line(caught), caught.value


def test_credentials_in_the_url_are_sent_and_never_shown_when_the_server_asks(
        site: FileServer) -> None:
    url = site.url("/auth/t/disk.vhd").replace("://", "://cloud:p%40ss%3Aw0rd%2F%C3%BC@")
    obj = HttpObject.from_url(url)
    assert _read(obj) == DATA
    assert PASSWORD not in repr(obj) and "p%40ss" not in repr(obj) and "cloud" not in obj.label


def test_credentials_stay_behind_when_a_redirect_leaves_the_host(site: FileServer) -> None:
    elsewhere = site.url("/auth/t/disk.vhd").replace("127.0.0.1", "localhost")
    url = site.url(f"/goto?{elsewhere}").replace("://", "://cloud:p%40ss%3Aw0rd%2F%C3%BC@", 1)
    with pytest.raises(TransferError) as caught:
        _read(HttpObject.from_url(url))
    assert "HTTP 401" in _one_line(caught)
    assert site.seen[-1] == ("/auth/t/disk.vhd", None)


def test_unreachable_server_fails_with_a_clear_line_when_nothing_listens() -> None:
    with pytest.raises(TransferError) as caught:
        _read(HttpObject.from_url(f"http://127.0.0.1:{free_port()}/t.vhd"))
    assert "connection refused" in _one_line(caught)


def test_silent_server_fails_within_the_timeout_when_it_does_not_answer(
        site: FileServer) -> None:
    started = time.monotonic()
    with pytest.raises(TransferError) as caught:
        _read(replace(HttpObject.from_url(site.url("/silent")), retries=0), timeout_s=0.5)
    assert "did not answer within 0.5 s" in _one_line(caught)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://10.0.0.1/t.vhd", "ftp is not http or https"),
    ("10.0.0.1/t.vhd", "a URL without a scheme is not http or https"),
    ("http:///t.vhd", "the http URL names no host"),
    ("http://10.0.0.1:99999/t.vhd", "malformed host or port"),
    ("https://user:secret@10.0.0.1:port/t.vhd", "malformed host or port"),
    ("http://10.0.0.1/t .vhd", "spaces or control characters"),
])
def test_url_is_refused_when_it_is_not_a_usable_http_url(url: str, message: str) -> None:
    with pytest.raises(TransferError, match=message) as caught:
        HttpObject.from_url(url)
    assert "secret" not in str(caught.value)


# --- TLS ------------------------------------------------------------------------------------


def test_https_file_arrives_when_its_certificate_is_trusted(
        secure_site: tuple[FileServer, Path]) -> None:
    server, cert = secure_site
    assert _read(HttpObject.from_url(server.url("/files/disk.vhd"), ca_file=str(cert))) == DATA


def test_https_certificate_is_refused_when_it_is_not_trusted(
        secure_site: tuple[FileServer, Path]) -> None:
    server, _ = secure_site
    with pytest.raises(TransferError) as caught:
        _read(HttpObject.from_url(server.url("/files/disk.vhd")))
    assert "TLS certificate of 127.0.0.1:" in _one_line(caught)
    assert "is not trusted" in str(caught.value)


def test_https_file_arrives_when_verification_is_switched_off(
        secure_site: tuple[FileServer, Path]) -> None:
    server, _ = secure_site
    assert _read(HttpObject.from_url(server.url("/files/disk.vhd"), verify_tls=False)) == DATA


def test_https_redirect_to_plain_http_is_refused_when_followed(
        secure_site: tuple[FileServer, Path], site: FileServer) -> None:
    server, cert = secure_site
    url = server.url(f"/goto?{site.url('/files/t/disk.vhd')}")
    with pytest.raises(TransferError) as caught:
        _read(HttpObject.from_url(url, ca_file=str(cert)))
    assert "redirects to plain http" in _one_line(caught)


def test_https_to_a_plain_http_server_fails_when_tls_cannot_start(site: FileServer) -> None:
    url = site.url("/files/t/disk.vhd").replace("http://", "https://")
    with pytest.raises(TransferError) as caught:
        _read(HttpObject.from_url(url))
    assert "TLS with 127.0.0.1:" in _one_line(caught)


# --- transfer() -----------------------------------------------------------------------------


async def test_compressed_file_lands_expanded_when_its_url_path_says_gz(
        site: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    packed = (site.root / "t" / "disk.vhd.gz").read_bytes()
    source = HttpObject.from_url(site.url("/files/t/disk.vhd.gz?token=abc"))
    done = await transfer(LocalFiles(), source, str(tmp_path / "t.vhd"),
                          checksum=hashlib.sha256(packed).hexdigest(), progress_every_s=0)
    assert (tmp_path / "t.vhd").read_bytes() == DATA
    assert (done.size, done.source_bytes) == (len(DATA), len(packed))
    assert site.url("/files/t/disk.vhd.gz") in caplog.text and "token=abc" not in caplog.text


@pytest.mark.parametrize(("path", "message"), [
    ("/files/t/bad.vhd.bz2", "is not a valid bzip2 stream"),
    ("/files/t/missing.vhd", "does not exist on the server"),
    ("/cut", "closed the connection"),
])
async def test_failed_download_leaves_the_folder_as_it_was_when_the_source_is_bad(
        site: FileServer, tmp_path: Path, path: str, message: str) -> None:
    (tmp_path / "t.vhd").write_bytes(b"old")
    with pytest.raises(TransferError, match=message):
        await transfer(LocalFiles(), HttpObject.from_url(site.url(path)), str(tmp_path / "t.vhd"))
    assert os.listdir(tmp_path) == ["t.vhd"] and (tmp_path / "t.vhd").read_bytes() == b"old"


async def test_verify_step_refuses_the_copy_and_leaves_nothing_when_it_raises(
        site: FileServer, tmp_path: Path) -> None:
    files = LocalFiles()
    seen: list[str | None] = []

    async def must_be_disk(path: str) -> None:
        seen.append(disk_suffix(files, path))
        raise TransferError("not a disk")

    with pytest.raises(TransferError, match="not a disk"):
        await transfer(files, HttpObject.from_url(site.url("/files/t/disk.vhd")),
                       str(tmp_path / "t.vhd"), verify=must_be_disk)
    assert seen == [None] and os.listdir(tmp_path) == []


async def test_download_announcing_more_than_the_room_is_refused_before_a_byte_is_written(
        site: FileServer, tmp_path: Path) -> None:
    (tmp_path / "t.vhd").write_bytes(b"old")
    files = Cramped(len(DATA) - 1)
    source = HttpObject.from_url(site.url("/files/t/disk.vhd"))
    with pytest.raises(TransferError, match=f"not enough free space .* holds {len(DATA)} "
                                            f"bytes.* only {len(DATA) - 1} may be written"):
        await transfer(files, source, str(tmp_path / "t.vhd"))
    assert files.writes == 0
    assert os.listdir(tmp_path) == ["t.vhd"] and (tmp_path / "t.vhd").read_bytes() == b"old"
    done = await transfer(Cramped(len(DATA)), source, str(tmp_path / "t.vhd"))
    assert done.size == len(DATA) and (tmp_path / "t.vhd").read_bytes() == DATA


async def test_compressed_download_is_judged_by_what_it_expands_to_not_its_length(
        site: FileServer, tmp_path: Path) -> None:
    room = 3 * COPY_CHUNK_BYTES  # far more than the .gz holds, less than it expands to
    source = HttpObject.from_url(site.url("/files/t/zeros.vhd.gz"))
    with pytest.raises(TransferError, match=f"expands to more than {room} bytes"):
        await transfer(Cramped(room), source, str(tmp_path / "t.vhd"))
    assert os.listdir(tmp_path) == []


def test_disk_suffix_follows_the_signature_when_files_are_disks_or_not(tmp_path: Path) -> None:
    samples = {"x.vhdx": b"vhdxfile" + bytes(1024), "dyn.vhd": b"conectix" + bytes(1024),
               "fixed.vhd": bytes(4096) + b"conectix" + bytes(504), "text.vhd": b"hello",
               "zeros.vhd": bytes(4096)}
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
    found = {name: disk_suffix(LocalFiles(), str(tmp_path / name)) for name in samples}
    assert found == {"x.vhdx": ".vhdx", "dyn.vhd": ".vhd", "fixed.vhd": ".vhd",
                     "text.vhd": None, "zeros.vhd": None}


@requires_tool("qemu-img")
@pytest.mark.parametrize("kind", ["vhdx dynamic", "vhdx fixed", "vpc dynamic", "vpc fixed"])
def test_disk_made_by_qemu_stands_alone_until_its_tail_is_cut(tmp_path: Path,
                                                               kind: str) -> None:
    """Another maker's disks (qemu-img's) are whole and of their own; the same files cut
    to half their length are not."""
    fmt, subformat = kind.split()
    (tmp_path / "r.raw").write_bytes(os.urandom(3 << 20))
    disk = tmp_path / "d.img"
    subprocess.run(["qemu-img", "convert", "-O", fmt, "-o",
                    f"subformat={subformat}" + (",force_size=on" if fmt == "vpc" else ""),
                    str(tmp_path / "r.raw"), str(disk)], check=True, capture_output=True)
    with disk.open("rb") as handle:
        suffix = sniff(handle)
        assert suffix is not None and not_standalone(handle, suffix) is None
    with disk.open("r+b") as handle:
        handle.truncate(disk.stat().st_size // 2)
        assert "is cut short" in (not_standalone(handle, suffix) or "")


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileServer, str, int]]:
    root = tmp_path_factory.mktemp("big")
    block = os.urandom(COPY_CHUNK_BYTES)
    count = 48
    with gzip.open(root / "big.vhd.gz", "wb", compresslevel=1) as out:
        for _ in range(count):
            out.write(block)
    digest = hashlib.sha256(block * count).hexdigest()
    for server in serve(root):
        yield server, digest, count * COPY_CHUNK_BYTES


async def test_large_download_streams_with_little_memory_when_decompressed(
        big_file: tuple[FileServer, str, int], tmp_path: Path) -> None:
    server, digest, size = big_file
    tracemalloc.start()
    try:
        done = await transfer(LocalFiles(), HttpObject.from_url(server.url("/files/big.vhd.gz")),
                              str(tmp_path / "big.vhd"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.size == size == (tmp_path / "big.vhd").stat().st_size
    with (tmp_path / "big.vhd").open("rb") as written:
        assert hashlib.file_digest(written, "sha256").hexdigest() == digest
    assert peak < 12 * COPY_CHUNK_BYTES, f"peak {peak} bytes"


def test_silent_listener_is_cut_off_when_it_never_answers() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(TransferError) as caught:
            _read(replace(HttpObject.from_url(f"http://127.0.0.1:{port}/t.vhd"), retries=0),
                  timeout_s=0.3)
    assert "did not answer within 0.3 s" in _one_line(caught)


_LEFT_OPEN = """
import sys
from hyperv_agent.hostfs.http import HttpObject, open_url
stream = open_url(HttpObject.from_url(sys.argv[1]))
stream.read(10)
stream.keep = stream  # a cycle: the collector finalises it while the interpreter ends
"""


def test_stream_left_open_does_not_hold_the_process_when_it_exits(site: FileServer) -> None:
    """A body nobody closed (a StartOver's stream, say) is closed by its finaliser while
    the interpreter ends, when the loop's daemon thread can no longer answer."""
    done = subprocess.run([sys.executable, "-c", _LEFT_OPEN, site.url("/files/t/disk.vhd")],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def test_stream_closed_on_its_own_loop_thread_ends_the_loop(site: FileServer) -> None:
    """The garbage collector may finalise a body on the thread of the loop it reads from;
    its close cannot wait for that loop there, and leaves the loop to end itself."""
    get = web.open_get(_get(HttpObject.from_url(site.url("/files/t/disk.vhd")), 10.0, {}))
    body = get.raw_body()
    loop = body._loop  # type: ignore[attr-defined]
    loop._loop.call_soon_threadsafe(body.close)
    loop._thread.join(60)
    assert not loop._thread.is_alive() and loop._loop.is_closed()


# --- retries and resumption --------------------------------------------------------------


def _flaky(site: FileServer, how: str, retries: int = 3) -> tuple[HttpObject, str]:
    path = f"/flaky/{how}/{uuid.uuid4().hex}"
    return replace(HttpObject.from_url(site.url(path)), retries=retries), path


def _asked(site: FileServer, path: str) -> list[tuple[str | None, str | None]]:
    """(Range, If-Range) of each request for ``path``."""
    return [(ranged, validator) for seen, ranged, validator in site.ranges if seen == path]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("how", "validator"), [("once", '"v1"'), ("dated", _DATED)])
async def test_broken_body_is_resumed_where_it_stopped_and_verified_whole(
        site: FileServer, tmp_path: Path, how: str, validator: str) -> None:
    source, path = _flaky(site, how)
    done = await transfer(LocalFiles(), source, str(tmp_path / "t.vhd"),
                          checksum=_sha256(DATA))
    assert (tmp_path / "t.vhd").read_bytes() == DATA and done.source_bytes == len(DATA)
    first, again = _asked(site, path)
    assert first == (None, None) and again[1] == validator
    resumed_at = int((again[0] or "").removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(DATA) // 2
    assert os.listdir(tmp_path) == ["t.vhd"]


async def test_body_broken_more_often_than_the_retries_allow_fails_and_leaves_nothing(
        site: FileServer, tmp_path: Path) -> None:
    (tmp_path / "t.vhd").write_bytes(b"old")
    source, path = _flaky(site, "twice", retries=1)
    with pytest.raises(TransferError, match=r"closed the connection after 0 of \d+ bytes .*"
                                            r"\(gave up after 1 retry\)$"):
        await transfer(LocalFiles(), source, str(tmp_path / "t.vhd"), checksum=_sha256(DATA))
    assert len(_asked(site, path)) == 2
    assert os.listdir(tmp_path) == ["t.vhd"] and (tmp_path / "t.vhd").read_bytes() == b"old"


@pytest.mark.parametrize(("how", "asked_range"), [("ignores", True), ("norange", False)])
async def test_download_starts_over_when_the_server_cannot_resume_it(
        site: FileServer, tmp_path: Path, how: str, asked_range: bool) -> None:
    source, path = _flaky(site, how)
    done = await transfer(LocalFiles(), source, str(tmp_path / "t.vhd.gz"),
                          checksum=_sha256(DATA), decompress=False)
    assert (tmp_path / "t.vhd.gz").read_bytes() == DATA and done.size == len(DATA)
    assert done.source_bytes == len(DATA)  # what the first attempt read is not counted
    assert [ranged is not None for ranged, _ in _asked(site, path)] == [False, asked_range]
    assert os.listdir(tmp_path) == ["t.vhd.gz"]


@pytest.mark.parametrize(("how", "requests"), [("changed", 2), ("sloppy", 3)])
async def test_download_starts_over_when_the_file_changed_between_attempts(
        site: FileServer, tmp_path: Path, how: str, requests: int) -> None:
    source, path = _flaky(site, how)
    done = await transfer(LocalFiles(), source, str(tmp_path / "t.vhd"),
                          checksum=_sha256(CHANGED))
    assert (tmp_path / "t.vhd").read_bytes() == CHANGED and done.size == len(CHANGED)
    asked = _asked(site, path)
    assert len(asked) == requests and asked[1][1] == '"v1"'
    assert asked[2:] == [(None, None)] * (requests - 2)  # a part of the new file: asked anew


async def test_file_grown_past_the_room_is_refused_when_the_download_starts_over(
        site: FileServer, tmp_path: Path) -> None:
    source, _ = _flaky(site, "changed")
    with pytest.raises(TransferError, match=f"not enough free space .* holds {len(CHANGED)} "
                                            "bytes"):
        await transfer(Cramped(len(DATA)), source, str(tmp_path / "t.vhd"))
    assert os.listdir(tmp_path) == []


async def test_busy_server_is_asked_again_when_it_answers_503(
        site: FileServer, tmp_path: Path) -> None:
    source, path = _flaky(site, "busy")
    await transfer(LocalFiles(), source, str(tmp_path / "t.vhd"), checksum=_sha256(DATA))
    assert (tmp_path / "t.vhd").read_bytes() == DATA and len(_asked(site, path)) == 2
    source, path = _flaky(site, "down", retries=2)
    with pytest.raises(TransferError, match=r"HTTP 503 .*\(gave up after 2 retries\)$"):
        await transfer(LocalFiles(), source, str(tmp_path / "u.vhd"))
    assert len(_asked(site, path)) == 3 and os.listdir(tmp_path) == ["t.vhd"]


async def test_cancelled_download_stops_during_a_pause_before_a_retry(
        site: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "_BACKOFF_FIRST_S", 60.0)
    monkeypatch.setattr(web, "_BACKOFF_MAX_S", 60.0)
    source, path = _flaky(site, "down")
    copy = asyncio.ensure_future(transfer(LocalFiles(), source, str(tmp_path / "t.vhd")))
    while not _asked(site, path):
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # in the pause now
    started = time.monotonic()
    copy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await copy
    assert time.monotonic() - started < 20 and len(_asked(site, path)) == 1  # not the 60 s
    assert os.listdir(tmp_path) == []


def test_standalone_check_reads_only_the_block_table_the_disk_needs(tmp_path: Path) -> None:
    """A VHDX whose region table gives its block table the rest of a large file is checked
    by reading the entries its size needs, not the region it claims."""
    disk = tmp_path / "d.vhdx"
    vhd.create(disk, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 8 << 20)
    with disk.open("r+b") as handle:
        claimed = 64 << 20
        handle.truncate(claimed * 2)
        for table in (192 << 10, 256 << 10):  # the region table and its copy
            handle.seek(table)
            header = handle.read(16)
            count = int.from_bytes(header[8:12], "little")
            for index in range(count):
                at = table + 16 + index * 32
                handle.seek(at)
                guid = handle.read(16)
                if guid == uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le:
                    handle.seek(at + 24)
                    handle.write(claimed.to_bytes(4, "little"))
    read = 0

    class Counting(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            nonlocal read
            data = super().read(size)
            read += len(data)
            return data

    with Counting(disk, "rb") as counted:
        assert not_standalone(counted, ".vhdx") is None  # a whole disk, with room to spare
    assert read < 2 << 20, read


@pytest.mark.parametrize(("item", "value"), [("sector", 1), ("sector", 0), ("block", 3 << 20),
                                             ("block", 512 << 20)])
def test_standalone_check_names_block_and_sector_sizes_the_format_does_not_allow(
        tmp_path: Path, item: str, value: int) -> None:
    """A VHDX's block and logical sector sizes come from the file: one the format does not
    allow (a sector of 1 byte, a block not a power of two) makes the disk damaged, not the
    check fail on the arithmetic of its block table."""
    disk = tmp_path / "d.vhdx"
    vhd.create(disk, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 << 20)
    wanted = {"block": "CAA16737-FA36-4D43-B3B6-33F0AA44E76B",  # file parameters
              "sector": "8141BF1D-A96F-4709-BA47-F233A8FAAB5F"}[item]
    with disk.open("r+b") as handle:
        handle.seek(192 << 10)
        count = int.from_bytes(handle.read(16)[8:12], "little")
        regions = {}
        for _ in range(count):
            entry = handle.read(32)
            regions[entry[:16]] = int.from_bytes(entry[16:24], "little")
        metadata = regions[uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le]
        handle.seek(metadata)
        count = int.from_bytes(handle.read(32)[10:12], "little")
        items = {}
        for _ in range(count):
            entry = handle.read(32)
            items[entry[:16]] = int.from_bytes(entry[16:20], "little")
        handle.seek(metadata + items[uuid.UUID(wanted).bytes_le])
        handle.write(value.to_bytes(4, "little"))
    with disk.open("rb") as handle:
        assert "is damaged" in (not_standalone(handle, ".vhdx") or "")
