"""Commands about virtual machines: lifecycle, state, console, statistics, NICs, migration."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command, wire
from hyperv_agent.cloudstack.objects import VirtualMachineTO, VolumeFilerPair


class StartCommand(Command):
    """Create (or re-create) and start ``vm`` (§9)."""

    FQCN: ClassVar[str] = names.START_COMMAND

    vm: VirtualMachineTO
    host_ip: str | None = None
    execute_in_sequence: bool = False
    # For system VMs: the zone's image store URI, cifs://...?user=..&password=.. (§9.3).
    secondary_storage: Annotated[str | None, wire("secondaryStorage", secret=True)] = None


class StopCommand(Command):
    """Stop the VM and remove its definition; its disks stay (§5.3)."""

    FQCN: ClassVar[str] = names.STOP_COMMAND

    vm_name: str
    vm: VirtualMachineTO | None = None
    check_before_cleanup: bool = False
    force_stop: bool = False
    is_proxy: bool = False
    expunge_vm: Annotated[bool, wire("expungeVM")] = False
    execute_in_sequence: bool = False


class RebootCommand(Command):
    FQCN: ClassVar[str] = names.REBOOT_COMMAND

    vm_name: str
    vm: VirtualMachineTO | None = None
    execute_in_sequence: bool = False


class CheckVirtualMachineCommand(Command):
    FQCN: ClassVar[str] = names.CHECK_VIRTUAL_MACHINE_COMMAND

    vm_name: str


class GetVncPortCommand(Command):
    """Console access: answered with the VM's Hyper-V id and port -9 (RDP) (§8)."""

    FQCN: ClassVar[str] = names.GET_VNC_PORT_COMMAND

    vm_name: Annotated[str, wire("name")]
    vm_id: Annotated[int, wire("id")] = 0


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


class GetVmConfigCommand(Command):
    """List the VM's NICs (MAC, VLAN, connected); used by the MS's router code (§6)."""

    FQCN: ClassVar[str] = names.GET_VM_CONFIG_COMMAND

    vm_name: str


class ModifyVmNicConfigCommand(Command):
    """Connect a NIC (by MAC, or by index) and set its VLAN, or disconnect it (§5.3)."""

    FQCN: ClassVar[str] = names.MODIFY_VM_NIC_CONFIG_COMMAND

    vm_name: str
    vlan: str | None = None  # a VLAN id or "untagged"
    mac_address: str | None = None
    index: int = 0
    enable: bool = False
    switch_label_name: Annotated[str | None, wire("switchLableName")] = None  # sic


class ScaleVmCommand(Command):
    FQCN: ClassVar[str] = names.SCALE_VM_COMMAND

    vm_name: str | None = None
    vm: VirtualMachineTO | None = None
    cpus: int = 0
    min_speed_mhz: Annotated[int | None, wire("minSpeed")] = None
    max_speed_mhz: Annotated[int | None, wire("maxSpeed")] = None
    min_ram_bytes: Annotated[int, wire("minRam")] = 0
    max_ram_bytes: Annotated[int, wire("maxRam")] = 0


class AttachIsoCommand(Command):
    FQCN: ClassVar[str] = names.ATTACH_ISO_COMMAND

    vm_name: str
    iso_path: str | None = None
    attach: bool = False
    store_url: Annotated[str | None, wire("storeUrl", secret=True)] = None
    device_key: int | None = None
    force: bool | None = None


class PrepareForMigrationCommand(Command):
    FQCN: ClassVar[str] = names.PREPARE_FOR_MIGRATION_COMMAND

    vm: VirtualMachineTO | None = None


class MigrateCommand(Command):
    """Live-migrate the VM (not its disks) to the host ``dest_ip``."""

    FQCN: ClassVar[str] = names.MIGRATE_COMMAND

    vm_name: str
    dest_ip: str
    vm: VirtualMachineTO | None = None
    is_windows: bool | None = None
    execute_in_sequence: bool = False


class MigrateWithStorageCommand(Command):
    """Live-migrate the VM and its disks; each pair names a volume and its target pool."""

    FQCN: ClassVar[str] = names.MIGRATE_WITH_STORAGE_COMMAND

    vm: VirtualMachineTO
    tgt_host: str | None = None
    volume_to_filer_as_list: list[VolumeFilerPair] = Field(default_factory=list)


VM_COMMANDS: tuple[type[Command], ...] = (
    StartCommand,
    StopCommand,
    RebootCommand,
    CheckVirtualMachineCommand,
    GetVncPortCommand,
    GetVmStatsCommand,
    GetVmDiskStatsCommand,
    GetVmConfigCommand,
    ModifyVmNicConfigCommand,
    ScaleVmCommand,
    AttachIsoCommand,
    PrepareForMigrationCommand,
    MigrateCommand,
    MigrateWithStorageCommand,
)
