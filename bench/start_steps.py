"""The steps of a StartCommand, told apart by the round trips the agent makes.

The round trips are observed where the agent counts them (``CountingCim.observe``), so
the handler names no steps and carries no hook: each round trip is attributed by what it
does (the method, and the class and subtype of the setting it adds). A step begins with
its first round trip (DefineSystem; adding the SCSI controller; reading the IDE
controllers; adding a drive; adding a NIC; reading a drive's boot source; pushing KVP
items; RequestStateChange to start, or to turn off before a re-creation) and takes the
round trips that follow until the next step begins. A job poll is no round trip of the
step but part of its wait; an invoke that started a job is one wait. Round trips before
the first step (the VM's lookup, the switch names and, the first time, which switches are
External) belong to no step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from hyperv_agent.cim.api import CimInstance
from hyperv_agent.cim.counting import RoundTrip
from hyperv_agent.hyperv.schema import Class, RequestedState, ReturnCode, Subtype

STEP_REMOVE = "remove"  # removing the existing, stopped definition
STEP_DEFINE = "define"  # the VM with its processors and memory
STEP_CONTROLLERS = "controllers"  # the SCSI controller added, the IDE controllers read
STEP_DISK = "disk"  # one per disk or DVD drive
STEP_NIC = "nic"  # one per NIC
STEP_BOOT_ORDER = "boot-order"  # generation 2: the boot drive first
STEP_KVP = "kvp"  # the boot arguments
STEP_POWER_ON = "power-on"
STEPS = (STEP_REMOVE, STEP_DEFINE, STEP_CONTROLLERS, STEP_DISK, STEP_NIC, STEP_BOOT_ORDER,
         STEP_KVP, STEP_POWER_ON)

_STARTS_BY_SETTING = {
    (Class.RASD, Subtype.SCSI_CONTROLLER): STEP_CONTROLLERS,
    (Class.RASD, Subtype.DISK_DRIVE): STEP_DISK,
    (Class.RASD, Subtype.DVD_DRIVE): STEP_DISK,
    (Class.SEPSD, Subtype.NIC): STEP_NIC,
}


@dataclass
class Spent:
    """The round trips of one step: by primitive, and by ``invoke:<method>``."""

    counts: Counter[str] = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        return sum(n for name, n in self.counts.items() if ":" not in name and name != "waits")

    @property
    def waits(self) -> int:
        return self.counts["waits"]

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    def add(self, trip: RoundTrip) -> None:
        self.counts[trip.primitive] += 1
        if trip.primitive == "invoke":
            self.counts[f"invoke:{trip.method}"] += 1
            if trip.return_value == ReturnCode.JOB_STARTED:
                self.counts["waits"] += 1


@dataclass
class StartSteps:
    """The steps of what was observed, in order."""

    steps: list[tuple[str, Spent]] = field(default_factory=list)

    def of(self, kind: str) -> list[tuple[int, int]]:
        """(calls, job waits) of each step of ``kind``, in order."""
        return [(spent.calls, spent.waits) for name, spent in self.steps if name == kind]


def start_steps(trips: Sequence[RoundTrip]) -> StartSteps:
    """The steps of a StartCommand in the round trips ``trips`` (see the module notes)."""
    found = StartSteps()
    for trip in trips:
        if trip.primitive == "get" and trip.target.endswith("Job"):
            continue  # a job poll: the step's wait, not one of its round trips
        current = found.steps[-1][0] if found.steps else None
        begins = _begins(trip, current)
        if begins is not None:
            found.steps.append((begins, Spent()))
        if found.steps:
            found.steps[-1][1].add(trip)
    return found


def _begins(trip: RoundTrip, current: str | None) -> str | None:
    """The step ``trip`` begins, or None when it goes on with ``current``."""
    if trip.primitive == "query":
        if trip.target.upper().startswith("ASSOCIATORS OF"):  # a drive's boot source
            return None if current in (None, STEP_BOOT_ORDER) else STEP_BOOT_ORDER
        return STEP_CONTROLLERS if current == STEP_CONTROLLERS else None
    if trip.primitive != "invoke":
        return None
    if trip.method == "DefineSystem":
        return STEP_DEFINE
    if trip.method == "AddResourceSettings":
        return _STARTS_BY_SETTING.get(_setting_kind(trip))
    if trip.method in ("AddKvpItems", "ModifyKvpItems"):
        return None if current == STEP_KVP else STEP_KVP
    if trip.method == "RequestStateChange":
        if trip.params.get("RequestedState") == RequestedState.ENABLED:
            return STEP_POWER_ON
        return None if current == STEP_REMOVE else STEP_REMOVE
    if trip.method == "DestroySystem":
        return None if current == STEP_REMOVE else STEP_REMOVE
    return None


def _setting_kind(trip: RoundTrip) -> tuple[str, str]:
    settings = trip.params.get("ResourceSettings")
    first = settings[0] if isinstance(settings, list | tuple) and settings else None
    if not isinstance(first, CimInstance):
        return "", ""
    return first.class_name, first.string("ResourceSubType") or ""
