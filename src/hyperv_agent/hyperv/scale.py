"""Changing a stopped VM's processor count and memory (static or dynamic).

Hyper-V refuses to change either while the VM runs (return code 32775, invalid state),
so a VM that is not off is refused up front with ``VmNotStopped``. Round trips: 1 query
(processor and memory settings) + 1 ModifyResourceSettings call + 1 job wait.
"""

from __future__ import annotations

from collections.abc import Sequence

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.errors import HyperVError, InvalidRequest, JobFailed, MethodFailed, VmNotStopped
from hyperv_agent.hyperv import build, vms
from hyperv_agent.hyperv.schema import (
    NAMESPACE,
    Class,
    ResourceType,
    ReturnCode,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState, VmRef


async def set_processors_and_memory(hv: HyperV, vm: VmRef, cpus: int, memory_mb: int,
                                    memory_max_mb: int | None = None) -> None:
    """Give the stopped VM ``cpus`` virtual processors and ``memory_mb`` of memory: static,
    or dynamic up to ``memory_max_mb`` when that is more (``build.memory_values``: the VM
    then starts with ``memory_mb`` and has at least that).

    ``cpus`` < 1, ``memory_mb`` < 32, ``memory_max_mb`` below ``memory_mb``, or a size
    that is not a multiple of 2 MB: InvalidRequest, nothing changed. A VM that is not
    off (as ``vm.power`` says, or as Hyper-V finds it): VmNotStopped, nothing changed.
    Missing VM: HyperVError. Safe to repeat: afterwards the VM has exactly that many
    processors and that memory, both in one ModifyResourceSettings, so a failure changes
    neither. 1 query + 1 call + 1 W.
    """
    problem = build.size_problem(cpus, memory_mb, memory_max_mb)
    if problem:
        raise InvalidRequest(problem)
    if vm.power is not PowerState.STOPPED:  # running, paused or saved: named as it is
        raise VmNotStopped(vm.name, vm.power.value)
    found = await _settings(hv, vm.guid)
    processor = _one(found, Class.PROCESSOR).updated(VirtualQuantity=cpus)
    memory = _one(found, Class.MEMORY).updated(build.memory_values(memory_mb, memory_max_mb))
    try:
        await vms.call_service(hv, "ModifyResourceSettings",
                               {"ResourceSettings": [processor, memory]})
    except (MethodFailed, JobFailed) as error:
        if _invalid_state(error):
            raise VmNotStopped(vm.name) from error
        raise


async def _settings(hv: HyperV, vm_guid: str) -> list[CimInstance]:
    kinds = wql.any_of("ResourceType", [int(ResourceType.PROCESSOR), int(ResourceType.MEMORY)])
    prefix = wql.starts_with("InstanceID", f"Microsoft:{vm_guid}\\")
    return await hv.cim.query(wql.select(Class.RASD_BASE, prefix & kinds), NAMESPACE)


def _one(found: Sequence[CimInstance], class_name: str) -> CimInstance:
    match = next((item for item in found if item.is_a(class_name)), None)
    if match is None:
        raise HyperVError(f"the VM has no {class_name}; does it still exist?")
    return match


def _invalid_state(error: MethodFailed | JobFailed) -> bool:
    code = error.return_value if isinstance(error, MethodFailed) else error.error_code
    return code == ReturnCode.INVALID_STATE
