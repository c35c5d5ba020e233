"""The real agent over real HTTPS on 127.0.0.1, on the emulator, for end-to-end tests.

A module runs its tests on every backend kind by defining ``backend_kind`` as
``every_backend`` does: on the emulator in-process, and through the emulator's WinRM face
(``--backend wsman``) over HTTP with NTLM and message encryption and over HTTPS with
Basic. ``serving`` builds whichever the test runs on; ``Running.emulator`` is the emulated
host either way, so tests arrange and check state, and count its round trips, alike.
"""

from __future__ import annotations

import asyncio
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

from hyperv_agent import server, service, winrm_face
from hyperv_agent.cim.classdecl import CimClass
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.winrm.auth import Account
from hyperv_agent.handlers.vm import VmSettings
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.service import Agent, build_agent

API = "/api/HypervResource/"
PRIVATE_IP = "192.168.100.10"  # the emulated host's private NIC
LOCAL_POOL = "C:\\pool"  # local_storage_path of the agents these tests run: a registered root


WSMAN_USER = "cloudstack"
WSMAN_PASSWORD = "Face-Pa55word!"
#: Backend kinds: the emulator in-process, and its WinRM face over two transports.
BACKENDS = ("emulator", "wsman-http-ntlm", "wsman-https-basic")
_active = ["emulator"]  # the kind of the running test (set by the autouse fixture below)


@pytest.fixture
def backend_kind() -> str:
    """The backend the module's tests run on; modules override it with every_backend."""
    return "emulator"


@pytest.fixture(params=BACKENDS)
def every_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _active_backend(backend_kind: str) -> None:
    _active[0] = backend_kind


@dataclass
class Running:
    agent: Agent
    url: str
    session: aiohttp.ClientSession
    face: winrm_face.RunningFace | None = None
    host_config: AgentConfig | None = None  # what the emulated host was opened with

    @property
    def emulator(self) -> EmulatorCim:
        if self.face is not None:
            return self.face.emulator
        assert self.agent.emulator is not None
        return self.agent.emulator

    def requests(self) -> int:
        """WS-Management requests the WinRM face answered so far (0 without a face)."""
        return self.face.service.requests if self.face is not None else 0

    @property
    def emulator_config(self) -> AgentConfig:
        """The configuration the emulated host was opened with."""
        return self.host_config or self.agent.config

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
async def run_agent(config: AgentConfig, caplog: pytest.LogCaptureFixture) -> AsyncIterator[str]:
    """The agent ``config`` describes, started as ``serve`` starts it (its listeners at
    ``listen`` and ``admin_listen``), until the block ends; yields the line it logged on
    serving (``caplog`` must capture INFO)."""
    caplog.clear()
    stop = asyncio.Event()
    running = asyncio.create_task(service.run_agent(build_agent(config), stop))
    try:
        for _ in range(200):
            lines = [r.message for r in caplog.records if "serving CloudStack" in r.message]
            if lines:
                break
            assert not running.done(), running.result()
            await asyncio.sleep(0.05)
        (line,) = lines
        yield line
    finally:
        stop.set()
        await running


@contextlib.asynccontextmanager
async def serving(config: AgentConfig, vm_settings: VmSettings | None = None,
                  backend: str | None = None) -> AsyncIterator[Running]:
    """The agent ``config`` describes (an emulator configuration), serving HTTPS on
    127.0.0.1, with a client session; on ``backend`` (default: the test's kind), for a
    wsman kind through a WinRM face serving that emulated host."""
    kind = backend or _active[0]
    face, host_config = None, config
    async with contextlib.AsyncExitStack() as stack:
        if kind != "emulator":
            face, config = await stack.enter_async_context(winrm_host(config, kind))
        agent = build_agent(config, vm_settings=vm_settings)
        runner, url = await start(agent)
        connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
        try:
            if face is not None:
                await warm_class_cache(agent, face.emulator, kind)
            async with aiohttp.ClientSession(connector=connector) as session:
                yield Running(agent, url, session, face, host_config)
        finally:
            await runner.cleanup()
            await agent.close()


@contextlib.asynccontextmanager
async def winrm_host(config: AgentConfig, kind: str
                     ) -> AsyncIterator[tuple[winrm_face.RunningFace, AgentConfig]]:
    """The emulated host ``config`` describes, served on 127.0.0.1 through a WinRM face
    as the wsman backend ``kind`` reaches it (``wsman-<http|https>-<ntlm|basic>``: those
    of BACKENDS, or another pairing a test asks for), and the configuration of an agent
    driving it that way; the face is closed when the block ends."""
    assert kind.startswith(("wsman-http-", "wsman-https-")), kind
    assert kind.endswith(("-ntlm", "-basic")), kind
    account = Account(WSMAN_USER, WSMAN_PASSWORD)
    face = await winrm_face.start_face(config, "127.0.0.1", 0, account,
                                       use_tls=kind.startswith("wsman-https"))
    try:
        yield face, winrm_face.agent_config(config, face.url, account,
                                            "basic" if "basic" in kind else "ntlm")
    finally:
        await face.close()


_read_classes: dict[str, list[CimClass]] = {}  # per backend kind, read once per run


async def warm_class_cache(agent: Agent, emulator: EmulatorCim, kind: str) -> None:
    """Know every class declaration, as an agent that has been running does (class
    metadata is read once per class, not per command): read over WinRM by the first test
    of a kind, handed to the later ones."""
    from hyperv_agent.emulator.schema import CLASSES

    cim = agent.opened.wsman
    assert isinstance(cim, WsmanCim)
    if kind in _read_classes:
        cim.learn_classes(_read_classes[kind])
        return
    for class_def in CLASSES.values():
        await cim.get_class(class_def.name, class_def.namespace)
    _read_classes[kind] = cim.known_classes()
    emulator.host.counters.reset()


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


def samples_host_config(folder: Path, agent_toml: str = "",
                        emulator_toml: str = "") -> AgentConfig:
    """The configuration of the host the MS 4.22 samples name: the SMB shares
    ``\\\\10.1.1.1\\primary`` and ``secondary`` mapped to those folders under ``folder``
    (made here), the switch ``vSwitch0``; ``agent_toml`` and ``emulator_toml`` are more
    lines of those sections."""
    for name in ("primary", "secondary"):
        (folder / name).mkdir(exist_ok=True)
    config = folder / "agent.toml"
    config.write_text(f"""[agent]
{agent_toml}
[emulator]
switches = ["vSwitch0"]
{emulator_toml}
[emulator.shares]
'\\\\10.1.1.1\\primary' = '{folder / "primary"}'
'\\\\10.1.1.1\\secondary' = '{folder / "secondary"}'
""")
    return load_config(config, state_dir=folder / "state", backend="emulator",
                       private_ip=PRIVATE_IP)


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


def record_file_looks(monkeypatch: pytest.MonkeyPatch, files: HostFiles) -> list[str]:
    """What ``files`` is asked from now on of whether a path leads out of its root and
    whether it exists, in order (``link_out <path>``, ``exists <path>``): on a share each
    is a round trip to the file server, which the emulator's counters do not count."""
    asked: list[str] = []
    link_out, exists = files.link_out, files.exists

    async def links(root: str, path: str) -> str | None:
        asked.append(f"link_out {path}")
        return await link_out(root, path)

    async def there(path: str) -> bool:
        asked.append(f"exists {path}")
        return await exists(path)

    monkeypatch.setattr(files, "link_out", links)
    monkeypatch.setattr(files, "exists", there)
    return asked
