"""Every command the agent can decode, by Java class name.

The models live in one module per area (``commands_host``, ``commands_vm``,
``commands_network``, ``commands_storage``) and are all re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hyperv_agent.cloudstack.base import Command
from hyperv_agent.cloudstack.commands_host import (
    HOST_COMMANDS,
    CheckHealthCommand,
    CheckNetworkCommand,
    CheckOnHostCommand,
    GetHostStatsCommand,
    HostVmStateReportCommand,
    MaintainCommand,
    PingCommand,
    PingRoutingCommand,
    ReadyCommand,
    SetupCommand,
    StartupCommand,
    StartupRoutingCommand,
    StartupStorageCommand,
)
from hyperv_agent.cloudstack.commands_network import (
    NETWORK_COMMANDS,
    CheckSshCommand,
    CleanupNetworkRulesCmd,
    CleanupPersistentNetworkResourceCommand,
    NetworkRulesSystemVmCommand,
    NetworkRulesVmSecondaryIpCommand,
    PatchSystemVmCommand,
    PlugNicCommand,
    SecurityGroupRulesCmd,
    SetupPersistentNetworkCommand,
    UnPlugNicCommand,
)
from hyperv_agent.cloudstack.commands_storage import (
    STORAGE_COMMANDS,
    AttachCommand,
    CopyCommand,
    CreateCommand,
    CreateObjectCommand,
    CreateStoragePoolCommand,
    DeleteCommand,
    DeleteStoragePoolCommand,
    DestroyCommand,
    DettachCommand,
    GetStorageStatsCommand,
    MigrateVolumeCommand,
    ModifyStoragePoolCommand,
    PrimaryStorageDownloadCommand,
    ResizeVolumeCommand,
)
from hyperv_agent.cloudstack.commands_vm import (
    VM_COMMANDS,
    AttachIsoCommand,
    CheckVirtualMachineCommand,
    GetVmConfigCommand,
    GetVmDiskStatsCommand,
    GetVmNetworkStatsCommand,
    GetVmStatsCommand,
    GetVncPortCommand,
    MigrateCommand,
    MigrateWithStorageCommand,
    ModifyVmNicConfigCommand,
    PrepareForMigrationCommand,
    RebootCommand,
    ScaleVmCommand,
    StartCommand,
    StopCommand,
)

__all__ = [
    "COMMAND_TYPES",
    "AttachCommand",
    "AttachIsoCommand",
    "CheckHealthCommand",
    "CheckNetworkCommand",
    "CheckOnHostCommand",
    "CheckSshCommand",
    "CheckVirtualMachineCommand",
    "CleanupNetworkRulesCmd",
    "CleanupPersistentNetworkResourceCommand",
    "Command",
    "CopyCommand",
    "CreateCommand",
    "CreateObjectCommand",
    "CreateStoragePoolCommand",
    "DeleteCommand",
    "DeleteStoragePoolCommand",
    "DestroyCommand",
    "DettachCommand",
    "GetHostStatsCommand",
    "GetStorageStatsCommand",
    "GetVmConfigCommand",
    "GetVmDiskStatsCommand",
    "GetVmNetworkStatsCommand",
    "GetVmStatsCommand",
    "GetVncPortCommand",
    "HostVmStateReportCommand",
    "MaintainCommand",
    "MigrateCommand",
    "MigrateVolumeCommand",
    "MigrateWithStorageCommand",
    "ModifyStoragePoolCommand",
    "ModifyVmNicConfigCommand",
    "NetworkRulesSystemVmCommand",
    "NetworkRulesVmSecondaryIpCommand",
    "PatchSystemVmCommand",
    "PingCommand",
    "PingRoutingCommand",
    "PlugNicCommand",
    "PrepareForMigrationCommand",
    "PrimaryStorageDownloadCommand",
    "ReadyCommand",
    "RebootCommand",
    "ResizeVolumeCommand",
    "ScaleVmCommand",
    "SecurityGroupRulesCmd",
    "SetupCommand",
    "SetupPersistentNetworkCommand",
    "StartCommand",
    "StartupCommand",
    "StartupRoutingCommand",
    "StartupStorageCommand",
    "StopCommand",
    "UnPlugNicCommand",
]

COMMAND_TYPES: Mapping[str, type[Command]] = MappingProxyType({
    cls.FQCN: cls for cls in (*HOST_COMMANDS, *VM_COMMANDS, *NETWORK_COMMANDS, *STORAGE_COMMANDS)
})
"""Every command model by its Java class name (and the state report's pseudo name)."""
