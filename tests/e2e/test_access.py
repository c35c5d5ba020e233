"""Protected by default: loopback only without allow_from, 403 naming the setting, both
listeners, one warning at start, refusals rate-limited in the log."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from hyperv_agent import server, service
from hyperv_agent.config import AgentConfig
from hyperv_agent.service import Agent, build_agent
from tests.e2e.conftest import API, client_context, start
from tests.ports import free_port

READY = "com.cloud.agent.api.ReadyCommand"


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the source of its default route)."""
    for target in ("192.0.2.1", "10.255.255.255", "203.0.113.1"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET,
                                                         socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))  # UDP: no packet is sent
            address = str(probe.getsockname()[0])
            if not ipaddress.ip_address(address).is_loopback:
                return address
    return None


@contextlib.asynccontextmanager
async def listening(agent: Agent, app: web.Application, *, tls: bool,
                    host: str = "127.0.0.1") -> AsyncIterator[int]:
    runner = await server.start(app, server.Listener(host, 0),
                                agent.ssl_context() if tls else None)
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def _get(url: str, *, post: bool = False) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.request(
        "POST" if post else "GET", url, data=b"{}" if post else None
    ) as reply:
        return reply.status, await reply.text()


async def test_default_serves_loopback_and_refuses_others_with_403_naming_allow_from(
    agent_config: Callable[..., AgentConfig],
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    agent = build_agent(agent_config())
    try:
        async with listening(agent, agent.app(), tls=True, host="0.0.0.0") as port:
            assert (await _get(f"https://127.0.0.1:{port}{API}{READY}", post=True))[0] == 200
            status, text = await _get(f"https://{address}:{port}{API}{READY}", post=True)
            assert status == 403
            assert f"{address} is not allowed" in text and "allow_from" in text
            status, text = await _get(f"https://{address}:{port}/api/HypervResource")
            assert status == 403
        async with listening(agent, agent.admin_app(), tls=False, host="0.0.0.0") as port:
            assert (await _get(f"http://127.0.0.1:{port}/healthz"))[0] == 200
            status, text = await _get(f"http://{address}:{port}/metrics")
            assert status == 403 and "allow_from" in text
    finally:
        await agent.close()


@pytest.mark.parametrize(("networks", "expected"), [(("10.9.0.0/16",), 403),
                                                    (("10.9.0.0/16", "127.0.0.1/32"), 200)])
async def test_admin_listener_serves_only_allow_from_when_it_is_set(
    agent_config: Callable[..., AgentConfig], networks: tuple[str, ...], expected: int,
) -> None:
    agent = build_agent(agent_config(allow_from=networks))
    try:
        async with listening(agent, agent.admin_app(), tls=False) as port:
            for path in ("/healthz", "/metrics"):
                status, text = await _get(f"http://127.0.0.1:{port}{path}")
                assert status == expected, (path, text)
                if expected == 403:
                    assert "127.0.0.1 is not allowed: it is not in allow_from" in text
    finally:
        await agent.close()


def test_loopback_in_every_spelling_is_served_and_nothing_else_when_allow_from_is_empty() -> None:
    for peer in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert server.allowed(peer, ()), peer
    for peer in ("10.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "2001:db8::1", "", "unknown"):
        assert not server.allowed(peer, ()), peer
    lan = (ipaddress.ip_network("10.0.0.0/8"),)
    assert server.allowed("::ffff:10.1.2.3", lan) and not server.allowed("127.0.0.1", lan)


async def test_refused_client_is_one_log_line_however_often_it_asks(
    agent_config: Callable[..., AgentConfig], caplog: pytest.LogCaptureFixture,
) -> None:
    agent = build_agent(agent_config(allow_from=("10.9.0.0/16",)))
    runner, url = await start(agent)
    caplog.set_level(logging.INFO)
    try:
        statuses = [(await _get(url + API + READY, post=True))[0] for _ in range(25)]
        assert statuses == [403] * 25
        refused = [r for r in caplog.records if "refused a request from 127.0.0.1" in r.message]
        assert len(refused) == 1 and refused[0].levelno == logging.WARNING
        assert "it is not in allow_from" in refused[0].message
    finally:
        await runner.cleanup()
        await agent.close()


async def test_client_refused_on_both_listeners_is_one_log_line(
    agent_config: Callable[..., AgentConfig], caplog: pytest.LogCaptureFixture,
) -> None:
    """A monitoring host left out of allow_from polls /healthz while it, or a management
    server on the same address, posts commands: one refusal is one fact (the address is
    not in allow_from), logged once a minute whichever listener it reached, not once per
    listener."""
    agent = build_agent(agent_config(allow_from=("10.9.0.0/16",)))
    caplog.set_level(logging.INFO)
    try:
        async with listening(agent, agent.app(), tls=True) as port, \
                listening(agent, agent.admin_app(), tls=False) as admin:
            for _ in range(3):
                assert (await _get(f"https://127.0.0.1:{port}{API}{READY}", post=True))[0] == 403
                assert (await _get(f"http://127.0.0.1:{admin}/healthz"))[0] == 403
                assert (await _get(f"http://127.0.0.1:{admin}/metrics"))[0] == 403
        refused = [r.message for r in caplog.records
                   if "refused a request from 127.0.0.1" in r.message]
        assert refused == ["refused a request from 127.0.0.1: it is not in allow_from"], refused
    finally:
        await agent.close()


@pytest.mark.parametrize(("networks", "warnings"), [((), 1), (("127.0.0.0/8",), 0)])
async def test_start_warns_once_when_allow_from_is_empty(
    agent_config: Callable[..., AgentConfig], caplog: pytest.LogCaptureFixture,
    networks: tuple[str, ...], warnings: int,
) -> None:
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    agent = build_agent(agent_config(allow_from=networks, listen=listen, admin_listen=admin))
    caplog.set_level(logging.INFO)
    stop = asyncio.Event()
    running = asyncio.create_task(service.run_agent(agent, stop))
    try:
        for _ in range(100):
            if any("serving CloudStack" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        for _ in range(3):
            assert (await _get(f"https://{listen}{API}{READY}", post=True))[0] == 200
            assert (await _get(f"http://{admin}/healthz"))[0] == 200
    finally:
        stop.set()
        await running
    found = [r for r in caplog.records if "allow_from is empty" in r.message]
    assert len(found) == warnings
    assert all(r.levelno == logging.WARNING and "set [agent] allow_from" in r.message
               for r in found)
