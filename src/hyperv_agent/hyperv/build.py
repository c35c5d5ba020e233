"""Building a VM: its definition, processors and memory (devices: ``devices``; NICs:
``nics``; KVP items: ``kvp``; secure boot templates and boot order: ``firmware``).

These are the pieces a StartCommand handler composes. Every method call goes through
``jobs.call`` on the Virtual System Management Service (VSMS, ``vms.management_service``).
The figures hold once a session is warm (``settings``; job polls not counted, W = job
waits); warming costs 1 query for the VSMS, 1 spawn for the VSSD, and 2 queries for the
host's clock speed (``host_cpu_mhz``).

===========================  ==============================================================
``define_vm``                3 calls + 2 W (DefineSystem, 1 query, ModifyResourceSettings)
``host_cpu_mhz``             2 queries the first time for a session, then none
===========================  ==============================================================

Requests are checked before anything is created (``InvalidRequest``). A failure of a later
step undoes the earlier ones of the same function and raises a ``HyperVError`` naming the
step; the original error is its ``__cause__``. Cancellation is not undone. Nothing here
deletes a file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, MethodResult
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.hyperv import host, settings, vms
from hyperv_agent.hyperv.schema import (
    BOOT_CD_FIRST,
    BOOT_DISK_FIRST,
    GENERATION_SUBTYPES,
    MEMORY_ALIGN_MB,
    MEMORY_MIN_MB,
    NAMESPACE,
    PROCESSOR_LIMIT_FULL,
    PROCESSOR_WEIGHT_DEFAULT,
    PROCESSOR_WEIGHT_MAX,
    PROCESSOR_WEIGHT_MIN,
    VM_NAME_MAX_CHARS,
    Class,
    ResourceType,
    ShutdownAction,
    StartupAction,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState, VmRef


@dataclass(frozen=True)
class VmSpec:
    """What a new VM looks like; checked by ``validate`` before anything is created."""

    name: str  # ElementName, 1..100 characters
    notes: tuple[str, ...]
    generation: int  # 1 or 2
    cpus: int
    memory_mb: int  # startup and minimum memory, a multiple of 2
    #: The maximum memory, a multiple of 2: above ``memory_mb``, dynamic memory (Hyper-V
    #: starts the VM with ``memory_mb`` and gives it more up to this on demand); None or
    #: ``memory_mb``: static memory (startup = minimum = maximum).
    memory_max_mb: int | None = None
    cpu_limit_millipercent: int = PROCESSOR_LIMIT_FULL  # 0..100000 (100 %) of each vCPU
    cpu_reservation_millipercent: int = 0  # 0..cpu_limit_millipercent of each vCPU
    cpu_weight: int = PROCESSOR_WEIGHT_DEFAULT  # 0..10000
    secure_boot: bool = False  # generation 2 only
    secure_boot_template_id: str | None = None  # a GUID; needs secure_boot
    boot_from_cd: bool = False  # generation 1: the CD before the hard disk
    #: The GUID the guest reads as its SMBIOS system UUID (BIOSGUID); None: Hyper-V makes one.
    bios_guid: str | None = None
    #: Processor compatibility (LimitProcessorFeatures): the VM uses only the processor
    #: features every processor of its vendor has, so that it can move live to a host
    #: with processors of another generation of that vendor (never of another vendor).
    processor_compatibility: bool = False


# --- the VM -------------------------------------------------------------------------------


def validate(spec: VmSpec) -> None:
    """Raise InvalidRequest naming the first invalid field of ``spec``; no round trip."""
    problems = [text for bad, text in (
        (not spec.name.strip() or len(spec.name) > VM_NAME_MAX_CHARS,
         f"name must have 1..{VM_NAME_MAX_CHARS} characters and not be blank"),
        (spec.generation not in GENERATION_SUBTYPES, f"generation {spec.generation} is not 1 or 2"),
        *_size_problems(spec.cpus, spec.memory_mb, spec.memory_max_mb),
        (not 0 <= spec.cpu_limit_millipercent <= PROCESSOR_LIMIT_FULL,
         f"cpu_limit_millipercent {spec.cpu_limit_millipercent} is outside "
         f"0..{PROCESSOR_LIMIT_FULL}"),
        (not 0 <= spec.cpu_reservation_millipercent <= spec.cpu_limit_millipercent,
         f"cpu_reservation_millipercent {spec.cpu_reservation_millipercent} is outside "
         f"0..cpu_limit_millipercent"),
        (not 0 <= spec.cpu_weight <= PROCESSOR_WEIGHT_MAX,
         f"cpu_weight {spec.cpu_weight} is outside 0..{PROCESSOR_WEIGHT_MAX}"),
        (spec.secure_boot and spec.generation != 2, "secure boot needs generation 2"),
        (spec.secure_boot_template_id is not None and not spec.secure_boot,
         "secure_boot_template_id needs secure_boot"),
        (not is_guid(spec.secure_boot_template_id), "secure_boot_template_id is not a GUID"),
        (not is_guid(spec.bios_guid), "bios_guid is not a GUID"),
    ) if bad]
    if problems:
        raise InvalidRequest(f"invalid VM {spec.name[:VM_NAME_MAX_CHARS]!r}: {problems[0]}")


def aligned_memory_mb(memory_mb: int) -> int:
    """``memory_mb`` rounded up to the 2 MB units Hyper-V takes (``MEMORY_ALIGN_MB``): a
    VM asked for an odd number of MB gets 1 MB more rather than being refused."""
    return -(-memory_mb // MEMORY_ALIGN_MB) * MEMORY_ALIGN_MB


def size_problem(cpus: int, memory_mb: int, memory_max_mb: int | None = None) -> str | None:
    """What is wrong with giving a VM ``cpus`` virtual processors and ``memory_mb`` of
    memory, dynamic up to ``memory_max_mb``; None when nothing. No round trip."""
    return next((text for bad, text in _size_problems(cpus, memory_mb, memory_max_mb)
                 if bad), None)


def _size_problems(cpus: int, memory_mb: int,
                   memory_max_mb: int | None) -> tuple[tuple[bool, str], ...]:
    return (
        (cpus < 1, f"cpus must be at least 1, not {cpus}"),
        (memory_mb < MEMORY_MIN_MB, f"memory_mb must be at least {MEMORY_MIN_MB}, "
                                    f"not {memory_mb}"),
        (memory_mb % MEMORY_ALIGN_MB != 0,
         f"memory_mb {memory_mb} is not a multiple of {MEMORY_ALIGN_MB}"),
        (memory_max_mb is not None and memory_max_mb < memory_mb,
         f"memory_max_mb {memory_max_mb} is less than memory_mb {memory_mb}"),
        ((memory_max_mb or 0) % MEMORY_ALIGN_MB != 0,
         f"memory_max_mb {memory_max_mb} is not a multiple of {MEMORY_ALIGN_MB}"),
    )


def memory_values(memory_mb: int, memory_max_mb: int | None = None) -> dict[str, object]:
    """The Msvm_MemorySettingData values of a VM with ``memory_mb`` of startup and minimum
    memory and at most ``memory_max_mb``: dynamic memory when that is more (Reservation,
    the minimum, and VirtualQuantity, the startup memory, ``memory_mb``; Limit, the
    maximum, ``memory_max_mb``), else static memory of ``memory_mb`` (all three equal).
    The sizes are checked by the caller (``validate``)."""
    most = max(memory_mb, memory_max_mb or 0)
    return {"DynamicMemoryEnabled": most > memory_mb, "VirtualQuantity": memory_mb,
            "Reservation": memory_mb, "Limit": most}


def is_guid(text: str | None) -> bool:
    try:
        return text is None or bool(uuid.UUID(text))
    except ValueError:
        return False


async def define_vm(hv: HyperV, spec: VmSpec,
                    defined: Callable[[str], None] | None = None) -> VmRef:
    """Create a VM (off) with the spec's name, notes, generation, CPUs, processor
    compatibility and memory (static, or dynamic when ``memory_max_mb`` is more than
    ``memory_mb``: ``memory_values``). ``defined`` is given the new VM's GUID as soon as
    Hyper-V accepts DefineSystem, before its job ends and the VM's processors and memory
    are set (for a caller that records what it builds, so that a process ended meanwhile
    leaves it known).

    The spec is checked first (InvalidRequest, nothing created). Not idempotent: Hyper-V
    allows duplicate names, so a repeat creates a second VM; look the name up first
    (``vms.find_vm``). Afterwards the VM exists, is off, and has the default devices of
    its generation (two IDE controllers on generation 1) and no disk or NIC. If setting
    processors and memory fails, the new VM is destroyed and the error names the step.
    3 calls + 2 W when warm.
    """
    validate(spec)
    system = (await settings.spawned(hv, Class.VSSD)).updated(_system_settings(spec))
    def made(result: MethodResult) -> None:
        # Hyper-V hands the new VM's path out with the call (os-win reads it from the
        # call's out parameters), before the job that makes it ends
        if defined is not None and result.path("ResultingSystem") is not None:
            defined(_vm_guid(result))

    result = await settings.step("defining the VM", vms.call_service(
        hv, "DefineSystem", {"SystemSettings": system, "ResourceSettings": []}, started=made))
    guid = _vm_guid(result)
    await settings.step("setting processors and memory", _set_processors_and_memory(hv, guid, spec),
                lambda: vms.destroy(hv, guid))
    vms.remember(hv, spec.name, guid)
    return VmRef(guid, spec.name, PowerState.STOPPED)


def _system_settings(spec: VmSpec) -> dict[str, object]:
    # CloudStack alone decides where and when a VM runs: after a host's restart its VMs
    # stay off (Hyper-V's default restarts those that ran, which an operator may have
    # started on another host meanwhile, on the same volumes), and a host that shuts down
    # shuts their guests down rather than saving their memory, as the C# agent had it.
    values: dict[str, object] = {
        "ElementName": spec.name, "Notes": list(spec.notes),
        "VirtualSystemSubType": GENERATION_SUBTYPES[spec.generation],
        "AutomaticStartupAction": int(StartupAction.NONE),
        "AutomaticShutdownAction": int(ShutdownAction.SHUT_DOWN),
    }
    if spec.generation == 2:
        values["SecureBootEnabled"] = spec.secure_boot
    else:
        order = BOOT_CD_FIRST if spec.boot_from_cd else BOOT_DISK_FIRST
        values["BootOrder"] = [int(device) for device in order]
    if spec.secure_boot_template_id is not None:
        values["SecureBootTemplateId"] = str(uuid.UUID(spec.secure_boot_template_id))
    if spec.bios_guid is not None:
        values["BIOSGUID"] = bios_guid_text(spec.bios_guid)
    return values


def bios_guid_text(guid: str) -> str:
    """``guid`` as Hyper-V writes a BIOSGUID: in braces, upper case."""
    return f"{{{str(uuid.UUID(guid)).upper()}}}"


async def bios_guid(hv: HyperV, vm_guid: str) -> str | None:
    """The VM's BIOSGUID, the GUID its guest reads as its SMBIOS system UUID (without
    braces, lower case); None when the VM or its BIOSGUID is missing or the value is no
    GUID. Read-only; 1 query."""
    query = wql.select(Class.VSSD, wql.eq("InstanceID", f"Microsoft:{vm_guid}"),
                       ("InstanceID", "BIOSGUID"))
    found = await hv.cim.query(query, NAMESPACE)
    text = found[0].string("BIOSGUID") if found else None
    try:
        return str(uuid.UUID(text)) if text else None
    except ValueError:
        return None


async def processor_compatibility(hv: HyperV, vm_guid: str) -> bool | None:
    """Whether the VM has processor compatibility (its LimitProcessorFeatures); None when
    the VM or its processor settings are missing. Read-only; 1 query."""
    query = wql.select(Class.PROCESSOR, settings.device_prefix(vm_guid),
                       ("InstanceID", "LimitProcessorFeatures"))
    found = await hv.cim.query(query, NAMESPACE)
    return found[0].boolean("LimitProcessorFeatures") if found else None


def _vm_guid(result: MethodResult) -> str:
    path = result.path("ResultingSystem")
    if path is None:
        raise HyperVError("DefineSystem returned no ResultingSystem")
    return path.key("Name")


async def _set_processors_and_memory(hv: HyperV, guid: str, spec: VmSpec) -> None:
    kinds = wql.any_of("ResourceType", [int(ResourceType.PROCESSOR), int(ResourceType.MEMORY)])
    condition = settings.device_prefix(guid) & kinds
    found = await hv.cim.query(wql.select(Class.RASD_BASE, condition), NAMESPACE)
    processor = _one(found, Class.PROCESSOR).updated(
        VirtualQuantity=spec.cpus, Weight=spec.cpu_weight, Limit=spec.cpu_limit_millipercent,
        Reservation=spec.cpu_reservation_millipercent,
        LimitProcessorFeatures=spec.processor_compatibility)
    memory = _one(found, Class.MEMORY).updated(
        memory_values(spec.memory_mb, spec.memory_max_mb))
    await vms.call_service(hv, "ModifyResourceSettings", {"ResourceSettings": [processor, memory]})


def _one(found: Sequence[CimInstance], class_name: str) -> CimInstance:
    match = next((item for item in found if item.is_a(class_name)), None)
    if match is None:
        raise HyperVError(f"the VM has no {class_name}")
    return match


# --- processor shares ---------------------------------------------------------------------


async def host_cpu_mhz(hv: HyperV) -> int:
    """The host's clock speed per core in MHz (0 when WMI does not say).

    Read-only: ``host.fixed_facts``'s round trips, none once the session read the host's
    facts (a host's clock speed does not change while it runs).
    """
    return (await host.fixed_facts(hv)).cpu_mhz


def core_share(mhz: int, host_mhz: int) -> int:
    """``mhz`` of one host core as a processor Limit or Reservation (percent / 1000),
    at most 100000 (a whole core); a whole core when the host speed is unknown."""
    if host_mhz <= 0:
        return PROCESSOR_LIMIT_FULL
    return max(0, min(PROCESSOR_LIMIT_FULL, mhz * PROCESSOR_LIMIT_FULL // host_mhz))


def speed_weight(mhz: int | None, host_mhz: int) -> int:
    """A processor Weight proportional to ``mhz``: Hyper-V's default (100) for a whole
    host core, bounded to 1..10000; the default when either speed is unknown."""
    if not mhz or mhz <= 0 or host_mhz <= 0:
        return PROCESSOR_WEIGHT_DEFAULT
    weight = round(mhz * PROCESSOR_WEIGHT_DEFAULT / host_mhz)
    return max(PROCESSOR_WEIGHT_MIN, min(PROCESSOR_WEIGHT_MAX, weight))
