"""Network commands. The MS handles most of them itself for Hyper-V (§6); the C# agent
answers the ones that still arrive with a fixed reply, and 404s the rest."""

from __future__ import annotations

from typing import ClassVar

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.cloudstack.enums import LenientVirtualMachineType
from hyperv_agent.cloudstack.objects import NicTO


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


class CleanupNetworkRulesCmd(Command):
    FQCN: ClassVar[str] = names.CLEANUP_NETWORK_RULES_CMD

    interval: int | None = None


class CheckSshCommand(Command):
    FQCN: ClassVar[str] = names.CHECK_SSH_COMMAND

    ip: str | None = None
    port: int | None = None
    interval: int | None = None
    retries: int | None = None
    name: str | None = None


class SecurityGroupRulesCmd(Command):
    FQCN: ClassVar[str] = names.SECURITY_GROUP_RULES_CMD

    vm_name: str | None = None
    vm_id: int | None = None
    guest_ip: str | None = None
    guest_mac: str | None = None
    signature: str | None = None
    seq_num: int | None = None


class NetworkRulesSystemVmCommand(Command):
    FQCN: ClassVar[str] = names.NETWORK_RULES_SYSTEM_VM_COMMAND

    vm_name: str | None = None
    vm_id: int | None = None
    type: LenientVirtualMachineType | None = None


NETWORK_COMMANDS: tuple[type[Command], ...] = (
    PlugNicCommand,
    UnPlugNicCommand,
    CleanupNetworkRulesCmd,
    CheckSshCommand,
    SecurityGroupRulesCmd,
    NetworkRulesSystemVmCommand,
)
