"""Network commands. The MS handles most of them itself for Hyper-V (protocol §6); the C# agent
answers the ones that still arrive with a fixed reply, and 404s the rest. The security-group
commands (SecurityGroupRulesCmd, NetworkRulesVmSecondaryIpCommand, NetworkRulesSystemVmCommand,
CleanupNetworkRulesCmd) reach the agent on zones with security groups (protocol §14)."""

from typing import Annotated, ClassVar

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command, JBool, JInt, JLong, wire
from hyperv_agent.cloudstack.enums import LenientVirtualMachineType, PvlanSetupType
from hyperv_agent.cloudstack.objects import IpPortAndProto, NicTO, VirtualMachineTO


class PlugNicCommand(Command):
    FQCN: ClassVar[str] = names.PLUG_NIC_COMMAND

    nic: NicTO | None = None
    instance_name: str | None = None
    vm_type: LenientVirtualMachineType | None = None
    details: dict[str, str] | None = None


class UnPlugNicCommand(Command):
    FQCN: ClassVar[str] = names.UNPLUG_NIC_COMMAND

    nic: NicTO | None = None
    instance_name: str | None = None
    vlan_to_persistence_map: dict[str, JBool] | None = None


class CleanupNetworkRulesCmd(Command):
    FQCN: ClassVar[str] = names.CLEANUP_NETWORK_RULES_CMD

    interval: JInt = 0


class CheckSshCommand(Command):
    FQCN: ClassVar[str] = names.CHECK_SSH_COMMAND

    ip: str | None = None
    port: JInt = 0
    interval: JInt = 0
    retries: JInt = 0
    name: str | None = None


class SecurityGroupRulesCmd(Command):
    FQCN: ClassVar[str] = names.SECURITY_GROUP_RULES_CMD

    guest_ip: str | None = None
    guest_ip6: str | None = None
    vm_name: str | None = None
    guest_mac: str | None = None
    signature: str | None = None
    seq_num: JLong | None = None
    vm_id: JLong | None = None
    ms_id: JLong | None = None
    ingress_rule_set: list[IpPortAndProto] | None = None
    egress_rule_set: list[IpPortAndProto] | None = None
    sec_ips: list[str] | None = None
    vm_to: Annotated[VirtualMachineTO | None, wire("vmTO")] = None


class NetworkRulesSystemVmCommand(Command):
    FQCN: ClassVar[str] = names.NETWORK_RULES_SYSTEM_VM_COMMAND

    vm_name: str | None = None
    type: LenientVirtualMachineType | None = None


class NetworkRulesVmSecondaryIpCommand(Command):
    """Add (``action`` "-A") or remove ("-D") the secondary address ``vmSecIp`` of the
    adapter ``vmMac`` from what the VM may send from."""

    FQCN: ClassVar[str] = names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND

    vm_name: str | None = None
    type: LenientVirtualMachineType | None = None
    vm_sec_ip: str | None = None
    vm_mac: str | None = None
    action: str | None = None


class SetupPersistentNetworkCommand(Command):
    """Set up, on this host, a persistent L2 network's VLAN (``nic``: the network as a NicTO
    without a VM: traffic label, ``broadcastUri``), sent to every host of the zone when such
    a network is made and to a host when it is enabled."""

    FQCN: ClassVar[str] = names.SETUP_PERSISTENT_NETWORK_COMMAND

    nic: NicTO | None = None


class CleanupPersistentNetworkResourceCommand(Command):
    """Undo SetupPersistentNetworkCommand when the last persistent network of its VLAN goes,
    or before the host is removed. The Java field is ``nicTO`` (Setup's is ``nic``)."""

    FQCN: ClassVar[str] = names.CLEANUP_PERSISTENT_NETWORK_RESOURCE_COMMAND

    nic_to: Annotated[NicTO | None, wire("nicTO")] = None


class PatchSystemVmCommand(Command):
    """Live-patch a system VM's scripts (the patchSystemVm API, restartNetwork with
    livePatch): the router's control address and name in ``accessDetails``."""

    FQCN: ClassVar[str] = names.PATCH_SYSTEM_VM_COMMAND

    forced: JBool = False
    access_details: dict[str, str] | None = None


class PvlanSetupCommand(Command):
    """Put a NIC on its shared network's private VLAN (``op`` "add"), or take it off
    ("delete"). ``type`` DHCP: the virtual router ``dhcpName``'s NIC ``dhcpMac``, the
    network's DHCP server, sent to the router's host when it starts; VM: a user VM's NIC
    ``vmMac``, sent to its host after it starts and when it stops. ``primary``,
    ``isolated`` (the secondary VLAN) and ``pvlanType`` ("I", "C" or "P") are read from the
    network's ``pvlan://<primary>-<i|c|p><secondary>`` broadcast URI (NetUtils);
    ``networkTag`` is the network's traffic label."""

    FQCN: ClassVar[str] = names.PVLAN_SETUP_COMMAND

    op: str | None = None
    primary: str | None = None
    isolated: str | None = None
    vm_mac: str | None = None
    dhcp_name: str | None = None
    dhcp_mac: str | None = None
    dhcp_ip: str | None = None
    type: PvlanSetupType | None = None
    network_tag: str | None = None
    pvlan_type: str | None = None


NETWORK_COMMANDS: tuple[type[Command], ...] = (
    PlugNicCommand,
    UnPlugNicCommand,
    CleanupNetworkRulesCmd,
    CheckSshCommand,
    SecurityGroupRulesCmd,
    NetworkRulesSystemVmCommand,
    NetworkRulesVmSecondaryIpCommand,
    SetupPersistentNetworkCommand,
    CleanupPersistentNetworkResourceCommand,
    PatchSystemVmCommand,
    PvlanSetupCommand,
)
