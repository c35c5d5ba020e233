"""Transfer objects: the VM, its disks and NICs, hosts, statistics entries.

Storage objects (data stores, volumes, templates, the wrapped ``DataTO`` and
``DataStoreTO`` unions) live in :mod:`hyperv_agent.cloudstack.storage_objects` and are
re-exported here, so every transfer object can be imported from this module.

Fields are optional unless the agent cannot act without them; a Java primitive the MS
always writes has the Java default (0, false) when absent, as Gson would leave it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hyperv_agent.cloudstack.base import WireModel, wire
from hyperv_agent.cloudstack.enums import (
    LenientBroadcastDomainType,
    LenientPowerState,
    LenientTrafficType,
    LenientVirtualMachineType,
    LenientVolumeType,
)
from hyperv_agent.cloudstack.storage_objects import (
    DATA_STORE_TO_CLASSES,
    DATA_TO_CLASSES,
    S3TO,
    DataStoreTO,
    DataTO,
    DiskProfile,
    NfsTO,
    PrimaryDataStoreTO,
    StorageFilerTO,
    StoragePoolInfo,
    SwiftTO,
    TemplateObjectTO,
    VolumeObjectTO,
    VolumeTO,
    WrappedTO,
)

__all__ = [
    "DATA_STORE_TO_CLASSES",
    "DATA_TO_CLASSES",
    "S3TO",
    "DataStoreTO",
    "DataTO",
    "DiskProfile",
    "DiskTO",
    "HostStatsEntry",
    "HostTO",
    "HostVmStateReportEntry",
    "NetworkTO",
    "NfsTO",
    "NicDetails",
    "NicTO",
    "PrimaryDataStoreTO",
    "StorageFilerTO",
    "StoragePoolInfo",
    "SwiftTO",
    "TemplateObjectTO",
    "VirtualMachineTO",
    "VmDiskStatsEntry",
    "VmStatsEntry",
    "VolumeFilerPair",
    "VolumeObjectTO",
    "VolumeTO",
    "WrappedTO",
]


class NetworkTO(WireModel):
    """com.cloud.agent.api.to.NetworkTO: an address on a network (HostTO, NicTO)."""

    uuid: str | None = None
    name: str | None = None  # traffic label = the Hyper-V virtual switch name
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    mac: str | None = None  # "02:00:51:2c:00:0e"
    dns1: str | None = None
    dns2: str | None = None
    type: LenientTrafficType | None = None
    broadcast_type: LenientBroadcastDomainType | None = None
    broadcast_uri: str | None = None  # "vlan://261", "storage://<vlan>"
    isolation_uri: str | None = None  # "vlan://261", "vlan://untagged"
    is_security_group_enabled: bool | None = None
    ip6address: str | None = None
    ip6gateway: str | None = None
    ip6cidr: str | None = None


class NicTO(NetworkTO):
    """One NIC of a VM (VirtualMachineTO.nics, PlugNicCommand.nic)."""

    device_id: int = 0
    default_nic: bool = False
    network_rate_mbps: int | None = None
    network_rate_multicast_mbps: int | None = None
    pxe_disable: bool | None = None
    nic_uuid: str | None = None
    nic_sec_ips: list[str] | None = None
    details: dict[str, str] | None = None
    mtu: int | None = None


class DiskTO(WireModel):
    """One disk of a VM; ``data`` is absent for an empty CD drive."""

    type: LenientVolumeType
    data: DataTO | None = None
    disk_seq: int | None = None
    path: str | None = None
    details: dict[str, str] | None = None


class VirtualMachineTO(WireModel):
    """A VM as the MS wants it (StartCommand.vm and others)."""

    name: str  # the instance name: i-2-17-VM, r-4-VM, s-1-VM, v-2-VM
    id: int = 0
    uuid: str | None = None
    type: LenientVirtualMachineType | None = None
    cpus: int = 0
    speed_mhz: Annotated[int | None, wire("speed")] = None
    min_speed_mhz: Annotated[int | None, wire("minSpeed")] = None
    max_speed_mhz: Annotated[int | None, wire("maxSpeed")] = None
    min_ram_bytes: Annotated[int, wire("minRam")] = 0
    max_ram_bytes: Annotated[int, wire("maxRam")] = 0
    host_name: str | None = None
    arch: str | None = None
    os: str | None = None
    bootloader: str | None = None
    boot_type: str | None = None
    boot_mode: str | None = None
    boot_args: str | None = None
    enable_ha: Annotated[bool, wire("enableHA")] = False
    limit_cpu_use: bool = False
    enable_dynamically_scale_vm: bool | None = None
    vnc_password: Annotated[str | None, wire("vncPassword", secret=True)] = None
    vnc_addr: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    disks: list[DiskTO] = Field(default_factory=list)
    nics: list[NicTO] = Field(default_factory=list)


class HostTO(WireModel):
    """com.cloud.agent.api.to.HostTO (CheckOnHostCommand.host)."""

    guid: str | None = None
    private_network: NetworkTO | None = None
    public_network: NetworkTO | None = None
    storage_network1: Annotated[NetworkTO | None, wire("storageNetwork1")] = None
    storage_network2: Annotated[NetworkTO | None, wire("storageNetwork2")] = None


class HostVmStateReportEntry(WireModel):
    """One VM of PingRoutingCommand._hostVmStateReport."""

    state: LenientPowerState | None = None
    host: str | None = None


class VolumeFilerPair(WireModel):
    """``Pair<VolumeTO, StorageFilerTO>`` as Gson writes it: ``{"t": ..., "u": ...}``."""

    t: VolumeTO
    u: StorageFilerTO


class HostStatsEntry(WireModel):
    """GetHostStatsAnswer.hostStats. The KBs fields are kilobytes (KiB for memory)."""

    host_id: int = 0
    entity_type: str = "host"
    cpu_utilization_percent: Annotated[float, wire("cpuUtilization")] = 0.0
    network_read_kb: Annotated[float, wire("networkReadKBs")] = 0.0
    network_write_kb: Annotated[float, wire("networkWriteKBs")] = 0.0
    total_memory_kb: Annotated[float, wire("totalMemoryKBs")] = 0.0
    free_memory_kb: Annotated[float, wire("freeMemoryKBs")] = 0.0
    cpu_sockets: int | None = None


class VmStatsEntry(WireModel):
    """One VM of GetVmStatsAnswer.vmStatsMap."""

    cpu_utilization_percent: Annotated[float, wire("cpuUtilization")] = 0.0
    network_read_kb: Annotated[float, wire("networkReadKBs")] = 0.0
    network_write_kb: Annotated[float, wire("networkWriteKBs")] = 0.0
    num_cpus: Annotated[int, wire("numCPUs")] = 0
    entity_type: str = "vm"
    vm_name: str | None = None
    vm_uuid: str | None = None
    disk_read_iops: float | None = None
    disk_write_iops: float | None = None
    disk_read_kb: Annotated[float | None, wire("diskReadKBs")] = None
    disk_write_kb: Annotated[float | None, wire("diskWriteKBs")] = None
    memory_kb: Annotated[float | None, wire("memoryKBs")] = None
    int_free_memory_kb: Annotated[float | None, wire("intFreeMemoryKBs")] = None
    target_memory_kb: Annotated[float | None, wire("targetMemoryKBs")] = None


class VmDiskStatsEntry(WireModel):
    """One disk of GetVmDiskStatsAnswer.vmDiskStatsMap."""

    vm_name: str | None = None
    path: str | None = None
    io_read: int = 0
    io_write: int = 0
    bytes_read: int = 0
    bytes_write: int = 0


class NicDetails(WireModel):
    """One NIC of GetVmConfigAnswer.nics (Hyper-V enumeration order)."""

    mac_address: str  # 12 hex digits, no separators
    vlan_id: Annotated[int, wire("vlanid")] = -1  # -1: no VLAN on the port
    state: bool = False  # connected (switch port EnabledState 2)
