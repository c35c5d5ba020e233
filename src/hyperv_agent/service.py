"""The running agent: the backend, dispatcher, HTTPS and admin listeners, wired together.

``hyperv-agent serve`` runs this; tests build it the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from hyperv_agent import logs, relay, server, state, tls
from hyperv_agent.backends import OpenedHost, open_host
from hyperv_agent.cim import counting
from hyperv_agent.cim.api import Cim
from hyperv_agent.config import AgentConfig
from hyperv_agent.connections import (
    RELAY_SHARED_PARTS,
    Limits,
    cannot_listen,
    connection_cap,
    open_file_limit,
)
from hyperv_agent.dirlock import DirectoryLock
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import AgentError, ConfigError
from hyperv_agent.handlers.attach import AttachHandlers
from hyperv_agent.handlers.configdrive import ConfigDriveHandlers
from hyperv_agent.handlers.copy import CopyHandler
from hyperv_agent.handlers.datapaths import DataPaths
from hyperv_agent.handlers.dispatch import Dispatch
from hyperv_agent.handlers.heartbeat import Heartbeats, HeartbeatTiming
from hyperv_agent.handlers.host import HostHandlers, HostSettings
from hyperv_agent.handlers.hostcheck import HostCheck
from hyperv_agent.handlers.locks import FileLocks
from hyperv_agent.handlers.migration import MigrationHandlers
from hyperv_agent.handlers.secgroups import SecurityGroupHandlers
from hyperv_agent.handlers.start import StartHandler
from hyperv_agent.handlers.storage import Reservation, StorageHandlers
from hyperv_agent.handlers.vm import VmHandlers, VmSettings
from hyperv_agent.handlers.vm_config import VmConfigHandlers
from hyperv_agent.handlers.volumes import VolumeHandlers
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.aside import AsideFiles
from hyperv_agent.metrics import Metrics
from hyperv_agent.state import PoolRegistry
from hyperv_agent.stopping import stop_on_signals

log = logging.getLogger("hyperv_agent")
#: On Windows the state folder's access list is checked at start (``%ProgramData%`` lets
#: every local user read what is made in it).
_WINDOWS = sys.platform == "win32"
_T = TypeVar("_T")
#: Connections the admin listener (/healthz, /metrics) holds at once.
ADMIN_MAX_CONNECTIONS = 16
#: How long a stopping agent waits for the commands in flight to be answered; what is left
#: then is cut short (a StartCommand's half-built VM is cleared at the next start, a copy
#: leaves only its aside file).
STOP_GRACE_S = 30.0


@dataclass
class Leftovers:
    """What an earlier run of the agent may have left when its process was killed: VMs
    half-built by a StartCommand, and files copies wrote aside in the pools and config
    drive ISOs wrote aside in their folders."""

    start: StartHandler
    files: HostFiles
    paths: DataPaths
    aside: AsideFiles

    async def clear(self) -> None:
        """Remove the half-built VMs, then this agent's aside files in every registered
        pool and in every folder config drives are written in, the host's config drive
        cache's included (a folder that cannot be reached now is swept before its next
        write). Only this agent's aside files are removed: other files, and those other
        agents sharing a pool write, are left alone. Failures are logged; the agent serves
        anyway."""
        await self.start.remove_half_built()
        for root in (*self.paths.pools.all_roots(), *self.paths.config_drive_folders()):
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
    """A wired agent: the opened host, dispatcher, metrics and TLS identity and context."""

    config: AgentConfig
    opened: OpenedHost
    dispatch: Dispatch
    metrics: Metrics
    identity: tls.Identity
    #: The CloudStack listener's TLS, built from ``identity`` once, as the agent is wired
    context: ssl.SSLContext
    host: HostHandlers
    leftovers: Leftovers
    lock: DirectoryLock  # the state directory, held while the agent is open
    #: Clients refused by allow_from, logged once a minute per address for both listeners
    refusals: logs.Throttle = field(default_factory=logs.Throttle)

    @property
    def cim(self) -> Cim:
        """The backend, its round trips counted."""
        return self.opened.cim

    @property
    def emulator(self) -> EmulatorCim | None:
        """The emulated host, when it runs in this process."""
        return self.opened.emulator

    async def close(self) -> None:
        try:
            await self.host.heartbeats.close()  # stamps under way, before their backend
            await self.opened.close()
        finally:
            self.lock.release()

    @property
    def allow_from(self) -> list[server.Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.config.agent.allow_from]

    def app(self) -> web.Application:
        return server.make_app(self.dispatch, allow_from=self.allow_from,
                               max_body_bytes=self.config.agent.max_request_bytes,
                               refusals=self.refusals)

    async def hyperv_problem(self) -> str | None:
        """None when Hyper-V's v2 namespace answers (one read-only query, bounded in time
        and shared with the pings: ``HostCheck``), else why not."""
        found = await self.host.check.state()
        return None if found.usable else found.says

    def limits(self, file_limit: int | None) -> Limits:
        """The CloudStack listener's limits: ``max_connections`` lowered below the process's
        open-file limit ``file_limit``, keeping headroom, and leaving the console relay its
        share when there is one (``relay.start_for``)."""
        relaying = relay.relay_target(self.config) is not None
        parts = RELAY_SHARED_PARTS if relaying else 1
        return Limits(idle_timeout_s=self.config.agent.idle_timeout_s,
                      max_connections=connection_cap(self.config.agent.max_connections,
                                                     file_limit, parts))

    def admin_limits(self) -> Limits:
        return Limits(idle_timeout_s=self.config.agent.idle_timeout_s,
                      max_connections=ADMIN_MAX_CONNECTIONS)

    def admin_app(self) -> web.Application:
        return server.make_admin_app(self.metrics, self.hyperv_problem, self.allow_from,
                                     self.refusals)

    def ssl_context(self) -> ssl.SSLContext:
        return self.context


def build_agent(config: AgentConfig, vm_settings: VmSettings | None = None) -> Agent:
    """Everything ``serve`` runs, wired from the configuration; the state directory is
    held from here until the agent closes (DirectoryInUse when another process holds it,
    before anything in it is read or changed)."""
    lock = state.hold(config.agent.state_dir, "one agent serves from a state directory; give "
                      "this one its own ([agent] state_dir, --state-dir)")
    try:
        return _wired(config, vm_settings, lock)
    except BaseException:
        lock.release()
        raise


def cannot_start(error: OSError, state_dir: Path | None) -> ConfigError:
    """What stops the start when preparing the state directory or building the agent
    (``backends.prepare_state``, ``build_agent``) met ``error``: a file of the state
    directory or a TLS file, named; a failed write that names no file (a full disk) by the
    folder it was made in, ``state_dir``. The one wording of ``serve`` and the Windows
    service."""
    where = (error.filename if error.filename is not None
             else f"writing in {state_dir}" if state_dir is not None else None)
    return ConfigError(f"cannot start: {error.strerror or error}"
                       + (f": {where}" if where is not None else "")
                       + " (see [agent] state_dir, tls_cert and tls_key)")


def _wired(config: AgentConfig, vm_settings: VmSettings | None, lock: DirectoryLock) -> Agent:
    agent = config.agent
    # TLS material that does not load stops the start here, naming its setting, before the
    # host is opened: not at the listener, after start-up seemed to have gone well.
    identity = tls.ensure_identity(agent.state_dir, agent.tls_cert, agent.tls_key)
    context = tls.server_context(identity, agent.tls_client_ca)
    opened = open_host(config)
    hv, files = opened.hyperv, opened.files
    reservation = Reservation(agent.root_device_name, agent.root_device_reserved_bytes)
    settings = HostSettings(private_ip=agent.private_ip,
                            dom0_min_memory_mb=agent.dom0_min_memory_mb,
                            reservation=reservation, local_pool_path=agent.local_storage_path,
                            hypervisor_version=agent.hypervisor_version,
                            console_port=relay.console_port(config),
                            heartbeat=HeartbeatTiming(agent.heartbeat_interval_s,
                                                      agent.heartbeat_stale_s))
    state.sweep_temporaries(agent.state_dir)
    pools = PoolRegistry(agent.state_dir / "pools.json", local_root=agent.local_storage_path,
                         credentials_path=agent.state_dir / state.CREDENTIALS_FILE)
    paths = DataPaths(files, pools, agent.local_secondary_storage_path,
                      agent.config_drive_cache)
    aside = AsideFiles(state.agent_id(agent.state_dir))
    vm = VmHandlers(hv, vm_settings)
    check = HostCheck(hv, on_this_machine=opened.on_this_machine)
    beats = Heartbeats(files, pools, settings.heartbeat, private_ip=settings.private_ip,
                       state_dir=agent.state_dir, host_check=check)
    host = HostHandlers(hv, files, settings, pools, locks=vm.locks, heartbeats=beats,
                        check=check)
    handlers = host.table()
    handlers |= vm.table()
    handlers |= VmConfigHandlers(hv, vm.locks, vm.settings.job_wait).table()
    # one table: a copy, a delete and a VM being built on one file never interleave
    file_locks = FileLocks()
    start = StartHandler(hv, paths, vm.locks, vm.settings.job_wait,
                         journal=state.BuildJournal(agent.state_dir / "building.json"),
                         file_locks=file_locks,
                         processor_compatibility=agent.processor_compatibility)
    handlers |= start.table()
    handlers |= AttachHandlers(hv, paths, vm.locks, vm.settings.job_wait,
                               file_locks=file_locks).table()
    handlers |= SecurityGroupHandlers(hv, vm.locks, vm.settings.job_wait).table()
    handlers |= StorageHandlers(files, pools, reservation, host.heartbeats).table()
    handlers |= VolumeHandlers(hv, paths, vm.locks, file_locks, vm.settings.job_wait,
                               aside).table()
    handlers |= CopyHandler(hv, paths, file_locks, vm.settings.job_wait, aside).table()
    handlers |= ConfigDriveHandlers(hv, paths, file_locks, aside, vm.locks).table()
    handlers |= MigrationHandlers(hv, paths, vm.locks, file_locks, aside,
                                  job_wait=vm.settings.job_wait).table()
    metrics = Metrics()
    dispatch = Dispatch(handlers, metrics, counting.count)
    return Agent(config, opened, dispatch, metrics, identity, context, host,
                 Leftovers(start, files, paths, aside), lock)


async def heartbeats(agent: Agent) -> None:
    """Stamp this host's heartbeat in every shared pool at once, then a round every
    ``[agent] heartbeat_interval_s``, for ever (a pool is also stamped when registered).
    A round starts every interval, not an interval after the slowest pool's write ended:
    its writes are waited for until the next round is due, and one still under way then
    (its file server hung) goes on alone while the other pools are stamped on time. A
    round whose writes started only after the next was due (its host check waited for a
    late answer) is followed by the next an interval after they started, and one that
    wrote nothing and ended after the next was due (the host found gone after a long
    wait) by the next an interval after it ended: missed rounds are not run back to back.
    Cancelled, it cancels the writes under way.

    A round that fails unexpectedly is logged and the next one comes as due: ended, the
    task would leave a running host unstamped for good, so its neighbours would call it
    down while its VMs run.

    A failure that lasts is logged with its traceback once (again when the error
    changes), then as one warning line a round, and its end as one info line: a
    traceback every interval for as long as a share is broken would bury the log."""
    failing: str | None = None  # the error of the rounds failing since the last success
    due = time.monotonic()  # the start of the round to come
    try:
        while True:
            interval_s = agent.host.heartbeats.timing.interval_s
            due += interval_s
            try:
                writing = await agent.host.write_heartbeats(
                    within_s=max(0.0, due - time.monotonic()))
            except Exception as error:
                writing = None
                error_text = f"{type(error).__name__}: {error}"
                if error_text != failing:
                    log.exception("heartbeat: this round of stamps failed unexpectedly; the "
                                  "next comes in %g s", interval_s)
                else:
                    log.warning("heartbeat: this round of stamps failed again (%s); the "
                                "next comes in %g s", error_text, interval_s)
                failing = error_text
            else:
                if failing is not None:
                    log.info("heartbeat: stamps are written again, after rounds that "
                             "failed (%s)", failing)
                failing = None
            if writing is not None and writing > due:  # held up past its turn
                due = writing + interval_s
            elif writing is None and time.monotonic() > due:  # nothing written, late
                due = time.monotonic() + interval_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        await agent.host.heartbeats.close()


def announce_limits(agent: Agent, file_limit: int | None) -> None:
    """One warning when only loopback clients will be served, one when the connection cap is
    lowered to fit the open-file limit, and on Windows one when every local user may read
    the state folder (its agent.toml may hold SMB passwords)."""
    settings = agent.config.agent
    if _WINDOWS:
        from hyperv_agent import winacl

        exposed = winacl.exposure(settings.state_dir)
        if exposed:
            log.warning("%s", exposed)
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
    """The emulated host's WinRM face, when ``[emulator] winrm`` asks for it: its address
    bound, taking no connection until ``server.serve``; an address that cannot be listened
    on raises CannotListen naming ``[wsman] url`` (``winrm_face.bind_for``)."""
    if not agent.config.emulator.winrm or agent.emulator is None:
        return None
    from hyperv_agent import winrm_face  # loaded only when the emulated host serves WinRM

    face = await winrm_face.bind_for(agent.config, agent.emulator)
    return face.runner


async def run_agent(agent: Agent, stop: asyncio.Event, at_once: asyncio.Event | None = None
                    ) -> None:
    """Clear what an earlier run left, then serve until ``stop`` is set; then take no new
    command and give those in flight up to ``STOP_GRACE_S`` to be answered (none once
    ``at_once`` is set); one line says the agent stopped. A listener that cannot open
    raises CannotListen naming its setting, before anything is cleared or logged, the agent
    closed."""
    file_limit = open_file_limit()
    settings = agent.config.agent
    runners: list[web.AppRunner] = []
    console: relay.ConsoleRelay | None = None
    try:
        runners.append(await _listening("[agent] listen", settings.listen, server.bind(
            agent.app(), server.Listener.parse(settings.listen), agent.ssl_context(),
            agent.limits(file_limit))))
        runners.append(await _listening("[agent] admin_listen", settings.admin_listen, server.bind(
            agent.admin_app(), server.Listener.parse(settings.admin_listen), None,
            agent.admin_limits(), name="admin")))
        console = await relay.bind_for(agent.config, agent.allow_from, file_limit)
        face = await _winrm_face(agent)
        if face is not None:
            runners.insert(0, face)  # stopped first
    except BaseException:
        if console is not None:
            await console.close()
        for runner in runners:
            await runner.cleanup()
        await agent.close()
        raise
    announce_limits(agent, file_limit)
    beating: asyncio.Task[None] | None = None
    try:
        await agent.leftovers.clear()
        for runner in runners:
            await server.serve(runner)
        log.info("serving CloudStack on https://%s, admin on http://%s, certificate SHA-256 %s",
                 settings.listen, settings.admin_listen, agent.identity.sha256_fingerprint)
        if console is not None:
            await console.serve()
        beating = asyncio.create_task(heartbeats(agent))
        await stop.wait()
        await _finish_commands(agent, runners, console, at_once or asyncio.Event())
    finally:
        await _stopped(agent, runners, console, beating)


async def _finish_commands(agent: Agent, runners: list[web.AppRunner],
                           console: relay.ConsoleRelay | None, at_once: asyncio.Event) -> None:
    """Stop accepting connections (commands and consoles to relay), then wait for the
    commands in flight, up to ``STOP_GRACE_S`` or until ``at_once`` is set; each wait and
    what it left is logged. Consoles already relayed go on meanwhile."""
    if console is not None:
        console.stop_accepting()
    for runner in runners:
        for site in list(runner.sites):
            await site.stop()
    busy = agent.dispatch.in_flight
    if not busy:
        return
    log.info("stopping: taking no new commands; waiting up to %.0f s for %d in flight "
             "(a second Ctrl-C or SIGTERM stops at once)", STOP_GRACE_S, busy)
    finished = asyncio.create_task(agent.dispatch.finished(STOP_GRACE_S))
    signalled = asyncio.create_task(at_once.wait())
    await asyncio.wait((finished, signalled), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    finished.cancel()
    left = agent.dispatch.in_flight
    if left:
        log.warning("stopping with %d command(s) unanswered; whatever they left half-done "
                    "is cleared at the next start", left)


async def _listening(setting: str, address: str, start: Awaitable[_T]) -> _T:
    """``start``; an OSError becomes CannotListen, naming the setting whose address could
    not be listened on, and why in the operator's terms."""
    try:
        return await start
    except OSError as error:
        raise cannot_listen(address, setting, error) from None


async def _stopped(agent: Agent, runners: list[web.AppRunner],
                   console: relay.ConsoleRelay | None, beating: asyncio.Task[None] | None
                   ) -> None:
    if beating is not None:
        beating.cancel()
        await asyncio.wait([beating])  # its stamps under way cancelled too
    if console is not None:
        await console.close()
    for runner in runners:
        await runner.cleanup()
    await agent.close()
    log.info("hyperv-agent stopped: listeners closed, backend closed")


async def serve_until_signalled(agent: Agent) -> None:
    at_once = asyncio.Event()
    await run_agent(agent, stop_on_signals(at_once), at_once)
