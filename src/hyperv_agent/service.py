"""The running agent: the backend, dispatcher, HTTPS and admin listeners, wired together.

``hyperv-agent serve`` runs this; tests build it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
from dataclasses import dataclass

from aiohttp import web

from hyperv_agent import relay, server, state, tls
from hyperv_agent.backends import open_backend, remote_files
from hyperv_agent.cim import counting
from hyperv_agent.cim.api import Cim
from hyperv_agent.cim.counting import CountingCim
from hyperv_agent.config import AgentConfig
from hyperv_agent.connections import Limits, connection_cap, open_file_limit
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.errors import AgentError
from hyperv_agent.handlers.attach import AttachHandlers
from hyperv_agent.handlers.copy import CopyHandler
from hyperv_agent.handlers.datapaths import DataPaths
from hyperv_agent.handlers.dispatch import Dispatch
from hyperv_agent.handlers.host import HostHandlers, HostSettings
from hyperv_agent.handlers.start import StartHandler
from hyperv_agent.handlers.storage import Reservation, StorageHandlers
from hyperv_agent.handlers.vm import VmHandlers, VmSettings
from hyperv_agent.handlers.vm_config import VmConfigHandlers
from hyperv_agent.handlers.volumes import VolumeHandlers
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.aside import AsideFiles
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hostfs.locations import Credentials
from hyperv_agent.hyperv import host as hyperv_host
from hyperv_agent.metrics import Metrics
from hyperv_agent.state import PoolRegistry

log = logging.getLogger("hyperv_agent")
#: Connections the admin listener (/healthz, /metrics) holds at once.
ADMIN_MAX_CONNECTIONS = 16


def open_files(config: AgentConfig, cim: Cim) -> HostFiles:
    """File access on the host the backend drives; shares on ``smb_servers`` are reached
    through smbprotocol on ``smb_port`` (by default none: the host's own access)."""
    base = _host_files(config, cim)
    servers = config.agent.smb_routed_servers
    if not servers:
        return base
    from hyperv_agent.hostfs.routed import RoutedFiles  # smbprotocol: loaded only when used
    from hyperv_agent.hostfs.smb import SmbFiles

    accounts = {server: Credentials(user=account.username, domain=account.domain or server,
                                    password=account.secret())
                for server, account in config.agent.smb_credentials.items()}
    return RoutedFiles(base, SmbFiles(port=config.agent.smb_port, configured=accounts), servers)


def _host_files(config: AgentConfig, cim: Cim) -> HostFiles:
    if isinstance(cim, EmulatorCim):
        return EmulatedFiles(cim.host)
    if config.agent.backend == "wsman":
        return remote_files(config)
    return LocalFiles()


@dataclass
class Leftovers:
    """What an earlier run of the agent may have left when its process was killed: VMs
    half-built by a StartCommand, and files copies wrote aside in the pools."""

    start: StartHandler
    files: HostFiles
    pools: PoolRegistry
    aside: AsideFiles

    async def clear(self) -> None:
        """Remove the half-built VMs, then this agent's aside files in every registered
        pool (a pool that cannot be reached now is swept before its next copy). Failures
        are logged; the agent serves anyway."""
        await self.start.remove_half_built()
        for root in self.pools.all_roots():
            try:
                swept = await self.aside.sweep(self.files, root)
            except AgentError as error:
                log.warning("partial copies in %s not swept: %s", root, error)
                continue
            if swept:
                log.warning("removed %d partial copies an interrupted run left in %s",
                            swept, root)


@dataclass
class Agent:
    """A wired agent: backend, dispatcher, metrics and TLS identity."""

    config: AgentConfig
    cim: Cim
    dispatch: Dispatch
    metrics: Metrics
    identity: tls.Identity
    host: HostHandlers
    leftovers: Leftovers

    @property
    def allow_from(self) -> list[server.Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.config.agent.allow_from]

    def app(self) -> web.Application:
        return server.make_app(self.dispatch, allow_from=self.allow_from,
                               max_body_bytes=self.config.agent.max_request_bytes)

    async def hyperv_problem(self) -> str | None:
        """None when Hyper-V's v2 namespace answers (one read-only query), else why not."""
        try:
            await hyperv_host.switch_names(self.cim)
        except AgentError as error:
            return str(error)
        return None

    def limits(self, file_limit: int | None) -> Limits:
        """The CloudStack listener's limits: ``max_connections`` lowered below the process's
        open-file limit ``file_limit``, keeping headroom."""
        return Limits(idle_timeout_s=self.config.agent.idle_timeout_s,
                      max_connections=connection_cap(self.config.agent.max_connections,
                                                     file_limit))

    def admin_limits(self) -> Limits:
        return Limits(idle_timeout_s=self.config.agent.idle_timeout_s,
                      max_connections=ADMIN_MAX_CONNECTIONS)

    def admin_app(self) -> web.Application:
        async def healthy() -> bool:
            return await self.hyperv_problem() is None

        return server.make_admin_app(self.metrics, healthy, self.allow_from)

    def ssl_context(self) -> ssl.SSLContext:
        return tls.server_context(self.identity, self.config.agent.tls_client_ca)


def build_agent(config: AgentConfig, vm_settings: VmSettings | None = None) -> Agent:
    """Everything ``serve`` runs, wired from the configuration."""
    agent = config.agent
    cim = CountingCim(open_backend(config))
    reservation = Reservation(agent.root_device_name, agent.root_device_reserved_bytes)
    settings = HostSettings(private_ip=agent.private_ip,
                            dom0_min_memory_mb=agent.dom0_min_memory_mb,
                            reservation=reservation, local_pool_path=agent.local_storage_path,
                            hypervisor_version=agent.hypervisor_version,
                            console_port=relay.console_port(config))
    files = open_files(config, cim.inner)
    state.sweep_temporaries(agent.state_dir)
    pools = PoolRegistry(agent.state_dir / "pools.json", local_root=agent.local_storage_path)
    paths = DataPaths(files, pools, agent.local_secondary_storage_path)
    aside = AsideFiles(state.agent_id(agent.state_dir))
    vm = VmHandlers(cim, vm_settings)
    host = HostHandlers(cim, files, settings, pools, locks=vm.locks)
    handlers = host.table()
    handlers |= vm.table()
    handlers |= VmConfigHandlers(cim, vm.locks).table()
    start = StartHandler(cim, paths, vm.locks, vm.settings.job_wait,
                         journal=state.BuildJournal(agent.state_dir / "building.json"))
    handlers |= start.table()
    handlers |= AttachHandlers(cim, paths, vm.locks).table()
    handlers |= StorageHandlers(files, pools, reservation).table()
    handlers |= VolumeHandlers(cim, paths, vm.locks, vm.settings.job_wait, aside).table()
    handlers |= CopyHandler(cim, paths, vm.settings.job_wait, aside).table()
    metrics = Metrics()
    identity = tls.ensure_identity(agent.state_dir, agent.tls_cert, agent.tls_key)
    dispatch = Dispatch(handlers, metrics, counting.count)
    return Agent(config, cim, dispatch, metrics, identity, host,
                 Leftovers(start, files, pools, aside))


HEARTBEAT_INTERVAL_S = 60.0


async def heartbeats(agent: Agent, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
    """Stamp this host's heartbeat in every shared pool, every ``interval_s``, for ever."""
    while True:
        await agent.host.write_heartbeats()
        await asyncio.sleep(interval_s)


def announce_limits(agent: Agent, file_limit: int | None) -> None:
    """One warning when only loopback clients will be served, one when the connection cap is
    lowered to fit the open-file limit."""
    settings = agent.config.agent
    if not settings.allow_from:
        log.warning("allow_from is empty: only clients on this host (loopback) are served; "
                    "set [agent] allow_from to the management servers' networks, "
                    'e.g. allow_from = ["10.1.0.0/16"]')
    cap = agent.limits(file_limit).max_connections
    if cap < settings.max_connections:
        log.warning("max_connections lowered from %d to %d: the process may open %s files "
                    "(ulimit -n) and keeps the rest for disks and shares",
                    settings.max_connections, cap, file_limit)


async def _winrm_face(agent: Agent) -> web.AppRunner | None:
    """The emulated host's WinRM face, when ``[emulator] winrm`` asks for it."""
    if not agent.config.emulator.winrm:
        return None
    from hyperv_agent import winrm_face  # loaded only when the emulated host serves WinRM

    backend = agent.cim.inner if isinstance(agent.cim, CountingCim) else agent.cim
    face = await winrm_face.start_for(agent.config, backend)
    return face.runner if face is not None else None


async def run_agent(agent: Agent, stop: asyncio.Event) -> None:
    """Clear what an earlier run left, then serve until ``stop`` is set."""
    file_limit = open_file_limit()
    announce_limits(agent, file_limit)
    await agent.leftovers.clear()
    runners = [
        await server.start(agent.app(), server.Listener.parse(agent.config.agent.listen),
                           agent.ssl_context(), agent.limits(file_limit)),
        await server.start(agent.admin_app(),
                           server.Listener.parse(agent.config.agent.admin_listen), None,
                           agent.admin_limits(), name="admin"),
    ]
    log.info("serving CloudStack on https://%s, admin on http://%s, certificate SHA-256 %s",
             agent.config.agent.listen, agent.config.agent.admin_listen,
             agent.identity.sha256_fingerprint)
    console = await relay.start_for(agent.config, agent.allow_from)
    face = await _winrm_face(agent)
    beating = asyncio.create_task(heartbeats(agent))
    try:
        await stop.wait()
    finally:
        beating.cancel()
        if face is not None:
            await face.cleanup()
        if console is not None:
            await console.close()
        for runner in runners:
            await runner.cleanup()
        await agent.cim.close()


async def serve_until_signalled(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(getattr(signal, name), stop.set)
    await run_agent(agent, stop)
