"""Bounded resources over real HTTPS on 127.0.0.1: the connection cap, idle and slow clients,
compressed bodies, oversized fields; pings keep answering through all of them.

The < 50 ms ping budget itself is measured by ``bench/bench_limits.py``; on a shared machine
these tests check what is deterministic (who is closed, what is answered) and that no ping
ever waits on a stalled agent (:data:`STALL_S`; a 10 MB vmName used to hold the event loop
for about five seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from bench.bench_limits import (
    PING_BUDGET_MS,
    Served,
    client_tls,
    closed_by_server,
    idle_connection,
    ping,
    pings_beyond_cap,
    pings_during_load,
    refused_bombs,
    refused_fields,
    serving,
)

from hyperv_agent import connections, server
from hyperv_agent.cloudstack import codec
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.config import AgentConfig
from hyperv_agent.handlers.dispatch import Dispatch, Result
from hyperv_agent.service import build_agent
from tests.e2e.conftest import API, Running, run_agent
from tests.ports import free_port

READY = "com.cloud.agent.api.ReadyCommand"
STALL_S = 0.5
LOAD_S = 0.8


@pytest.fixture
async def served(agent_config: Callable[..., AgentConfig],
                 request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    agent = build_agent(agent_config(**getattr(request, "param", {})))
    async with serving(agent) as running:
        yield running
    await agent.close()


def _check_pings(times: list[float]) -> None:
    shown = [round(t * 1000) for t in times]
    assert max(times) < STALL_S, f"pings took {shown} ms"
    assert statistics.median(times) * 1000 < PING_BUDGET_MS, f"pings took {shown} ms"


@pytest.mark.parametrize("served", [{"max_connections": 8}], indirect=True)
async def test_idle_connections_beyond_the_cap_never_delay_a_ping(served: Served) -> None:
    started = time.perf_counter()
    run = await pings_beyond_cap(served, idle_count=40, pings=20)
    _check_pings(run.ping_s)
    assert run.most_held <= 8
    assert sum(run.still_open) <= 8
    assert not any(run.still_open[:30])  # the longest idle made room first
    assert time.perf_counter() - started < 15


@pytest.mark.parametrize("served", [{"idle_timeout_s": 0.5}], indirect=True)
async def test_idle_connection_is_closed_when_idle_timeout_passes(served: Served) -> None:
    reader, writer = await idle_connection(served.port)
    started = time.perf_counter()
    assert await closed_by_server(reader, 3.0)
    assert 0.3 < time.perf_counter() - started < 1.5
    writer.close()
    assert served.guard.open_count == 0


@pytest.mark.parametrize("served", [{"idle_timeout_s": 0.5}], indirect=True)
async def test_a_client_that_never_sends_its_client_hello_is_closed_at_the_deadline(
    served: Served,
) -> None:
    """TCP accepted, then silence (or the first bytes of a ClientHello): the slot is held
    until idle_timeout_s, not for ever."""
    for sent in (b"", b"\x16\x03\x01"):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(sent)
        deadline = time.perf_counter() + 10
        while served.guard.open_count != 1 and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)  # accepted when the server's loop gets to it
        assert served.guard.open_count == 1
        started = time.perf_counter()
        assert await closed_by_server(reader, 3.0)
        assert time.perf_counter() - started < 1.5
        writer.close()
        assert served.guard.open_count == 0


@pytest.mark.parametrize("served", [{"idle_timeout_s": 0.5}], indirect=True)
async def test_slow_headers_and_slow_bodies_are_cut_off_at_the_deadline(served: Served) -> None:
    head = f"POST {API}{READY} HTTP/1.1\r\nHost: agent\r\nContent-Length: 100\r\n\r\n".encode()
    for sent in (head[:20], head + b"{"):  # half the headers; the headers and a byte of body
        reader, writer = await idle_connection(served.port)
        started = time.perf_counter()
        for byte in sent[:5]:  # a trickle resets nothing
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        writer.write(sent[5:])
        assert await closed_by_server(reader, 3.0)
        assert time.perf_counter() - started < 1.5
        writer.close()


@pytest.mark.parametrize("served", [{"idle_timeout_s": 0.3}], indirect=True)
async def test_keep_alive_connection_is_closed_when_idle_after_an_answer(served: Served) -> None:
    reader, writer = await idle_connection(served.port)
    writer.write(f"POST {API}{READY} HTTP/1.1\r\nHost: agent\r\nContent-Length: 2\r\n\r\n{{}}"
                 .encode())
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readuntil(b"\r\n\r\n")
    started = time.perf_counter()
    while not await closed_by_server(reader, 2.0):
        pass
    assert time.perf_counter() - started < 1.5
    writer.close()


async def test_command_longer_than_idle_timeout_is_still_answered(
    agent_config: Callable[..., AgentConfig],
) -> None:
    agent = build_agent(agent_config())
    ready = agent.dispatch.handlers[READY]

    async def slow(command: Command) -> Result:
        await asyncio.sleep(1.0)
        return await ready(command)

    app = server.make_app(Dispatch({**agent.dispatch.handlers, READY: slow}))
    runner = await server.start(app, server.Listener("127.0.0.1", 0), agent.ssl_context(),
                                connections.Limits(idle_timeout_s=0.3))
    try:
        connector = aiohttp.TCPConnector(ssl=client_tls(), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session, session.post(
            f"https://127.0.0.1:{runner.addresses[0][1]}{API}{READY}", data=b"{}"
        ) as reply:
            assert reply.status == 200
            assert (await reply.json())[0]["com.cloud.agent.api.ReadyAnswer"]["result"] is True
    finally:
        await runner.cleanup()
        await agent.close()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_gzip_bomb_is_refused_without_being_inflated(served: Served) -> None:
    before = _peak_rss_mb()
    run = await pings_during_load(served.port, "bomb", LOAD_S)
    assert refused_bombs(run.answers) and len(run.answers) >= 4
    assert run.during >= 3
    _check_pings(run.ping_s)
    assert _peak_rss_mb() - before < 50


@pytest.mark.parametrize(("encoding", "status"), [
    ("identity", 200), (" Identity ", 200), ("deflate", 415), ("br", 415), ("x-gzip", 415),
    ("gzip, identity", 415)])
async def test_a_body_is_read_only_when_it_is_not_compressed(
    running: Running, encoding: str, status: int,
) -> None:
    """``Content-Encoding: identity`` says the body is as sent; any coding is answered 415
    naming it, whichever the HTTP library could inflate."""
    async with running.session.post(running.url + API + READY, data=b'{"contextMap": {}}',
                                     headers={"Content-Encoding": encoding}) as reply:
        assert reply.status == status, await reply.text()
        if status == 200:
            assert (await reply.json())[0]["com.cloud.agent.api.ReadyAnswer"]["result"] is True
        else:
            assert f"(Content-Encoding: {encoding.strip().lower()})" in await reply.text()


async def test_10_mb_field_is_refused_at_once_while_pings_keep_answering(
    served: Served,
) -> None:
    run = await pings_during_load(served.port, "field", LOAD_S)
    assert refused_fields(run.answers)
    assert all(answer["seconds"] < 2.0 for answer in run.answers)
    assert run.during >= 3
    _check_pings(run.ping_s)
    vms = await served.agent.cim.query(
        "SELECT ElementName FROM Msvm_ComputerSystem WHERE Caption = 'Virtual Machine'")
    assert vms == []


@pytest.mark.parametrize(("wanted", "file_limit", "cap"), [
    (256, 1024, 256), (1000, 1024, 768), (256, 256, 192), (256, 100, 36), (256, 10, 1),
    (5, None, 5)])
def test_connection_cap_keeps_a_quarter_of_the_file_limit_free(
    wanted: int, file_limit: int | None, cap: int,
) -> None:
    assert connections.connection_cap(wanted, file_limit) == cap


def test_connection_cap_of_a_shared_budget_is_its_part_of_what_is_left() -> None:
    assert connections.connection_cap(1000, 1024, parts=3) == 256  # 768 // 3
    assert connections.connection_cap(100, 1024, parts=3) == 100
    assert connections.connection_cap(1000, None, parts=3) == 1000


async def test_newcomer_is_refused_only_when_every_slot_is_answering(
    agent_config: Callable[..., AgentConfig], caplog: pytest.LogCaptureFixture,
) -> None:
    agent = build_agent(agent_config())
    release = asyncio.Event()
    ready = agent.dispatch.handlers[READY]

    async def held(command: Command) -> Result:
        await release.wait()
        return await ready(command)

    app = server.make_app(Dispatch({**agent.dispatch.handlers, READY: held}))
    runner = await server.start(app, server.Listener("127.0.0.1", 0), agent.ssl_context(),
                                connections.Limits(max_connections=2))
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        connector = aiohttp.TCPConnector(ssl=client_tls(), force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            answering = [asyncio.ensure_future(session.post(url + API + READY, data=b"{}"))
                         for _ in range(2)]
            await asyncio.sleep(0.3)
            with pytest.raises((ConnectionError, ssl.SSLError)):  # closed during the handshake
                await idle_connection(int(runner.addresses[0][1]))
            assert any("are answering commands" in r.message for r in caplog.records)
            release.set()
            for reply in await asyncio.gather(*answering):
                assert reply.status == 200
                reply.release()
            assert await ping(url) < STALL_S
    finally:
        await runner.cleanup()
        await agent.close()


async def test_16_mb_body_of_millions_of_members_is_refused_at_once(running: Running) -> None:
    crowded = b'{"vmName": "i-2-3-VM", "contextMap": {}, "x": [' + b"{}," * 5_000_000 + b"0]}"
    started = time.perf_counter()
    status, reply = await running.post("com.cloud.agent.api.StopCommand", crowded)
    assert time.perf_counter() - started < 4.0  # it held the event loop for about a minute
    assert status == 200
    ((key, fields),) = reply[0].items()
    assert key == "com.cloud.agent.api.StopAnswer" and fields["result"] is False
    assert fields["details"].startswith("StopCommand: malformed request: body: more than "
                                        "100000 array elements and object members")
    key, fields = await running.answer(READY, {"contextMap": {}})
    assert fields["result"] is True


async def test_a_body_that_does_not_decode_is_read_once(
    running: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failed answer of a body that did not decode echoes what the body holds, from
    the reading that found it wanting: a body of megabytes (a 10 MB vmName) is parsed
    once, not twice, while every other request waits for the event loop."""
    parsed: list[int] = []
    parse = codec._parse_json

    def counted(body: bytes) -> object:
        parsed.append(len(body))
        return parse(body)

    monkeypatch.setattr(codec, "_parse_json", counted)
    huge = json.dumps({"vmName": "x" * (10 << 20), "contextMap": {}, "wait": 0}).encode()
    status, reply = await running.post("com.cloud.agent.api.StopCommand", huge)
    ((key, fields),) = reply[0].items()
    assert (status, key, fields["result"]) == (200, "com.cloud.agent.api.StopAnswer", False)
    assert fields["details"].startswith("StopCommand: malformed request: vmName: a name of "
                                        "10485760 characters"), fields["details"]
    assert parsed == [len(huge)]


async def test_the_admin_listener_holds_16_connections_the_longest_idle_making_room(
    agent_config: Callable[..., AgentConfig], caplog: pytest.LogCaptureFixture,
) -> None:
    """A scraper or probe that leaves connections open holds at most 16 of the admin
    listener's; a newcomer takes the place of the one idle the longest."""
    caplog.set_level(logging.INFO)
    admin = free_port()
    config = agent_config(listen=f"127.0.0.1:{free_port()}", admin_listen=f"127.0.0.1:{admin}")
    async with run_agent(config, caplog):
        idle = [await asyncio.open_connection("127.0.0.1", admin)
                for _ in range(16)]  # the README's figure
        try:
            await asyncio.sleep(0.3)  # all accepted: none is closed yet
            assert not any([await closed_by_server(reader, 0.01) for reader, _ in idle])
            idle.append(await asyncio.open_connection("127.0.0.1", admin))
            assert await closed_by_server(idle[0][0], 3.0)  # the longest idle made room
            assert not any([await closed_by_server(reader, 0.01) for reader, _ in idle[1:]])
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{admin}/healthz") as reply:
                assert reply.status == 200
            assert await closed_by_server(idle[1][0], 3.0)
        finally:
            for _, writer in idle:
                writer.close()
