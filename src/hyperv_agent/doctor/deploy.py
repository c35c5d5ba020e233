"""``doctor --deploy``: a throwaway VM through its whole life on the host, then gone.

Define (1 vCPU, 256 MiB, generation 2 where the host runs it), make a 64 MiB dynamic disk
in the local pool's folder, attach it, start, stop (a hard power-off: the VM has no OS),
destroy, delete the disk: one line per step, each through the same operations the agent
uses for CloudStack's commands. Whatever step fails, the VM and its disk are removed
afterwards (``cleanup``, one more line), so nothing is left behind; only if that removal
fails too does the line name what is left and how to remove it by hand.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hyperv_agent.doctor.checks import Target
from hyperv_agent.doctor.report import Check, Report, Status
from hyperv_agent.errors import AgentError
from hyperv_agent.hyperv import build, devices, disks, host, power, vms

VM_PREFIX = "hyperv-agent-doctor-"
NOTE = "hyperv-agent doctor: a throwaway VM, safe to delete"
DISK_BYTES = 64 * 1024 * 1024
MEMORY_MB = 256


@dataclass
class Throwaway:
    """What exists of the throwaway VM so far (for the cleanup)."""

    name: str
    disk: str
    vm: vms.VmRef | None = None
    disk_made: bool = False  # created, or its creation was attempted
    vm_gone: bool = False
    disk_gone: bool = False


async def play(target: Target, report: Report) -> None:
    """Add one line per step to ``report``, then the cleanup's line."""
    name = f"{VM_PREFIX}{uuid.uuid4().hex[:8]}"
    vm = Throwaway(name, f"{target.pool}\\{name}.vhdx")
    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("define", lambda: _define(target, vm)), ("disk", lambda: _disk(target, vm)),
        ("attach", lambda: _attach(target, vm)), ("start", lambda: _start(target, vm)),
        ("stop", lambda: _stop(target, vm)), ("destroy", lambda: _destroy(target, vm)),
        ("delete disk", lambda: _delete(target, vm)),
    ]
    try:
        for step, action in steps:
            if not await _step(report, step, action):
                break
    finally:
        report.add(await _cleanup(target, vm))


async def _step(report: Report, step: str, action: Callable[[], Awaitable[str]]) -> bool:
    started = time.monotonic()
    try:
        detail = await action()
    except AgentError as error:
        report.add(Check(f"deploy {step}", Status.FAIL, str(error),
                         "see the error; the throwaway VM and disk are removed below"))
        return False
    report.add(Check(f"deploy {step}", Status.OK,
                     f"{detail} ({(time.monotonic() - started) * 1000:.0f} ms)"))
    return True


async def _define(target: Target, vm: Throwaway) -> str:
    generation = 2 if (await host.host_facts(target.hyperv)).runs_generation_2 else 1
    spec = build.VmSpec(name=vm.name, notes=(NOTE,), generation=generation, cpus=1,
                        memory_mb=MEMORY_MB)
    vm.vm = await build.define_vm(target.hyperv, spec)
    return f"{vm.name} defined (generation {generation}, 1 vCPU, {MEMORY_MB} MiB)"


async def _disk(target: Target, vm: Throwaway) -> str:
    await target.files.make_dirs(target.pool)
    vm.disk_made = True
    await disks.create_blank(target.hyperv, vm.disk, DISK_BYTES)
    return f"{vm.disk} created ({DISK_BYTES // 1024 // 1024} MiB, dynamic)"


async def _attach(target: Target, vm: Throwaway) -> str:
    ref = _ref(vm)
    controller = await devices.add_scsi_controller(target.hyperv, ref)
    await devices.attach_disk(target.hyperv, ref, controller, 0, vm.disk)
    return "disk attached on SCSI 0"


async def _start(target: Target, vm: Throwaway) -> str:
    await power.start(target.hyperv, _ref(vm).guid)
    return "running"


async def _stop(target: Target, vm: Throwaway) -> str:
    await vms.turn_off(target.hyperv, _ref(vm).guid)
    return "off"


async def _destroy(target: Target, vm: Throwaway) -> str:
    await vms.destroy(target.hyperv, _ref(vm).guid)
    vm.vm_gone = True
    return "definition removed"


async def _delete(target: Target, vm: Throwaway) -> str:
    await target.files.remove(vm.disk)
    vm.disk_gone = True
    return f"{vm.disk} deleted"


def _ref(vm: Throwaway) -> vms.VmRef:
    assert vm.vm is not None  # each step runs only after "define" passed
    return vm.vm


async def _cleanup(target: Target, vm: Throwaway) -> Check:
    """Remove whatever the steps left: the VM (off, then destroyed), then the disk."""
    left: list[tuple[str, str]] = []  # (what is left and why, how to remove it)
    if vm.vm is not None and not vm.vm_gone:
        try:
            await vms.remove_vm(target.hyperv, vm.vm.guid)
        except AgentError as error:
            left.append((f"VM {vm.name} ({error})", f"Remove-VM -Name {vm.name} -Force"))
    if vm.disk_made and not vm.disk_gone:
        try:
            await target.files.remove(vm.disk)
        except AgentError as error:
            left.append((f"disk {vm.disk} ({error})", f"Remove-Item '{vm.disk}'"))
    if left:
        return Check("deploy cleanup", Status.FAIL,
                     "left behind: " + "; ".join(what for what, _ in left),
                     "remove by hand: " + "; ".join(how for _, how in left))
    return Check("deploy cleanup", Status.OK, f"nothing of {vm.name} is left on the host")
