"""Processors and live migration: what a running VM needs of its host's processors.

A VM that starts takes the processor features of its host (``config.ProcessorModel``):
all of them, or, with processor compatibility (its Msvm_ProcessorSettingData's
LimitProcessorFeatures, which the Hyper-V Manager calls "Migrate to a physical computer
with a different processor version" and PowerShell Set-VMProcessor
-CompatibilityForMigrationEnabled), only those every processor of its vendor has. It
keeps them while it runs, is paused or is saved, and wherever it moves; turned off, it
takes its host's again at its next start. Hyper-V moves a running, paused or saved VM
only to a host of the same vendor that has those features, and refuses the others at the
destination before anything moves. Processor compatibility lets a VM move between any
processors of one vendor; nothing lets a running VM move between Intel and AMD.

The refusals read as Hyper-V's (event 21502, in Microsoft's "Troubleshoot live migration
issues"): "Virtual machine '<VM>' is using processor-specific features not supported on
host '<host>'. To allow for migration of this virtual machine to a server with a
different processor, modify the virtual machine settings to limit the processor
features used by the virtual machine." when the destination lacks features, and "The
virtual machine cannot be moved to the destination computer. The hardware on the
destination computer is not compatible with the hardware requirements of this virtual
machine." for the other vendor.

Decisions where Microsoft is silent:

* A processor's features are one number, its feature level: a higher level has every
  feature of a lower one, and processor compatibility needs level 0, which every
  processor has.
* Which of the two texts a move to the other vendor gets: the second (no setting of the
  VM helps, and it names none), with return code ``INCOMPATIBLE`` as for the first.
* A VM that ran when an earlier version stored the host (its record keeps no features)
  is taken to have started on the host as it is configured now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyperv_agent.cim.api import V2_NAMESPACE
from hyperv_agent.emulator import model
from hyperv_agent.emulator.calls import MethodError
from hyperv_agent.emulator.codes import EnabledState, ReturnCode
from hyperv_agent.emulator.schema import concrete_classes
from hyperv_agent.emulator.store import Record, Transaction

if TYPE_CHECKING:
    from hyperv_agent.emulator.host import EmulatedHost

#: Hidden state of a running, paused or saved VM: the processor features it started with
#: (``Needs.to_meta``). Absent while it is off.
PROCESSOR = "processor"
#: The emulator's choice for both refusals: Microsoft documents no code.
INCOMPATIBLE = ReturnCode.FAILED
#: States in which a VM keeps the processor features it started with.
_STARTED = (EnabledState.ENABLED, EnabledState.QUIESCE, EnabledState.OFFLINE)


@dataclass(frozen=True)
class Needs:
    """What a started VM needs of a host's processors."""

    vendor: str
    feature_level: int  # 0: only what every processor of the vendor has (compatibility)

    def to_meta(self) -> dict[str, object]:
        return {"vendor": self.vendor, "feature_level": self.feature_level}

    @classmethod
    def from_meta(cls, value: object) -> Needs | None:
        if not isinstance(value, dict):
            return None
        vendor, level = value.get("vendor"), value.get("feature_level")
        if not isinstance(vendor, str) or not isinstance(level, int):
            return None
        return cls(vendor, level)


def limited(txn: Transaction, guid: str) -> bool:
    """Whether the VM has processor compatibility (LimitProcessorFeatures)."""
    found = model.owned_records(
        txn, concrete_classes("Msvm_ProcessorSettingData", V2_NAMESPACE), guid)
    return bool(found and found[-1]["LimitProcessorFeatures"] is True)


def at_start(host: EmulatedHost, txn: Transaction, guid: str) -> Needs:
    """What the VM ``guid`` takes of ``host``'s processors when it starts there."""
    processor = host.config.processor
    return Needs(processor.vendor, 0 if limited(txn, guid) else processor.feature_level)


def started(host: EmulatedHost, txn: Transaction, vm: Record) -> None:
    """Keep on ``vm`` (staged, starting on ``host``) the features it starts with; a saved
    VM that is restored keeps those it was saved with."""
    if Needs.from_meta(vm.meta.get(PROCESSOR)) is None:
        vm.meta[PROCESSOR] = at_start(host, txn, str(vm["Name"])).to_meta()


def remember_started(host: EmulatedHost, txn: Transaction) -> None:
    """Stage, for each running, paused or saved VM whose record keeps no processor
    features (one stored by an earlier version), those of ``host`` as it is now."""
    for vm in list(txn.instances_of(concrete_classes("Msvm_ComputerSystem", V2_NAMESPACE))):
        if model.is_vm(vm) and vm["EnabledState"] in _STARTED and \
                Needs.from_meta(vm.meta.get(PROCESSOR)) is None:
            staged = txn.edit(vm.path)
            assert staged is not None
            started(host, txn, staged)


def check_arrival(host: EmulatedHost, vm: Record) -> None:
    """MethodError when ``host`` cannot take ``vm`` (a record of the VM as it leaves its
    host) without stopping it; nothing for a VM that is off."""
    needs = Needs.from_meta(vm.meta.get(PROCESSOR))
    if needs is None:
        return
    processor = host.config.processor
    if needs.vendor != processor.vendor:
        raise MethodError(INCOMPATIBLE, "The virtual machine cannot be moved to the "
                          "destination computer. The hardware on the destination computer "
                          "is not compatible with the hardware requirements of this virtual "
                          "machine.")
    if needs.feature_level > processor.feature_level:
        raise MethodError(INCOMPATIBLE, f"Virtual machine '{vm['ElementName']}' is using "
                          f"processor-specific features not supported on host '{host.name}'. "
                          "To allow for migration of this virtual machine to a server with a "
                          "different processor, modify the virtual machine settings to limit "
                          "the processor features used by the virtual machine.")
