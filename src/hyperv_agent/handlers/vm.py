"""VM lifecycle and state: Stop, Reboot, CheckVirtualMachine, GetVncPort, GetVmStats,
GetVmNetworkStats, GetVmIpAddress (protocol §5.1, §5.3, §8).

Commands that change a VM (Stop, Reboot) hold that VM's lock for their whole run, so two
commands about one VM never interleave; commands about different VMs run concurrently.
Read-only commands take no lock.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hyperv_agent import logs
from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import (
    Answer,
    CheckVirtualMachineAnswer,
    GetVmNetworkStatsAnswer,
    GetVmStatsAnswer,
    GetVncPortAnswer,
    RebootAnswer,
    StopAnswer,
)
from hyperv_agent.cloudstack.commands_network import PatchSystemVmCommand
from hyperv_agent.cloudstack.commands_vm import (
    CheckVirtualMachineCommand,
    GetVmIpAddressCommand,
    GetVmNetworkStatsCommand,
    GetVmStatsCommand,
    GetVncPortCommand,
    RebootCommand,
    StopCommand,
)
from hyperv_agent.cloudstack.enums import PowerState
from hyperv_agent.cloudstack.objects import VmNetworkStatsEntry, VmStatsEntry
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.locks import NamedLocks
from hyperv_agent.hyperv import jobs, nics, power, vmio, vms
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.handlers.vm")


VNC_PORT_RDP = -9  # protocol §8: the MS reads -9 as "Hyper-V, connect with RDP to rdp.server.port"

#: The CloudStack power state a Hyper-V power state is reported as (protocol §5.3): a paused VM
#: still holds its host resources, so it counts as on. A VM Hyper-V is changing the state
#: of reads as the state it is in meanwhile (``vms.power_state``): starting, saving,
#: pausing and resuming VMs hold their host resources and are PowerOn (the MS syncs a VM
#: it has Starting, Stopped or Stopping to Running on PowerOn, so a start it did not order
#: is followed); a stopping VM is PowerOff, as os-win reads it: the MS answers PowerOff of
#: a VM it has Running with a StopCommand (checkBeforeCleanup), which waits out the stop
#: and removes the VM. The C# agent matched the v1 numbers (32770, 32774) that v2 never
#: shows, so it sent PowerUnknown for both, which the MS's power-state handler ignores.
_CLOUDSTACK_POWER: Mapping[vms.PowerState, PowerState] = {
    vms.PowerState.RUNNING: PowerState.POWER_ON,
    vms.PowerState.PAUSED: PowerState.POWER_ON,
    vms.PowerState.STOPPED: PowerState.POWER_OFF,
    vms.PowerState.SAVED: PowerState.POWER_OFF,
    vms.PowerState.UNKNOWN: PowerState.POWER_UNKNOWN,
}


def shown_name(name: str) -> str:
    """A VM name as a message quotes it: in quotes, its control characters escaped
    (``logs.escape``), so a blank, a trailing space or a control character is seen."""
    return f"'{logs.escape(name)}'"


def named_vm(name: str, field: str = "vmName") -> str:
    """``name``, a command's VM name in its member ``field``, when it can name a VM;
    InvalidRequest saying it is blank, or naming a character no request to Hyper-V
    carries (``vms.uncarried``: ESC, say), otherwise. No VM CloudStack runs has such a
    name: looked up in Hyper-V a blank one would be answered as a VM not there, the blank
    lost between two spaces of the message, and one holding such a character would have
    WinRM refuse the query as XML that is not well-formed. The one check every command
    naming a VM by name makes first, before any lock or query."""
    if not name.strip():
        raise InvalidRequest(f"the command names no VM: its {field} {shown_name(name)} "
                             "is blank")
    offset = vms.uncarried(name)
    if offset is not None:
        raise InvalidRequest(
            f"the command names no VM Hyper-V can be asked for: its {field} "
            f"{shown_name(name)} holds U+{ord(name[offset]):04X} at offset {offset}, a "
            "character XML cannot carry (a control character other than tab, LF and CR, "
            "or a noncharacter)")
    return name


def cloudstack_power(power: vms.PowerState) -> PowerState:
    """The CloudStack power state of a Hyper-V one, as CheckVirtualMachine and the VM
    state report both send it."""
    return _CLOUDSTACK_POWER[power]


@dataclass(frozen=True)
class VmSettings:
    """What the VM handlers need from the configuration."""

    shutdown_timeout_s: float = 30.0  # how long a guest gets to shut down before power-off
    shutdown_first_poll_s: float = 0.1  # the state poll interval grows from this ...
    shutdown_max_poll_s: float = 1.0  # ... to this
    shutdown_reason: str = "Stopped by CloudStack"
    reboot_reason: str = "Rebooted by CloudStack"
    job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY

    def stop_policy(self, graceful: bool) -> power.StopPolicy:
        """How a StopCommand proceeds: with guest shutdown first when ``graceful``."""
        wait = jobs.WaitPolicy(timeout_s=self.shutdown_timeout_s,
                               first_poll_s=self.shutdown_first_poll_s,
                               max_poll_s=self.shutdown_max_poll_s)
        return power.StopPolicy(graceful=graceful, shutdown_wait=wait,
                                reason=self.shutdown_reason, job_wait=self.job_wait)


#: RebootAnswer ``details`` by what ``power.reboot`` did.
_REBOOTED: Mapping[power.Rebooted, str] = {
    power.Rebooted.GUEST: "guest reboot: the guest OS of VM {vm} was asked to restart",
    power.Rebooted.RESET: "reset: VM {vm} was reset, its guest could not be asked to restart",
}


#: The per-VM lock table: one lock per VM name (case-insensitive, as Hyper-V matches names).
VmLocks = NamedLocks


class VmHandlers:
    def __init__(self, hv: HyperV, settings: VmSettings | None = None) -> None:
        self.hv = hv
        self.settings = settings or VmSettings()
        self.locks = VmLocks()

    def table(self) -> Routes:
        """The handlers of this module by command FQCN (for ``Dispatch``)."""
        return {
            names.STOP_COMMAND: Route(StopCommand, self.stop),
            names.REBOOT_COMMAND: Route(RebootCommand, self.reboot),
            names.CHECK_VIRTUAL_MACHINE_COMMAND: Route(CheckVirtualMachineCommand, self.check),
            names.GET_VNC_PORT_COMMAND: Route(GetVncPortCommand, self.vnc_port),
            names.GET_VM_STATS_COMMAND: Route(GetVmStatsCommand, self.stats),
            names.GET_VM_NETWORK_STATS_COMMAND: Route(GetVmNetworkStatsCommand,
                                                      self.network_stats),
            names.GET_VM_IP_ADDRESS_COMMAND: Route(GetVmIpAddressCommand, self.ip_address),
            names.PATCH_SYSTEM_VM_COMMAND: Route(PatchSystemVmCommand, self.patch_system_vm),
        }

    async def patch_system_vm(self, command: PatchSystemVmCommand) -> Result:
        """Refused, in the MS's own answer class (it casts to PatchSystemVmAnswer, and any
        other class fails the patchSystemVm API and a network restart with live patching
        with a ClassCastException). KVM's agent patches over SSH to the system VM's control
        address with the system VM key the KVM host holds; a Hyper-V host holds no such
        key, and the MS runs its own commands to system VMs over SSH itself (protocol
        §6). A failed answer lets a live-patch network restart go on unpatched."""
        vm = (command.access_details or {}).get("router.name") or "the system VM"
        raise InvalidRequest(
            f"live patching {vm} is not supported on Hyper-V hosts: the agent holds no "
            "system VM SSH key; recreate the system VM (destroy it, or restart its network "
            "with cleanup) to give it the management server's current scripts")

    async def stop(self, stop: StopCommand) -> Result:
        """Shut the VM down and delete its definition; its disk files stay (protocol §5.3).

        Unknown VM: success, nothing done, so a repeat (or a retry after a lost answer)
        is safe. Unless ``forceStop``, the guest is asked to shut down and given
        ``shutdown_timeout_s`` before a hard power-off; a paused or saved VM runs no
        guest that could shut down and is turned off at once. With ``checkBeforeCleanup``
        a VM that is not off is left alone and the answer is a failure
        (``_refuse_cleanup_unless_off``). Afterwards the VM does not
        exist on Hyper-V. A failed step fails the answer with the step named; the VM is
        left as that step left it (on, or off but defined) and a repeat finishes the job.
        A blank name is no VM's: a failed answer saying so (``named_vm``), no query.
        Several VMs of the name that are on: a failed answer naming their GUIDs, none
        stopped (``vms.find_vm``).
        """
        async with self.locks.hold(named_vm(stop.vm_name)):
            vm = await vms.find_vm(self.hv, stop.vm_name)
            if vm is None:
                log.debug("StopCommand for VM %s, which is not on this host", stop.vm_name)
                return StopAnswer(result=True)
            if stop.check_before_cleanup:
                _refuse_cleanup_unless_off(vm)
            policy = self.settings.stop_policy(graceful=not stop.force_stop)
            await power.stop_and_remove(self.hv, vm, policy)
        return StopAnswer(result=True)

    async def reboot(self, reboot: RebootCommand) -> Result:
        """Restart a running VM cleanly: its guest OS is asked to restart itself
        (InitiateReboot, Windows Server 2016 and later), as KVM's ``virsh reboot`` asks;
        a guest that cannot be asked (no integration services, an older host, not ready)
        is reset hard (RequestStateChange 11) instead. ``details`` say which was done.

        Unknown VM: a failed answer naming it, nothing done. The guest of a VM that is
        not running is not asked; one Hyper-V cannot reset (off, saved, paused: "invalid
        state") is left as it is and the answer is a failure saying so, and so is one whose
        state Hyper-V cannot tell (Unknown, Other), which may run: the MS reboots
        only VMs it believes run, and a success would tell the operator a VM that is
        down was rebooted (KVM fails the reboot of a domain that is not running too).
        An accepted guest request is success without waiting for the guest to be back:
        Hyper-V reports nothing when it is (``power.reboot``). Repeating reboots the VM
        again. Definition and disks are unchanged; a failed reset changes nothing and
        fails the answer. A blank name: a failed answer saying so (``named_vm``), no query.
        """
        async with self.locks.hold(named_vm(reboot.vm_name)):
            found = await vms.find_vm(self.hv, reboot.vm_name)
            rebooted = None if found is None else await power.reboot(
                self.hv, found, self.settings.reboot_reason, policy=self.settings.job_wait)
        if rebooted is None or rebooted.done is power.Rebooted.MISSING:
            raise InvalidRequest(f"{names.REBOOT_COMMAND} requested unknown VM "
                                 f"{shown_name(reboot.vm_name)}")
        vm = rebooted.vm  # as read last: in the state a change it waited for left it in
        if rebooted.done is power.Rebooted.STATE_UNKNOWN:
            raise InvalidRequest(f"VM {vm.name} is in a state Hyper-V cannot tell on this "
                                 "host and may run; Hyper-V refused to reset it, so it was "
                                 "not rebooted and was left as it is")
        if rebooted.done is power.Rebooted.NOT_RUNNING:
            raise InvalidRequest(f"VM {vm.name} is {vm.power.value} on this host, not "
                                 "running; it was not rebooted and was left as it is")
        return RebootAnswer(result=True, details=_REBOOTED[rebooted.done].format(vm=vm.name))

    async def check(self, check: CheckVirtualMachineCommand) -> Result:
        """The VM's power state as CloudStack names it (sent as ``state`` and ``powerstate``).

        Unknown VM: a failed answer naming it; a blank name: one saying so (``named_vm``),
        no query. Several VMs of the name that are on: PowerOn, which each of them is
        (``vms.find_vm``'s ``several_on``). Read-only, safe to repeat, 1 query.
        """
        vm = await vms.find_vm(self.hv, named_vm(check.vm_name), several_on=True)
        if vm is None:
            raise InvalidRequest(f"{names.CHECK_VIRTUAL_MACHINE_COMMAND} requested unknown VM "
                                 f"{shown_name(check.vm_name)}")
        return CheckVirtualMachineAnswer(result=True, state=cloudstack_power(vm.power))

    async def vnc_port(self, vnc: GetVncPortCommand) -> Result:
        """Console access (protocol §8): ``instanceId=<VM GUID>`` and port -9 (RDP via VMConnect).

        Unknown VM: a failed answer with port -9 and no address. A blank name (no VM the
        MS runs has one): the same, saying so, no query. Read-only, safe to repeat, 1 query.
        """
        vm = await vms.find_vm(self.hv, named_vm(vnc.vm_name, "name"))
        if vm is None:
            raise InvalidRequest(f"no VM named {shown_name(vnc.vm_name)} on this host")
        return GetVncPortAnswer(result=True, address=f"instanceId={vm.guid}",
                                port=VNC_PORT_RDP)

    async def stats(self, asked: GetVmStatsCommand) -> Result:
        """CPU load, vCPU count and memory of the named VMs, in one call for all of them,
        and the disk and network I/O of the running ones since the previous
        GetVmStatsCommand (3 queries whatever their number; ``vmio.stats_with_io``, which
        reads one such report at a time).

        Names of no VM are left out (an empty map is a success); a blank one fails the
        answer saying which (``named_vm``), no round trip. Read-only, safe to repeat; no
        round trip when no name is asked for.
        """
        for index, name in enumerate(asked.vm_names):
            named_vm(name, f"vmNames[{index}]")
        found = await vmio.stats_with_io(self.hv, asked.vm_names)
        return GetVmStatsAnswer(result=True, vm_stats_map={
            name: _stats_entry(stats, io) for name, (stats, io) in found.items()})


    async def network_stats(self, asked: GetVmNetworkStatsCommand) -> Result:
        """The bytes each network adapter of the named VMs with a static MAC (every one
        CloudStack made) sent and received since the VM started (``vmio.adapter_traffic``),
        by MAC: the totals the management server
        bills shared-network traffic from (``vm.network.stats.interval``). It keeps the
        last total of each NIC and takes a smaller one for a restart of the counters,
        so totals, not intervals, are what it needs.

        Names of no VM are left out; a VM that is not running maps to an empty list (its
        counters are gone); a blank one fails the answer saying which (``named_vm``), no
        round trip. Read-only, safe to repeat: 1 call and 2 queries sent at once; no round
        trip when no name is asked for.
        """
        for index, name in enumerate(asked.vm_names):
            named_vm(name, f"vmNames[{index}]")
        found = await vms.vm_stats(self.hv, asked.vm_names)
        running = [stats.guid for stats in found.values() if stats.running and stats.guid]
        traffic = await vmio.adapter_traffic(self.hv, running) if running else {}
        return GetVmNetworkStatsAnswer(result=True, host_name=asked.host_name,
                                       vm_network_stats_map={
            name: [VmNetworkStatsEntry(vm_name=name, mac_address=_cloudstack_mac(nic.mac),
                                       bytes_sent=nic.sent_bytes,
                                       bytes_received=nic.received_bytes)
                   for nic in traffic.get(stats.guid, [])]
            for name, stats in found.items()})


    async def ip_address(self, asked: GetVmIpAddressCommand) -> Result:
        """The IPv4 address the guest of a running VM holds on the NIC with ``macAddress``
        (else on any NIC) within ``vmNetworkCidr`` (absent for an L2 network: then any but
        a link-local one), as its data exchange integration service reports it to
        Hyper-V (``nics.guest_addresses``). The management server asks for VMs on networks
        whose addresses an external DHCP server gives (``VmIpFetchTask``, every
        ``externaldhcp.vmip.retrieval.interval``) and records ``details`` as the NIC's
        address when ``result`` is true.

        No address known yet (the guest has no lease, or runs without the integration
        service): a failed answer saying so, which the MS logs and asks again; never a
        success without an address, which the MS reads as "the NIC has none" and clears
        the address it holds. Unknown VM, or one that is off: a failed answer naming it.
        Read-only, safe to repeat; at most 3 queries (``nics.guest_addresses``).
        """
        mac = nics.normalize_mac(asked.mac_address) if asked.mac_address else None
        cidr = _ipv4_network(asked.vm_network_cidr) if asked.vm_network_cidr else None
        if mac is None and cidr is None:
            raise InvalidRequest(f"{names.GET_VM_IP_ADDRESS_COMMAND} for VM {asked.vm_name} "
                                 "names neither a NIC (macAddress) nor a network "
                                 "(vmNetworkCidr) to take the address from")
        found = await nics.guest_addresses(self.hv, asked.vm_name)
        if found is None:
            raise InvalidRequest(f"{names.GET_VM_IP_ADDRESS_COMMAND} requested unknown VM "
                                 f"{shown_name(asked.vm_name)}")
        vm, guest_nics = found
        if vm.power not in (vms.PowerState.RUNNING, vms.PowerState.PAUSED):
            raise InvalidRequest(f"VM {vm.name} is {vm.power.value} on this host; only a "
                                 "running guest reports its addresses")
        shown = _cloudstack_mac(mac) if mac else None  # as the MS spells it, bounded
        where = f"the NIC with MAC {shown}" if shown else "any NIC"
        chosen = [nic for nic in guest_nics if mac is None or nic.mac == mac]
        if not chosen:
            raise InvalidRequest(f"VM {vm.name} has no NIC with MAC {shown}")
        address = _first_ipv4(chosen, cidr)
        if address is None:
            within = f" in {cidr}" if cidr else ""
            raise InvalidRequest(
                f"the guest of VM {vm.name} has reported no IPv4 address{within} on {where} "
                "yet; Hyper-V learns a guest's addresses from its data exchange (KVP) "
                "integration service, so the guest must run it (hv_kvp_daemon on Linux, "
                "Hyper-V Integration Services on Windows) and have its address (a DHCP "
                "lease) for it to be known")
        return Answer(result=True, details=address)


def _refuse_cleanup_unless_off(vm: vms.VmRef) -> None:
    """InvalidRequest, naming the VM's state, unless ``vm`` is off as CheckVirtualMachine
    calls it (PowerOff: stopped or saved). The MS sends a StopCommand with
    ``checkBeforeCleanup`` after a PowerOff report, to clean up a VM it believes off;
    one on since (started again, say) must be left alone, and so must one whose state
    Hyper-V cannot tell, which may run (the report sends PowerUnknown for it): a cleanup
    must never turn a guest off. VMware's agent refuses the same way any state but off;
    KVM's only a running domain."""
    state = cloudstack_power(vm.power)
    if state is PowerState.POWER_ON:
        raise InvalidRequest(
            f"VM {vm.name} is still {vm.power.value} on this host; a StopCommand with "
            "checkBeforeCleanup leaves a VM that is on alone")
    if state is not PowerState.POWER_OFF:
        raise InvalidRequest(
            f"VM {vm.name} is in a state Hyper-V cannot tell on this host and may run; a "
            "StopCommand with checkBeforeCleanup leaves a VM that is not off alone")


def _ipv4_network(cidr: str) -> ipaddress.IPv4Network:
    """The command's ``vmNetworkCidr``; InvalidRequest naming it when it is not IPv4."""
    try:
        return ipaddress.IPv4Network(cidr.strip(), strict=False)
    except ValueError:
        raise InvalidRequest(f"vmNetworkCidr {cidr[:60]!r} is not an IPv4 network "
                             "(a.b.c.d/prefix)") from None


def _first_ipv4(guest_nics: Sequence[nics.GuestNic],
                cidr: ipaddress.IPv4Network | None) -> str | None:
    """The first IPv4 address the guest reports on ``guest_nics`` within ``cidr``; without
    one, the first that is not link-local (169.254.0.0/16: a Windows guest gives itself
    one when no DHCP server answers, which is no lease)."""
    for nic in guest_nics:
        for text in nic.addresses:
            try:
                address = ipaddress.IPv4Address(text.strip())
            except ValueError:  # an IPv6 address, or something no guest should report
                continue
            if address in cidr if cidr is not None else not address.is_link_local:
                return str(address)
    return None


def _cloudstack_mac(mac: str) -> str:
    """Hyper-V's ``02004C5F0008`` as CloudStack stores a NIC's MAC: ``02:00:4c:5f:00:08``."""
    digits = mac.lower()
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


def _stats_entry(stats: vms.VmStats, io: vmio.IoTotals) -> VmStatsEntry:
    # memoryKBs and targetMemoryKBs are the memory the VM holds now: static memory, or
    # what Hyper-V has given a VM with dynamic memory (at least its minRam, at most its
    # maxRam). Network "read" is what the VM received, "write" what it sent.
    memory_kb = float(stats.memory_mb * KIB)
    return VmStatsEntry(cpu_utilization_percent=stats.cpu_utilization_percent,
                        num_cpus=stats.cpus, memory_kb=memory_kb,
                        int_free_memory_kb=_free_memory_kb(stats), target_memory_kb=memory_kb,
                        network_read_kb=io.received_bytes / KIB,
                        network_write_kb=io.sent_bytes / KIB, entity_type="vm",
                        disk_read_ios=float(io.reads), disk_write_ios=float(io.writes),
                        disk_read_kb=io.read_bytes / KIB, disk_write_kb=io.write_bytes / KIB)


def _free_memory_kb(stats: vms.VmStats) -> float:
    """intFreeMemoryKBs: the share of its memory the guest has free (MemoryAvailable),
    which Hyper-V reports under dynamic memory only. Without it (static memory, a VM
    that is not running) -1, the management server's "unknown", as CloudStack's KVM
    agent reports it without a balloon driver: 0 would read as "no memory free" (every
    VM 100 % used, and an AutoScale policy on memory scaling up for ever). A share of 0
    or less (a guest that wants more than it has) is reported as unknown too: Microsoft
    does not say what a VM with static memory reports, and 0 from one must not read as
    nothing free."""
    percent = stats.memory_available_percent
    if not stats.running or percent is None or percent <= 0:
        return FREE_MEMORY_UNKNOWN
    return float(stats.memory_mb * KIB * min(percent, 100) // 100)


KIB = 1024
#: intFreeMemoryKBs when the guest's free memory is not known (the MS's metrics API and
#: AutoScale read a negative value so).
FREE_MEMORY_UNKNOWN = -1.0


