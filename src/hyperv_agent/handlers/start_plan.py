"""The plan of a StartCommand: the VirtualMachineTO checked and turned into what to
build (protocol §9), before anything is created.

Pure functions and frozen records: the VM's spec, its disks placed on controllers and
slots, its NICs with switch, VLAN and rate, the boot arguments as KVP items. Anything
the host cannot build is an ``InvalidRequest`` here, so a bad request touches nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hyperv_agent.cloudstack.enums import VirtualMachineType
from hyperv_agent.cloudstack.objects import (
    DiskTO,
    NicTO,
    TemplateObjectTO,
    VirtualMachineTO,
)
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.handlers import sgrules
from hyperv_agent.hyperv import build, kvp, nics
from hyperv_agent.hyperv import host as hyperv_host
from hyperv_agent.hyperv.acls import Guard
from hyperv_agent.hyperv.schema import (
    IDE_CONTROLLERS,
    IDE_DATA_PLACES,
    IDE_SLOTS,
    MEMORY_MAX_MB,
    MEMORY_MIN_MB,
    PROCESSOR_WEIGHT_DEFAULT,
    PROCESSOR_WEIGHT_MAX,
    SCSI_CONTROLLERS_MAX,
    SCSI_SLOTS,
    PvlanMode,
)

log = logging.getLogger("hyperv_agent.handlers.start")

_GEN1_ISO_SLOTS = (("ide1", 0), ("ide1", 1), ("ide0", 1))
#: The device number CloudStack gives a VM's CD-ROM (no data volume gets it): the ISO disk
#: with this ``diskSeq`` is the VM's CD, the drive ISO attach and detach are about.
CD_SEQ = 3
#: The highest device number (``diskSeq``) CloudStack gives a Hyper-V VM's disk: its
#: hypervisor_capabilities allow 64 data volumes (the Hyperv 6.2 row), and
#: VolumeApiServiceImpl.getDeviceId numbers them from 1 up to that limit + 1, skipping the
#: CD's 3. A disk goes on SCSI controller ``diskSeq // SCSI_SLOTS`` at slot ``diskSeq %
#: SCSI_SLOTS`` (``scsi_place``), so 64 and 65 are slots 0 and 1 of a second controller.
DISK_SEQ_MAX = 65
#: The VM details (VmDetailConstants) naming the controller of a VM's root disk and of its
#: data volumes. The MS sends them in ``vm.details`` of a StartCommand and in
#: ``controllerInfo`` of an AttachCommand (VolumeApiServiceImpl), as the VM has them.
ROOT_DISK_CONTROLLER = "rootDiskController"
DATA_DISK_CONTROLLER = "dataDiskController"
IDE, SCSI, OS_DEFAULT = "ide", "scsi", "osdefault"
#: The other values CloudStack offers for these details (QueryManagerImpl's options for
#: KVM and VMware): SCSI and paravirtual controllers, which on Hyper-V can only mean its
#: synthetic SCSI controller.
_SCSI_LIKE = ("lsilogic", "lsisas1068", "buslogic", "pvscsi", "virtio", "virtio-blk")
#: The VM details (VmDetailConstants, set by a root admin only) naming the guest's CPU
#: mode and model. KVM's agent reads them for libvirt's CPU mode; Hyper-V's nearest
#: setting is processor compatibility (LimitProcessorFeatures), which ``custom`` (a
#: CPU model chosen for the cluster, not the host's) turns on and ``host-model`` and
#: ``host-passthrough`` (the host's own processor) turn off. Hyper-V has one compatible
#: feature set, so a ``guest.cpu.model`` is not followed (the answer says so).
GUEST_CPU_MODE = "guest.cpu.mode"
GUEST_CPU_MODEL = "guest.cpu.model"
CPU_MODE_CUSTOM = "custom"
CPU_MODES_OF_HOST = ("host-model", "host-passthrough")
BOOT_ARGS_KEY = "cloudstack-vm-userdata"  # protocol §9.2
UEFI = "UEFI"  # a bootType (ApiConstants.BootType.UEFI; the other is BIOS)
#: The VM detail that holds a UEFI VM's boot mode (ApiConstants.BootType.UEFI's name).
UEFI_DETAIL = "UEFI"
SECURE_BOOT_MODE = "SECURE"  # a bootMode (ApiConstants.BootMode; the other is LEGACY)
NOTES_HEADER = "Created by CloudStack, do not edit."
_BYTES_PER_MB = 1024 * 1024
_UNTAGGED = "untagged"
_VLAN_SCHEMES = ("vlan", "storage")  # broadcastUri schemes that carry an access VLAN
_PVLAN_SCHEME = "pvlan"  # a shared network's private VLAN: pvlan://<primary>-<i|c|p><id>
#: NetUtils.getPvlanTypeFromUri's letters (the pvlanType of a PvlanSetupCommand) and the
#: mode of a VM's port on such a network. A promiscuous network (pvlan://<p>-p<p>) names
#: no secondary VLAN, and a Hyper-V promiscuous port needs the list of those it reaches:
#: refused (``private_vlan``).
_PVLAN_MODES = {"i": PvlanMode.ISOLATED, "c": PvlanMode.COMMUNITY}
_PVLAN_FORMS = "pvlan://<primary>-i<secondary> or pvlan://<primary>-c<secondary>"
_USER_TYPES = frozenset({VirtualMachineType.USER.lower(), VirtualMachineType.INSTANCE.lower()})
_SYSTEM_PREFIXES = ("r-", "s-", "v-")  # routers, secondary storage and console proxy VMs
_SPARE_IP = "0.0.0.0"  # noqa: S104 - with _SPARE_NETMASK, a router's spare NIC (protocol §9.4)
_SPARE_NETMASK = "255.255.255.255"
#: A speed (MHz) is at most this many host cores: ``speed`` (or ``maxSpeed`` without it)
#: sets the processor Weight, Hyper-V's default (100) per host core, and Hyper-V takes a
#: Weight of at most PROCESSOR_WEIGHT_MAX (10000); a faster one would be cut down to it.
SPEED_MAX_HOST_CORES = PROCESSOR_WEIGHT_MAX // PROCESSOR_WEIGHT_DEFAULT
#: The most disks a StartCommand can place: every IDE slot and every SCSI place a
#: ``diskSeq`` names (two disks for one slot are refused anyway). Counted before any
#: disk's file is looked at, so the checks of a command stay in proportion to what a VM
#: can have.
DISKS_MAX = 2 * IDE_SLOTS + DISK_SEQ_MAX + 1
#: The most NICs a StartCommand may carry: far above what CloudStack gives a VM, so that a
#: command with thousands is refused before each is planned; Hyper-V refuses the adapters
#: beyond its own limit when they are added.
NICS_MAX = 64


@dataclass(frozen=True)
class PlannedDisk:
    """One drive to add: where (IDE controller index or SCSI and its controller), which
    slot, what medium."""

    kind: str  # ROOT, DATADISK, ISO
    bus: str  # "ide0", "ide1" or "scsi"
    slot: int
    path: str | None  # a host path; None for an empty DVD drive
    cd: bool = False  # the VM's CD (``cd_index``), not another ISO such as a config drive
    controller: int = 0  # on "scsi": which SCSI controller, in the order they are added

    @property
    def dvd(self) -> bool:
        return self.kind == "ISO"

    @property
    def place(self) -> tuple[str, int, int]:
        """(bus, controller, slot): two disks at one place are refused."""
        return self.bus, self.controller, self.slot

    @property
    def where(self) -> str:
        """``SCSI 1 slot 0`` / ``IDE0 slot 0``."""
        if self.bus == "scsi":
            return f"SCSI {self.controller} slot {self.slot}"
        return f"{self.bus.upper()} slot {self.slot}"

    def describe(self) -> str:
        return f"{self.kind} {self.path or '(empty)'} at {self.where}"


@dataclass(frozen=True)
class DiskControllers:
    """Where a VM's data volumes go by its controller details: on IDE (``data_ide``,
    generation 1 only) or on SCSI; and what the answer tells of a detail that could not
    be followed as written."""

    data_ide: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedNic:
    device_id: int
    mac: str
    switch: str
    vlan: nics.PortVlan | None
    rate_mbps: int | None
    name: str
    spare: bool  # created disconnected (protocol §9.4)
    guard: Guard | None = None  # the ACLs the port has from the start (security groups)


@dataclass(frozen=True)
class Plan:
    spec: build.VmSpec
    disks: tuple[PlannedDisk, ...]
    nics: tuple[PlannedNic, ...]
    kvp: tuple[tuple[str, str], ...]  # the boot arguments as KVP items
    notes: tuple[str, ...] = ()  # what the answer's details tell


def device_counts(vm: VirtualMachineTO) -> None:
    """InvalidRequest when ``vm`` has more disks (``DISKS_MAX``) or NICs (``NICS_MAX``)
    than a VM takes: checked before any of them is looked at."""
    for field, items, most in (("disks", vm.disks, DISKS_MAX), ("nics", vm.nics, NICS_MAX)):
        if len(items) > most:
            raise InvalidRequest(f"vm.{field} has {len(items)} entries; a VM takes at most "
                                 f"{most}")


def boot_firmware(vm: VirtualMachineTO) -> tuple[bool, bool]:
    """(UEFI, secure boot) of ``vm``: its ``bootType`` and ``bootMode``, else its
    ``details`` entry ``UEFI`` (``LEGACY`` or ``SECURE``).

    The management server fills ``bootType``/``bootMode`` only on the start paths that
    pass the boot options as parameters (deploy, start and reboot from the API); an HA
    restart, or a start by the orchestrator itself, sends them blank, and the VM's UEFI
    setting is then only its ``UEFI`` detail, the one the KVM, VMware and XenServer
    resources read. Without it such a VM would come back as generation 1, from which a
    UEFI disk does not boot."""
    detail = (vm.details or {}).get(UEFI_DETAIL)
    boot_type = (vm.boot_type or "").strip().upper() or (UEFI if detail is not None else "")
    boot_mode = (vm.boot_mode or "").strip().upper() or (detail or "").strip().upper()
    uefi = boot_type == UEFI
    return uefi, uefi and boot_mode == SECURE_BOOT_MODE


def generation_of(vm: VirtualMachineTO) -> int:
    """2 for a UEFI VM (``boot_firmware``), else 1."""
    return 2 if boot_firmware(vm)[0] else 1


def vm_spec(vm: VirtualMachineTO, most: hyperv_host.VmMaximums,
            processor_compatibility: bool = False) -> build.VmSpec:
    """The VM to define: InvalidRequest naming the field when ``vm`` is more than
    Hyper-V on this host runs (``most``, its maximums for the VM's generation), so that
    such a VM is refused before anything is made rather than by Hyper-V after
    DefineSystem. Its processor compatibility is what its ``guest.cpu.mode`` detail says
    (``compatibility``), else ``processor_compatibility`` (the agent's setting)."""
    uefi, secure = boot_firmware(vm)
    if vm.cpus < 1:
        raise InvalidRequest(f"vm.cpus must be at least 1, not {vm.cpus}")
    device_counts(vm)
    generation = 2 if uefi else 1
    check_cpus(vm.cpus, most, "vm.cpus")
    memory_mb, memory_max_mb = memory_sizes(vm, generation, most)
    notes = (NOTES_HEADER, vm.uuid) if vm.uuid else (NOTES_HEADER,)
    # Generation 1 boots the root disk first (a blank one falls through to the CD, so an
    # install from ISO starts), or the CD first when there is no root volume at all.
    # Generation 2 keeps Hyper-V's own firmware boot order.
    no_root = not any(str(disk.type).upper() == "ROOT" for disk in vm.disks)
    return build.VmSpec(name=vm.name, notes=notes, generation=generation,
                        cpus=vm.cpus, memory_mb=memory_mb, memory_max_mb=memory_max_mb,
                        secure_boot=secure,
                        boot_from_cd=no_root, bios_guid=bios_guid(vm),
                        processor_compatibility=compatibility(vm.details,
                                                              processor_compatibility))


def compatibility(details: Mapping[str, str | None] | None, default: bool) -> bool:
    """Whether the VM gets processor compatibility: its ``guest.cpu.mode`` detail
    ``custom`` turns it on, ``host-model`` or ``host-passthrough`` off; absent or blank,
    ``default``. Any other value: InvalidRequest naming the detail and the values taken.
    Case and surrounding blanks are ignored."""
    value = (details or {}).get(GUEST_CPU_MODE)
    mode = value.strip().lower() if isinstance(value, str) else ""
    if not mode:
        return default
    if mode == CPU_MODE_CUSTOM:
        return True
    if mode in CPU_MODES_OF_HOST:
        return False
    raise InvalidRequest(
        f"vm.details {GUEST_CPU_MODE} {str(value)[:40]!r} is not a CPU mode Hyper-V can "
        f"follow: {CPU_MODE_CUSTOM} (processor compatibility: live moves between processor "
        f"generations of one vendor) or {' or '.join(CPU_MODES_OF_HOST)} (every feature of "
        "the host's processor)")


def cpu_model_note(vm: VirtualMachineTO) -> tuple[str, ...]:
    """What the answer tells when ``vm`` names a ``guest.cpu.model``: Hyper-V has none to
    choose from."""
    value = (vm.details or {}).get(GUEST_CPU_MODEL)
    model = value.strip() if isinstance(value, str) else ""
    if not model:
        return ()
    return (f"{GUEST_CPU_MODEL} {model[:40]!r} not followed: Hyper-V has no processor "
            "models, only processor compatibility (on with guest.cpu.mode custom)",)


def bios_guid(vm: VirtualMachineTO) -> str | None:
    """The GUID the VM's guest reads as its SMBIOS system UUID (Hyper-V's BIOSGUID;
    ``dmidecode -s system-uuid``, ``/sys/class/dmi/id/product_uuid``,
    Win32_ComputerSystemProduct.UUID): the VM's CloudStack ``uuid``, as a KVM guest reads
    its libvirt domain UUID, which CloudStack's KVM agent sets to it. cloud-init, the
    CloudStack Kubernetes provider and inventory or licence tools find the VM by it.

    The MS fills ``uuid`` for every VM it starts, system VMs included
    (HypervisorGuruBase.toVirtualMachineTO). None when it is missing or not a GUID in the
    8-4-4-4-12 form (as the KVM agent then takes a random UUID): the VM keeps the BIOSGUID
    of the definition it replaces, or gets one Hyper-V makes (``identity_note``)."""
    return canonical_guid((vm.uuid or "").strip())


def canonical_guid(text: str) -> str | None:
    """``text`` as a GUID in its 8-4-4-4-12 form, lower case, as CloudStack writes its
    uuids; None when it is not one in that form (braces, a ``urn:uuid:`` prefix or no
    hyphens are not the form)."""
    try:
        guid = str(uuid.UUID(text))
    except ValueError:
        return None
    return guid if guid == text.lower() else None


def identity_note(vm: VirtualMachineTO) -> tuple[str, ...]:
    """What the answer tells when the guest cannot be given ``vm.uuid`` as its SMBIOS
    system UUID (``bios_guid``); nothing when it is."""
    if bios_guid(vm) is not None:
        return ()
    text = vm.uuid or ""
    what = "is missing" if not text.strip() else f"{text[:40]!r} is not a GUID"
    return (f"vm.uuid {what}: the guest's SMBIOS system UUID is not the VM's uuid",)


def check_cpus(cpus: int, most: hyperv_host.VmMaximums, field: str) -> None:
    """InvalidRequest naming ``field`` when ``cpus`` vCPUs are more than Hyper-V gives a
    VM of ``most.generation`` on this host's release (``VM_MAXIMUMS``, Microsoft's "Plan
    for Hyper-V scalability") or more than the host has logical processors: Hyper-V
    runs no VM with more virtual processors than the host has logical ones, and refuses
    such a processor count when it is set."""
    if cpus > most.cpus:
        raise InvalidRequest(
            f"{field} {cpus} is more than Hyper-V gives a generation {most.generation} VM on "
            f"{most.release}: at most {most.cpus} virtual processors (Microsoft's Hyper-V "
            "scalability maximums)")
    if 0 < most.logical_processors < cpus:
        raise InvalidRequest(
            f"{field} {cpus} is more than this host's {most.logical_processors} logical "
            "processors: Hyper-V gives no VM more virtual processors than its host has "
            "logical processors")


def memory_sizes(vm: VirtualMachineTO, generation: int,
                 host_most: hyperv_host.VmMaximums | None = None) -> tuple[int, int | None]:
    """The VM's memory in MB: (startup and minimum, maximum or None for static memory).

    A management server on a cluster whose ``mem.overprovisioning.factor`` is above 1
    sends ``minRam`` = ``maxRam`` / factor (HypervisorGuruBase.toVirtualMachineTO) and
    counts the VM against the host's memory times the factor: it places VMs by their
    ``minRam``. Such a VM gets dynamic memory: at least ``minRam``, at most ``maxRam``,
    and it starts with ``minRam`` (as os-win starts a dynamic VM with its minimum, and
    CloudStack's KVM agent gives a user VM ``maxRam`` as maximum and ``minRam`` as its
    current memory), so every VM the management server placed here can start; Hyper-V
    gives it more on demand. ``minRam`` equal to ``maxRam`` (factor 1) is static memory of
    ``maxRam``, and so is a system VM's (the KVM agent gives routers and the other system
    VMs ``maxRam`` whatever ``minRam`` is), and a ``minRam`` of 0, the value of a body
    without the field. Both sizes are rounded up to the 2 MB units Hyper-V takes
    (``build.aligned_memory_mb``: an offering of 1025 MB gets 1026 MB, where Hyper-V
    would refuse 1025) and must lie within what Hyper-V gives a VM of its generation:
    on this host's release (``host_most``, ``VM_MAXIMUMS``), or without it on any release
    (``MEMORY_MAX_MB``). ``minRam`` above ``maxRam``, or either below Hyper-V's 32 MB
    (``MEMORY_MIN_MB``): InvalidRequest naming the fields."""
    most = host_most.memory_mb if host_most is not None else MEMORY_MAX_MB[generation]
    where = f" on {host_most.release}" if host_most is not None else ""
    memory_mb = vm.max_ram_bytes // _BYTES_PER_MB
    if vm.max_ram_bytes < MEMORY_MIN_MB * _BYTES_PER_MB:
        raise InvalidRequest(f"vm.maxRam {vm.max_ram_bytes} bytes is less than "
                             f"{MEMORY_MIN_MB} MB, the least memory Hyper-V gives a VM")
    for field, value in (("maxRam", vm.max_ram_bytes), ("minRam", vm.min_ram_bytes)):
        if value < 0 or value // _BYTES_PER_MB > most:
            raise InvalidRequest(f"vm.{field} {value} bytes is not a memory size Hyper-V "
                                 f"gives a generation {generation} VM{where}: 0 to {most} MB "
                                 f"({_size(most)}, Microsoft's Hyper-V scalability maximums)")
    if vm.min_ram_bytes > vm.max_ram_bytes:
        raise InvalidRequest(f"vm.minRam {vm.min_ram_bytes} bytes is more than vm.maxRam "
                             f"{vm.max_ram_bytes} bytes")
    if 0 < vm.min_ram_bytes < MEMORY_MIN_MB * _BYTES_PER_MB:
        raise InvalidRequest(f"vm.minRam {vm.min_ram_bytes} bytes is less than "
                             f"{MEMORY_MIN_MB} MB, the least memory Hyper-V gives a VM")
    maximum = build.aligned_memory_mb(memory_mb)
    if vm.min_ram_bytes == 0 or is_system_vm(vm):
        return maximum, None
    minimum = build.aligned_memory_mb(-(-vm.min_ram_bytes // _BYTES_PER_MB))
    return (minimum, maximum) if minimum < maximum else (maximum, None)


def _size(mb: int) -> str:
    """``mb`` in TB when whole (12 TB), else in MB."""
    return f"{mb >> 20} TB" if mb % (1 << 20) == 0 else f"{mb} MB"


def memory_note(vm: VirtualMachineTO, spec: build.VmSpec) -> tuple[str, ...]:
    """What the answer tells of the VM's memory: that it is dynamic (``memory_sizes``),
    and when the VM got more memory than ``maxRam`` (rounded up to Hyper-V's 2 MB
    units); nothing for static memory of exactly ``maxRam``."""
    asked = vm.max_ram_bytes // _BYTES_PER_MB
    most = spec.memory_max_mb or spec.memory_mb
    notes = () if spec.memory_max_mb is None else (
        f"dynamic memory: {spec.memory_mb} MB at start and at least, up to {most} MB",)
    if most == asked:
        return notes
    return (*notes, f"memory rounded up from {asked} MB to {most} MB: Hyper-V takes "
            "memory in whole 2 MB units")


def check_speeds(vm: VirtualMachineTO, host_mhz: int) -> None:
    """Refuse a per-vCPU speed (MHz) that is negative or, on a host whose core speed
    ``host_mhz`` is known, more than ``SPEED_MAX_HOST_CORES`` host cores: the processor
    Weight it sets would lie beyond Hyper-V's range. ``minSpeed`` and ``maxSpeed`` are
    speeds of the same vCPU and have the same bounds. InvalidRequest names the field."""
    most = host_mhz * SPEED_MAX_HOST_CORES
    for field, mhz in (("speed", vm.speed_mhz), ("minSpeed", vm.min_speed_mhz),
                       ("maxSpeed", vm.max_speed_mhz)):
        if mhz is not None and mhz < 0:
            raise InvalidRequest(f"vm speeds must not be negative: vm.{field} is {mhz} MHz")
        if mhz is not None and host_mhz > 0 and mhz > most:
            raise InvalidRequest(
                f"vm.{field} {mhz} MHz is more than {SPEED_MAX_HOST_CORES} cores of this "
                f"host ({host_mhz} MHz each), the fastest vCPU Hyper-V's processor weight "
                f"(at most {PROCESSOR_WEIGHT_MAX}) expresses: at most {most} MHz")


def is_system_vm(vm: VirtualMachineTO) -> bool:
    """A router, console proxy or secondary storage VM: by name, or by a non-User type."""
    if vm.name.lower().startswith(_SYSTEM_PREFIXES):
        return True
    return vm.type is not None and str(vm.type).lower() not in _USER_TYPES


def disk_controllers(details: Mapping[str, str | None] | None, generation: int,
                     field: str = "vm.details") -> DiskControllers:
    """The placement ``rootDiskController`` and ``dataDiskController`` in ``details`` (the
    map ``field`` names) ask for on a VM of ``generation``. Absent, blank or ``osdefault``:
    the default, the root disk on IDE 0 slot 0 on generation 1 (on SCSI on generation 2)
    and data volumes on SCSI. ``dataDiskController`` ``ide`` puts a generation 1 VM's data
    volumes on IDE, for guests without Hyper-V's synthetic storage driver (which see no
    SCSI disk). What Hyper-V cannot do is not done, and a note says so: a generation 1 VM
    boots only from IDE, so ``rootDiskController`` ``scsi`` leaves its root disk on IDE
    (refusing it would keep the VM from starting for a placement that cannot work); a
    generation 2 VM has no IDE controller, so ``ide`` leaves its disks on SCSI, which
    every generation 2 guest reads (it boots from it). The SCSI and paravirtual
    controllers of other hypervisors (``lsilogic``, ``pvscsi``, ``virtio``...) mean
    Hyper-V's synthetic SCSI controller, with a note. Any other value: InvalidRequest
    naming the detail and the values taken. Case and surrounding blanks are ignored."""
    root, data = (_controller(details, key, field)
                  for key in (ROOT_DISK_CONTROLLER, DATA_DISK_CONTROLLER))
    root_bus = IDE if generation == 1 else SCSI
    data_bus = IDE if data == IDE and generation == 1 else SCSI
    notes = tuple(note for note in (
        _controller_note(ROOT_DISK_CONTROLLER, root, root_bus, "the root disk"),
        _controller_note(DATA_DISK_CONTROLLER, data, data_bus, "data volumes"),
    ) if note)
    for note in notes:
        log.warning("%s", note)
    return DiskControllers(data_ide=data_bus == IDE, notes=notes)


def data_disk_controller(details: Mapping[str, str | None] | None,
                         field: str = "vm.details") -> str | None:
    """The controller ``dataDiskController`` in ``details`` names (lower case: ``ide``,
    ``scsi`` or one taken as it); None for the default. A value naming no controller:
    InvalidRequest, as ``disk_controllers``."""
    return _controller(details, DATA_DISK_CONTROLLER, field)


def _controller(details: Mapping[str, str | None] | None, key: str, field: str) -> str | None:
    """The controller ``details`` name under ``key``, lower case; None for the default."""
    value = (details or {}).get(key)
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in ("", OS_DEFAULT):
        return None
    if text not in (IDE, SCSI, *_SCSI_LIKE):
        raise InvalidRequest(
            f"{field} {key} {str(value)[:40]!r} names no disk controller Hyper-V has: it "
            f"takes {IDE} (generation 1 only), {SCSI} or {OS_DEFAULT} (the root disk on IDE "
            "for generation 1, on SCSI for generation 2; data volumes on SCSI), and "
            f"{', '.join(_SCSI_LIKE)} as {SCSI}")
    return text


def _controller_note(key: str, asked: str | None, bus: str, what: str) -> str:
    """What the answer says when ``asked`` is not the ``bus`` ``what`` went on; "" if it is."""
    if asked is None or asked == bus:
        return ""
    if bus == SCSI and asked != IDE:
        return (f"{key} {asked} taken as {SCSI}: Hyper-V's one kind of SCSI controller is "
                f"its synthetic one, and {what} went on it")
    why = ("a generation 2 VM has no IDE controller" if bus == SCSI
           else "a generation 1 VM boots only from IDE")
    return f"{key} {asked} not followed: {why}, so {what} went on {bus.upper()}"


def boot_args(vm: VirtualMachineTO) -> tuple[tuple[str, str], ...]:
    """The boot arguments as KVP items (protocol §9.2): one item when they fit, else split
    at whitespace into several (``kvp.split_words``); InvalidRequest naming the limit when
    no split can carry them, or the character and its offset when they hold one no KVP
    item carries (``kvp.refuse_uncarried``: a NUL, say). None when ``bootArgs`` is blank.

    Whatever the VM's type: the MS gives boot arguments to system VMs and to the User VMs
    it builds from the system VM template (CKS nodes, Shared FS VMs), which read them
    from the same KVP pool, and to no other VM.

    The guest reads the pool file whole, each record's key right before its value, NULs
    dropped, and splits it into words at space, tab and newline only
    (``kvp.WORD_SEPARATORS``): a value must start with one of them or its first word
    runs into the key (``cloudstack-vm-userdatatemplate=domP``). Every MS builder starts
    its arguments with a space; arguments that do not (a no-break space is no
    separator there) get one."""
    sent = vm.boot_args or ""
    if not sent.strip(kvp.WORD_SEPARATORS):
        return ()
    try:
        kvp.refuse_uncarried(BOOT_ARGS_KEY, sent)  # the one check: offsets in the MS's text
        args = sent if sent[0] in kvp.WORD_SEPARATORS else f" {sent}"
        return kvp.split_words(BOOT_ARGS_KEY, args)
    except InvalidRequest as error:
        raise InvalidRequest(f"vm.bootArgs ({len(sent)} characters) cannot be delivered: "
                             f"{error}") from None


def with_iso(disks: tuple[PlannedDisk, ...], generation: int,
              path: str) -> tuple[tuple[PlannedDisk, ...], str]:
    """``disks`` with the system VM ISO at ``path``: in the first empty DVD drive asked
    for, else in a new DVD drive (generation 1: IDE 1 slot 0 or the next free IDE slot;
    generation 2: the lowest free SCSI slot)."""
    for index, disk in enumerate(disks):
        if disk.dvd and disk.path is None:
            placed = dataclasses.replace(disk, path=path)
            return ((*disks[:index], placed, *disks[index + 1:]),
                    f"system VM ISO {path} inserted at {disk.bus.upper()} slot {disk.slot}")
    used = {(disk.bus, disk.slot) for disk in disks if disk.controller == 0}
    free = [slot for slot in _GEN1_ISO_SLOTS if slot not in used] if generation == 1 else [
        ("scsi", slot) for slot in range(SCSI_SLOTS) if ("scsi", slot) not in used]
    if not free:
        log.warning("no free drive slot for the system VM ISO %s", path)
        return disks, f"no free drive slot for the system VM ISO {path}; started without it"
    bus, slot = free[0]
    return ((*disks, PlannedDisk("ISO", bus, slot, path)),
            f"system VM ISO {path} inserted at {bus.upper()} slot {slot}")


def is_empty_dvd(disk: DiskTO) -> bool:
    """An ISO disk that names no ISO: no ``data``, or a TemplateObjectTO without ``path``
    (what the MS sends for every VM that has no ISO attached). It means an empty DVD
    drive, as the C# agent builds it."""
    if str(disk.type).upper() != "ISO":
        return False
    return disk.data is None or (isinstance(disk.data, TemplateObjectTO) and not disk.data.path)


def disk_kind(disk: DiskTO) -> str:
    kind = str(disk.type).upper()
    if kind not in ("ROOT", "DATADISK", "ISO"):
        raise InvalidRequest(f"unknown disk type {str(disk.type)[:40]!r}")
    return kind


def scsi_place(kind: str, seq: int) -> tuple[int, int]:
    """The SCSI controller and slot of the disk at device number ``seq`` (``diskSeq``):
    controller ``seq // SCSI_SLOTS``, slot ``seq % SCSI_SLOTS``, so 0..63 fill the first
    controller and CloudStack's 64 and 65 take slots 0 and 1 of the second. The one
    mapping StartCommand, AttachCommand and DettachCommand share. Outside
    0..``DISK_SEQ_MAX``: InvalidRequest naming ``kind`` and the bound."""
    if not 0 <= seq <= DISK_SEQ_MAX:
        raise InvalidRequest(
            f"disk {kind}: diskSeq {seq} is outside 0..{DISK_SEQ_MAX}, the device numbers "
            f"CloudStack gives a Hyper-V VM's disks (up to {DISK_SEQ_MAX - 1} data volumes "
            "besides the root disk and the CD)")
    controller, slot = divmod(seq, SCSI_SLOTS)
    assert controller < SCSI_CONTROLLERS_MAX  # DISK_SEQ_MAX fits Hyper-V's controllers
    return controller, slot


def place(disk: DiskTO, index: int, generation: int, path: str | None) -> PlannedDisk:
    """Where the disk goes: gen 1 ROOT on IDE 0 slot 0, ISO on IDE 1, DATADISK on SCSI at
    ``diskSeq``; gen 2 everything on SCSI at ``diskSeq`` (ROOT defaults to 0). The SCSI
    controller and slot of a ``diskSeq`` are ``scsi_place``'s."""
    kind = disk_kind(disk)
    seq = disk.disk_seq if disk.disk_seq is not None else index
    if generation == 1 and kind == "ROOT":
        return PlannedDisk(kind, "ide0", 0, path)
    if generation == 1 and kind == "ISO":
        return PlannedDisk(kind, "ide1", 0, path)
    controller, slot = scsi_place(kind, 0 if kind == "ROOT" and disk.disk_seq is None else seq)
    return PlannedDisk(kind, "scsi", slot, path, controller=controller)


def place_all(disks: Sequence[tuple[DiskTO, str | None]], generation: int,
              data_ide: bool = False) -> tuple[PlannedDisk, ...]:
    """Every disk of ``vm.disks`` (with its medium) placed as ``place`` places it, in the
    order given, except the ISO disks other than the VM's CD (``cd_index``): the config
    drive of CloudStack's ConfigDrive provider (``diskSeq`` 4, listed before the
    volumes). Such an ISO takes, on generation 1, the next free DVD slot (IDE 1 slot 1,
    then IDE 0 slot 1), and on generation 2 the highest free SCSI slot, which CloudStack
    (numbering data volumes from 1 up) gives a data volume only when the VM has 61
    others: so the CD stays the drive ISO attach and detach work on, and the slots of
    data volumes attached later stay free. No free slot: InvalidRequest.

    With ``data_ide`` (generation 1, ``disk_controllers``) the data volumes, in
    ``diskSeq`` order, take the IDE places the root disk, the CD and the other ISOs leave
    (``IDE_DATA_PLACES``); more of them than places: InvalidRequest naming the limit."""
    cd = cd_index([disk for disk, _ in disks])
    kinds = [disk_kind(disk) for disk, _ in disks]
    later = [(kind == "ISO" and index != cd) or (kind == "DATADISK" and data_ide)
             for index, kind in enumerate(kinds)]
    placed: list[PlannedDisk | None] = [
        None if later[index] else dataclasses.replace(place(disk, index, generation, path),
                                                      cd=index == cd)
        for index, (disk, path) in enumerate(disks)]
    used = {(item.bus, item.slot) for item in placed if item is not None and item.controller == 0}
    free = [slot for slot in _GEN1_ISO_SLOTS if slot not in used] if generation == 1 else [
        ("scsi", slot) for slot in reversed(range(SCSI_SLOTS)) if ("scsi", slot) not in used]
    for index, (_, path) in enumerate(disks):
        if later[index] and kinds[index] == "ISO":
            if not free:
                raise InvalidRequest("no free drive slot for another ISO disk")
            bus, slot = free.pop(0)
            placed[index] = PlannedDisk("ISO", bus, slot, path)
            used.add((bus, slot))
    data = sorted((index for index, kind in enumerate(kinds) if later[index] and kind != "ISO"),
                  key=lambda index: (disks[index][0].disk_seq is None,
                                     disks[index][0].disk_seq or 0, index))
    ide_free = [(f"ide{controller}", slot) for controller, slot in IDE_DATA_PLACES
                if (f"ide{controller}", slot) not in used]
    if len(data) > len(ide_free):
        raise InvalidRequest(
            f"{DATA_DISK_CONTROLLER} is {IDE}, and the VM's {len(data)} data volumes do not "
            f"fit on IDE: a generation 1 VM has {IDE_CONTROLLERS} IDE "
            f"controllers of {IDE_SLOTS} places each, and its root disk and DVD drives "
            f"leave {len(ide_free)}; detach data volumes, or set {DATA_DISK_CONTROLLER} to "
            f"{SCSI} (which takes up to {DISK_SEQ_MAX - 1})")
    for index, (bus, slot) in zip(data, ide_free, strict=False):
        placed[index] = PlannedDisk("DATADISK", bus, slot, disks[index][1])
    return tuple(item for item in placed if item is not None)


def cd_index(disks: Sequence[DiskTO]) -> int | None:
    """The position in ``disks`` of the VM's CD: the ISO disk at CloudStack's CD-ROM
    device number (``diskSeq`` 3), else the first ISO disk; None without ISO disks."""
    isos = [index for index, disk in enumerate(disks) if str(disk.type).upper() == "ISO"]
    return next((index for index in isos if disks[index].disk_seq == CD_SEQ),
                isos[0] if isos else None)


def nic_rate(nic: NicTO) -> int | None:
    """The NIC's ``networkRateMbps`` when it limits the port (positive; None otherwise).
    NicTO declares it a Java Integer, and the model refuses more (``JInt``): the port's
    bandwidth Limit (rate × BITS_PER_MEGABIT bits per second, a uint64 in
    Msvm_EthernetSwitchPortBandwidthSettingData) holds it; Hyper-V documents no smaller
    bound."""
    return nic.network_rate_mbps if (nic.network_rate_mbps or 0) > 0 else None


def planned_nic(nic: NicTO, switches: Sequence[str], user_vm: bool = True, *,
                unlabelled: str = "") -> PlannedNic:
    """What to build for ``nic``; a NIC of a user VM with ``securityGroupEnabled`` gets
    the default security-group ACLs with its port (``sg_guard``). Its switch is the one
    its ``name`` (traffic label) names, of whatever kind, or without one ``unlabelled``
    (the host's External switch, ``host.external_switch``); either must be among
    ``switches`` (``host.switch_named``: without regard to case; the plan holds the
    host's spelling), or InvalidRequest. A negative
    ``deviceId`` or a MAC that is not a unicast address: InvalidRequest naming the
    field."""
    where = f"NIC {nic.device_id}"
    if nic.device_id < 0:
        raise InvalidRequest(f"{where}: deviceId must not be negative")
    try:
        digits = nics.static_mac(nic.mac or "")
    except InvalidRequest as error:
        raise InvalidRequest(f"{where}: mac: {error}") from None
    label = nic.name or unlabelled
    switch = hyperv_host.switch_named(switches, label)
    if switch is None:
        raise InvalidRequest(f"{where}: the host has no virtual switch named {label!r}"
                             if label else f"{where}: the host has no virtual switch")
    rate = nic_rate(nic)
    spare = (nic.ip or "").strip() == _SPARE_IP and (nic.netmask or "").strip() == _SPARE_NETMASK
    vlan = None if spare else vlan_of(nic.broadcast_uri, where)
    guard = sg_guard(nic, where) if nic.security_group_enabled and user_vm and not spare else None
    return PlannedNic(nic.device_id, nic.mac or digits, switch, vlan, rate,
                      adapter_name(nic), spare, guard)


def pvlan_of(value: str, where: str) -> nics.PrivateVlan:
    """The port of a VM NIC on the private VLAN ``value``, a ``pvlan://`` URI's host as
    NetUtils.generateUriForPvlan writes it: ``<primary>-i<secondary>`` (isolated) or
    ``<primary>-c<secondary>`` (community). Anything else, a promiscuous network
    (``<primary>-p<primary>``) included, or a VLAN outside 1..4094: InvalidRequest
    naming ``where``."""
    primary, dash, rest = value.strip().partition("-")
    kind, secondary = rest[:1].lower(), rest[1:]
    digits = nics.is_vlan_text(primary) and nics.is_vlan_text(secondary)
    if kind == "p" and digits:
        raise InvalidRequest(f"{where}: pvlan://{value[:40]} is a promiscuous private VLAN "
                             "network, which names no secondary VLAN; a Hyper-V promiscuous "
                             "port needs the secondary VLANs it reaches, so only isolated "
                             "and community private VLAN networks are served")
    if not dash or not digits or kind not in _PVLAN_MODES:
        raise InvalidRequest(f"{where}: pvlan://{value[:40]} is not {_PVLAN_FORMS}")
    return private_vlan(_PVLAN_MODES[kind], primary, secondary, where)


def pvlan_value(vlan: nics.PrivateVlan) -> str:
    """The ``pvlan://`` URI host of the network a port on ``vlan`` is on, as the MS's
    BroadcastDomainType.getValue gives it and its Hyper-V resource compares it with a
    GetVmConfigAnswer NIC's ``vlanid`` (getVmNics): ``<primary>-i<secondary>`` or
    ``<primary>-c<secondary>``; ``pvlan_of``'s inverse. A promiscuous port is the DHCP
    server of an isolated or community network, and Hyper-V keeps no record of which:
    it reads as isolated, the kind the MS gives a private VLAN network created without
    one (NetworkServiceImpl.getPrivateVlanPair); of several secondary VLANs (a port set
    by hand), the first."""
    kind = "c" if vlan.mode is PvlanMode.COMMUNITY else "i"
    return f"{vlan.primary}-{kind}{vlan.secondaries[0] if vlan.secondaries else vlan.primary}"


def private_vlan(mode: PvlanMode, primary: str, secondary: str,
                 where: str) -> nics.PrivateVlan:
    """The private VLAN ``mode`` on ``primary`` with the one ``secondary`` (decimal
    texts; for a promiscuous port, the secondary it reaches); not numbers, outside
    1..4094 or the secondary the primary: InvalidRequest naming ``where``."""
    primary, secondary = primary.strip(), secondary.strip()
    if not nics.is_vlan_text(primary) or not nics.is_vlan_text(secondary):
        raise InvalidRequest(f"{where}: the private VLAN's primary {primary[:12]!r} and "
                             f"secondary {secondary[:12]!r} must be VLAN ids")
    try:
        vlan = nics.check_port_vlan(nics.PrivateVlan(
            mode, nics.vlan_of_text(primary), (nics.vlan_of_text(secondary),)))
    except InvalidRequest as error:
        raise InvalidRequest(f"{where}: {error}") from None
    assert isinstance(vlan, nics.PrivateVlan)
    return vlan


def adapter_name(nic: NicTO) -> str:
    """The network adapter's name: the NIC's own uuid (``nicUuid``; a NicTO's ``uuid`` is
    its network's, shared by every NIC on that network), else ``Network Adapter
    <deviceId>`` (a router's spare NICs have none)."""
    return nic.nic_uuid or f"Network Adapter {nic.device_id}"


def sg_guard(nic: NicTO, where: str) -> Guard:
    """The port of a user VM's NIC on a security-group network, before any rule arrives:
    what a VM with no ingress and no egress rule gets (nothing in but DHCP, DNS replies
    and ICMP, which open egress lets back; everything out from its own addresses), MAC
    spoofing off, DHCP and
    router guards on. The VM is never up without it: the first SecurityGroupRulesCmd
    changes it in one diff. A malformed address: InvalidRequest naming it."""
    try:
        addresses = sgrules.nic_addresses(nic.mac, nic.ip, nic.ip6_address, nic.nic_sec_ips)
    except sgrules.RuleError as error:
        raise InvalidRequest(f"{where}: {error}") from None
    return Guard(sgrules.translate((), (), addresses).acls, sgrules.USER_VM_SECURITY)


def vlan_of(uri: str | None, where: str) -> nics.PortVlan | None:
    """The VLAN of ``vlan://N`` or ``storage://N`` (the storage NIC of a secondary storage
    VM on a storage network with a VLAN: StorageNetworkGuru's URI), or the private VLAN
    of a shared network's ``pvlan://<primary>-i<secondary>`` (isolated) or
    ``pvlan://<primary>-c<secondary>`` (community; ``pvlan_of``); None for no URI or
    ``vlan://untagged``; else refused."""
    if not uri:
        return None
    scheme, separator, value = uri.strip().partition("://")
    if separator and scheme.lower() == "vlan" and value.lower() == _UNTAGGED:
        return None
    if separator and scheme.lower() == _PVLAN_SCHEME:
        return pvlan_of(value, where)
    if not separator or scheme.lower() not in _VLAN_SCHEMES or not nics.is_vlan_text(value):
        raise InvalidRequest(f"{where}: broadcastUri {uri[:60]!r} is not vlan://<id>, "
                             f"vlan://untagged, storage://<id> or {_PVLAN_FORMS}")
    try:
        return nics.vlan_of_text(value)
    except InvalidRequest as error:
        raise InvalidRequest(f"{where}: {error}") from None
