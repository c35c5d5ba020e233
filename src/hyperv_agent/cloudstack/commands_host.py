"""Commands about the host itself: registration, pings, health, statistics, HA checks."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, JsonValue

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command, wire
from hyperv_agent.cloudstack.enums import (
    LenientHostType,
    LenientHypervisorType,
    LenientStorageResourceType,
)
from hyperv_agent.cloudstack.objects import HostTO, HostVmStateReportEntry, StoragePoolInfo


class StartupCommand(Command):
    """com.cloud.agent.api.StartupCommand: what every startup command carries.

    The URL action of registration; the body holds a StartupRoutingCommand, and the
    reply is a StartupRoutingCommand (the request, filled in) plus an optional
    StartupStorageCommand (§4.3).
    """

    FQCN: ClassVar[str] = names.STARTUP_COMMAND

    type: LenientHostType | None = None
    data_center: str | None = None
    pod: str | None = None
    cluster: str | None = None
    guid: str | None = None
    name: str | None = None
    version: str | None = None
    private_ip_address: str | None = None
    private_netmask: str | None = None
    private_mac_address: str | None = None
    storage_ip_address: str | None = None
    storage_netmask: str | None = None
    storage_mac_address: str | None = None
    public_ip_address: str | None = None
    public_netmask: str | None = None
    public_mac_address: str | None = None
    gateway_ip_address: str | None = None


class StartupRoutingCommand(StartupCommand):
    """The host's inventory: sent by the MS mostly empty, returned filled in (§4.2, §4.3)."""

    FQCN: ClassVar[str] = names.STARTUP_ROUTING_COMMAND

    cpus: int = 0  # physical cores over all sockets
    cpu_sockets: int | None = None
    speed_mhz: Annotated[int, wire("speed")] = 0
    memory_bytes: Annotated[int, wire("memory")] = 0
    dom0_min_memory_bytes: Annotated[int, wire("dom0MinMemory")] = 0
    pool_sync: bool = False
    caps: str | None = None
    pool: str | None = None  # the cluster guid
    hypervisor_type: LenientHypervisorType | None = None
    hypervisor_version: str | None = None
    host_details: dict[str, str] = Field(default_factory=dict)
    host_tags: list[str] | None = None


class StartupStorageCommand(StartupCommand):
    """The host's local storage pool, the optional second element of the startup reply."""

    FQCN: ClassVar[str] = names.STARTUP_STORAGE_COMMAND

    pool_info: StoragePoolInfo | None = None
    resource_type: LenientStorageResourceType | None = None
    total_size_bytes: Annotated[int | None, wire("totalSize")] = None
    template_info: dict[str, JsonValue] | None = None
    host_details: dict[str, str] | None = None
    fs_type: str | None = None
    nfs_share: str | None = None
    parent: str | None = None


class HostVmStateReportCommand(Command):
    """Not a Java class: the VM state report requested with every ping (body ``{}``)."""

    FQCN: ClassVar[str] = names.HOST_VM_STATE_REPORT_COMMAND


class ReadyCommand(Command):
    FQCN: ClassVar[str] = names.READY_COMMAND

    dc_id: int | None = None
    host_id: int | None = None


class SetupCommand(Command):
    FQCN: ClassVar[str] = names.SETUP_COMMAND

    need_setup: bool = False
    multipath: bool = False


class PingCommand(Command):
    FQCN: ClassVar[str] = names.PING_COMMAND

    host_type: LenientHostType | None = None
    host_id: int = 0
    out_of_band: bool | None = None


class PingRoutingCommand(PingCommand):
    FQCN: ClassVar[str] = names.PING_ROUTING_COMMAND

    host_vm_state_report: Annotated[
        dict[str, HostVmStateReportEntry], wire("_hostVmStateReport")
    ] = Field(default_factory=dict)
    gateway_accessible: Annotated[bool | None, wire("_gatewayAccessible")] = None
    vnet_accessible: Annotated[bool | None, wire("_vnetAccessible")] = None


class CheckHealthCommand(Command):
    FQCN: ClassVar[str] = names.CHECK_HEALTH_COMMAND


class CheckNetworkCommand(Command):
    FQCN: ClassVar[str] = names.CHECK_NETWORK_COMMAND


class MaintainCommand(Command):
    FQCN: ClassVar[str] = names.MAINTAIN_COMMAND


class GetHostStatsCommand(Command):
    FQCN: ClassVar[str] = names.GET_HOST_STATS_COMMAND

    host_id: int = 0
    host_guid: str | None = None
    host_name: str | None = None


class CheckOnHostCommand(Command):
    """Is the host ``host`` (a neighbour of this one) alive? Asked during HA (§5.3)."""

    FQCN: ClassVar[str] = names.CHECK_ON_HOST_COMMAND

    host: HostTO


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
