"""VM configuration: ScaleVm, GetVmConfig, ModifyVmNicConfig, PlugNic, UnPlugNic and
PvlanSetup (protocol §5.1, §5.3, §6).

The MS calls GetVmConfig and ModifyVmNicConfig itself for PlugNic/UnPlugNic and for
router IP association: it reads the NIC list, picks a NIC by position (``index``, 0-based
in GetVmConfig's ``nics``) or by MAC, and wires that pre-created NIC (protocol §9.4). When a
PlugNic or UnPlugNic does arrive, it is carried out for real: a NIC is added to (removed
from) a stopped VM or a generation 2 one on Windows Server 2016 or later, and on a running
VM that cannot gain or lose NICs (generation 1, or any on an older host) an existing NIC
with the MAC is connected (disconnected). Every
command holds the VM's lock (shared with the other VM handlers), so it never interleaves
with a Start, Stop or another change of the same VM.
A VM Hyper-V is starting, stopping or saving is waited for first, within the job wait
and the command's bound (``jobs.command_bound``: half the command's ``wait``;
``power.find_settled``): Hyper-V changes none of its devices or settings meanwhile, and
a starting VM reads as running, a stopping one as off. One still changing after that
fails the answer, naming the change, with nothing changed. A VM name that can name no VM
(blank, or holding a character XML cannot carry) fails the answer before any query
(``vm.named_vm``), as does a PvlanSetup's ``dhcpName`` when given.
"""

from __future__ import annotations

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import (
    Answer,
    GetVmConfigAnswer,
    ModifyVmNicConfigAnswer,
    PlugNicAnswer,
    ScaleVmAnswer,
    UnPlugNicAnswer,
)
from hyperv_agent.cloudstack.commands_network import (
    PlugNicCommand,
    PvlanSetupCommand,
    UnPlugNicCommand,
)
from hyperv_agent.cloudstack.commands_vm import (
    GetVmConfigCommand,
    ModifyVmNicConfigCommand,
    ScaleVmCommand,
)
from hyperv_agent.cloudstack.enums import PvlanSetupType
from hyperv_agent.cloudstack.objects import NicDetails, NicTO, VirtualMachineTO
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.handlers import start_plan
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.vm import VmLocks, named_vm
from hyperv_agent.hyperv import host as hyperv_host
from hyperv_agent.hyperv import jobs, nics, power, scale, vms
from hyperv_agent.hyperv.schema import PvlanMode
from hyperv_agent.hyperv.session import HyperV

UNTAGGED = "-1"  # GetVmConfigAnswer.vlanid (a Java String) of a port without a VLAN


class VmConfigHandlers:
    def __init__(self, hv: HyperV, locks: VmLocks,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> None:
        self.hv = hv
        self.locks = locks
        # how long a VM Hyper-V is starting, stopping, ... is waited for (``power.settle``)
        self.job_wait = job_wait

    def table(self) -> Routes:
        """The handlers of this module by command FQCN (for ``Dispatch``)."""
        return {
            names.SCALE_VM_COMMAND: Route(ScaleVmCommand, self.scale),
            names.GET_VM_CONFIG_COMMAND: Route(GetVmConfigCommand, self.get_config),
            names.MODIFY_VM_NIC_CONFIG_COMMAND: Route(ModifyVmNicConfigCommand, self.modify_nic),
            names.PLUG_NIC_COMMAND: Route(PlugNicCommand, self.plug_nic),
            names.UNPLUG_NIC_COMMAND: Route(UnPlugNicCommand, self.unplug_nic),
            names.PVLAN_SETUP_COMMAND: Route(PvlanSetupCommand, self.pvlan_setup),
        }

    async def scale(self, asked: ScaleVmCommand) -> Result:
        """Set a stopped VM's vCPU count (``cpus``) and memory (``minRam`` and ``maxRam``
        bytes), as StartCommand gives them (``start_plan.memory_sizes``): static memory
        of ``maxRam``, or dynamic memory from ``minRam`` up to ``maxRam`` on a cluster
        whose memory is overprovisioned.

        Unknown VM: a failed answer naming it. Memory StartCommand would refuse (say
        ``minRam`` above ``maxRam``), or more vCPUs or memory than Hyper-V gives a
        generation 2 VM on the host's release, or more vCPUs than the host has logical
        processors: a failed answer naming the field, nothing changed.
        A VM that is not off: a failed answer ("stop it first"), nothing changed. Safe to
        repeat; processors and memory change together or not at all. 1 query to find the
        VM + 1 query + 1 call + 1 job wait (+ ``host.vm_maximums``'s the first time in a
        session without a StartupRoutingCommand or ReadyCommand).
        """
        field = "vm.name" if not asked.vm_name and asked.vm is not None else "vmName"
        name = named_vm(asked.vm_name or (asked.vm.name if asked.vm is not None else ""),
                        field)
        cpus = asked.cpus or (asked.vm.cpus if asked.vm is not None else 0)
        ram = asked.max_ram_bytes or (asked.vm.max_ram_bytes if asked.vm is not None else 0)
        least = asked.min_ram_bytes or (asked.vm.min_ram_bytes if asked.vm is not None else 0)
        wanted = VirtualMachineTO(name=name, type=asked.vm.type if asked.vm else None,
                                  min_ram_bytes=least, max_ram_bytes=ram)
        # The VM's generation is not looked up: the bounds of generation 2, the larger, on
        # this host's release and its logical processors (host facts kept for the
        # session) are checked here, and Hyper-V refuses more than a generation 1 VM takes.
        most = await hyperv_host.vm_maximums(self.hv, 2)
        start_plan.check_cpus(cpus, most, "cpus")
        memory_mb, memory_max_mb = start_plan.memory_sizes(wanted, 2, most)
        async with self.locks.hold(name):
            vm = await power.find_settled(self.hv, name, self.job_wait)
            if vm is None:
                raise InvalidRequest(f"{names.SCALE_VM_COMMAND} requested unknown VM {name!r}")
            async with vms.unless_migrating(self.hv, vm, "the scaling"):
                await scale.set_processors_and_memory(self.hv, vm, cpus, memory_mb,
                                                      memory_max_mb)
        memory = (f"{memory_mb} MB of memory" if memory_max_mb is None else
                  f"{memory_mb} MB to {memory_max_mb} MB of dynamic memory")
        return ScaleVmAnswer(result=True, details=(
            f"VM {name} now has {cpus} processors and {memory}"))

    async def get_config(self, asked: GetVmConfigCommand) -> Result:
        """The VM's synthetic NICs in Hyper-V's order: MAC, VLAN (the access VLAN, a
        private VLAN's ``<primary>-i<secondary>`` or ``-c``, -1: none; ``_vlan_id``), and
        whether the port is connected.

        Unknown VM: a failed answer naming it (the C# agent answered HTTP 500). Read-only,
        safe to repeat; 3 queries whatever the number of NICs.
        """
        async with self.locks.hold(named_vm(asked.vm_name)):
            vm = await vms.find_vm(self.hv, asked.vm_name)
            if vm is None:
                raise InvalidRequest(f"{names.GET_VM_CONFIG_COMMAND} requested unknown VM "
                                     f"{asked.vm_name!r}")
            found = await nics.list_nics(self.hv, vm.guid)
        return GetVmConfigAnswer(result=True, vm_name=asked.vm_name, nics=[
            NicDetails(mac_address=nic.mac, state=nic.connected, vlan_id=_vlan_id(nic))
            for nic in found])

    async def modify_nic(self, asked: ModifyVmNicConfigCommand) -> Result:
        """Wire one of the VM's NICs: by ``macAddress``, or else by ``index`` (≥ 1, the
        0-based position in GetVmConfig's ``nics``; 0 is the control NIC, never touched).

        By MAC, or by index with ``enable``: the port is connected to ``switchLableName``
        (without one: by MAC the port keeps its switch, the public network's a spare was
        made on, or takes the host's External one when it has none; by index, the MS's
        PlugNic of a network without a traffic label, the External one,
        ``host.external_switch``, where StartCommand puts such a network's NICs; a NIC
        without a port gets one)
        and put on ``vlan`` ("untagged" or empty: no VLAN). By MAC this happens whatever
        ``enable`` says, as the MS's router code sends it unset (protocol §5.3). By index without
        ``enable``: the VLAN setting is removed and the port disabled. Neither a MAC nor
        an index >= 1, an unknown VM, MAC or index, an invalid VLAN or switch: a failed
        answer saying which, nothing changed. Safe to repeat. The VLAN is set before the
        port is connected and removed after it is disconnected (``nics.wire``,
        ``nics.unwire``), so a failure never leaves it connected untagged. Warm: 3 queries
        (+1 for a named switch, +``external_switch``'s for an index without one) + at
        most 2 calls and 2 job waits.
        """
        named_vm(asked.vm_name)
        if not asked.mac_address and asked.index < 1:
            raise _nic_failed("it names neither a macAddress nor an index >= 1")
        vlan = _vlan(asked.vlan)
        async with self.locks.hold(asked.vm_name):
            vm = await power.find_settled(self.hv, asked.vm_name, self.job_wait)
            if vm is None:
                raise _nic_failed(f"there is no VM {asked.vm_name!r} on this host")
            nic = _pick(await nics.list_nics(self.hv, vm.guid), asked)
            if nic is None:
                raise _nic_failed(f"VM {asked.vm_name} has no NIC with " + (
                    f"MAC {asked.mac_address}" if asked.mac_address else f"index {asked.index}"))
            async with vms.unless_migrating(self.hv, vm, "the NIC change"):
                await self._wire(nic, asked, vlan)
        return ModifyVmNicConfigAnswer(result=True, vm_name=asked.vm_name)

    async def _wire(self, nic: nics.Nic, asked: ModifyVmNicConfigCommand,
                    vlan: nics.PortVlan | None) -> None:
        if asked.mac_address or asked.enable:
            switch = asked.switch_label_name or None
            if switch is None and not asked.mac_address:
                # By index (the MS's PlugNic) the label is the plugged network's, absent
                # when it has none: its NICs belong on the External switch, as StartCommand
                # puts them, not on the switch of the network the spare was made for.
                switch = await hyperv_host.external_switch(self.hv)
            await nics.wire(self.hv, nic, switch, vlan)
        else:
            await nics.unwire(self.hv, nic)

    async def plug_nic(self, asked: PlugNicCommand) -> Result:
        """Give ``instanceName`` the NIC ``nic`` (MAC, switch ``nic.name``, VLAN from
        ``broadcastUri``, ``networkRateMbps``).

        A generation 2 VM (running or not, on Windows Server 2016 or later) or a stopped VM
        gets a new synthetic NIC. Another running VM (generation 1, or on an older host)
        cannot take one, and Hyper-V cannot change the MAC of its
        spare NICs: the answer fails naming the spares, nothing changed. A paused or
        saved VM takes no NIC at all: the answer fails saying so, nothing changed. A NIC with that
        MAC already there is connected to the switch and VLAN instead (a repeat is safe).
        No VM name or NIC, an unknown VM, a bad MAC, VLAN or switch: a failed answer,
        nothing changed. Afterwards the NIC carries the VLAN's traffic. 2 queries + at
        most 3 calls and 3 job waits when warm.
        """
        name, nic = _instance(asked.instance_name, asked.nic)
        mac, vlan = nics.normalize_mac(nic.mac or ""), _vlan(nic.broadcast_uri)
        async with self.locks.hold(name):
            vm = await power.find_settled(self.hv, name, self.job_wait)
            if vm is None:
                raise InvalidRequest(f"there is no VM {name!r} on this host; nothing changed")
            found = await nics.list_nics(self.hv, vm.guid)
            present = next((item for item in found if item.mac == mac), None)
            async with vms.unless_migrating(self.hv, vm, "the NIC plug"):
                if present is not None:
                    await nics.wire(self.hv, present, nic.name or None, vlan)
                    return PlugNicAnswer(result=True,
                                         details=f"NIC {mac} of VM {name} connected")
                refusal = await self._nics_fixed(vm, found)
                if refusal:
                    raise InvalidRequest(f"nothing changed: {refusal}")
                await self._add_nic(vm, nic, mac, vlan)
        return PlugNicAnswer(result=True, details=f"NIC {mac} added to VM {name}")

    async def _nics_fixed(self, vm: vms.VmRef, found: list[nics.Nic]) -> str | None:
        """Why the VM cannot gain or lose NICs now; None when it can."""
        suspended = vms.devices_fixed(vm)
        if suspended is not None:
            return suspended
        if vm.power is vms.PowerState.STOPPED or await nics.hot_pluggable(self.hv, vm.guid):
            return None
        spares = ", ".join(item.mac for item in found if not item.connected) or "none"
        return (f"VM {vm.name} is {vm.power.value} and Hyper-V adds network adapters to it "
                "only while it is off (generation 1, or a host older than Windows Server "
                "2016), and it cannot change the MAC address of "
                f"its spare (disconnected) adapters ({spares}); wire a spare with "
                f"{names.MODIFY_VM_NIC_CONFIG_COMMAND.rsplit('.', 1)[-1]} instead")

    async def _add_nic(self, vm: vms.VmRef, nic: NicTO, mac: str,
                       vlan: nics.PortVlan | None) -> None:
        switch = nic.name or await hyperv_host.external_switch(self.hv)
        rate = start_plan.nic_rate(nic)
        await nics.add_nic(self.hv, vm, mac=mac, switch_name=switch, vlan=vlan,
                            rate_mbps=rate, name=start_plan.adapter_name(nic))

    async def pvlan_setup(self, asked: PvlanSetupCommand) -> Result:
        """Put a NIC's switch port on its shared network's private VLAN (``op`` "add").

        ``type`` VM: the NIC ``vmMac`` (whichever VM of this host has it) becomes an
        isolated (``pvlanType`` "I") or community ("C") port on ``primary`` and the
        secondary VLAN ``isolated``, as StartCommand already made it. ``type`` DHCP: the
        NIC ``dhcpMac`` of the router ``dhcpName`` (or of whichever VM has it) becomes a
        promiscuous port on ``primary`` that reaches the secondary ``isolated``: the
        network's DHCP server, which its isolated VMs reach while they reach each other
        not. A VM Hyper-V is still starting (the MS sends the setup once the start is
        answered) is waited for first, as by the other NIC commands. ``op`` "delete"
        (sent when the VM or router stops) changes nothing: the
        port's setting goes with the VM, and the next start sets it again.
        A missing or malformed field, a promiscuous network ("P"), an ``add`` for a
        MAC no VM of this host has, or for a NIC that is not on the vSwitch the network's
        traffic label ``networkTag`` names (``_check_switch``): a failed answer saying
        which, nothing changed. Safe to repeat: a port already as asked is left alone.
        """
        op = (asked.op or "").strip().lower()
        if op not in ("add", "delete"):
            raise InvalidRequest(f"op {(asked.op or '')[:40]!r} is neither 'add' nor 'delete'")
        dhcp = asked.type is PvlanSetupType.DHCP
        if dhcp and asked.dhcp_name is not None:
            named_vm(asked.dhcp_name, "dhcpName")
        field, mac = ("dhcpMac", asked.dhcp_mac) if dhcp else ("vmMac", asked.vm_mac)
        if asked.type is None or not mac:
            raise InvalidRequest(f"it names no {'type' if asked.type is None else field}; "
                                 "nothing changed")
        address = nics.normalize_mac(mac)
        vlan = _setup_vlan(asked, dhcp)
        if op == "delete":
            return Answer(result=True, details=(
                f"NIC {address} keeps its port until its VM goes; nothing to undo for {vlan}"))
        found = await self._vm_with_mac(asked.dhcp_name if dhcp else None, address)
        if found is None:
            raise InvalidRequest(f"no VM on this host has a NIC with MAC {address}; "
                                 "nothing changed")
        async with self.locks.hold(found):
            vm = await power.find_settled(self.hv, found, self.job_wait)
            nic = None if vm is None else next(
                (n for n in await nics.list_nics(self.hv, vm.guid) if n.mac == address), None)
            if nic is None:
                raise InvalidRequest(f"VM {found} no longer has a NIC with MAC {address}; "
                                     "nothing changed")
            await self._check_switch(found, nic, asked.network_tag)
            await nics.set_vlan(self.hv, nic, vlan)
        return Answer(result=True, details=f"NIC {address} of VM {found} is on the {vlan}")

    async def _check_switch(self, vm: str, nic: nics.Nic, tag: str | None) -> None:
        """That the NIC's port is on the vSwitch the network's traffic label ``tag`` (a
        PvlanSetupCommand's ``networkTag``, NetworkModel.getNetworkTag: the label StartCommand
        got as the NIC's ``name``) names, without regard to case, or, unlabelled, the
        host's External switch, where StartCommand put it. A private VLAN is a setting of
        the port, not of the switch: on another switch it would isolate the NIC on a
        network the MS did not mean. So a label naming no switch (the XenServer resource
        fails so too) or a NIC elsewhere is InvalidRequest naming both, and the NIC is not
        moved: a PvlanSetup changes a port's VLAN, not which network the VM is on. 1 query
        (+``external_switch``'s without a label) + ``nics.switch_name``'s."""
        switches, external = await hyperv_host.nic_switches(self.hv, unlabelled=not tag)
        wanted = hyperv_host.switch_named(switches, tag) if tag else external
        label = f"the network's traffic label (networkTag) {(tag or '')[:80]!r}"
        if wanted is None:
            there = ", ".join(repr(name) for name in switches) or "none"
            raise InvalidRequest(f"{label} names no virtual switch on this host (its "
                                 f"switches: {there}); nothing changed")
        current = await nics.switch_name(self.hv, nic)
        if current != wanted:
            where = f"vSwitch {current!r}" if current else "no vSwitch"
            meant = (f"the one {label} names" if tag else "the host's External switch, "
                     "where the NICs of a network without a traffic label (networkTag) go")
            raise InvalidRequest(f"NIC {nic.mac} of VM {vm} is on {where}, not on "
                                 f"{wanted!r}, {meant}; its private VLAN would be set on "
                                 "another network: nothing changed")

    async def _vm_with_mac(self, name: str | None, mac: str) -> str | None:
        """The name of the VM that has the NIC ``mac``: ``name`` when that VM has it, else
        whichever VM of the host has it; None when none has."""
        if name:
            vm = await vms.find_vm(self.hv, name)
            if vm is not None and any(n.mac == mac for n in await nics.list_nics(
                    self.hv, vm.guid)):
                return vm.name
        found = await nics.find_by_mac(self.hv, mac)
        return None if found is None else found[0]

    async def unplug_nic(self, asked: UnPlugNicCommand) -> Result:
        """Take the NIC with ``nic.mac`` away from ``instanceName``.

        A generation 2 VM (running or not, on Windows Server 2016 or later) or a stopped VM
        loses the NIC and its port. Another running VM, or a paused or saved one, cannot
        lose a NIC: its port is disconnected and its VLAN removed instead, so it becomes a
        spare. No VM name or
        NIC, or an unknown VM: a failed answer, nothing changed. A MAC the VM has no NIC
        of is success, nothing changed, as the KVM agent answers it: the NIC was unplugged
        before, and the management server's retry after a lost answer must not fail for
        ever (it keeps the NIC in its database while the unplug fails). Afterwards the NIC
        carries no traffic. 2 queries (+1 the first time) + 1 call and 1 job wait (up to 2
        and 2 when the NIC cannot be removed).
        """
        name, nic = _instance(asked.instance_name, asked.nic)
        mac = nics.normalize_mac(nic.mac or "")
        async with self.locks.hold(name):
            vm = await power.find_settled(self.hv, name, self.job_wait)
            found = [] if vm is None else await nics.list_nics(self.hv, vm.guid)
            present = next((item for item in found if item.mac == mac), None)
            if vm is None:
                raise InvalidRequest(f"nothing changed: there is no VM {name!r} on this host")
            if present is None:  # unplugged before: a retry after a lost answer
                return UnPlugNicAnswer(result=True, details=(
                    f"VM {name} has no NIC with MAC {mac}: nothing to unplug"))
            async with vms.unless_migrating(self.hv, vm, "the NIC unplug"):
                if await self._nics_fixed(vm, found) is None:
                    await nics.remove(self.hv, present)
                    return UnPlugNicAnswer(result=True,
                                           details=f"NIC {mac} removed from VM {name}")
                await nics.unwire(self.hv, present)
        why = ("while the VM runs" if vm.power is vms.PowerState.RUNNING
               else f"from a {vm.power.value} VM")
        return UnPlugNicAnswer(result=True, details=(
            f"NIC {mac} of {vm.power.value} VM {name} disconnected (Hyper-V cannot "
            f"remove it {why})"))


def _setup_vlan(asked: PvlanSetupCommand, dhcp: bool) -> nics.PrivateVlan:
    """The private VLAN a PvlanSetupCommand puts its NIC on: promiscuous for the DHCP
    server, else isolated or community by ``pvlanType``."""
    kind = (asked.pvlan_type or "").strip().upper()
    if kind == "P":
        network = f"pvlan://{(asked.primary or '')[:12]}-p{(asked.isolated or '')[:12]}"
        raise InvalidRequest(f"pvlanType P: the network {network} is a promiscuous private "
                             "VLAN network, which names no secondary VLAN; a Hyper-V "
                             "promiscuous port needs the secondary VLANs it reaches, so only "
                             "isolated (I) and community (C) private VLAN networks are served")
    mode = {"I": PvlanMode.ISOLATED, "C": PvlanMode.COMMUNITY}.get(kind)
    if mode is None:
        raise InvalidRequest(f"pvlanType {(asked.pvlan_type or '')[:40]!r} is not I "
                             "(isolated), C (community) or P (promiscuous)")
    return start_plan.private_vlan(PvlanMode.PROMISCUOUS if dhcp else mode,
                                   asked.primary or "", asked.isolated or "", "the command")


def _vlan_id(nic: nics.Nic) -> str:
    """A GetVmConfigAnswer NIC's ``vlanid``: what the MS compares with its network's
    broadcast URI value (getVmNics: "261" for vlan://261, "100-i200" for
    pvlan://100-i200, "-1" for untagged), so a NIC on a private VLAN port reads as its
    network (``start_plan.pvlan_value``), not as untagged."""
    if nic.vlan is not None:
        return str(nic.vlan)
    return UNTAGGED if nic.private is None else start_plan.pvlan_value(nic.private)


def _vlan(text: str | None) -> nics.PortVlan | None:
    """The VLAN of ``vlan`` ("261", "vlan://261"), or the private VLAN of
    "pvlan://100-i200" or "100-i200" (a pvlan:// URI's value, as the MS's
    BroadcastDomainType.getValue gives it; ``start_plan.pvlan_of``); None for untagged
    or empty. Not a VLAN id in decimal digits (``nics.vlan_of_text``; "vlan://1-2" is
    not a private VLAN), or outside 1..4094: InvalidRequest, checked before the NIC is
    touched, so a refused VLAN never leaves a spare connected untagged."""
    value = (text or "").strip().lower()
    access = value.startswith("vlan://")
    value = value.removeprefix("vlan://")
    if value in ("", "untagged", "-1"):
        return None
    if value.startswith("pvlan://") or (
            not access and nics.is_vlan_text(value[:1]) and "-" in value):
        return start_plan.pvlan_of(value.removeprefix("pvlan://"), "vlan")
    if not nics.is_vlan_text(value):
        raise InvalidRequest(f"vlan {(text or '')[:40]!r} is not a VLAN id or 'untagged'")
    return nics.vlan_of_text(value)


def _instance(name: str | None, nic: NicTO | None) -> tuple[str, NicTO]:
    """A PlugNic's or UnPlugNic's ``instanceName`` and ``nic``; InvalidRequest when one is
    missing, or when the name can name no VM (``named_vm``)."""
    if name is None or nic is None:
        raise InvalidRequest(f"it names no {'instanceName' if name is None else 'nic'}; "
                             "nothing changed")
    return named_vm(name, "instanceName"), nic


def _nic_failed(why: str) -> InvalidRequest:
    return InvalidRequest(f"changed nothing: {why}")


def _pick(found: list[nics.Nic], asked: ModifyVmNicConfigCommand) -> nics.Nic | None:
    if asked.mac_address:
        mac = nics.normalize_mac(asked.mac_address)
        return next((nic for nic in found if nic.mac == mac), None)
    return found[asked.index] if asked.index < len(found) else None


