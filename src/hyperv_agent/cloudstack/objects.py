"""Transfer objects: the VM, its disks and NICs, hosts, statistics entries.

Storage objects (data stores, volumes, templates, the wrapped ``DataTO`` and
``DataStoreTO`` unions) live in :mod:`hyperv_agent.cloudstack.storage_objects` and are
re-exported here, so every transfer object can be imported from this module.

Fields are optional unless the agent cannot act without them; a Java primitive the MS
always writes has the Java default (0, false) when absent, as Gson would leave it.
"""

from typing import Annotated

from pydantic import Field

from hyperv_agent.cloudstack.base import (
    JBool,
    JEnumName,
    JFloat,
    JInt,
    JLong,
    JObject,
    WireModel,
    wire,
)
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
    "IpPortAndProto",
    "NetworkTO",
    "NfsTO",
    "NicDetails",
    "NicTO",
    "PhysicalNetworkSetupInfo",
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

    uuid: str | None = None  # in a NicTO: the network's uuid (the NIC's is nicUuid)
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
    security_group_enabled: JBool = False
    ip6_address: Annotated[str | None, wire("ip6address")] = None
    ip6_gateway: Annotated[str | None, wire("ip6gateway")] = None
    ip6_cidr: Annotated[str | None, wire("ip6cidr")] = None
    ip6_dns1: Annotated[str | None, wire("ip6Dns1")] = None
    ip6_dns2: Annotated[str | None, wire("ip6Dns2")] = None


class NicTO(NetworkTO):
    """One NIC of a VM (VirtualMachineTO.nics, PlugNicCommand.nic)."""

    device_id: JInt = 0
    default_nic: JBool = False
    network_rate_mbps: JInt | None = None
    network_rate_multicast_mbps: JInt | None = None
    pxe_disable: JBool = False
    nic_uuid: str | None = None
    nic_sec_ips: list[str] | None = None
    details: dict[str, str] | None = None
    dpdk_enabled: JBool = False
    mtu: JInt | None = None
    network_id: JLong | None = None
    network_segment_name: str | None = None


class DiskTO(WireModel):
    """One disk of a VM. ``data`` is absent, or a TemplateObjectTO without ``path``, for
    an empty DVD drive."""

    type: LenientVolumeType
    data: DataTO | None = None
    disk_seq: JLong | None = None
    path: str | None = None
    details: dict[str, str] | None = None


class VirtualMachineTO(WireModel):
    """A VM as the MS wants it (StartCommand.vm and others)."""

    name: str  # the instance name: i-2-17-VM, r-4-VM, s-1-VM, v-2-VM
    id: JLong = 0
    uuid: str | None = None
    bootloader: JEnumName | None = None
    state: JEnumName | None = None  # VirtualMachine.State: Starting, Running, ...
    type: LenientVirtualMachineType | None = None
    cpus: JInt = 0
    speed_mhz: Annotated[JInt | None, wire("speed")] = None
    min_speed_mhz: Annotated[JInt | None, wire("minSpeed")] = None
    max_speed_mhz: Annotated[JInt | None, wire("maxSpeed")] = None
    min_ram_bytes: Annotated[JLong, wire("minRam")] = 0
    max_ram_bytes: Annotated[JLong, wire("maxRam")] = 0
    host_name: str | None = None
    arch: str | None = None
    os: str | None = None
    platform_emulator: str | None = None
    boot_args: str | None = None
    bootup_scripts: list[str | None] | None = None
    enable_ha: Annotated[JBool, wire("enableHA")] = False
    limit_cpu_use: JBool = False
    enable_dynamically_scale_vm: JBool = False
    vnc_password: Annotated[str | None, wire("vncPassword", secret=True)] = None
    vnc_addr: str | None = None
    details: dict[str, str] | None = None
    params: dict[str, str] | None = None
    boot_type: str | None = None
    boot_mode: str | None = None
    enter_hardware_setup: JBool = False
    disks: list[DiskTO] = Field(default_factory=list)
    nics: list[NicTO] = Field(default_factory=list)
    gpu_device: JObject | None = None
    vcpu_max_limit: JInt | None = None
    vm_data: list[list[str | None]] | None = None
    config_drive_label: str | None = None
    config_drive_iso_root_folder: str | None = None
    config_drive_iso_file: str | None = None
    config_drive_location: JEnumName | None = None
    cpu_quota_percentage: JFloat | None = None
    guest_os_details: dict[str, str] | None = None
    extra_config: dict[str, str] | None = None
    network_id_to_network_name_map: dict[str, str] | None = None
    deploy_as_is_info: JObject | None = None
    metadata_manufacturer: str | None = None
    metadata_product_name: str | None = None


class HostTO(WireModel):
    """com.cloud.agent.api.to.HostTO (CheckOnHostCommand.host)."""

    guid: str | None = None
    private_network: NetworkTO | None = None
    public_network: NetworkTO | None = None
    storage_network1: Annotated[NetworkTO | None, wire("storageNetwork1")] = None
    storage_network2: Annotated[NetworkTO | None, wire("storageNetwork2")] = None
    parent: str | None = None


class HostVmStateReportEntry(WireModel):
    """One VM of PingRoutingCommand._hostVmStateReport."""

    state: LenientPowerState | None = None
    host: str | None = None


class VolumeFilerPair(WireModel):
    """``Pair<VolumeTO, StorageFilerTO>`` as Gson writes it: ``{"t": ..., "u": ...}``."""

    t: VolumeTO
    u: StorageFilerTO


class PhysicalNetworkSetupInfo(WireModel):
    """com.cloud.network.PhysicalNetworkSetupInfo: the traffic labels of one physical
    network (CheckNetworkCommand.networkInfoList)."""

    physical_network_id: JLong = 0
    private_network_name: str | None = None
    public_network_name: str | None = None
    guest_network_name: str | None = None
    storage_network_name: str | None = None
    mgmt_vlan: str | None = None


class IpPortAndProto(WireModel):
    """One rule of SecurityGroupRulesCmd.ingressRuleSet/egressRuleSet."""

    proto: str | None = None
    start_port: JInt = 0
    end_port: JInt = 0
    allowed_cidrs: list[str] | None = None


class HostStatsEntry(WireModel):
    """GetHostStatsAnswer.hostStats. The KBs fields are kilobytes (KiB for memory)."""

    host_id: JLong = 0
    entity_type: str = "host"
    cpu_utilization_percent: Annotated[JFloat, wire("cpuUtilization")] = 0.0
    average_load: JFloat = 0.0  # a Unix load average on KVM; Windows keeps none: always 0
    network_read_kb: Annotated[JFloat, wire("networkReadKBs")] = 0.0
    network_write_kb: Annotated[JFloat, wire("networkWriteKBs")] = 0.0
    total_memory_kb: Annotated[JFloat, wire("totalMemoryKBs")] = 0.0
    free_memory_kb: Annotated[JFloat, wire("freeMemoryKBs")] = 0.0


class VmStatsEntry(WireModel):
    """One VM of GetVmStatsAnswer.vmStatsMap (VmStatsEntryBase's fields and vmUuid).

    The disk counters are what the VM did since the previous GetVmStatsCommand (I/O
    operations and KiB), as CloudStack's KVM agent reports them.
    """

    vm_id: JLong = 0
    vm_uuid: str | None = None
    cpu_utilization_percent: Annotated[JFloat, wire("cpuUtilization")] = 0.0
    network_read_kb: Annotated[JFloat, wire("networkReadKBs")] = 0.0
    network_write_kb: Annotated[JFloat, wire("networkWriteKBs")] = 0.0
    disk_read_ios: Annotated[JFloat, wire("diskReadIOs")] = 0.0
    disk_write_ios: Annotated[JFloat, wire("diskWriteIOs")] = 0.0
    disk_read_kb: Annotated[JFloat, wire("diskReadKBs")] = 0.0
    disk_write_kb: Annotated[JFloat, wire("diskWriteKBs")] = 0.0
    memory_kb: Annotated[JFloat, wire("memoryKBs")] = 0.0
    int_free_memory_kb: Annotated[JFloat, wire("intFreeMemoryKBs")] = 0.0
    target_memory_kb: Annotated[JFloat, wire("targetMemoryKBs")] = 0.0
    num_cpus: Annotated[JInt, wire("numCPUs")] = 0
    entity_type: str = "vm"


class VmDiskStatsEntry(WireModel):
    """One disk of GetVmDiskStatsAnswer.vmDiskStatsMap."""

    vm_name: str | None = None
    path: str | None = None
    io_read: JLong = 0
    io_write: JLong = 0
    bytes_read: JLong = 0
    bytes_write: JLong = 0
    delta_io_read: JLong = 0
    delta_io_write: JLong = 0
    delta_bytes_read: JLong = 0
    delta_bytes_write: JLong = 0


class VolumeStatsEntry(WireModel):
    """One volume of GetVolumeStatsAnswer.volumeStats, in bytes: ``physicalsize`` (Java
    spells it so) is the space its file takes, ``virtualSize`` the disk's size as its
    guest sees it. The MS shows their ratio as the volume's utilisation."""

    volume_uuid: str | None = None
    physical_size_bytes: Annotated[JLong, wire("physicalsize")] = 0
    virtual_size_bytes: Annotated[JLong, wire("virtualSize")] = 0


class VmNetworkStatsEntry(WireModel):
    """One network adapter of GetVmNetworkStatsAnswer.vmNetworkStatsMap: bytes sent and
    received since the VM started. ``macAddress`` is written as CloudStack stores a NIC's
    (``02:00:4c:5f:00:08``), which the management server looks the NIC up by."""

    vm_name: str | None = None
    mac_address: str | None = None
    bytes_sent: JLong = 0
    bytes_received: JLong = 0


class NicDetails(WireModel):
    """One NIC of GetVmConfigAnswer.nics (Hyper-V enumeration order)."""

    mac_address: str  # 12 hex digits, no separators
    vlan_id: Annotated[str, wire("vlanid")] = "-1"  # a Java String: "-1" means no VLAN
    state: JBool = False  # connected (switch port EnabledState 2)
