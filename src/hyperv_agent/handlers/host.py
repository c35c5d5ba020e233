"""Host registration and health: Startup, the VM state report, Ready, Setup, pings, health,
network check, maintenance, host statistics and the HA check (protocol §4, §5.1, §5.3)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack import commands_host as wire
from hyperv_agent.cloudstack.answers import (
    Answer,
    CheckHealthAnswer,
    CheckNetworkAnswer,
    CheckOnHostAnswer,
    CleanupPersistentNetworkResourceAnswer,
    GetHostStatsAnswer,
    MaintainAnswer,
    ReadyAnswer,
    SetupAnswer,
    SetupPersistentNetworkAnswer,
)
from hyperv_agent.cloudstack.commands_network import (
    CleanupPersistentNetworkResourceCommand,
    SetupPersistentNetworkCommand,
)
from hyperv_agent.cloudstack.enums import PowerState
from hyperv_agent.cloudstack.objects import HostStatsEntry
from hyperv_agent.cloudstack.storage_objects import StoragePoolInfo
from hyperv_agent.errors import AgentError, HyperVError, InvalidRequest
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.heartbeat import Heartbeats, HeartbeatTiming, Liveness
from hyperv_agent.handlers.hostcheck import HostCheck
from hyperv_agent.handlers.locks import at_most
from hyperv_agent.handlers.storage import Reservation, pool_usage
from hyperv_agent.handlers.vm import VmLocks, cloudstack_power
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hyperv import host, jobs, vms
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.state import PoolRegistry

log = logging.getLogger("hyperv_agent.handlers.host")

RDP_PORT = 2179  # Hyper-V VMConnect: the console proxy connects here (protocol §8)
DEFAULT_HYPERVISOR_VERSION = "6.2"
UEFI_ENABLE = "host.uefi.enable"  # ReadyAnswer.detailsMap key (com.cloud.host.Host)
CLOUDSTACK_NOTE = "cloudstack"


@dataclass(frozen=True)
class HostSettings:
    """What the host handlers need from the configuration."""

    private_ip: str | None = None  # None: the address the management server registers
    dom0_min_memory_mb: int = 2048
    local_pool_path: str = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
    reservation: Reservation = field(default_factory=Reservation)
    # What the management server looks hypervisor_capabilities up by: its only Hyperv row
    # is 6.2, and a version without a row fails volume attachment there.
    hypervisor_version: str = DEFAULT_HYPERVISOR_VERSION
    # Where the console proxy connects (rdp.server.port): VMConnect's port, or the console
    # relay's when the agent drives another machine.
    console_port: int = RDP_PORT
    heartbeat: HeartbeatTiming = field(default_factory=HeartbeatTiming)


class HostHandlers:
    def __init__(self, hv: HyperV, files: HostFiles, settings: HostSettings,
                 pools: PoolRegistry | None = None, clock: Callable[[], float] = time.time,
                 locks: VmLocks | None = None, heartbeats: Heartbeats | None = None,
                 check: HostCheck | None = None) -> None:
        self.hv = hv
        self.check = check if check is not None else HostCheck(hv)
        self.files = files
        self.settings = settings
        self.pools = pools
        self.clock = clock
        self.locks = locks if locks is not None else VmLocks()  # shared with the VM commands
        self.heartbeats = heartbeats if heartbeats is not None else Heartbeats(
            files, pools, settings.heartbeat, clock, settings.private_ip,
            host_check=self.check)

    @property
    def private_ip(self) -> str | None:
        """The host's address on the management network (its NIC's counters are the host
        statistics'): configured, or else the one learnt from the StartupCommand."""
        return self.settings.private_ip or self.heartbeats.private_ip

    @private_ip.setter
    def private_ip(self, ip: str | None) -> None:
        self.heartbeats.private_ip = ip

    def table(self) -> Routes:
        return {
            names.STARTUP_COMMAND: Route(wire.StartupRoutingCommand, self.startup),
            names.HOST_VM_STATE_REPORT_COMMAND: Route(wire.HostVmStateReportCommand,
                                                      self.state_report),
            names.READY_COMMAND: Route(wire.ReadyCommand, self.ready),
            names.SETUP_COMMAND: Route(wire.SetupCommand, self.setup),
            names.PING_COMMAND: Route(wire.PingCommand, self.ping),
            names.PING_ROUTING_COMMAND: Route(wire.PingRoutingCommand, self.ping),
            names.CHECK_HEALTH_COMMAND: Route(wire.CheckHealthCommand, self.check_health),
            names.CHECK_NETWORK_COMMAND: Route(wire.CheckNetworkCommand, self.check_network),
            names.SETUP_PERSISTENT_NETWORK_COMMAND: Route(SetupPersistentNetworkCommand,
                                                          self.setup_persistent_network),
            names.CLEANUP_PERSISTENT_NETWORK_RESOURCE_COMMAND: Route(
                CleanupPersistentNetworkResourceCommand, self.cleanup_persistent_network),
            names.MAINTAIN_COMMAND: Route(wire.MaintainCommand, self.maintain),
            names.GET_HOST_STATS_COMMAND: Route(wire.GetHostStatsCommand, self.host_stats),
            names.CHECK_ON_HOST_COMMAND: Route(wire.CheckOnHostCommand, self.check_on_host),
        }

    # --- registration ---------------------------------------------------------------------

    async def startup(self, command: wire.StartupRoutingCommand) -> Result:
        """Echo the management server's StartupRoutingCommand with the host's facts filled
        in, plus the local storage pool. ``memory`` is what VMs may have: the host's
        memory less ``dom0_min_memory_mb``, the parent partition's. Read-only; safe to
        repeat."""
        facts = await host.host_facts(self.hv)
        ip = self.settings.private_ip or command.private_ip_address or ""
        if command.private_ip_address:
            self._learn_registered(command.private_ip_address)
        nic = await host.management_nic(self.hv, ip)
        reserved = self.settings.dom0_min_memory_mb * 1024 * 1024
        routing = command.model_copy(update={
            "private_netmask": nic.netmask if nic else None,
            "private_mac_address": nic.mac if nic else None,
            "storage_netmask": nic.netmask if nic else None,
            "storage_mac_address": nic.mac if nic else None,
            "gateway_ip_address": nic.gateway if nic else None,
            "cpus": facts.cores, "cpu_sockets": facts.sockets, "speed_mhz": facts.cpu_mhz,
            # The management server takes ``memory`` as the host's memory capacity and
            # never reads dom0MinMemory (only the hypervisor resources subtract their own
            # reservation, as KVM's does): the parent partition's share is left out here,
            # or VMs are placed in the memory it uses and Hyper-V refuses to start them.
            "memory_bytes": max(0, facts.memory_bytes - reserved),
            "dom0_min_memory_bytes": reserved,
            "caps": "hvm", "hypervisor_version": self.settings.hypervisor_version,
            "host_details": {**command.host_details, **self._details(facts)},
        })
        return codec.encode_startup_reply(routing, await self._local_pool(command))

    def _learn_registered(self, registered: str) -> None:
        """Stamp heartbeats under ``registered``, the address the management server
        registered this host under: it is the one its HA investigator asks neighbours
        about (CheckOnHostCommand's ``host.privateNetwork.ip``), whatever ``[agent]
        private_ip`` says. A configured address that differs (an agentless agent given
        the Hyper-V host's own address) still names the NIC reported, and is logged."""
        configured = self.settings.private_ip
        if configured and configured != registered.strip():
            log.warning("the management server registered this host as %s, not as [agent] "
                        "private_ip %s: heartbeats are stamped as %s, the address its HA "
                        "investigator asks about; %s names the NIC reported",
                        registered, configured, registered, configured)
        self.heartbeats.learn(registered)

    def _details(self, facts: host.HostFacts) -> dict[str, str]:
        """The host details the reply adds. ``product_version`` is the version the
        management server looks hypervisor capabilities up by (before hypervisorVersion,
        when it counts the data volumes a VM may have), so it is the reported hypervisor
        version too; the host's real Windows version is in ``os`` and ``os_version``."""
        return {"product_version": self.settings.hypervisor_version,
                "os": facts.os_caption or "Windows", "os_version": facts.os_version,
                "rdp.server.port": str(self.settings.console_port)}

    async def _local_pool(self, command: wire.StartupRoutingCommand
                          ) -> wire.StartupStorageCommand | None:
        path = self.settings.local_pool_path
        try:
            await self.files.make_dirs(path)
            total, free = await pool_usage(self.files, path, self.settings.reservation)
        except AgentError as error:
            log.warning("local storage pool %s left out of the startup reply: %s", path, error)
            return None
        pool_uuid = command.guid or str(uuid.uuid4())
        if self.pools is not None:  # no command may register another root under it
            self.pools.name_local(pool_uuid)
        info = StoragePoolInfo(uuid=pool_uuid, host=command.private_ip_address, local_path=path,
                               host_path=path, pool_type="Filesystem", capacity_bytes=total,
                               available_bytes=free)
        return wire.StartupStorageCommand(pool_info=info, guid=pool_uuid,
                                          resource_type="STORAGE_POOL",
                                          data_center=command.data_center)


    # --- the VM state report ------------------------------------------------------------

    async def state_report(self, command: wire.HostVmStateReportCommand) -> Result:
        """Running and paused VMs report PowerOn (a paused VM still holds its memory and
        disks; left out, the MS would sync it to Stopped and release its resources). A
        stopped VM created by CloudStack is removed from
        Hyper-V (its disks stay) and left out, so CloudStack sees it as stopped: CloudStack
        VMs exist on the host only while they run; one whose removal fails reports
        PowerOff, as does a saved one (``_kind``). A VM a command is starting, stopping,
        migrating or changing (its lock held or waited for) is never removed, nor is one no
        longer off when its removal comes (the listing is stale by then). Removals run
        concurrently, at most ``REMOVALS_AT_ONCE`` at a time. One round trip when nothing
        is removed. The listing is bounded by the host check (``HostCheck.bounded``): the
        MS asks for the report right before each ping, and on a hung host its ping cycle
        would otherwise wait for the WinRM deadline too; the removals are not (one is never
        cut half-way)."""
        listed = await self.check.bounded(lambda: vms.list_vms(self.hv))
        # Sorting and encoding thousands of VMs takes milliseconds: done on a thread, the
        # event loop goes on serving other requests meanwhile.
        kinds = await asyncio.to_thread(_kinds, listed)
        failed = await self._remove_stopped(
            [vm for vm, kind in zip(listed, kinds, strict=True) if kind is _REMOVE])
        return await asyncio.to_thread(_encoded_report, listed, kinds, failed)

    async def _remove_stopped(self, doomed: Sequence[vms.VmInfo]) -> set[str]:
        """Remove the VMs ``doomed``, ``REMOVALS_AT_ONCE`` at a time; the GUIDs of those
        whose removal failed."""
        if not doomed:
            return set()
        async def remove(vm: vms.VmInfo) -> str | None:
            async with self.locks.hold_if_free(vm.name) as free:
                if not free:
                    log.info("stopped VM %s left alone: a command is working on it", vm.name)
                    return None
                try:
                    # the listing may be stale by now: a command that held the lock since
                    # (a StartCommand finishing the VM) may have started it
                    removed = await vms.remove_if_off(self.hv, vm.guid)
                except HyperVError as error:
                    log.warning("could not remove stopped VM %s: %s", vm.name, error)
                    return vm.guid
            if removed:
                log.info("removed stopped CloudStack VM %s (disks kept)", vm.name)
            else:
                log.info("VM %s left alone: it is no longer off", vm.name)
            return None

        return {guid for guid in await at_most(REMOVALS_AT_ONCE, remove, doomed) if guid}

    # --- health ---------------------------------------------------------------------------

    async def ready(self, command: wire.ReadyCommand) -> Result:
        """Healthy, and what the host can run: ``host.uefi.enable`` is true where Hyper-V
        runs generation 2 (UEFI) VMs, as the management server learns it from KVM hosts;
        without it the MS never places a UEFI VM here. 2 queries, read-only."""
        facts = await host.host_facts(self.hv)
        return ReadyAnswer(result=True, details_map={
            UEFI_ENABLE: "true" if facts.runs_generation_2 else "false"})

    async def setup(self, command: wire.SetupCommand) -> Result:
        return SetupAnswer(result=True, details="success - NOP", reconnect=False)

    async def ping(self, command: wire.PingCommand | wire.PingRoutingCommand) -> Result:
        """Success while the Hyper-V host answers (``HostCheck``, bounded in time): the
        agent may run on another machine than the host, and a dead host whose pings
        succeed would stay Up in the MS for ever, never investigated nor called Down."""
        await self._host_answers()
        short = type(command).FQCN.rsplit(".", 1)[-1]
        return Answer(result=True, details=f"success - NOP for {short}")

    async def check_health(self, command: wire.CheckHealthCommand) -> Result:
        """Alive when Hyper-V answers a query (``HostCheck``, bounded in time)."""
        await self._host_answers()
        return CheckHealthAnswer(result=True, details="resource is alive")

    async def _host_answers(self) -> None:
        found = await self.check.state()
        if not found.usable:
            raise HyperVError(found.says)

    async def check_network(self, asked: wire.CheckNetworkCommand) -> Result:
        """Every traffic label the management server names must be a vSwitch on this host
        (``host.switch_named``: without regard to case, as Hyper-V names switches)."""
        names = await host.switch_names(self.hv)
        missing = sorted({label for label in traffic_labels(asked)
                          if host.switch_named(names, label) is None})
        if missing:
            raise InvalidRequest(f"traffic label(s) {', '.join(missing)} name no virtual "
                                 "switch on this host; create the vSwitch or change the label")
        return CheckNetworkAnswer(result=True)

    async def setup_persistent_network(self, command: SetupPersistentNetworkCommand) -> Result:
        """A persistent L2 network (protocol §5.1): KVM makes its VLAN's bridge on each
        host ahead of any VM. Hyper-V keeps no per-VLAN object on the host: the VLAN is set
        on each VM's own switch port when the VM starts, so what must hold here is only
        that its NICs have a vSwitch: the one its traffic label names (without regard to
        case), or, unlabelled, the host's External switch (``host.external_switch``), as
        StartCommand chooses. Read-only, safe to repeat; 1 query (+the External check)."""
        nic = command.nic
        if nic is None:
            raise InvalidRequest("the command carries no nic (the network's NicTO)")
        switches, external = await host.nic_switches(self.hv, unlabelled=not nic.name)
        switch = host.switch_named(switches, nic.name) if nic.name else external
        if switch is None:
            there = ", ".join(repr(name) for name in switches) or "none"
            raise InvalidRequest(f"the traffic label {nic.name!r} of the persistent network "
                                 f"{nic.broadcast_uri or ''} names no virtual switch on this "
                                 f"host (its switches: {there}); create the vSwitch or "
                                 "change the label")
        return SetupPersistentNetworkAnswer(
            result=True, details=f"{nic.broadcast_uri or 'the network'} is carried by "
                                 f"vSwitch {switch!r}; its VLAN is set on each VM's port")

    async def cleanup_persistent_network(
            self, command: CleanupPersistentNetworkResourceCommand) -> Result:
        """Nothing to remove: ``setup_persistent_network`` creates nothing on the host, and
        a VM's port goes with the VM. A success, so the MS logs no error for each
        persistent network when a network goes or the host is removed."""
        uri = command.nic_to.broadcast_uri if command.nic_to is not None else None
        return CleanupPersistentNetworkResourceAnswer(
            result=True, details=f"nothing to clean up on Hyper-V for {uri or 'the network'}")

    async def maintain(self, command: wire.MaintainCommand) -> Result:
        """Ready for maintenance while the Hyper-V host answers (``HostCheck``, bounded in
        time, as a ping): nothing on the host needs preparing, and ``willMigrate`` lets the
        MS move the VMs off with MigrateCommands. On a success the MS puts the host in
        PrepareForMaintenance and schedules those moves, which a host that does not
        answer can never make; on a failed answer it refuses the request ("Unable to
        prepare for maintenance host", ``ResourceManagerImpl.doMaintain``) and the host
        keeps its state. (A host the MS already has Down it puts in maintenance without
        asking, with ``set.host.down.to.maintenance``.)"""
        await self._host_answers()
        return MaintainAnswer(result=True, details="success - NOP for MaintainCommand",
                              will_migrate=True)

    async def host_stats(self, command: wire.GetHostStatsCommand) -> Result:
        """CPU, memory and the management NIC's network counters (KiB), queried together,
        bounded by the host check (``HostCheck.bounded``)."""
        stats = await self.check.bounded(lambda: host.host_stats(self.hv, self.private_ip))
        entry = HostStatsEntry(host_id=command.host_id,
                               cpu_utilization_percent=stats.cpu_utilization_percent,
                               total_memory_kb=float(stats.total_memory_kib),
                               free_memory_kb=float(stats.free_memory_kib),
                               network_read_kb=stats.received_bytes / 1024,
                               network_write_kb=stats.sent_bytes / 1024)
        return GetHostStatsAnswer(result=True, host_stats=entry)

    async def check_on_host(self, command: wire.CheckOnHostCommand) -> Result:
        """protocol §5.3, inverted as the management server's HypervInvestigator reads it:
        ``result`` true means the neighbour is down (the MS marks it Down and alerts; a 4.22
        MS restarts no Hyper-V VM, and an operator may force-stop its VMs and start them
        elsewhere), so it is true only when a shared pool was read and holds no fresh
        heartbeat of it. A fresh heartbeat, no shared pool to read, or a heartbeat that
        only tells the clocks disagree, answers ``result`` false (the host is kept Up,
        ``determined`` false in the last two cases). Freshness is judged by the file
        server's clock where it can be (``Heartbeats``). The pools are read within half the
        command's ``wait`` (the MS gives CheckOnHost 20 s): one whose file server has not
        answered by then counts as unreadable, so the answer comes while the MS still waits
        for it. Read-only."""
        network = command.host.private_network
        ip = network.ip if network is not None else None
        if ip:
            _check_ip(ip)
        wait_s = command.answer_wait_s
        within_s = None if wait_s is None else wait_s * jobs.WORK_SHARE
        seen = await self.heartbeats.liveness(ip, within_s) if ip else Liveness.UNKNOWN
        if seen is Liveness.ALIVE:
            return CheckOnHostAnswer(result=False, details="host is alive", determined=True,
                                     alive=True)
        if seen is Liveness.DEAD:
            return CheckOnHostAnswer(result=True, details="host is not alive",
                                     determined=True, alive=False)
        registered = len(self.pools.roots()) if self.pools is not None else 0
        if seen is Liveness.SKEWED:
            details = _SKEWED
        elif registered:
            details = _UNREADABLE.format(registered, "" if registered == 1 else "s")
        else:
            details = _UNREGISTERED
        return CheckOnHostAnswer(result=False, details=details, determined=False, alive=False)

    async def write_heartbeats(self, within_s: float | None = None) -> float | None:
        """Stamp this host's heartbeat in every registered shared pool, each on its own,
        waiting for the writes no longer than ``within_s`` when given; when the writes
        started (``Heartbeats.stamp_all``)."""
        return await self.heartbeats.stamp_all(within_s)


_UNREGISTERED = ("cannot tell whether the host is alive: no shared storage pool is "
                 "registered here to hold its heartbeat")
_UNREADABLE = ("cannot tell whether the host is alive: its heartbeat could not be read in "
               "the {} shared storage pool{} registered here (this agent's log says why)")
_SKEWED = ("cannot tell whether the host is alive: its heartbeat is stamped ahead of this "
           "host's clock (the two clocks disagree) and no file time tells its age")
#: How many stopped CloudStack VMs a state report removes at once.
REMOVALS_AT_ONCE = 8


_ON, _UNKNOWN, _OFF, _REMOVE = "on", "unknown", "off", "remove"


def _kinds(listed: Sequence[vms.VmInfo]) -> list[str | None]:
    return [_kind(vm) for vm in listed]


def _encoded_report(listed: Sequence[vms.VmInfo], kinds: Sequence[str | None],
                    failed: set[str]) -> bytes:
    """PowerOn for the VMs reported on, PowerUnknown for those in a state that cannot be
    read, PowerOff for the saved ones and those whose removal failed. Of VMs sharing a
    name, the one reported is the one ``vms.find_vm`` takes (``vms.name_first``: one that
    is on, else one whose state is unknown, as it may run), so CheckVirtualMachine answers
    the state the report sends: a definition left beside the VM must not have the MS stop
    it."""
    chosen: dict[str, vms.VmInfo] = {}
    for vm, kind in zip(listed, kinds, strict=True):
        if kind is None or (kind is _REMOVE and vm.guid not in failed):
            continue
        held = chosen.get(vm.name)
        if held is None or vms.name_first(vm.power) < vms.name_first(held.power):
            chosen[vm.name] = vm
    return codec.encode_state_report({name: cloudstack_power(vm.power)
                                      for name, vm in chosen.items()})


def _kind(vm: vms.VmInfo) -> str | None:
    """_ON for a VM CheckVirtualMachine calls PowerOn (running or paused); _UNKNOWN for
    one in a state it calls PowerUnknown; for a VM CloudStack created, _REMOVE when it is
    stopped and _OFF when it is saved; None for any other.

    A VM whose state cannot be read (Hyper-V shows Unknown, "could not be determined",
    Other, or a number not known here) may well run: left out, the MS would read it as
    PowerReportMissing after its grace period, sync it to Stopped and release its
    resources while it runs here, free to be started a second time on the same disks.
    PowerUnknown keeps the state the MS has (its power-state handler acts on no such
    report) and the VM out of its missing-VM sweep; the VM is not removed.

    A VM this agent's StartCommand is building holds its lock, so it is never removed
    (``_remove_stopped``) and is left out while it is off. Notes saying "CloudStack
    creating VM" are the C# agent's mark of a VM it was building: off and unlocked, that
    is a build the C# agent never finished, removed as any stopped CloudStack VM. The C#
    agent reported such a VM PowerOn for ever, and the MS then synced the stopped VM to
    Running on this host (or saw it "migrated" here while it ran elsewhere).

    A VM Hyper-V is still stopping is not removed yet either (Hyper-V refuses while the
    stop runs) but reported PowerOff: the next report, once it is off, removes it.

    A saved VM is not removed here (that would discard its memory without the MS having
    a say) but reported PowerOff, as CheckVirtualMachine calls it: the MS then stops it
    with a StopCommand (checkBeforeCleanup), which removes it, its disks kept. Left out,
    it was synced to Stopped after the MS's grace period while its definition stayed on
    this host, referring to disks the VM's next start (maybe on another host) uses too,
    and restored later by Hyper-V's automatic start action or an operator."""
    power = cloudstack_power(vm.power)
    if power is PowerState.POWER_ON:
        return _ON
    if power is PowerState.POWER_UNKNOWN:
        return _UNKNOWN
    if CLOUDSTACK_NOTE not in _notes(vm) or power is not PowerState.POWER_OFF:
        return None
    if vm.power is vms.PowerState.STOPPED and vm.changing is None:
        return _REMOVE
    return _OFF


def _notes(vm: vms.VmInfo) -> str:
    return "\n".join(vm.notes).lower()


def _check_ip(ip: str) -> None:
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise AgentError(f"host.privateNetwork.ip {ip!r} is not an IP address") from None


def traffic_labels(command: wire.CheckNetworkCommand) -> Sequence[str]:
    """The vSwitch names of a CheckNetworkCommand's networkInfoList (empty labels skipped)."""
    return [label for info in command.network_info_list or ()
            for label in (info.guest_network_name, info.private_network_name,
                          info.public_network_name, info.storage_network_name) if label]
