"""The checks of ``doctor``: each reads the host through the agent's own seams and says
what it found, one line, with the fix when the host falls short.

Order matters: when the host does not answer at all (``connection``) the rest is skipped.
Everything here reads, except ``host files``, which writes one small file in the local
pool's folder and deletes it again (the agent writes disks there).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import PureWindowsPath

from hyperv_agent import state
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.cim.wsman.config import WinrmLimits
from hyperv_agent.cim.wsman.settings import WsmanSettings
from hyperv_agent.config import AgentConfig
from hyperv_agent.doctor.report import Check, Report, Status
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.errors import (
    AgentError,
    CimAccessDenied,
    CimAuthNotOffered,
    CimError,
    CimInvalidClass,
)
from hyperv_agent.handlers import heartbeat
from hyperv_agent.handlers.storage import Reservation, pool_usage
from hyperv_agent.hostfs.adminshares import AdminShareFiles
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.locations import Credentials
from hyperv_agent.hostfs.routed import RoutedFiles
from hyperv_agent.hyperv import host, inventory
from hyperv_agent.hyperv.schema import NAMESPACE
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.relay import relay_target

GIB = 1024**3
DEFAULT_MIN_FREE_BYTES = 10 * GIB  # a few templates and root volumes
CLOCK_WARN_S = 30.0
CLOCK_FAIL_S = 300.0  # Kerberos refuses beyond 5 minutes (its default maximum skew)
CONNECT_PROBE_S = 5.0  # a TCP connection attempt of a reachability check
#: How long the connection check waits for the host's facts: a hung host (the connection
#: accepted, no answer) would otherwise hold it for the WinRM deadline (operation timeout
#: + 10 s, 70 s by default). The bound the agent's pings give the host (hostcheck).
ANSWER_WITHIN_S = 20.0

ACCOUNT_FIX = ("check [wsman] username and password (or HYPERV_AGENT_WSMAN_PASSWORD); the "
               "account must be in the host's Administrators or Remote Management Users "
               "group, the two WinRM's WMI plugin serves")
LISTENER_FIX = ("on the host: an HTTPS listener (winrm quickconfig -transport:https) and TCP "
                "5986 (5985 for http) allowed in its firewall; check [wsman] url")
HUNG_FIX = ("on the host: restart the WinRM service (Restart-Service WinRM) and the "
            "Hyper-V management service (Restart-Service vmms), or the host itself")
AUTH_FIX = ("set [wsman] auth to a method the host offers, or turn that method on at the "
            "host (Get-ChildItem WSMan:\\localhost\\Service\\Auth lists them)")
TLS_FIX = ("give [wsman] ca_file = the CA (or the certificate) of the host's WinRM listener; "
           "verify_tls = false only in a lab")


@dataclass(frozen=True)
class Options:
    vswitches: tuple[str, ...] = ()  # traffic labels the zone uses: each must be a vSwitch
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES


@dataclass
class Target:
    """The host as the agent would drive it: its backend, its files, our clock."""

    config: AgentConfig
    hyperv: HyperV
    files: HostFiles
    clock: Callable[[], float] = field(default=time.time)
    wsman: WsmanCim | None = None  # the WinRM backend, when the host is reached over WinRM
    #: The emulated host does not exist in ``state_dir`` yet: a fresh one, in a temporary
    #: folder removed afterwards, stands for the one the first start makes.
    throwaway: bool = False

    @property
    def pool(self) -> str:
        return self.config.agent.local_storage_path

    @property
    def where(self) -> str:
        if self.wsman is not None:
            s = self.wsman.settings
            transport = "https" if s.ssl else "http with message encryption"
            return f"WinRM at {s.where} ({s.auth}, {transport})"
        return f"the {self.config.agent.backend} backend"


CheckFn = Callable[[Target, Options], Awaitable[Check]]


async def run_checks(target: Target, options: Options) -> Report:
    """Every check, in order; after a failed ``connection`` the others are skipped."""
    report = Report()
    if report.add(await connection(target, options)).status is Status.FAIL:
        for name, _ in LATER:
            report.add(Check(name, Status.SKIP, "the host did not answer"))
        return report
    for name, check in LATER:
        try:
            report.add(await check(target, options))
        except AgentError as error:  # what a check did not foresee is still one line
            report.add(Check(name, Status.FAIL, str(error), "see the error"))
    return report


# --- the checks ---------------------------------------------------------------------------


async def connection(target: Target, _: Options) -> Check:
    try:
        facts = await asyncio.wait_for(host.host_facts(target.hyperv), ANSWER_WITHIN_S)
    except TimeoutError:
        return Check("connection", Status.FAIL, f"{target.where} did not answer within "
                     f"{ANSWER_WITHIN_S:g} s (hung, or too busy to answer)", HUNG_FIX)
    except CimAuthNotOffered as error:
        return Check("connection", Status.FAIL, str(error), AUTH_FIX)
    except CimAccessDenied as error:
        return Check("connection", Status.FAIL, str(error), ACCOUNT_FIX)
    except CimError as error:
        text = str(error)
        fix = TLS_FIX if "certificate" in text else LISTENER_FIX
        return Check("connection", Status.FAIL, text, fix if _is_wsman(target) else
                     "see the error")
    fresh = (f" (no emulated host in {target.config.agent.state_dir} yet: a fresh one, as "
             "the first start makes it there, checked in a temporary folder and removed "
             "afterwards)") if target.throwaway else ""
    return Check("connection", Status.OK, f"{target.where} answers: {facts.host_name}, "
                 f"{facts.os_caption} {facts.os_version}, {facts.cores} cores, "
                 f"{facts.memory_bytes / GIB:.0f} GiB{fresh}")


async def limits(target: Target, _: Options) -> Check:
    if target.wsman is None:
        return Check("winrm limits", Status.SKIP, f"{target.where} is not WinRM")
    try:
        found = await target.wsman.service_limits()
    except CimAccessDenied:
        return Check("winrm limits", Status.WARN, "WinRM's configuration is not readable by "
                     "this account, so it is no administrator of the host: its defaults are "
                     "assumed, and the administrative shares (C$) the agent reaches the "
                     "host's files through will refuse it", "add the account to the host's "
                     "Administrators group; or compare winrm get winrm/config with [wsman] "
                     "max_envelope_bytes, operation_timeout_s and max_concurrent_requests")
    detail = (f"MaxEnvelopeSizekb {found.max_envelope_kb}, MaxTimeoutms "
              f"{found.max_timeout_ms}, MaxBatchItems {found.max_batch_items}")
    if found.max_concurrent_operations_per_user is not None:
        detail += f", MaxConcurrentOperationsPerUser {found.max_concurrent_operations_per_user}"
    short = _below_settings(found, target.wsman.settings)
    if short:
        return Check("winrm limits", Status.WARN, f"{detail}: below the agent's settings",
                     "; ".join(short))
    return Check("winrm limits", Status.OK, detail)


def _below_settings(found: WinrmLimits, settings: WsmanSettings) -> list[str]:
    """How to fix each host limit below what the agent is configured to use."""
    fixes = []
    if found.max_envelope_kb * 1024 < settings.max_envelope_bytes:
        fixes.append(f"[wsman] max_envelope_bytes = {found.max_envelope_kb * 1024}, or on "
                     "the host: winrm set winrm/config @{MaxEnvelopeSizekb=\"500\"}")
    if found.max_timeout_ms < settings.operation_timeout_s * 1000:
        fixes.append(f"[wsman] operation_timeout_s = {found.max_timeout_ms // 1000}, or "
                     "winrm set winrm/config @{MaxTimeoutms=\"60000\"}")
    quota = found.max_concurrent_operations_per_user
    if quota is not None and quota < settings.max_concurrent_requests:
        # Past the quota WinRM refuses a request (ERROR_WSMAN_QUOTA_MAX_OPERATIONS) and the
        # command that sent it fails: the agent sends up to max_concurrent_requests at once.
        fixes.append(f"[wsman] max_concurrent_requests = {max(quota, 1)}, or on the host: "
                     "winrm set winrm/config/service "
                     "@{MaxConcurrentOperationsPerUser=\"1500\"}")
    return fixes


async def namespace(target: Target, _: Options) -> Check:
    try:
        count = await host.vm_count(target.hyperv)
    except CimInvalidClass as error:
        return Check("namespace", Status.FAIL, f"{NAMESPACE} does not answer: {error}",
                     "install Hyper-V: Install-WindowsFeature Hyper-V "
                     "-IncludeManagementTools -Restart")
    except CimAccessDenied as error:
        return Check("namespace", Status.FAIL, str(error), "give the account access to "
                     f"{NAMESPACE}: add it to Hyper-V Administrators (and, for WinRM, to "
                     "Administrators or Remote Management Users)")
    return Check("namespace", Status.OK, f"{NAMESPACE} answers: {count} VMs")


async def services(target: Target, _: Options) -> Check:
    wanted = [use.name for use in inventory.services()]
    try:
        states = await host.services(target.hyperv, wanted)
    except CimInvalidClass as error:
        return Check("services", Status.FAIL, str(error), SCHEMA_FIX)
    down = [s.class_name for s in states if s.name is None or not s.started]
    if down:
        return Check("services", Status.FAIL, f"not running: {', '.join(down)}",
                     "start the Hyper-V Virtual Machine Management service: Start-Service "
                     "vmms (and check Get-Service vmms)")
    return Check("services", Status.OK, f"{', '.join(s.name or '' for s in states)} started")


SCHEMA_FIX = ("this Hyper-V lacks what the agent uses: run Windows Server 2016 or later with "
              "its updates; if it is, check the WMI repository (winmgmt /verifyrepository) "
              "and restart vmms")


#: Performance counter classes come with Windows, not with Hyper-V: when they are missing,
#: the counter registrations are damaged (Microsoft's "Manually rebuild performance counter
#: library values"), and rebuilding them brings the classes back into WMI.
COUNTERS_FIX = ("rebuild the host's performance counters, as Administrator: lodctr /R, "
                "then winmgmt /resyncperf, then Restart-Service winmgmt -Force")


async def schema(target: Target, _: Options) -> Check:
    shortfall = await inventory.missing_on(target.hyperv)
    present = (f"{shortfall.classes_checked} classes, {shortfall.names_checked} names "
               "(classes, properties, methods, parameters) the agent uses")
    fix = COUNTERS_FIX if shortfall.counters_only() else SCHEMA_FIX
    spared = ", ".join(f"{name} ({lost})" for name, lost in shortfall.spared)
    if shortfall.missing:
        return Check("schema", Status.FAIL, f"missing on this host: "
                     f"{', '.join(shortfall.missing)}{'; also ' + spared if spared else ''}",
                     fix)
    note = (f"; absent (optional): {', '.join(shortfall.absent_optional)}"
            if shortfall.absent_optional else "")
    if spared:
        return Check("schema", Status.WARN, f"missing on this host: {spared}; the rest of "
                     f"the {present} is present{note}", fix)
    return Check("schema", Status.OK, f"{present} are present{note}")


async def switches(target: Target, options: Options) -> Check:
    names = await host.switch_names(target.hyperv)
    create = "New-VMSwitch -Name <label> -NetAdapterName <NIC>"
    if not names:
        return Check("vswitches", Status.FAIL, "the host has no virtual switch",
                     f"create an external vSwitch named as the zone's traffic label: {create}")
    missing = [label for label in options.vswitches if host.switch_named(names, label) is None]
    if missing:
        return Check("vswitches", Status.FAIL, f"no vSwitch named {', '.join(missing)} "
                     f"(the host has: {', '.join(names)})",
                     f"create it ({create}) or set the zone's traffic label to one of "
                     f"{', '.join(names)}")
    return Check("vswitches", Status.OK, ", ".join(names))


async def vhd_path(target: Target, options: Options) -> Check:
    pool = target.pool
    exists = await target.files.exists(pool)
    measured = pool if exists else PureWindowsPath(pool).anchor
    reservation = Reservation(target.config.agent.root_device_name,
                              target.config.agent.root_device_reserved_bytes)
    total, free = await pool_usage(target.files, measured, reservation)
    detail = (f"{pool}{'' if exists else ' (made at the first start)'}: "
              f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB")
    if free < options.min_free_bytes:
        return Check("vhd path", Status.FAIL, f"{detail}, below {options.min_free_bytes / GIB:g}"
                     " GiB", "free space on that volume, or set [agent] local_storage_path to "
                     "a folder on a volume with room")
    return Check("vhd path", Status.OK, detail)


async def files(target: Target, _: Options) -> Check:
    route = _route(target.files, target.pool)
    name = "admin shares" if "administrative share" in route else "host files"
    probe = f"{target.pool}\\.hyperv-agent-doctor-{uuid.uuid4().hex[:8]}"
    try:
        await target.files.make_dirs(target.pool)
        await target.files.write_text(probe, "hyperv-agent doctor")
        read = await target.files.read_text(probe)
        await target.files.remove(probe)
    except AgentError as error:
        return Check(name, Status.FAIL, f"{route}: {error}", _shares_fix(target) if
                     name == "admin shares" else "see the error")
    if read != "hyperv-agent doctor":
        return Check(name, Status.FAIL, f"{route}: a file written could not be read back",
                     "check the share's permissions")
    return Check(name, Status.OK, f"{route}: readable and writable")


SHARES_FIX = ("on the host: File and Printer Sharing (TCP 445) allowed in its firewall; the "
              "WinRM account a member of Administrators (a local account other than "
              "Administrator also needs LocalAccountTokenFilterPolicy = 1)")
UAC_REMOTE_FIX = ("New-ItemProperty -Path HKLM:\\SOFTWARE\\Microsoft\\Windows\\"
                    "CurrentVersion\\Policies\\System -Name LocalAccountTokenFilterPolicy "
                    "-Value 1 -PropertyType DWord -Force")


def shares_fix(username: str | None, host_name: str) -> str:
    """How to open the host's administrative shares to the WinRM account ``username``.

    Remote UAC gives a local account (``user``, ``.\\user``, ``HOST\\user``) other than
    the built-in Administrator a filtered token over the network, without its
    administrator rights, so ``C$`` refuses it even in Administrators until
    LocalAccountTokenFilterPolicy is 1; a domain account in Administrators is not filtered.
    """
    firewall = "on the host: File and Printer Sharing (TCP 445) allowed in its firewall"
    if not username:
        return SHARES_FIX
    domain, _, user = username.rpartition("\\")
    if domain not in ("", ".") and _is_address(host_name):  # HV01\\user or a domain's?
        return SHARES_FIX
    if "@" in user or (domain and domain != "." and
                       domain.lower() != host_name.split(".")[0].lower()):
        return (f"{firewall}; {username} a member of the host's Administrators group "
                f"(Add-LocalGroupMember -Group Administrators -Member {username})")
    member = f"{firewall}; the local account {user} a member of Administrators"
    if user.lower() == "administrator":
        return f"{member} (the built-in Administrator is not filtered by remote UAC)"
    return (f"{member}, and remote UAC told to give local administrators their rights over "
            f"the network: {UAC_REMOTE_FIX}")


async def clock(target: Target, _: Options) -> Check:
    """The host's clock against this machine's, and this machine's against the file
    server of each shared pool by the agent's last heartbeat stamp there
    (``_stamp_skews``; the line names the pool furthest off)."""
    skew = await host.host_clock(target.hyperv) - target.clock()
    side = "ahead of" if skew >= 0 else "behind"
    detail = f"the host's clock is {abs(skew):.1f} s {side} this machine's"
    fix = "synchronise both with NTP (on the host: w32tm /resync; here: chrony or timesyncd)"
    worst, warn = abs(skew), abs(skew) > CLOCK_WARN_S
    stamps = await _stamp_skews(target)
    if stamps:
        root, off = max(stamps, key=lambda found: abs(found[1]))
        detail += (f"; by the agent's heartbeat stamp in {root}, this machine's is "
                   f"{abs(off):.0f} s {'ahead of' if off >= 0 else 'behind'} its file "
                   "server's")
        worst, warn = max(worst, abs(off)), warn or abs(off) > heartbeat.SKEW_WARN_S
        fix = ("synchronise this machine, the host and the pools' file servers with NTP "
               "(on Windows: w32tm /resync; here: chrony or timesyncd)")
    broken = clock_breaks(target.config, worst)
    if broken:
        return Check("clock", Status.FAIL, f"{detail}: {'; '.join(broken)}", fix)
    if warn:
        return Check("clock", Status.WARN, detail, fix)
    return Check("clock", Status.OK, detail)


async def _stamp_skews(target: Target) -> list[tuple[str, float]]:
    """(pool root, skew) for the agent's own heartbeat stamp in each registered shared
    pool: how far the clock that wrote it (this machine's, where the agent runs) was
    ahead of the file server's, which set the file's time (``heartbeat.stamp_skew``), as
    the running agent measures it at each stamp. Read only; no stamp yet (no address
    known, the agent not started), or one that cannot be read, is left out: the ``smb
    pools`` line names the pools that cannot be reached."""
    state_dir = target.config.agent.state_dir
    ip = state.kept_private_ip(state_dir) or target.config.agent.private_ip
    if not ip:
        return []
    try:
        stored = state.stored_pools(state_dir / "pools.json")
    except AgentError:  # the ``smb pools`` line says so
        return []
    found: list[tuple[str, float]] = []
    for root in sorted({pool.root for pool in stored.values() if pool.shared},
                       key=str.casefold):
        path = heartbeat.heartbeat_path(root, ip)
        try:
            text = await target.files.read_text(path)
            stamped = await target.files.stat(path) if text is not None else None
        except AgentError:
            continue
        skew = heartbeat.stamp_skew(text, stamped.modified_ns if stamped else None)
        if skew is not None:
            found.append((root, skew))
    return found


def clock_breaks(config: AgentConfig, skew_s: float) -> list[str]:
    """What a skew of ``skew_s`` seconds between this machine and the host breaks.

    A neighbour reads a heartbeat stamp at most ``heartbeat_interval_s`` after it was
    written and calls its host down when it is older than ``heartbeat_stale_s``; stamps are
    written with the writer's clock (this machine's in agentless mode, the host's for an
    agent running on its host). This agent judges their age by the file server's clock,
    but a neighbour running the C# agent (a cluster upgraded host by host) reads them with
    its own: a writer behind it by more than the difference looks dead to it, and a live
    host is called Down: with the defaults (60 s, 180 s) that is 120 s, below Kerberos's
    5 minutes."""
    agent = config.agent
    margin = agent.heartbeat_stale_s - agent.heartbeat_interval_s
    broken = []
    if skew_s > margin:
        broken.append(f"beyond {margin:g} s HA heartbeats (stale after "
                      f"{agent.heartbeat_stale_s:g} s, written every "
                      f"{agent.heartbeat_interval_s:g} s) may look stale to a neighbour "
                      "running the C# agent, which calls this live host down: the management "
                      "server marks it Down and raises an alert")
    if skew_s > CLOCK_FAIL_S:
        broken.append(f"beyond {CLOCK_FAIL_S:g} s Kerberos (WinRM, live migration, SMB) "
                      "refuses to authenticate")
    return broken


PREREQUISITES = "docs/host-prerequisites.md"
ENABLE_FIX = ("on the host: Enable-VMMigration; Set-VMHost "
              "-VirtualMachineMigrationAuthenticationType Kerberos "
              f"-MaximumVirtualMachineMigrations 2 (see {PREREQUISITES})")
KERBEROS_FIX = ("Set-VMHost -VirtualMachineMigrationAuthenticationType Kerberos, and in Active "
                "Directory let this host delegate cifs and Microsoft Virtual System Migration "
                f"Service to every other host, any authentication protocol (see {PREREQUISITES})")


async def live_migration(target: Target, _: Options) -> Check:
    found = await host.migration(target.hyperv)
    if not found.enabled:
        return Check("live migration", Status.FAIL, "live migration is disabled: CloudStack "
                     "can neither move VMs to or from this host nor evacuate it for "
                     "maintenance", ENABLE_FIX)
    detail = f"enabled, {found.simultaneous} at once"
    if found.kerberos:
        return Check("live migration", Status.OK, f"{detail}, Kerberos")
    if _is_wsman(target):  # the agent starts moves from another machine
        return Check("live migration", Status.WARN, f"{detail}, CredSSP: it authenticates "
                     "only moves started on the source host itself; those this agent starts "
                     "over WinRM fail with 'no suitable credentials available' (0x8009030E)",
                     KERBEROS_FIX)
    return Check("live migration", Status.OK, f"{detail}, CredSSP (moves are started on the "
                 "source host itself, as this agent does)")


async def migration_networks(target: Target, _: Options) -> Check:
    found = await host.migration(target.hyperv)
    if not found.networks:
        return Check("migration networks", Status.WARN, "no migration network: incoming "
                     "moves are accepted only if the host uses any network for migration",
                     "on the host: Add-VMMigrationNetwork <subnet of the hosts' private "
                     "network>, and allow TCP 6600 from the other hosts in its firewall")
    private = target.config.agent.private_ip
    if private and not any(_within(private, subnet) for subnet in found.networks):
        return Check("migration networks", Status.WARN, f"{', '.join(found.networks)}: "
                     f"none holds the private address {private}",
                     f"Add-VMMigrationNetwork for the subnet of {private}, or check [agent] "
                     "private_ip")
    return Check("migration networks", Status.OK, f"{', '.join(found.networks)} (TCP 6600 "
                 "from the other hosts must be allowed)")


async def console_relay(target: Target, _: Options) -> Check:
    """Whether the console relay of agentless mode can reach the host's VMConnect: one TCP
    connection opened and closed at once, nothing sent."""
    relayed = relay_target(target.config)
    if relayed is None:
        return Check("console relay", Status.OK, "no relay: the console proxy reaches "
                     "VMConnect (TCP 2179) on the host itself")
    where = f"{relayed.host}:{relayed.port}"
    try:
        writer = (await asyncio.wait_for(asyncio.open_connection(relayed.host, relayed.port),
                                            CONNECT_PROBE_S))[1]
    except TimeoutError:
        reason = f"no answer within {CONNECT_PROBE_S:g} s (dropped by a firewall?)"
    except OSError as error:
        reason = error.strerror or str(error)
    else:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Check("console relay", Status.OK, f"VMConnect at {where} accepts connections "
                     f"from this machine; the relay listens on "
                     f"{target.config.agent.console_relay_listen}")
    return Check("console relay", Status.FAIL, f"VMConnect at {where} cannot be reached from "
                 f"this machine: {reason}; every VM console CloudStack opens fails",
                 f"on the host: allow TCP {relayed.port} from this machine in its firewall "
                 f"(check with Test-NetConnection {relayed.host} -Port {relayed.port} from "
                 "another machine); check [agent] console_relay_target_port")


NO_ACCOUNT = ("no account in [agent.smb_credentials] and no credentials kept for it: "
              "credentials arrive when the management server reconnects "
              "(ModifyStoragePoolCommand's details), unless it encrypts its database: it "
              "then sends the password encrypted, which no file server takes, and the "
              "account belongs in [agent.smb_credentials]")


async def smb_pools(target: Target, _: Options) -> Check:
    """Read only: each shared pool in ``pools.json`` (stored without credentials) listed at
    its root, with the credentials the agent keeps for it (``pool-credentials.json``) or
    else the account it would use, and each server of ``smb_servers`` and
    ``[agent.smb_credentials]`` without such a pool logged on to; one reached through
    smbprotocol with neither is not tried (its pools' credentials come in the details of the
    management server's next ModifyStoragePoolCommand, encrypted where it encrypts its
    database: those need ``[agent.smb_credentials]``). A password never appears in the
    line."""
    state_dir = target.config.agent.state_dir
    try:
        stored = state.stored_pools(state_dir / "pools.json")
        kept = state.stored_shares(state_dir)
    except AgentError as error:
        return Check("smb pools", Status.WARN, str(error), "the agent starts without the "
                     "pools or credentials it cannot read; the management server registers "
                     "them again when it reconnects")
    for share in kept:  # as the agent hands them over at start
        target.files.use_kept_credentials(share)
    with_credentials = {share.root.casefold() for share in kept}
    roots = sorted({pool.root for pool in stored.values()
                    if pool.shared and pool.root.startswith("\\")}, key=str.casefold)
    pooled = {_server_of(root).casefold() for root in roots}
    servers = [server for server in target.config.agent.smb_routed_servers
               if server.casefold() not in pooled]
    if not roots and not servers:
        return Check("smb pools", Status.OK, "none registered yet (the management server "
                     "registers its pools when the host connects)")
    reached: list[str] = []
    waiting: list[str] = []
    failed: list[tuple[str, str]] = []  # (what failed, fix)
    for root in roots:
        await _reach(target, root, _server_of(root), reached, waiting, failed,
                     root.casefold() in with_credentials)
    for server in servers:
        await _reach(target, None, server, reached, waiting, failed)
    parts = [what for what, _ in failed]
    if reached:
        parts.append(f"reached {', '.join(reached)}")
    if waiting:
        parts.append(f"not tried {', '.join(waiting)}: {NO_ACCOUNT}")
    fixes = list(dict.fromkeys(fix for _, fix in failed))
    return Check("smb pools", Status.FAIL if failed else Status.OK, "; ".join(parts),
                 "; ".join(fixes))


async def state_files(target: Target, _: Options) -> Check:
    """Read only: the copies of the agent's own state files (``pools.json``,
    ``building.json``, ``agent-id``, ``pool-credentials.json``, the generated TLS pair) it
    could not read or use and set aside beside them (``state.set_aside``), for the operator
    to look at; a copy of the SMB pools' credentials is named as holding passwords."""
    state_dir = target.config.agent.state_dir
    copies = state.set_aside_copies(state_dir)
    if not copies:
        return Check("state files", Status.OK, f"none set aside in {state_dir}")
    shown = ", ".join(str(copy.relative_to(state_dir)) for copy in copies)
    with_passwords = [copy.name for copy in copies
                      if copy.parent == state_dir
                      and copy.name.startswith(state.CREDENTIALS_FILE + ".")]
    held = (f"; {', '.join(with_passwords)} may hold SMB pools' passwords in the clear"
            if with_passwords else "")
    fix = ("read what they held, then delete them; the agent keeps only the newest "
           f"{state.KEPT_ASIDE} copies of each file")
    if with_passwords:
        fix += (f"; delete each copy of {state.CREDENTIALS_FILE} as soon as it is read "
                "(the agent removes them itself when a pool is removed)")
    return Check("state files", Status.WARN,
                 f"{len(copies)} set aside in {state_dir} (the agent could not read or use "
                 f"them, went on without them and said so in its log): {shown}{held}", fix)


async def _reach(target: Target, root: str | None, server: str, reached: list[str],
                 waiting: list[str], failed: list[tuple[str, str]],
                 kept: bool = False) -> None:
    """List ``root`` (a pool's, ``kept``: with its kept credentials), else log on to
    ``server``; the outcome added to a list, naming the account that reached it: the
    root's own (each pool of a server may have its own), else the server's."""
    smb = target.files.smb_for(server)
    what = root or f"SMB server {server}"

    def account() -> Credentials | None:
        if smb is None:
            return None
        return smb.account_for(root) if root is not None else smb.credentials_for(server)

    try:
        if smb is not None and not kept and account() is None:
            waiting.append(what)
            return
        if root is not None:
            await target.files.list_dir(root)
        elif smb is not None:
            await smb.log_on(server)
        else:  # reached natively, with the host's own identity: nothing to log on to
            waiting.append(what)
            return
    except AgentError as error:
        failed.append((str(error), _smb_fix(str(error), server, target)))
        return
    reached_as = account()
    reached.append(f"{what} as {reached_as.qualified_user}" if reached_as is not None
                   else what)




def _server_of(root: str) -> str:
    return root[2:].split("\\", 1)[0]


def _smb_fix(error: str, server: str, target: Target) -> str:
    port = target.config.agent.smb_port
    if "refused the logon" in error:
        return (f'check the account for "{server}" in [agent.smb_credentials] (or the '
                "pool's user and password in CloudStack's storage pool URL)")
    if "cannot be reached" in error or "stopped answering" in error:
        return (f"allow TCP {port} from this machine to {server} (Test-NetConnection "
                f"{server} -Port {port}); check [agent] smb_port")
    if "has no share named" in error:
        return f"create the share on {server}, or fix the pool's path in CloudStack"
    if "no such file or folder" in error:
        return "create the pool's folder on the share, or fix the pool's path in CloudStack"
    if "access denied" in error:
        return "give the account Full Control on the share and the pool's folder"
    return "see the error"


LATER: tuple[tuple[str, CheckFn], ...] = (
    ("winrm limits", limits), ("namespace", namespace), ("services", services),
    ("schema", schema), ("vswitches", switches), ("vhd path", vhd_path),
    ("host files", files), ("smb pools", smb_pools), ("state files", state_files),
    ("clock", clock),
    ("live migration", live_migration), ("migration networks", migration_networks),
    ("console relay", console_relay),
)


# --- helpers ------------------------------------------------------------------------------


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _within(address: str, subnet: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        return False


def _shares_fix(target: Target) -> str:
    host_name = target.wsman.settings.host if target.wsman is not None else ""
    return shares_fix(target.config.wsman.username, host_name)


def _is_wsman(target: Target) -> bool:
    return target.wsman is not None


def _route(files: HostFiles, path: str) -> str:
    """How ``path`` is reached, for the line."""
    base = files.base if isinstance(files, RoutedFiles) else files
    anchor = PureWindowsPath(path).anchor
    if isinstance(base, AdminShareFiles):
        return f"{base.remote(anchor)} (administrative share)"
    if isinstance(base, EmulatedFiles):
        return f"{anchor} mapped to {base.local(anchor)}"
    return f"{anchor} on this machine"
