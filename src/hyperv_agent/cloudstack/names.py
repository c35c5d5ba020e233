"""Java class names (FQCNs) of the commands, answers and transfer objects on the wire.

The management server (MS) names a command by its Java class in the URL
(``POST /api/HypervResource/<FQCN>``) and reads every answer under its Java class name
(``[{"<answer FQCN>": {...}}]``). The names are the MS's, spelling mistakes included
(``DettachCommand``). Nothing here is configurable: an answer under a class name the MS
cannot load breaks the MS's parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

_API: Final = "com.cloud.agent.api."
_STORAGE: Final = "com.cloud.agent.api.storage."
_CHECK: Final = "com.cloud.agent.api.check."
_STORAGE_COMMAND: Final = "org.apache.cloudstack.storage.command."
_TO: Final = "com.cloud.agent.api.to."
_STORAGE_TO: Final = "org.apache.cloudstack.storage.to."

# --- host lifecycle -----------------------------------------------------------------------
STARTUP_COMMAND: Final = _API + "StartupCommand"
STARTUP_ROUTING_COMMAND: Final = _API + "StartupRoutingCommand"
STARTUP_STORAGE_COMMAND: Final = _API + "StartupStorageCommand"
# Not a Java class: the URL action of the VM state report that goes with every ping (protocol §4.5).
HOST_VM_STATE_REPORT_COMMAND: Final = "org.apache.cloudstack.HostVmStateReportCommand"
READY_COMMAND: Final = _API + "ReadyCommand"
READY_ANSWER: Final = _API + "ReadyAnswer"
SETUP_COMMAND: Final = _API + "SetupCommand"
SETUP_ANSWER: Final = _API + "SetupAnswer"
PING_COMMAND: Final = _API + "PingCommand"
PING_ROUTING_COMMAND: Final = _API + "PingRoutingCommand"
CHECK_HEALTH_COMMAND: Final = _API + "CheckHealthCommand"
CHECK_HEALTH_ANSWER: Final = _API + "CheckHealthAnswer"
CHECK_NETWORK_COMMAND: Final = _API + "CheckNetworkCommand"
CHECK_NETWORK_ANSWER: Final = _API + "CheckNetworkAnswer"
MAINTAIN_COMMAND: Final = _API + "MaintainCommand"
MAINTAIN_ANSWER: Final = _API + "MaintainAnswer"
GET_HOST_STATS_COMMAND: Final = _API + "GetHostStatsCommand"
GET_HOST_STATS_ANSWER: Final = _API + "GetHostStatsAnswer"
CHECK_ON_HOST_COMMAND: Final = _API + "CheckOnHostCommand"
CHECK_ON_HOST_ANSWER: Final = _API + "CheckOnHostAnswer"

# --- generic answers ----------------------------------------------------------------------
ANSWER: Final = _API + "Answer"
UNSUPPORTED_ANSWER: Final = _API + "UnsupportedAnswer"

# --- virtual machines ---------------------------------------------------------------------
START_COMMAND: Final = _API + "StartCommand"
START_ANSWER: Final = _API + "StartAnswer"
STOP_COMMAND: Final = _API + "StopCommand"
STOP_ANSWER: Final = _API + "StopAnswer"
REBOOT_COMMAND: Final = _API + "RebootCommand"
REBOOT_ANSWER: Final = _API + "RebootAnswer"
CHECK_VIRTUAL_MACHINE_COMMAND: Final = _API + "CheckVirtualMachineCommand"
CHECK_VIRTUAL_MACHINE_ANSWER: Final = _API + "CheckVirtualMachineAnswer"
GET_VNC_PORT_COMMAND: Final = _API + "GetVncPortCommand"
GET_VNC_PORT_ANSWER: Final = _API + "GetVncPortAnswer"
GET_VM_STATS_COMMAND: Final = _API + "GetVmStatsCommand"
GET_VM_STATS_ANSWER: Final = _API + "GetVmStatsAnswer"
GET_VM_DISK_STATS_COMMAND: Final = _API + "GetVmDiskStatsCommand"
GET_VM_DISK_STATS_ANSWER: Final = _API + "GetVmDiskStatsAnswer"
GET_VM_NETWORK_STATS_COMMAND: Final = _API + "GetVmNetworkStatsCommand"
GET_VM_NETWORK_STATS_ANSWER: Final = _API + "GetVmNetworkStatsAnswer"
GET_VM_IP_ADDRESS_COMMAND: Final = _API + "GetVmIpAddressCommand"  # answered with an Answer
GET_VM_CONFIG_COMMAND: Final = _API + "GetVmConfigCommand"
GET_VM_CONFIG_ANSWER: Final = _API + "GetVmConfigAnswer"
MODIFY_VM_NIC_CONFIG_COMMAND: Final = _API + "ModifyVmNicConfigCommand"
MODIFY_VM_NIC_CONFIG_ANSWER: Final = _API + "ModifyVmNicConfigAnswer"
SCALE_VM_COMMAND: Final = _API + "ScaleVmCommand"
SCALE_VM_ANSWER: Final = _API + "ScaleVmAnswer"
ATTACH_ISO_COMMAND: Final = _API + "AttachIsoCommand"
PREPARE_FOR_MIGRATION_COMMAND: Final = _API + "PrepareForMigrationCommand"
PREPARE_FOR_MIGRATION_ANSWER: Final = _API + "PrepareForMigrationAnswer"
MIGRATE_COMMAND: Final = _API + "MigrateCommand"
MIGRATE_ANSWER: Final = _API + "MigrateAnswer"
MIGRATE_WITH_STORAGE_COMMAND: Final = _API + "MigrateWithStorageCommand"
MIGRATE_WITH_STORAGE_ANSWER: Final = _API + "MigrateWithStorageAnswer"

# --- networking ---------------------------------------------------------------------------
PLUG_NIC_COMMAND: Final = _API + "PlugNicCommand"
PLUG_NIC_ANSWER: Final = _API + "PlugNicAnswer"
UNPLUG_NIC_COMMAND: Final = _API + "UnPlugNicCommand"
UNPLUG_NIC_ANSWER: Final = _API + "UnPlugNicAnswer"
CLEANUP_NETWORK_RULES_CMD: Final = _API + "CleanupNetworkRulesCmd"
SECURITY_GROUP_RULES_CMD: Final = _API + "SecurityGroupRulesCmd"
SECURITY_GROUP_RULE_ANSWER: Final = _API + "SecurityGroupRuleAnswer"
NETWORK_RULES_SYSTEM_VM_COMMAND: Final = _API + "NetworkRulesSystemVmCommand"
NETWORK_RULES_VM_SECONDARY_IP_COMMAND: Final = _API + "NetworkRulesVmSecondaryIpCommand"
CHECK_SSH_COMMAND: Final = _CHECK + "CheckSshCommand"
CHECK_SSH_ANSWER: Final = _CHECK + "CheckSshAnswer"
SETUP_PERSISTENT_NETWORK_COMMAND: Final = _API + "SetupPersistentNetworkCommand"
SETUP_PERSISTENT_NETWORK_ANSWER: Final = _API + "SetupPersistentNetworkAnswer"
CLEANUP_PERSISTENT_NETWORK_RESOURCE_COMMAND: Final = (
    _API + "CleanupPersistentNetworkResourceCommand")
CLEANUP_PERSISTENT_NETWORK_RESOURCE_ANSWER: Final = _API + "CleanupPersistentNetworkResourceAnswer"
PVLAN_SETUP_COMMAND: Final = _API + "PvlanSetupCommand"
PATCH_SYSTEM_VM_COMMAND: Final = _API + "PatchSystemVmCommand"
PATCH_SYSTEM_VM_ANSWER: Final = _API + "PatchSystemVmAnswer"

# --- storage pools ------------------------------------------------------------------------
MODIFY_STORAGE_POOL_COMMAND: Final = _API + "ModifyStoragePoolCommand"
MODIFY_STORAGE_POOL_ANSWER: Final = _API + "ModifyStoragePoolAnswer"
CREATE_STORAGE_POOL_COMMAND: Final = _API + "CreateStoragePoolCommand"
DELETE_STORAGE_POOL_COMMAND: Final = _API + "DeleteStoragePoolCommand"
GET_STORAGE_STATS_COMMAND: Final = _API + "GetStorageStatsCommand"
GET_STORAGE_STATS_ANSWER: Final = _API + "GetStorageStatsAnswer"
GET_VOLUME_STATS_COMMAND: Final = _API + "GetVolumeStatsCommand"
GET_VOLUME_STATS_ANSWER: Final = _API + "GetVolumeStatsAnswer"
HANDLE_CONFIG_DRIVE_ISO_COMMAND: Final = _API + "HandleConfigDriveIsoCommand"
HANDLE_CONFIG_DRIVE_ISO_ANSWER: Final = _API + "HandleConfigDriveIsoAnswer"

# --- volumes and templates (storage subsystem, 4.2+) --------------------------------------
ATTACH_COMMAND: Final = _STORAGE_COMMAND + "AttachCommand"
ATTACH_ANSWER: Final = _STORAGE_COMMAND + "AttachAnswer"
DETTACH_COMMAND: Final = _STORAGE_COMMAND + "DettachCommand"  # sic: the MS's spelling
DETTACH_ANSWER: Final = _STORAGE_COMMAND + "DettachAnswer"  # sic
COPY_COMMAND: Final = _STORAGE_COMMAND + "CopyCommand"
COPY_CMD_ANSWER: Final = _STORAGE_COMMAND + "CopyCmdAnswer"
CREATE_OBJECT_COMMAND: Final = _STORAGE_COMMAND + "CreateObjectCommand"
CREATE_OBJECT_ANSWER: Final = _STORAGE_COMMAND + "CreateObjectAnswer"
DELETE_COMMAND: Final = _STORAGE_COMMAND + "DeleteCommand"
RESIZE_VOLUME_COMMAND: Final = _STORAGE + "ResizeVolumeCommand"
RESIZE_VOLUME_ANSWER: Final = _STORAGE + "ResizeVolumeAnswer"
MIGRATE_VOLUME_COMMAND: Final = _STORAGE + "MigrateVolumeCommand"
MIGRATE_VOLUME_ANSWER: Final = _STORAGE + "MigrateVolumeAnswer"

# --- legacy (pre-4.2) storage commands, still routed by the C# agent -----------------------
CREATE_COMMAND: Final = _STORAGE + "CreateCommand"
CREATE_ANSWER: Final = _STORAGE + "CreateAnswer"
DESTROY_COMMAND: Final = _STORAGE + "DestroyCommand"
PRIMARY_STORAGE_DOWNLOAD_COMMAND: Final = _STORAGE + "PrimaryStorageDownloadCommand"
PRIMARY_STORAGE_DOWNLOAD_ANSWER: Final = _STORAGE + "PrimaryStorageDownloadAnswer"

# --- polymorphic transfer objects (wrapped as {"<FQCN>": {...}} on the wire, protocol §3.3)
VOLUME_OBJECT_TO: Final = _STORAGE_TO + "VolumeObjectTO"
TEMPLATE_OBJECT_TO: Final = _STORAGE_TO + "TemplateObjectTO"
PRIMARY_DATA_STORE_TO: Final = _STORAGE_TO + "PrimaryDataStoreTO"
NFS_TO: Final = _TO + "NfsTO"
S3_TO: Final = _TO + "S3TO"
SWIFT_TO: Final = _TO + "SwiftTO"

# Commands whose reply is not an Answer[]: StartupCommand answers a Command[] (protocol §4.3) and
# the state report a bare array of {"<vm>": "<PowerState>"} (protocol §4.5).
SPECIAL_REPLIES: Final = frozenset({STARTUP_COMMAND, HOST_VM_STATE_REPORT_COMMAND})

# The answer class of every command with an Answer[] reply (protocol §5.1, and the commands the
# C# agent leaves to HTTP 404 that a later handler may serve).
ANSWER_FOR: Final[Mapping[str, str]] = MappingProxyType({
    READY_COMMAND: READY_ANSWER,
    SETUP_COMMAND: SETUP_ANSWER,
    PING_ROUTING_COMMAND: ANSWER,
    PING_COMMAND: ANSWER,
    CHECK_HEALTH_COMMAND: CHECK_HEALTH_ANSWER,
    CHECK_NETWORK_COMMAND: CHECK_NETWORK_ANSWER,
    MAINTAIN_COMMAND: MAINTAIN_ANSWER,
    PREPARE_FOR_MIGRATION_COMMAND: PREPARE_FOR_MIGRATION_ANSWER,
    CLEANUP_NETWORK_RULES_CMD: ANSWER,
    CHECK_SSH_COMMAND: CHECK_SSH_ANSWER,
    SETUP_PERSISTENT_NETWORK_COMMAND: SETUP_PERSISTENT_NETWORK_ANSWER,
    CLEANUP_PERSISTENT_NETWORK_RESOURCE_COMMAND: CLEANUP_PERSISTENT_NETWORK_RESOURCE_ANSWER,
    PATCH_SYSTEM_VM_COMMAND: PATCH_SYSTEM_VM_ANSWER,
    PVLAN_SETUP_COMMAND: ANSWER,
    PLUG_NIC_COMMAND: PLUG_NIC_ANSWER,
    UNPLUG_NIC_COMMAND: UNPLUG_NIC_ANSWER,
    CREATE_STORAGE_POOL_COMMAND: ANSWER,
    DELETE_STORAGE_POOL_COMMAND: ANSWER,
    MODIFY_STORAGE_POOL_COMMAND: MODIFY_STORAGE_POOL_ANSWER,
    GET_STORAGE_STATS_COMMAND: GET_STORAGE_STATS_ANSWER,
    GET_VOLUME_STATS_COMMAND: GET_VOLUME_STATS_ANSWER,
    HANDLE_CONFIG_DRIVE_ISO_COMMAND: HANDLE_CONFIG_DRIVE_ISO_ANSWER,
    GET_HOST_STATS_COMMAND: GET_HOST_STATS_ANSWER,
    GET_VM_STATS_COMMAND: GET_VM_STATS_ANSWER,
    GET_VM_DISK_STATS_COMMAND: GET_VM_DISK_STATS_ANSWER,
    GET_VM_NETWORK_STATS_COMMAND: GET_VM_NETWORK_STATS_ANSWER,
    GET_VM_IP_ADDRESS_COMMAND: ANSWER,
    CHECK_VIRTUAL_MACHINE_COMMAND: CHECK_VIRTUAL_MACHINE_ANSWER,
    GET_VNC_PORT_COMMAND: GET_VNC_PORT_ANSWER,
    START_COMMAND: START_ANSWER,
    STOP_COMMAND: STOP_ANSWER,
    REBOOT_COMMAND: REBOOT_ANSWER,
    SCALE_VM_COMMAND: SCALE_VM_ANSWER,
    ATTACH_ISO_COMMAND: ANSWER,
    MIGRATE_COMMAND: MIGRATE_ANSWER,
    MIGRATE_WITH_STORAGE_COMMAND: MIGRATE_WITH_STORAGE_ANSWER,
    MIGRATE_VOLUME_COMMAND: MIGRATE_VOLUME_ANSWER,
    ATTACH_COMMAND: ATTACH_ANSWER,
    DETTACH_COMMAND: DETTACH_ANSWER,
    CREATE_OBJECT_COMMAND: CREATE_OBJECT_ANSWER,
    GET_VM_CONFIG_COMMAND: GET_VM_CONFIG_ANSWER,
    MODIFY_VM_NIC_CONFIG_COMMAND: MODIFY_VM_NIC_CONFIG_ANSWER,
    COPY_COMMAND: COPY_CMD_ANSWER,
    DELETE_COMMAND: ANSWER,
    RESIZE_VOLUME_COMMAND: RESIZE_VOLUME_ANSWER,
    CHECK_ON_HOST_COMMAND: CHECK_ON_HOST_ANSWER,
    DESTROY_COMMAND: ANSWER,
    CREATE_COMMAND: CREATE_ANSWER,
    PRIMARY_STORAGE_DOWNLOAD_COMMAND: PRIMARY_STORAGE_DOWNLOAD_ANSWER,
    SECURITY_GROUP_RULES_CMD: SECURITY_GROUP_RULE_ANSWER,
    NETWORK_RULES_SYSTEM_VM_COMMAND: ANSWER,
    NETWORK_RULES_VM_SECONDARY_IP_COMMAND: ANSWER,
})
