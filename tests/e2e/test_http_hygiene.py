"""Log hygiene and the wire over real HTTPS: one warning line (never a traceback) for a
malformed request or a dropped client, request values escaped and cut in the log, and a
Server header without versions."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Iterator

import aiohttp
import pytest
from bench.bench_limits import client_tls

from hyperv_agent import logs
from tests.e2e.conftest import API, Running

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[[-0-9a-f]+\] ")
STOP = "com.cloud.agent.api.StopCommand"


@pytest.fixture
def log_lines() -> Iterator[None]:
    """Puts the root logger back as it was after a test that set the agent's own up (with
    :func:`_agent_logging`, in the test body, where stderr is the captured one)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def _agent_logging(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("INFO")
    capsys.readouterr()


def _records(capsys: pytest.CaptureFixture[str]) -> list[str]:
    lines = capsys.readouterr().err.splitlines()
    assert all(RECORD.match(line) or line.startswith(logs.CONTINUATION) for line in lines), lines
    assert all(len(line.encode()) <= logs.MAX_LINE_BYTES for line in lines)
    return [line for line in lines if RECORD.match(line)]


async def _raw(url: str, data: bytes, *, tls: bool = True) -> bytes:
    host, port = url.removeprefix("https://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port),
                                                   ssl=client_tls() if tls else None)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, ssl.SSLError):
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"POST /api/HypervResource/x HTTP/1.1\r\nHost: a\r\nContent-Length: zz\r\n\r\n",
    b"GET /api/HypervResource HTTP/1.1\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n",
    b"GET /\x1b[2J\nHTTP/1.1\r\n\r\n",
])
async def test_malformed_request_is_one_warning_line_and_a_plain_400(
    running: Running, log_lines: None, capsys: pytest.CaptureFixture[str],
    request_bytes: bytes,
) -> None:
    _agent_logging(capsys)
    reply = await _raw(running.url, request_bytes)
    assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400")
    assert b"Traceback" not in reply and b"Server: hyperv-agent\r\n" in reply
    records = _records(capsys)
    assert len(records) == 1, records
    assert " WARNING " in records[0] and "malformed request from 127.0.0.1" in records[0]
    assert "Traceback" not in capsys.readouterr().err


async def test_plain_http_on_the_tls_port_is_one_warning_line(
    running: Running, log_lines: None, capsys: pytest.CaptureFixture[str],
) -> None:
    _agent_logging(capsys)
    for _ in range(3):
        await _raw(running.url, b"GET /api/HypervResource HTTP/1.1\r\n\r\n", tls=False)
    records = _records(capsys)
    assert len(records) == 1 and "TLS handshake with 127.0.0.1 failed" in records[0]


async def test_client_dropping_mid_request_is_one_warning_line(
    running: Running, log_lines: None, capsys: pytest.CaptureFixture[str],
) -> None:
    _agent_logging(capsys)
    host, port = running.url.removeprefix("https://").split(":")
    _, writer = await asyncio.open_connection(host, int(port), ssl=client_tls())
    writer.write(f"POST {API}{STOP} HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n{{"
                 .encode())
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    await asyncio.sleep(0.3)
    records = _records(capsys)
    assert len(records) == 1, records
    assert "127.0.0.1 dropped the connection while sending its request" in records[0]
    assert STOP in records[0] and " WARNING " in records[0]


async def test_request_values_reach_the_log_escaped(
    running: Running, log_lines: None, capsys: pytest.CaptureFixture[str],
) -> None:
    _agent_logging(capsys)
    forged = "i-2-3-VM\n2030-01-01 00:00:00,000 INFO [-] hyperv_agent.command: forged\x1b[0m"
    status, _ = await running.post(STOP, {"vmName": forged, "contextMap": {}, "wait": 0})
    assert status == 200
    (record,) = [line for line in _records(capsys) if "StopCommand vm=" in line]
    # the name is refused (it holds ESC), and the refusal quotes it: escaped there too
    assert "vm=i-2-3-VM\\n2030-01-01" in record and "forged\\x1b[0m result=failed" in record
    assert "\x1b" not in record and "\n" not in record
    assert "details=StopCommand failed: the command names no VM" in record


async def test_server_header_names_no_version_on_any_answer(running: Running) -> None:
    session = running.session
    replies = [
        await session.get(running.url + "/api/HypervResource"),
        await session.post(running.url + API + STOP, data=b"{}"),
        await session.post(running.url + API + "com.cloud.agent.api.NoSuchCommand", data=b"{}"),
        await session.get(running.url + "/nowhere"),
        await session.post(running.url + API + STOP, data=b"{}",
                           headers={"Content-Encoding": "gzip"}),
    ]
    assert [r.status for r in replies] == [200, 200, 404, 404, 415]
    for reply in replies:
        assert reply.headers["Server"] == "hyperv-agent"
        reply.release()
    raw = await _raw(running.url, b"BAD\r\n\r\n")
    assert b"\r\nServer: hyperv-agent\r\n" in raw


async def test_admin_listener_names_no_version(running: Running) -> None:
    from hyperv_agent import server

    runner = await server.start(running.agent.admin_app(), server.Listener("127.0.0.1", 0),
                                None)
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as session:
            for path in ("/healthz", "/metrics", "/nowhere"):
                async with session.get(url + path) as reply:
                    assert reply.headers["Server"] == "hyperv-agent", path
                    assert "Python" not in json.dumps(dict(reply.headers))
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("name", "shown"), [
    ("com.x%0d%0aSet-Cookie:%20a%1b[2J%00",
     "unknown command com.x\\r\\nSet-Cookie: a\\x1b[2J\\x00"),
    ("a" * 8000, "unknown command " + "a" * 100),
])
async def test_an_unknown_class_is_named_escaped_and_cut_in_its_404(
    running: Running, name: str, shown: str,
) -> None:
    """The 404 names the class asked for as a log line would: control characters escaped,
    a name of kilobytes cut, never echoed back byte for byte."""
    reply = await _raw(running.url, f"POST {API}{name} HTTP/1.1\r\nHost: a\r\n"
                                    "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode())
    assert reply.startswith(b"HTTP/1.1 404"), reply[:200]
    body = reply.partition(b"\r\n\r\n")[2]
    assert body.startswith(shown.encode()) and len(body) < 300, body[:400]
    assert not any(byte < 0x20 for byte in body), body
