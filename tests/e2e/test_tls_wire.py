"""The listener's TLS and HTTP as the management server's client meets them, over real TLS
on 127.0.0.1: ``openssl s_client`` offers what Java 11 and 17 offer, asks to renegotiate;
raw requests carry exactly what Apache HttpClient 4.5 (``HypervDirectConnectResource.
postHttpRequest``) sends, and what HTTP/1.1 lets it send.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import trustme

from hyperv_agent import tls
from hyperv_agent.config import AgentConfig
from hyperv_agent.server import LIVENESS
from hyperv_agent.service import build_agent
from tests.conftest import requires_tool
from tests.e2e.conftest import API, Running, client_context, run_agent, start
from tests.ports import free_port

READY = API + "com.cloud.agent.api.ReadyCommand"
ANSWER = b'"com.cloud.agent.api.ReadyAnswer":{"result":true'
#: Java 17's default TLS 1.2 suites, in its order, by their OpenSSL names (Java 11's are
#: these without ChaCha20): AEAD first, then CBC, then static RSA.
JAVA_TLS12 = ":".join([
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "AES256-GCM-SHA384",
    "AES128-GCM-SHA256", "AES256-SHA256", "AES128-SHA256", "AES256-SHA", "AES128-SHA"])
JAVA_TLS13 = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
JAVA_GROUPS = "X25519:P-256:P-384:P-521:X448"


def _port(url: str) -> int:
    return int(url.rpartition(":")[2])


async def _s_client(port: int, *options: str, say: Sequence[bytes] = ()) -> tuple[str, str]:
    """``openssl s_client``'s output and errors once it has said ``say``, a piece every
    0.4 s, and its input ended."""
    process = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", *options,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert process.stdin is not None
    for piece in [*say, b""]:
        await asyncio.sleep(0.4)
        if piece and process.returncode is None:
            with contextlib.suppress(ConnectionError):  # it gave up on the connection
                process.stdin.write(piece)
                await process.stdin.drain()
    process.stdin.close()
    out, err = await asyncio.wait_for(process.communicate(), 10)
    return out.decode(errors="replace"), err.decode(errors="replace")


def _negotiated(out: str) -> tuple[str, str]:
    """(protocol, cipher) from s_client's summary line ``New, TLSv1.2, Cipher is X``."""
    line = next(line for line in out.splitlines() if line.startswith("New, "))
    _, protocol, cipher = line.split(", ")
    return protocol, cipher.removeprefix("Cipher is ")


@pytest.fixture(params=["generated EC P-256", "operator's RSA"])
async def keyed(agent_config: Callable[..., AgentConfig], tmp_path: Path,
                request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """An agent serving its generated pair or an operator's RSA pair: (URL, key kind)."""
    overrides = {}
    if request.param.endswith("RSA"):
        leaf = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
            "127.0.0.1", key_type=trustme.KeyType.RSA)
        leaf.private_key_pem.write_to_path(str(tmp_path / "agent.key"))
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "agent.crt"))
        overrides = {"tls_cert": tmp_path / "agent.crt", "tls_key": tmp_path / "agent.key"}
    agent = build_agent(agent_config(**overrides))
    runner, url = await start(agent)
    try:
        yield url, "RSA" if overrides else "ECDSA"
    finally:
        await runner.cleanup()
        await agent.close()


@requires_tool("openssl")
async def test_the_suites_java_offers_are_served_with_forward_secrecy_and_aead(
    keyed: tuple[str, str],
) -> None:
    url, kind = keyed
    out, err = await _s_client(_port(url), "-tls1_2", "-cipher", JAVA_TLS12,
                               "-groups", JAVA_GROUPS)
    # the agent's order decides: its first suite the key signs
    assert _negotiated(out) == ("TLSv1.2", f"ECDHE-{kind}-AES128-GCM-SHA256"), err
    assert "Compression: NONE" in out
    for cbc in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256", "AES128-GCM-SHA256"):
        out, _ = await _s_client(_port(url), "-tls1_2", "-cipher", cbc)
        assert _negotiated(out)[1] == "(NONE)", cbc  # no CBC, no static RSA key exchange
    out, err = await _s_client(_port(url), "-tls1_3", "-ciphersuites", JAVA_TLS13,
                               "-groups", JAVA_GROUPS)
    assert _negotiated(out) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384"), err


@requires_tool("openssl")
async def test_a_client_asking_to_renegotiate_is_refused(running: Running) -> None:
    request = f"POST {READY} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{{}}".encode()
    out, _ = await _s_client(_port(running.url), "-tls1_2", say=[request])
    assert "HTTP/1.1 200 OK" in out  # the connection serves
    out, err = await _s_client(_port(running.url), "-tls1_2", say=[b"R\n", request])
    assert "RENEGOTIATING" in out + err and "no renegotiation" in err
    assert "HTTP/1.1 200" not in out


def test_the_context_says_no_renegotiation_no_compression_whatever_openssl_defaults(
    tmp_path: Path,
) -> None:
    context = tls.server_context(tls.ensure_identity(tmp_path))
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    suites = {cipher["name"]: cipher for cipher in context.get_ciphers()}
    assert all(cipher["aead"] for cipher in suites.values()), sorted(suites)
    assert all(name.startswith(("TLS_", "ECDHE-")) for name in suites), sorted(suites)


async def _tls_stream(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", _port(url), ssl=client_context())


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(status line, body) of one response of known length."""
    status = await reader.readline()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, await reader.readexactly(length)


async def test_what_apache_httpclient_sends_is_answered_on_one_kept_alive_connection(
    running: Running,
) -> None:
    """Its headers as 4.5 writes them, then an Expect: 100-continue handshake, a chunked
    body with no Content-Length and a query string: each answered, one connection."""
    reader, writer = await _tls_stream(running.url)
    try:
        writer.write(f"POST {READY} HTTP/1.1\r\ncontent-type: application/json\r\n"
                     "Content-Length: 2\r\nHost: 127.0.0.1:8250\r\n"
                     "Connection: Keep-Alive\r\n"
                     "User-Agent: Apache-HttpClient/4.5.14 (Java/17.0.9)\r\n\r\n{}".encode())
        status, body = await _answer(reader)
        assert status == b"HTTP/1.1 200 OK\r\n" and ANSWER in body

        writer.write(f"POST {READY} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                     "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n".encode())
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        status, body = await _answer(reader)
        assert status == b"HTTP/1.1 200 OK\r\n" and ANSWER in body

        writer.write(f"POST {READY} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n".encode())
        status, body = await _answer(reader)
        assert status == b"HTTP/1.1 200 OK\r\n" and ANSWER in body

        writer.write(f"POST {READY}?timeout=30&x HTTP/1.1\r\nHost: a\r\n"
                     "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode())
        status, body = await _answer(reader)
        assert status == b"HTTP/1.1 200 OK\r\n" and ANSWER in body
        assert await reader.read() == b""  # closed as asked
    finally:
        writer.close()


async def test_a_client_certificate_from_another_ca_is_refused_like_none_at_all(
    agent_config: Callable[..., AgentConfig], tmp_path: Path,
) -> None:
    ca, stranger = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tmp_path / "agent.key"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "agent.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    agent = build_agent(agent_config(tls_cert=tmp_path / "agent.crt",
                                     tls_key=tmp_path / "agent.key",
                                     tls_client_ca=tmp_path / "ca.pem"))
    runner, url = await start(agent)
    try:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            for issuer in (None, stranger, ca):
                context = client_context()
                context.maximum_version = version
                if issuer is not None:
                    issuer.issue_cert("management-server").configure_cert(context)
                refused = await _refused(url, context)
                assert refused is (issuer is not ca), (version, issuer is stranger)
    finally:
        await runner.cleanup()
        await agent.close()


async def _refused(url: str, context: ssl.SSLContext) -> bool:
    """Whether the agent ends the connection at the handshake instead of answering (TLS 1.3
    clients learn it at their first read)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url), ssl=context)
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        writer.write(f"GET {API.rstrip('/')} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        return not (await reader.readline()).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        writer.close()


def _operators_pair(folder: Path) -> bytes:
    """A new operator's pair written to ``folder/agent.{crt,key}``; its certificate's DER."""
    leaf = trustme.CA().issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(folder / "agent.key"))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "agent.crt"))
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


async def _served_certificate(port: int) -> bytes:
    """The certificate (DER) the listener on ``port`` presents to a new connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
    assert isinstance(der, bytes)
    return der


async def test_the_certificate_is_read_at_start_and_its_logged_fingerprint_is_the_served_one(
    agent_config: Callable[..., AgentConfig], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An operator who replaces the pair keeps being served the old one until a restart,
    and tells which one is served by the SHA-256 the start logged."""
    caplog.set_level(logging.INFO)
    first = _operators_pair(tmp_path)
    port = free_port()
    config = agent_config(tls_cert=tmp_path / "agent.crt", tls_key=tmp_path / "agent.key",
                          listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{free_port()}")
    async with run_agent(config, caplog) as serving:
        assert serving.endswith(f"certificate SHA-256 {_sha256(first)}"), serving
        assert await _served_certificate(port) == first
        second = _operators_pair(tmp_path)
        assert await _served_certificate(port) == first  # until the agent restarts
    async with run_agent(config, caplog) as serving:
        assert serving.endswith(f"certificate SHA-256 {_sha256(second)}"), serving
        assert await _served_certificate(port) == second


def _sha256(der: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


@pytest.mark.parametrize("lines", [
    ["identity", "gzip"], ["gzip", "identity"], ["", "deflate"]])
async def test_a_coding_on_a_second_content_encoding_line_is_refused_like_one_on_the_first(
    running: Running, lines: list[str],
) -> None:
    """HTTP lets a list header come as several lines, one coding each: a compressed body
    is answered 415 naming every coding, never read as JSON as if it were plain."""
    reader, writer = await _tls_stream(running.url)
    try:
        head = "".join(f"Content-Encoding: {line}\r\n" for line in lines)
        writer.write(f"POST {READY} HTTP/1.1\r\nHost: a\r\n{head}Content-Length: 2\r\n\r\n{{}}"
                     .encode())
        status, body = await _answer(reader)
        assert status == b"HTTP/1.1 415 Unsupported Media Type\r\n", body
        named = ", ".join(line for line in lines if line)
        assert f"(Content-Encoding: {named})".encode() in body
    finally:
        writer.close()


@pytest.mark.parametrize("coding", ["gzip, chunked", "x-custom ,Chunked", "identity, chunked"])
async def test_a_transfer_coding_other_than_chunked_is_refused_with_501_and_a_closed_line(
    running: Running, coding: str,
) -> None:
    """The parser takes the chunks off whatever else the body is coded with: a body sent
    with another transfer coding is answered 501 naming it (RFC 9112, section 6.1), the
    command is not run, and the connection closes; the agent serves on."""
    reader, writer = await _tls_stream(running.url)
    try:
        writer.write(f"POST {READY} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                     f"Transfer-Encoding: {coding}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n".encode())
        reply = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
    assert reply.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), reply
    named = ", ".join(part.strip().lower() for part in coding.split(","))
    assert f"(Transfer-Encoding: {named})".encode() in reply
    assert b"\r\nConnection: close\r\n" in reply and ANSWER not in reply
    assert (await running.answer(READY.removeprefix(API), {}))[1]["result"] is True


async def test_an_http10_request_with_transfer_encoding_is_refused_and_its_line_closed(
    running: Running,
) -> None:
    """HTTP/1.0 has no transfer codings: RFC 9112, section 6.1 has the framing of such a
    request taken as faulty and the connection closed. The command is not run, and
    nothing after it on the connection is read as a request."""
    reader, writer = await _tls_stream(running.url)
    try:
        writer.write(f"POST {READY} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                     f"GET {API.rstrip('/')} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        reply = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
    assert reply.startswith(b"HTTP/1.0 400 Bad Request\r\n"), reply
    assert b"Transfer-Encoding is not HTTP/1.0" in reply and ANSWER not in reply
    assert LIVENESS.encode() not in reply and b"Connection: keep-alive" not in reply, reply
    assert (await running.answer(READY.removeprefix(API), {}))[1]["result"] is True


async def _refused_before_the_body(url: str, head: str) -> bytes:
    """What the agent answers to ``head`` (a request expecting 100-continue, its body
    unsent): the whole reply, read until the agent closes (at most 3 s)."""
    reader, writer = await _tls_stream(url)
    try:
        writer.write(head.encode())
        return await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()


@pytest.mark.parametrize(("head", "status"), [
    (f"POST {API}com.cloud.agent.api.NoSuchCommand HTTP/1.1\r\nHost: a\r\n"
     "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n", b"404"),
    (f"POST {READY} HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\n"
     "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n", b"415"),
    (f"POST {READY} HTTP/1.1\r\nHost: a\r\nContent-Length: 20000000\r\n"
     "Expect: 100-continue\r\n\r\n", b"413"),
    (f"POST {READY} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
     "Expect: 100-continue\r\n\r\n", b"501"),
    (f"GET {READY} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
     "Expect: 100-continue\r\n\r\n", b"405"),
    (f"PUT {READY} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
     "Expect: 100-continue\r\n\r\n", b"405"),
    ("DELETE /api/HypervResource HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
     "Expect: 100-continue\r\n\r\n", b"405"),
    ("POST /api/Other/com.cloud.agent.api.ReadyCommand HTTP/1.1\r\nHost: a\r\n"
     "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n", b"404"),
    (f"POST {READY}/more HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
     "Expect: 100-continue\r\n\r\n", b"404"),
])
async def test_a_request_refused_from_its_headers_gets_no_100_continue_and_a_closed_line(
    running: Running, head: str, status: bytes,
) -> None:
    """Expect: 100-continue asks whether to send the body: a request the agent refuses
    from its headers alone (its path or method not served included) is answered at once,
    without inviting the body (20 MB the client would send for nothing), and the
    connection closes, so a body the client sends after all is never read as its next
    request; the agent serves on."""
    reply = await _refused_before_the_body(running.url, head)
    assert reply.startswith(b"HTTP/1.1 " + status), reply
    assert b"100 Continue" not in reply and b"\r\nConnection: close\r\n" in reply
    if status == b"405":  # naming what the path is served for, as before
        allowed = b"GET,HEAD" if head.startswith("DELETE") else b"POST"
        assert b"\r\nAllow: " + allowed + b"\r\n" in reply, reply
    assert (await running.answer(READY.removeprefix(API), {}))[1]["result"] is True


async def test_a_client_outside_allow_from_expecting_100_continue_gets_403_at_once(
    agent_config: Callable[..., AgentConfig],
) -> None:
    agent = build_agent(agent_config(allow_from=("10.9.0.0/16",)))
    runner, url = await start(agent)
    try:
        reply = await _refused_before_the_body(
            url, f"POST {READY} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                 "Expect: 100-continue\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 403"), reply
        assert b"100 Continue" not in reply and b"\r\nConnection: close\r\n" in reply
    finally:
        await runner.cleanup()
        await agent.close()


async def test_a_client_outside_allow_from_is_refused_403_whatever_its_framing(
    agent_config: Callable[..., AgentConfig], caplog: pytest.LogCaptureFixture,
) -> None:
    """allow_from is checked before anything else of a request is judged: a client outside
    it sending an HTTP/1.0 request with Transfer-Encoding (faulty framing) gets the 403
    naming the setting, and the refusal is logged, not a 400 about its framing that
    tells it nothing of why it is not served and leaves no trace of it."""
    agent = build_agent(agent_config(allow_from=("10.9.0.0/16",)))
    runner, url = await start(agent)
    caplog.set_level(logging.INFO)
    try:
        reader, writer = await _tls_stream(url)
        try:
            writer.write(f"POST {READY} HTTP/1.0\r\nHost: a\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".encode())
            reply = await asyncio.wait_for(reader.read(), 3)
        finally:
            writer.close()
    finally:
        await runner.cleanup()
        await agent.close()
    assert reply.startswith(b"HTTP/1.0 403 Forbidden\r\n"), reply
    assert b"not in allow_from" in reply and ANSWER not in reply
    assert any("refused a request from 127.0.0.1" in record.message
               for record in caplog.records)
