"""Commands about virtual machines: lifecycle, state, console, statistics, NICs, migration."""

from typing import Annotated, ClassVar

from pydantic import Field

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command, JBool, JInt, JLong, JObject, wire
from hyperv_agent.cloudstack.objects import NicTO, VirtualMachineTO, VolumeFilerPair


class StartCommand(Command):
    """Create (or re-create) and start ``vm`` (protocol §9)."""

    FQCN: ClassVar[str] = names.START_COMMAND

    vm: VirtualMachineTO
    host_ip: str | None = None
    execute_in_sequence: JBool = False
    # For system VMs: the zone's image store URI, cifs://...?user=..&password=.. (protocol §9.3).
    secondary_storage: Annotated[str | None, wire("secondaryStorage", secret=True)] = None


class StopCommand(Command):
    """Stop the VM and remove its definition; its disks stay (protocol §5.3). In Java a
    RebootCommand, whose fields (vmName, vm, executeInSequence) come first here."""

    FQCN: ClassVar[str] = names.STOP_COMMAND

    vm_name: str
    vm: VirtualMachineTO | None = None
    execute_in_sequence: JBool = False
    is_proxy: JBool = False
    url_port: str | None = None
    public_console_proxy_ip_address: str | None = None
    gpu_device: JObject | None = None
    check_before_cleanup: JBool = False
    control_ip: str | None = None
    force_stop: JBool = False
    dpdk_interface_mapping: dict[str, JObject] | None = None
    vlan_to_persistence_map: dict[str, JBool] | None = None
    expunge_vm: Annotated[JBool, wire("expungeVM")] = False
    volumes_to_disconnect: list[dict[str, str]] | None = None


class RebootCommand(Command):
    FQCN: ClassVar[str] = names.REBOOT_COMMAND

    vm_name: str
    vm: VirtualMachineTO | None = None
    execute_in_sequence: JBool = False


class CheckVirtualMachineCommand(Command):
    FQCN: ClassVar[str] = names.CHECK_VIRTUAL_MACHINE_COMMAND

    vm_name: str


class GetVncPortCommand(Command):
    """Console access: answered with the VM's Hyper-V id and port -9 (RDP) (protocol §8)."""

    FQCN: ClassVar[str] = names.GET_VNC_PORT_COMMAND

    vm_id: Annotated[JLong, wire("id")] = 0
    vm_name: Annotated[str, wire("name")]


class GetVmStatsCommand(Command):
    FQCN: ClassVar[str] = names.GET_VM_STATS_COMMAND

    vm_names: list[str] = Field(default_factory=list)
    host_guid: str | None = None
    host_name: str | None = None


class GetVmDiskStatsCommand(Command):
    FQCN: ClassVar[str] = names.GET_VM_DISK_STATS_COMMAND

    vm_names: list[str] = Field(default_factory=list)
    host_guid: str | None = None
    host_name: str | None = None


class GetVmNetworkStatsCommand(Command):
    FQCN: ClassVar[str] = names.GET_VM_NETWORK_STATS_COMMAND

    vm_names: list[str] = Field(default_factory=list)
    host_guid: str | None = None
    host_name: str | None = None


class GetVmIpAddressCommand(Command):
    """The IPv4 address the guest holds on one NIC (``macAddress``) in ``vmNetworkCidr``
    (absent for an L2 network): sent for VMs on networks whose addresses an external DHCP
    server gives (protocol §5.1)."""

    FQCN: ClassVar[str] = names.GET_VM_IP_ADDRESS_COMMAND

    vm_name: str
    vm_network_cidr: str | None = None
    windows: JBool = False
    mac_address: str | None = None


class GetVmConfigCommand(Command):
    """List the VM's NICs (MAC, VLAN, connected); used by the MS's router code (protocol §6)."""

    FQCN: ClassVar[str] = names.GET_VM_CONFIG_COMMAND

    vm_name: str
    nics: list[NicTO] | None = None


class ModifyVmNicConfigCommand(Command):
    """Connect a NIC (by MAC, or by index) and set its VLAN, or disconnect it (protocol §5.3)."""

    FQCN: ClassVar[str] = names.MODIFY_VM_NIC_CONFIG_COMMAND

    vm_name: str
    vlan: str | None = None  # a VLAN id or "untagged"
    mac_address: str | None = None
    index: JInt = 0
    enable: JBool = False
    switch_label_name: Annotated[str | None, wire("switchLableName")] = None  # sic


class ScaleVmCommand(Command):
    FQCN: ClassVar[str] = names.SCALE_VM_COMMAND

    vm: VirtualMachineTO | None = None
    vm_name: str | None = None
    cpus: JInt = 0
    min_speed_mhz: Annotated[JInt | None, wire("minSpeed")] = None
    max_speed_mhz: Annotated[JInt | None, wire("maxSpeed")] = None
    min_ram_bytes: Annotated[JLong, wire("minRam")] = 0
    max_ram_bytes: Annotated[JLong, wire("maxRam")] = 0


class AttachIsoCommand(Command):
    FQCN: ClassVar[str] = names.ATTACH_ISO_COMMAND

    vm_name: str
    store_url: Annotated[str | None, wire("storeUrl", secret=True)] = None
    iso_path: str | None = None
    attach: JBool = False
    device_key: JInt | None = None
    force: JBool = False


class PrepareForMigrationCommand(Command):
    FQCN: ClassVar[str] = names.PREPARE_FOR_MIGRATION_COMMAND

    vm: VirtualMachineTO | None = None
    rollback: JBool = False


class MigrateCommand(Command):
    """Live-migrate the VM (not its disks) to the host ``destinationIp``; the KVM-only
    fields are kept as they came."""

    FQCN: ClassVar[str] = names.MIGRATE_COMMAND

    vm_name: str
    destination_ip: str | None = None
    migrate_storage: dict[str, JObject] | None = None
    migrate_storage_managed: JBool = False
    migrate_non_shared_inc: JBool = False
    auto_convergence: JBool = False
    host_guid: str | None = None
    windows: JBool = False
    virtual_machine: VirtualMachineTO | None = None
    execute_in_sequence: JBool = False
    migrate_disk_info_list: list[JObject] | None = None
    dpdk_interface_mapping: dict[str, JObject] | None = None
    new_vm_cpu_shares: JInt = 0
    vlan_to_persistence_map: dict[str, JBool] | None = None


class MigrateWithStorageCommand(Command):
    """Live-migrate the VM and its disks; each pair names a volume and its target pool.
    ``volumeToFiler`` (a map keyed by objects) is what older MS versions sent instead."""

    FQCN: ClassVar[str] = names.MIGRATE_WITH_STORAGE_COMMAND

    vm: VirtualMachineTO
    volume_to_filer: JObject | None = None
    volume_to_filer_as_list: list[VolumeFilerPair] = Field(default_factory=list)
    tgt_host: str | None = None


VM_COMMANDS: tuple[type[Command], ...] = (
    StartCommand,
    StopCommand,
    RebootCommand,
    CheckVirtualMachineCommand,
    GetVncPortCommand,
    GetVmStatsCommand,
    GetVmDiskStatsCommand,
    GetVmNetworkStatsCommand,
    GetVmIpAddressCommand,
    GetVmConfigCommand,
    ModifyVmNicConfigCommand,
    ScaleVmCommand,
    AttachIsoCommand,
    PrepareForMigrationCommand,
    MigrateCommand,
    MigrateWithStorageCommand,
)
