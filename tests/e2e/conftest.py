"""The real agent over real HTTPS on 127.0.0.1, on the emulator, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hyperv_agent import server
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.service import Agent, build_agent

API = "/api/HypervResource/"
PRIVATE_IP = "192.168.100.10"  # the emulated host's private NIC
LOCAL_POOL = "C:\\pool"  # local_storage_path of the agents these tests run: a registered root


@dataclass
class Running:
    agent: Agent
    url: str
    session: aiohttp.ClientSession

    @property
    def emulator(self) -> EmulatorCim:
        inner = getattr(self.agent.cim, "inner", None)
        assert isinstance(inner, EmulatorCim)
        return inner

    async def post(self, fqcn: str, body: object | bytes) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url + API + fqcn, data=data,
                                     headers={"content-type": "application/json"}) as reply:
            text = await reply.text()
            try:
                return reply.status, json.loads(text)
            except json.JSONDecodeError:
                return reply.status, text

    async def answer(self, fqcn: str, body: object) -> tuple[str, dict[str, Any]]:
        """The single answer of a command: (answer class, fields)."""
        status, data = await self.post(fqcn, body)
        assert status == 200, data
        assert isinstance(data, list) and len(data) == 1 and len(data[0]) == 1, data
        ((key, value),) = data[0].items()
        return key, value


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as the management server does
    return context


@pytest.fixture
def agent_config(tmp_path: Path) -> Callable[..., AgentConfig]:
    def make(**overrides: Any) -> AgentConfig:
        values: dict[str, Any] = {"local_storage_path": LOCAL_POOL, **overrides}
        return load_config(None, state_dir=tmp_path / "state", backend="emulator",
                           private_ip=PRIVATE_IP, **values)

    return make


async def start(agent: Agent, context: ssl.SSLContext | None = None,
                app: web.Application | None = None) -> tuple[web.AppRunner, str]:
    runner = await server.start(app or agent.app(), server.Listener("127.0.0.1", 0),
                                context or agent.ssl_context())
    port = runner.addresses[0][1]
    return runner, f"https://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serving(config: AgentConfig) -> AsyncIterator[Running]:
    """The agent ``config`` describes, serving HTTPS on 127.0.0.1, with a client session."""
    agent = build_agent(config)
    runner, url = await start(agent)
    connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Running(agent, url, session)
    finally:
        await runner.cleanup()
        await agent.cim.close()


def config_with_shares(tmp_path: Path, shares: dict[str, Path], agent_toml: str = "",
                       **overrides: Any) -> AgentConfig:
    """An emulator configuration whose host maps the UNC ``shares`` to local folders."""
    lines = ["[agent]", agent_toml, "[emulator.shares]"]
    lines += [f"'{unc}' = '{folder}'" for unc, folder in shares.items()]
    config_file = tmp_path / "agent.toml"
    config_file.write_text("\n".join(lines) + "\n")
    values: dict[str, Any] = {"state_dir": tmp_path / "state", "backend": "emulator",
                              "private_ip": PRIVATE_IP, **overrides}
    if "local_storage_path" not in agent_toml:
        values.setdefault("local_storage_path", LOCAL_POOL)
    return load_config(config_file, **values)


@pytest.fixture
async def running(agent_config: Callable[..., AgentConfig]) -> AsyncIterator[Running]:
    async with serving(agent_config()) as agent:
        yield agent


STARTUP_REQUEST = [{"com.cloud.agent.api.StartupRoutingCommand": {
    "cpus": 0, "speed": 0, "memory": 0, "dom0MinMemory": 0, "poolSync": False, "vms": {},
    "hypervisorType": "Hyperv",
    "hostDetails": {"com.cloud.network.Networks.RouterPrivateIpStrategy": "HostLocal"},
    "type": "Routing", "dataCenter": "1", "pod": "1", "cluster": "1",
    "guid": "16f85622-4508-415e-b13a-49a39bb14e4d", "name": "localhost", "version": "4.2.0",
    "privateIpAddress": PRIVATE_IP, "storageIpAddress": PRIVATE_IP, "contextMap": {},
    "wait": 0}}]
