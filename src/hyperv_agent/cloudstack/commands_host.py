"""Commands about the host itself: registration, pings, health, statistics, HA checks."""

from typing import Annotated, ClassVar

from pydantic import Field

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command, JBool, JInt, JLong, JObject, wire
from hyperv_agent.cloudstack.enums import (
    LenientHostType,
    LenientHypervisorType,
    LenientStoragePoolType,
    LenientStorageResourceType,
)
from hyperv_agent.cloudstack.objects import (
    HostTO,
    HostVmStateReportEntry,
    PhysicalNetworkSetupInfo,
    StoragePoolInfo,
)


class StartupCommand(Command):
    """com.cloud.agent.api.StartupCommand: what every startup command carries.

    The URL action of registration; the body holds a StartupRoutingCommand, and the
    reply is a StartupRoutingCommand (the request, filled in) plus an optional
    StartupStorageCommand (protocol §4.3).
    """

    FQCN: ClassVar[str] = names.STARTUP_COMMAND

    type: LenientHostType | None = None
    data_center: str | None = None
    pod: str | None = None
    cluster: str | None = None
    guid: str | None = None
    name: str | None = None
    id: JLong | None = None
    version: str | None = None
    iqn: str | None = None
    public_ip_address: str | None = None
    public_netmask: str | None = None
    public_mac_address: str | None = None
    private_ip_address: str | None = None
    private_mac_address: str | None = None
    private_netmask: str | None = None
    storage_ip_address: str | None = None
    storage_netmask: str | None = None
    storage_mac_address: str | None = None
    storage_ip_address_deux: str | None = None
    storage_mac_address_deux: str | None = None
    storage_netmask_deux: str | None = None
    agent_tag: str | None = None
    resource_name: str | None = None
    gateway_ip_address: str | None = None
    ms_host_list: str | None = None
    connection_transferred: JBool = False
    arch: str | None = None


class StartupRoutingCommand(StartupCommand):
    """The host's inventory: sent by the MS mostly empty, returned filled in (protocol §4.2,
    §4.3)."""

    FQCN: ClassVar[str] = names.STARTUP_ROUTING_COMMAND

    cpu_sockets: JInt | None = None
    cpus: JInt = 0  # physical cores over all sockets
    speed_mhz: Annotated[JLong, wire("speed")] = 0
    cpu_arch: str | None = None
    memory_bytes: Annotated[JLong, wire("memory")] = 0
    dom0_min_memory_bytes: Annotated[JLong, wire("dom0MinMemory")] = 0
    pool_sync: JBool = False
    supports_cloned_volumes: JBool = False
    caps: str | None = None
    pool: str | None = None  # the cluster guid
    hypervisor_type: LenientHypervisorType | None = None
    host_details: dict[str, str] = Field(default_factory=dict)
    host_tags: list[str] | None = None
    hypervisor_version: str | None = None
    group_details: dict[str, dict[str, JObject]] | None = None
    gpu_devices: list[JObject] | None = None
    host_health_check_result: JBool | None = None


class StartupStorageCommand(StartupCommand):
    """The host's local storage pool, the optional second element of the startup reply."""

    FQCN: ClassVar[str] = names.STARTUP_STORAGE_COMMAND

    parent: str | None = None
    template_info: dict[str, JObject] | None = None
    total_size_bytes: Annotated[JLong, wire("totalSize")] = 0
    pool_info: StoragePoolInfo | None = None
    resource_type: LenientStorageResourceType | None = None
    fs_type: LenientStoragePoolType | None = None
    host_details: dict[str, str] | None = None
    nfs_share: str | None = None


class HostVmStateReportCommand(Command):
    """Not a Java class: the VM state report requested with every ping (body ``{}``)."""

    FQCN: ClassVar[str] = names.HOST_VM_STATE_REPORT_COMMAND


class ReadyCommand(Command):
    FQCN: ClassVar[str] = names.READY_COMMAND

    details: Annotated[str | None, wire("_details")] = None
    dc_id: JLong | None = None
    host_id: JLong | None = None
    host_uuid: str | None = None
    host_name: str | None = None
    ms_host_list: list[str] | None = None
    avoid_ms_host_list: list[str] | None = None
    lb_algorithm: str | None = None
    lb_check_interval: JLong | None = None
    enable_human_readable_sizes: JBool | None = None
    arch: str | None = None


class SetupCommand(Command):
    FQCN: ClassVar[str] = names.SETUP_COMMAND

    env: JObject | None = None
    multipath: JBool = False
    need_setup: JBool = False


class PingCommand(Command):
    FQCN: ClassVar[str] = names.PING_COMMAND

    host_type: LenientHostType | None = None
    host_id: JLong = 0
    out_of_band: JBool = False
    command_infos: list[JObject] | None = None


class PingRoutingCommand(PingCommand):
    FQCN: ClassVar[str] = names.PING_ROUTING_COMMAND

    host_vm_state_report: Annotated[
        dict[str, HostVmStateReportEntry], wire("_hostVmStateReport")
    ] = Field(default_factory=dict)
    gateway_accessible: Annotated[JBool, wire("_gatewayAccessible")] = False
    vnet_accessible: Annotated[JBool, wire("_vnetAccessible")] = False
    host_health_check_result: JBool | None = None


class CheckHealthCommand(Command):
    FQCN: ClassVar[str] = names.CHECK_HEALTH_COMMAND


class CheckNetworkCommand(Command):
    """Do the traffic labels of the zone's physical networks name vSwitches here?"""

    FQCN: ClassVar[str] = names.CHECK_NETWORK_COMMAND

    network_info_list: list[PhysicalNetworkSetupInfo] | None = None


class MaintainCommand(Command):
    FQCN: ClassVar[str] = names.MAINTAIN_COMMAND


class GetHostStatsCommand(Command):
    FQCN: ClassVar[str] = names.GET_HOST_STATS_COMMAND

    host_guid: str | None = None
    host_name: str | None = None
    host_id: JLong = 0


class CheckOnHostCommand(Command):
    """Is the host ``host`` (a neighbour of this one) alive? Asked during HA (protocol §5.3)."""

    FQCN: ClassVar[str] = names.CHECK_ON_HOST_COMMAND

    host: HostTO
    report_check_failure_if_one_storage_is_down: JBool = False


HOST_COMMANDS: tuple[type[Command], ...] = (
    StartupCommand,
    StartupRoutingCommand,
    StartupStorageCommand,
    HostVmStateReportCommand,
    ReadyCommand,
    SetupCommand,
    PingCommand,
    PingRoutingCommand,
    CheckHealthCommand,
    CheckNetworkCommand,
    MaintainCommand,
    GetHostStatsCommand,
    CheckOnHostCommand,
)
