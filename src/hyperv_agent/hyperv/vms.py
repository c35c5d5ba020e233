"""Virtual machines: listing, lookup, statistics, power-off and removal.

A VM is addressed by its GUID (``Msvm_ComputerSystem.Name``); its object path is built
from the GUID, never looked up. Listing uses one ``GetSummaryInformation`` call with a
null SettingData (every VM at once), so its round trips do not grow with the number of
VMs. Where the answer for every VM would not fit the transport (WinRM's MaxEnvelopeSize,
about a thousand VMs), the VMs' settings are listed with one query and summarised by
path, which the backend sends in batches that fit; a session that overflowed once goes
that way from then on. Statistics ask for the named VMs only (SettingData holds their
settings' paths) when their GUIDs are known: each listing, lookup and VM creation notes
the GUID of a name, on the host's session (``session.HyperV``); a name not known yet
makes the call ask for every VM.

The path of the Virtual System Management Service (VSMS) is kept by the session: the
first VSMS-based call of a session costs one extra query to find it; after that the kept
path is used. Round trips in the steady state (job polls not counted, W = job waits):

================  =====================================================================
``list_vms``      1 call (GetSummaryInformation)
``vm_stats``      1 call (GetSummaryInformation); 0 when no name is asked for; 2 when
                  a known GUID turns out stale (the VM was re-created or renamed)
``find_vm``       1 query
``request_state`` 1 call + 1 W (0 W when Hyper-V makes the change at once or cannot
                  make it); +1 get when Hyper-V loses the job of a start or a turn-off,
                  and when it cannot make a change the caller ``confirm``s
``turn_off``      ``request_state``'s
``destroy``       1 call + 1 W (+1 get when DestroySystem fails or Hyper-V loses its
                  job, to see if the VM is gone or being migrated)
``remove_vm``     at most 2 calls + 2 W; 1 call when the VM does not exist
================  =====================================================================

A job the host loses before it is seen to end (``jobs.JobLost``: its Virtual Machine
Management Service restarted, or the job was removed once ended) is told by its effect
where that is unambiguous and one get shows it, on that failure alone: a start or a
turn-off is done when the VM is in the state it asked for (Enabled, Disabled), a
DestroySystem when the VM is gone. Anything else (the VM still changing, in another
state, or a reset, after which a running VM runs as before) raises the JobLost.

A VM being migrated live from the host (OperationalStatus Migrating Virtual Machine,
``migrating``) takes no change until its move is done: Hyper-V refuses it as invalid
state (32775), the answer it also gives for a change a VM's state makes pointless (a
turn-off of a VM that is off). Where that refusal would read as done, the VM is read once,
on that failure alone, and one being migrated, or gone since (its move carried it away),
raises VmMigrating (``migrating_refusal``, ``left_refusal``): a removal or turn-off
refused meanwhile must not read as made. ``unless_migrating`` does the same for any
change a command makes.

Nothing here deletes a file: DestroySystem removes a VM's definition, and its VHD, VHDX
and ISO files stay where they are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum

from hyperv_agent.cim import cimxml, wql
from hyperv_agent.cim.api import CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.errors import (
    CimError,
    CimNotFound,
    CimResponseTooLarge,
    HyperVError,
    JobFailed,
    JobLost,
    MethodFailed,
    VmAmbiguous,
    VmMigrating,
)
from hyperv_agent.hyperv import jobs
from hyperv_agent.hyperv.schema import (
    CAPTION_VM,
    MIGRATING_LIVE,
    NAMESPACE,
    Class,
    EnabledState,
    RequestedState,
    ReturnCode,
    Subtype,
    SummaryInfo,
)
from hyperv_agent.hyperv.session import HyperV, InstanceMemo

_LOG = logging.getLogger("hyperv_agent.hyperv.vms")

# --- power states -------------------------------------------------------------------------


class PowerState(Enum):
    """A VM's power state, folded from the v2 and v1 EnabledState numbers."""

    RUNNING = "running"
    STOPPED = "stopped"
    SAVED = "saved"
    PAUSED = "paused"
    UNKNOWN = "unknown"


_E = EnabledState
#: Transitional states count as the state the VM is in while they last (os-win's reading):
#: saving, pausing, resuming and resetting VMs are still running; a stopping VM is off.
_POWER: Mapping[int, PowerState] = {
    **dict.fromkeys(
        (_E.ENABLED, _E.STARTING, _E.RESET, _E.V1_STARTING, _E.SAVING, _E.PAUSING,
         _E.RESUMING, _E.FAST_SAVING, _E.RUNNING_CRITICAL, _E.STARTING_CRITICAL,
         _E.RESET_CRITICAL, _E.SAVING_CRITICAL, _E.PAUSING_CRITICAL, _E.RESUMING_CRITICAL,
         _E.FAST_SAVING_CRITICAL),
        PowerState.RUNNING),
    **dict.fromkeys(
        (_E.DISABLED, _E.SHUTTING_DOWN, _E.V1_STOPPING, _E.OFF_CRITICAL,
         _E.STOPPING_CRITICAL),
        PowerState.STOPPED),
    **dict.fromkeys(
        (_E.OFFLINE, _E.V1_SUSPENDED, _E.FAST_SAVED, _E.SAVED_CRITICAL,
         _E.FAST_SAVED_CRITICAL),
        PowerState.SAVED),
    **dict.fromkeys((_E.QUIESCE, _E.V1_PAUSED, _E.PAUSED_CRITICAL), PowerState.PAUSED),
}


def power_state(enabled_state: int | None) -> PowerState:
    """The PowerState of an EnabledState (v2 or v1 numbering); UNKNOWN for anything else."""
    if enabled_state is None:
        return PowerState.UNKNOWN
    return _POWER.get(enabled_state, PowerState.UNKNOWN)


#: The states a VM shows while Hyper-V changes its state (a RequestStateChange job runs),
#: named as a VM's ``changing``: they read as the state the VM is in meanwhile (above), but
#: Hyper-V takes no other state change, nor removes the VM, until the change is done
#: (return code 32775). A stopping VM reads as STOPPED, but Hyper-V is still tearing it
#: down; it is off once it reads Disabled (or Off-Critical).
_CHANGING: Mapping[int, str] = {
    **dict.fromkeys((_E.STARTING, _E.V1_STARTING, _E.STARTING_CRITICAL), "starting"),
    **dict.fromkeys((_E.SHUTTING_DOWN, _E.V1_STOPPING, _E.STOPPING_CRITICAL), "stopping"),
    **dict.fromkeys((_E.SAVING, _E.SAVING_CRITICAL, _E.FAST_SAVING, _E.FAST_SAVING_CRITICAL),
                    "saving"),
    **dict.fromkeys((_E.PAUSING, _E.PAUSING_CRITICAL), "pausing"),
    **dict.fromkeys((_E.RESUMING, _E.RESUMING_CRITICAL), "resuming"),
    **dict.fromkeys((_E.RESET, _E.RESET_CRITICAL), "resetting"),
}
STOPPING = "stopping"


def changing(enabled_state: int | None) -> str | None:
    """The change Hyper-V is making to a VM in ``enabled_state`` ("starting", "stopping",
    "saving", "pausing", "resuming", "resetting"); None for a VM in a steady state."""
    return _CHANGING.get(enabled_state) if enabled_state is not None else None


def migrating(operational_status: tuple[int, ...]) -> bool:
    """Whether a VM of ``operational_status`` is being migrated live (its move runs:
    ``MIGRATING_LIVE`` shows on the move's source until the move is done)."""
    return MIGRATING_LIVE in operational_status


def migrating_refusal(name: str, what: str) -> VmMigrating:
    """The failure of ``what`` ("the reboot", "the disk attach", ...) of VM ``name`` being
    migrated live from this host: the one wording every command answers with."""
    return VmMigrating(
        f"{what} of VM {name} was not done: the VM is being migrated live from this host "
        "(OperationalStatus Migrating Virtual Machine), and Hyper-V takes no change to it "
        "until the move is done; it was left as it is: try again once the move is done, on "
        "the host the VM is then on")


def left_refusal(name: str, what: str, refused: BaseException) -> VmMigrating:
    """The failure of ``what`` of VM ``name`` that Hyper-V ``refused`` for the VM's state
    and that has since left the host: a live move carried it away (or it was removed)."""
    return VmMigrating(
        f"{what} of VM {name} was not done: Hyper-V refused it ({refused}), and the VM has "
        "since left this host (a live migration carried it to another host, or it was "
        "removed); nothing was done to it: look for it on the host it moved to")


def left_meanwhile(name: str, what: str, during: str) -> VmMigrating:
    """The failure of ``what`` of VM ``name`` that left the host ``during`` a wait of
    ``what`` on it, nothing having been refused: a live move begun outside this agent (an
    operator's Move-VM) carried it away, or another removed it."""
    return VmMigrating(
        f"{what} of VM {name} was not done: the VM left this host {during} (a live "
        "migration carried it to another host, or it was removed); it was not removed "
        "here: look for it on the host it moved to, where it may still run")


def refuse_if_migrating(vm: VmRef, what: str) -> None:
    """Raise ``migrating_refusal`` when the lookup of ``vm`` showed it being migrated
    live (``vm.migrating``). No round trip."""
    if vm.migrating:
        raise migrating_refusal(vm.name, what)


def invalid_state(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is Hyper-V refusing a call or a
    job as invalid state (32775). No round trip."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, MethodFailed) and cause.return_value == ReturnCode.INVALID_STATE:
            return True
        if isinstance(cause, JobFailed) and cause.error_code == ReturnCode.INVALID_STATE:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def _explain_refusal(hv: HyperV, vm_guid: str, name: str, what: str,
                           refused: BaseException) -> CimInstance:
    """After Hyper-V ``refused`` ``what`` of the VM as invalid state: the VM read once; one
    being migrated live raises ``migrating_refusal``, one gone ``left_refusal``."""
    found = await get_vm(hv, vm_guid)
    if found is None:
        raise left_refusal(name, what, refused)
    if migrating(found.integers("OperationalStatus")):
        raise migrating_refusal(found.string("ElementName") or name, what)
    return found


async def get_vm(hv: HyperV, vm_guid: str) -> CimInstance | None:
    """The VM's Msvm_ComputerSystem; None when it is gone. 1 get."""
    try:
        return await hv.cim.get(vm_path(vm_guid))
    except CimNotFound:
        return None


async def explain_refusal(hv: HyperV, vm_guid: str, name: str, what: str,
                          error: HyperVError) -> None:
    """For a caller holding the VM's GUID and not its lookup: when ``error`` is Hyper-V
    refusing ``what`` as invalid state (32775), the VM read once, on that failure alone,
    and one being migrated live raises ``migrating_refusal`` (from ``error``), one gone
    since ``left_refusal``; otherwise nothing (the caller raises ``error``)."""
    if isinstance(error, VmMigrating) or not invalid_state(error):
        return
    try:
        await _explain_refusal(hv, vm_guid, name, what, error)
    except VmMigrating as told:
        raise told from error


@asynccontextmanager
async def unless_migrating(hv: HyperV, vm: VmRef, what: str) -> AsyncIterator[None]:
    """Make a change of ``vm`` (the body), ``what`` in the words of ``migrating_refusal``,
    unless the VM is being migrated live from this host.

    A VM its lookup showed migrating raises ``migrating_refusal`` before the body runs
    (no round trip). A change Hyper-V refuses as invalid state (32775, in the error or one
    it was raised from: a move begun after the lookup) is told by the VM read once, on that
    failure alone: being migrated, ``migrating_refusal``; gone since, ``left_refusal``;
    otherwise the error as it was."""
    refuse_if_migrating(vm, what)
    try:
        yield
    except HyperVError as error:
        await explain_refusal(hv, vm.guid, vm.name, what, error)
        raise


def is_stopping(enabled_state: int | None) -> bool:
    """Whether ``enabled_state`` is a VM on its way off, not off yet."""
    return changing(enabled_state) == STOPPING


#: The power states in which Hyper-V adds and removes none of a VM's devices: a paused VM
#: (Hyper-V pauses one whose disk's volume runs out of space, "Paused-Critical") is frozen
#: with the devices it has, and a saved VM's saved state holds them.
_DEVICES_FIXED = frozenset({PowerState.PAUSED, PowerState.SAVED})


def devices_fixed(vm: VmRef) -> str | None:
    """Why Hyper-V adds and removes no device of the VM now (it is paused or saved, as
    ``vm.power`` says); None when it may. No round trip."""
    if vm.power not in _DEVICES_FIXED:
        return None
    state = vm.power.value
    return (f"VM {vm.name} is {state} on this host, and Hyper-V adds and removes no device "
            f"of a {state} VM; try again once the VM runs again or is stopped")


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmRef:
    """A VM found by name; ``changing`` names the change Hyper-V is making to its state
    (``changing()``), None in a steady state."""

    guid: str
    name: str
    power: PowerState
    changing: str | None = None
    migrating: bool = False  # a live move of it is under way (``migrating``)

    @property
    def path(self) -> ObjectPath:
        return vm_path(self.guid)

    @property
    def stopping(self) -> bool:
        """Hyper-V says the VM is on its way off (Shutting Down, Stopping): its power reads
        STOPPED, but it is not off yet."""
        return self.changing == STOPPING


def read_again(vm: VmRef, found: CimInstance) -> VmRef:
    """``vm`` as ``found``, its Msvm_ComputerSystem read again, shows it now: its power
    state, the change Hyper-V is making to it, whether a live move of it is under way;
    its GUID and name kept."""
    state = found.integer("EnabledState")
    return VmRef(vm.guid, vm.name, power_state(state), changing=changing(state),
                 migrating=migrating(found.integers("OperationalStatus")))


@dataclass(frozen=True)
class StateRequest:
    """What ``request_state`` came to: Hyper-V's ``result``, and ``seen``, the VM as
    read once on a refusal the caller asked to have told (``confirm``, 32775); None when
    it was not read."""

    result: MethodResult
    seen: CimInstance | None = None


@dataclass(frozen=True)
class VmInfo:
    """One VM as listed: identity, power state and the lines of its Notes."""

    guid: str
    name: str
    power: PowerState
    notes: tuple[str, ...]
    changing: str | None = None  # the change Hyper-V is making to its state (``changing``)


@dataclass(frozen=True)
class VmStats:
    """What CloudStack's GetVmStatsCommand reports for one VM."""

    cpu_utilization_percent: float
    cpus: int
    memory_mb: int  # the memory the VM holds now (MemoryUsage)
    uptime_ms: int
    running: bool
    guid: str = ""  # the VM's GUID (Msvm_ComputerSystem.Name)
    #: The share (%) of ``memory_mb`` its guest has free (MemoryAvailable): reported for a
    #: running VM with dynamic memory only; None when Hyper-V leaves it null.
    memory_available_percent: int | None = None


def vm_path(vm_guid: str) -> ObjectPath:
    """The Msvm_ComputerSystem path of the VM with GUID ``vm_guid`` (no round trip)."""
    return ObjectPath.for_keys(
        Class.COMPUTER_SYSTEM, NAMESPACE, CreationClassName=Class.COMPUTER_SYSTEM, Name=vm_guid
    )


def owner_guid(instance_id: str) -> str:
    """The VM GUID in a VM's or device's InstanceID, ``Microsoft:<GUID>[\\...]`` (upper
    case); "" for any other form."""
    head, _, _ = instance_id.partition("\\")
    prefix, separator, guid = head.partition(":")
    return guid.upper() if separator and prefix.casefold() == "microsoft" else ""


# --- services ------------------------------------------------------------------------------

_VSMS_MISSING = "is the Hyper-V role installed?"


async def management_service(hv: HyperV) -> ObjectPath:
    """The VSMS path: 1 query on the session's first call, then kept (0 round trips).

    Raises HyperVError when the host has no Virtual System Management Service.
    """
    return await hv.service_path(Class.VSMS, _VSMS_MISSING)


async def call_service(
    hv: HyperV, method: str, params: Mapping[str, InValue],
    policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
    started: Callable[[MethodResult], None] | None = None,
) -> MethodResult:
    """``jobs.call`` on the VSMS; a stale cached path is looked up again, once."""
    return await hv.call_service(Class.VSMS, _VSMS_MISSING, method, params, policy,
                                 started=started)


def settings_path(vm_guid: str) -> ObjectPath:
    """The Msvm_VirtualSystemSettingData path of the VM's current settings (no round trip)."""
    return ObjectPath.for_keys(Class.VSSD, NAMESPACE, InstanceID=f"Microsoft:{vm_guid}")


async def _summaries(hv: HyperV, requested: Iterable[SummaryInfo],
                     vm_guids: Collection[str] | None = None) -> tuple[MethodResult, ...]:
    """The answers summarising the VMs ``vm_guids`` (every VM when None), to be read
    with ``_named``. Every VM: one call; or, where that answer overflowed the transport,
    one query for the VMs' settings and the call by path (the backend batches it)."""
    information: list[int] = [int(item) for item in requested]
    if vm_guids is not None:
        return (await _summaries_of(hv, [settings_path(g) for g in vm_guids], information),)
    kept = hv.kept(_Kept)
    if not kept.bulk_too_large:
        try:
            return (await _summaries_of(hv, None, information),)
        except CimResponseTooLarge:
            kept.bulk_too_large = True
    query = wql.select(Class.VSSD, wql.eq("VirtualSystemType", Subtype.REALIZED),
                       ("InstanceID",))
    paths = [s.path for s in await hv.cim.query(query, NAMESPACE) if s.path is not None]
    return (await _summaries_of(hv, paths, information),) if paths else ()


async def _summaries_of(hv: HyperV, settings: list[ObjectPath] | None,
                        information: list[int]) -> MethodResult:
    params: dict[str, InValue] = {"SettingData": settings, "RequestedInformation": information}
    return await call_service(hv, "GetSummaryInformation", params, jobs.DEFAULT_POLICY)


def _named(answers: Iterable[MethodResult]) -> tuple[CimInstance, ...]:
    """The summaries in GetSummaryInformation answers, without those of paths that name
    no VM (their Name is empty). One pass over every summary: for thousands of VMs, call
    it on a thread."""
    return tuple(summary for answer in answers
                 for summary in answer.instances("SummaryInformation")
                 if summary.string("Name"))


# --- what the session knows of the host's VMs ----------------------------------------------


def remember(hv: HyperV, name: str, vm_guid: str) -> None:
    """Note that the VM called ``name`` has GUID ``vm_guid`` (no round trip)."""
    hv.kept(_Kept).known.note(name, vm_guid)


def known_guid(hv: HyperV, name: str) -> str | None:
    """The GUID the session last saw for the VM called ``name`` (a hint); no round trip."""
    return hv.kept(_Kept).known.guids.get(name)


def _forget(hv: HyperV, vm_guid: str) -> None:
    hv.kept(_Kept).known.drop(vm_guid)


def _learn(hv: HyperV, listed: Iterable[tuple[str, str, PowerState]]) -> None:
    """Replace what is known with a listing of every VM: (name, GUID, power state)."""
    hv.kept(_Kept).known = _known_from(listed)


def _known_from(listed: Iterable[tuple[str, str, PowerState]]) -> _Known:
    """The GUID of each name: of several VMs of one name, the one ``find_vm`` takes
    (``name_first``; the first listed among equals)."""
    known = _Known()
    ranks: dict[str, int] = {}
    for name, guid, power in listed:
        rank = name_first(power)
        if rank < ranks.get(name, len(_NAME_FIRST) + 1):
            known.guids[name], ranks[name] = guid, rank
    return known


class _Known:
    """GUIDs by VM name; names by GUID (lower case) are worked out when a VM is first
    forgotten, so a listing of thousands of VMs is learnt in one cheap pass."""

    def __init__(self) -> None:
        self.guids: dict[str, str] = {}
        self._names: dict[str, set[str]] | None = None

    def copy(self) -> _Known:
        """An independent copy (one dict copy, however many VMs)."""
        twin = _Known()
        twin.guids = dict(self.guids)
        return twin

    def note(self, name: str, vm_guid: str) -> None:
        old = self.guids.get(name)
        self.guids[name] = vm_guid
        if self._names is not None:
            if old is not None:
                self._names.get(old.lower(), set()).discard(name)
            self._names.setdefault(vm_guid.lower(), set()).add(name)

    def drop(self, vm_guid: str) -> None:
        if self._names is None:
            self._names = {}
            for name, guid in self.guids.items():
                self._names.setdefault(guid.lower(), set()).add(name)
        for name in self._names.pop(vm_guid.lower(), set()):
            if self.guids.get(name, "").lower() == vm_guid.lower():
                del self.guids[name]


@dataclass
class _Kept:
    """What the session keeps for this module."""

    #: Each VM's GUID by ElementName, as last seen (a listing, a lookup, a VM defined). A
    #: hint only: what it says is checked in the answer it is used for.
    known: _Known = field(default_factory=_Known)
    #: Whether an answer for every VM overflowed the transport once.
    bulk_too_large: bool = False
    #: Summaries already read, by instance: a backend that hands out the same (immutable)
    #: instance again for an unchanged VM is not parsed twice.
    read: InstanceMemo[VmInfo] = field(default_factory=InstanceMemo)
    #: The last listing of every VM, the summary array it was read from and the GUIDs of
    #: its names.
    last_listing: tuple[object, tuple[VmInfo, ...], _Known] | None = None
    #: The GUIDs the last listing of every VM found, and when it was asked for.
    listed: Listed | None = None


@dataclass(frozen=True)
class Listed:
    """The VMs the last listing of every VM found: their GUIDs (upper case), and when it
    was asked for (``time.monotonic()``). A VM a module keeps a record of that is not
    among them was gone by then, unless the record was made after that time."""

    asked_at: float
    guids: frozenset[str]


def last_listed(hv: HyperV) -> Listed | None:
    """What the session's last ``list_vms`` found; None before the first. No round
    trip."""
    return hv.kept(_Kept).listed


def _read_listing(answers: Iterable[MethodResult], read: InstanceMemo[VmInfo]
                  ) -> tuple[list[VmInfo], _Known, frozenset[str]]:
    """Every VM of a summary of all VMs, the GUIDs of their names, and their GUIDs
    (upper case); summaries read before are taken from ``read``, the others added to it."""
    listed = [vm for answer in answers for vm in (
        _read(summary, read) for summary in answer.instances("SummaryInformation"))
        if vm.guid]  # no Name: no such VM
    return (listed, _known_from((vm.name, vm.guid, vm.power) for vm in listed),
            frozenset(vm.guid.upper() for vm in listed))


def _read(summary: CimInstance, read: InstanceMemo[VmInfo]) -> VmInfo:
    info = read.get(summary)
    if info is None:
        info = read[summary] = _vm_info(summary)
    return info


# --- reading ------------------------------------------------------------------------------

_LIST_INFO = (SummaryInfo.NAME, SummaryInfo.ELEMENT_NAME, SummaryInfo.NOTES,
              SummaryInfo.ENABLED_STATE)
_STATS_INFO = (SummaryInfo.NAME, SummaryInfo.ELEMENT_NAME, SummaryInfo.NUMBER_OF_PROCESSORS,
               SummaryInfo.ENABLED_STATE, SummaryInfo.PROCESSOR_LOAD, SummaryInfo.MEMORY_USAGE,
               SummaryInfo.UP_TIME, SummaryInfo.MEMORY_AVAILABLE)


async def list_vms(hv: HyperV) -> list[VmInfo]:
    """Every VM of the host with its power state and notes, in WMI's order.

    One GetSummaryInformation call whatever the number of VMs (plus one query the first
    time a session is used); where that answer overflows the transport, one query and the
    call in batches (see the module notes). Read-only and safe to repeat; an empty host
    gives [].
    """
    asked_at = time.monotonic()
    answers = await _summaries(hv, _LIST_INFO)
    kept = hv.kept(_Kept)
    last = kept.last_listing
    if last is not None and len(answers) == 1 and _summary_tuple(answers[0]) is last[0]:
        kept.known = last[2].copy()  # nothing changed since
        if kept.listed is not None:  # made with last_listing, of the same VMs
            kept.listed = Listed(asked_at, kept.listed.guids)
        return list(last[1])
    # Reading thousands of summaries takes milliseconds: done on a thread, the event loop
    # goes on serving other requests meanwhile.
    listed, known, guids = await asyncio.to_thread(_read_listing, answers, kept.read)
    kept.known = known.copy()
    kept.listed = Listed(asked_at, guids)
    kept.last_listing = ((_summary_tuple(answers[0]), tuple(listed), known)
                         if len(answers) == 1 else None)
    return listed


def _summary_tuple(answer: MethodResult) -> object:
    """The answer's SummaryInformation array, as the backend handed it out: the same
    object again means the same summaries (a backend that keeps its answers)."""
    return answer["SummaryInformation"]


def uncarried(name: str) -> int | None:
    """The offset of the first character of the VM name ``name`` that no request to
    Hyper-V can carry, or None when it carries them all: XML has no C0 control but tab,
    LF and CR, no U+FFFE, U+FFFF or lone surrogate (``cimxml.uncarried``), and WinRM takes
    a query only as XML (a request holding one is refused as not well-formed) as Hyper-V
    takes a VM's settings, its name among them, only as CIM-XML text. Pure, no I/O."""
    return cimxml.uncarried(name)


async def find_vm(hv: HyperV, name: str, *, several_on: bool = False) -> VmRef | None:
    """The VM whose ElementName is ``name``; None when there is none. 1 query, read-only.

    Hyper-V does not keep ElementNames unique (it tells VMs apart by GUID): with
    duplicates, the one ``name_first`` puts first is taken (the one that is on, else one
    whose state cannot be read); the first WMI returns among equals. CloudStack runs one
    VM of a name, so a definition left beside it (by a host that failed while the VM was
    started elsewhere and then migrated back) is not the VM its commands mean: after a
    move, the MS asks the destination's CheckVirtualMachine, and reading the leftover's
    PowerOff would have it fail the move and stop the VM that just arrived.

    Two or more of the name that are on (running or paused: a copy an operator imported
    and started, say) cannot be told apart: which one WMI lists first is no choice, and a
    command would stop, reset or change the wrong one as readily as CloudStack's.
    VmAmbiguous names their GUIDs, unless ``several_on`` (a caller that only reads
    whether the VM is on, which every one of them answers alike).
    """
    condition = wql.eq("ElementName", name) & wql.eq("Caption", CAPTION_VM)
    query = wql.select(Class.COMPUTER_SYSTEM, condition,
                       ("Name", "ElementName", "EnabledState", "OperationalStatus"))
    found = [VmRef(guid, vm.string("ElementName") or name,
                   power_state(vm.integer("EnabledState")),
                   changing=changing(vm.integer("EnabledState")),
                   migrating=migrating(vm.integers("OperationalStatus")))
             for vm in await hv.cim.query(query, NAMESPACE) if (guid := vm.string("Name"))]
    if not found:
        return None
    on = [ref.guid for ref in found if ref.power in _ON]
    if len(on) > 1 and not several_on:
        raise VmAmbiguous(
            f"{len(on)} VMs that are on are named '{name}' on this host (GUIDs "
            f"{', '.join(on)}); Hyper-V tells VMs apart by GUID only, so nothing was done "
            "to any of them: rename or remove in Hyper-V the ones CloudStack did not create")
    chosen = min(found, key=lambda ref: name_first(ref.power))
    remember(hv, name, chosen.guid)
    return chosen


#: The states in which a VM is on: it holds its host resources (``find_vm``).
_ON = frozenset((PowerState.RUNNING, PowerState.PAUSED))


#: Which of several VMs sharing a name is the VM CloudStack means (``name_first``).
_NAME_FIRST: Mapping[PowerState, int] = {
    PowerState.RUNNING: 0, PowerState.PAUSED: 1, PowerState.UNKNOWN: 2,
    PowerState.SAVED: 3}
#: Which of several VMs holding one disk file is the one using it (``on_first``).
_ON_FIRST: Mapping[PowerState, int] = {
    PowerState.RUNNING: 0, PowerState.PAUSED: 1, PowerState.SAVED: 2}


def name_first(power: PowerState) -> int:
    """The sort key that puts, of several VMs sharing a name, the one CloudStack means
    first: running, else paused, else one whose state cannot be read, else saved, else
    stopped. Every reading of a VM by name takes it (``find_vm``, ``vm_stats``, the GUIDs
    learnt from a listing) and the VM state report reports it, so CheckVirtualMachine and
    the report never tell the MS two states for one name. A VM whose state cannot be read
    may well run (os-win reads such states as running): reported PowerUnknown, the MS keeps
    the state it has, where a saved leftover's PowerOff would have it stop the VM (after a
    move, fail the move and stop it) or take it for off when HA asks."""
    return _NAME_FIRST.get(power, len(_NAME_FIRST))


def on_first(power: PowerState) -> int:
    """The sort key that puts, of several VMs holding one disk file, the one that is on
    first: running, else paused, else saved, else any (``disks.find_attachment``). What
    its callers refuse is a disk a VM's worker holds open (running or paused,
    ``files._HOLDING``), so that VM must come first; unlike ``name_first``, a VM whose
    state cannot be read gets no place ahead of a saved one, whose memory Hyper-V
    restores over the disk as it is."""
    return _ON_FIRST.get(power, len(_ON_FIRST))


async def vm_stats(hv: HyperV, names: Collection[str]) -> dict[str, VmStats]:
    """Statistics of the VMs named in ``names`` (ElementName), keyed by name.

    One GetSummaryInformation call (none when ``names`` is empty). When the GUID of every
    named VM is known (from a listing, a lookup or the VM's creation), the call asks for
    those VMs only; otherwise, or when a known GUID turns out stale (one more call), it
    asks for every VM and learns their GUIDs. Names of no VM are left out of the result;
    with duplicate names the one that is on is taken, as ``find_vm`` takes it. Read-only
    and safe to repeat.
    """
    wanted = set(names)
    if not wanted:
        return {}
    known = hv.kept(_Kept).known.guids
    if wanted <= known.keys():
        stats = _stats_of(_named(await _summaries(hv, _STATS_INFO,
                                                  {known[n] for n in wanted})), wanted)
        if stats.keys() == wanted:
            return stats
    every = _named(await _summaries(hv, _STATS_INFO))
    _learn(hv, ((s.string("ElementName") or "", s.string("Name") or "",
                 power_state(s.integer("EnabledState"))) for s in every))
    return _stats_of(every, wanted)


def _stats_of(summaries: Iterable[CimInstance], wanted: set[str]) -> dict[str, VmStats]:
    """The stats of the VMs ``wanted`` names; of several of one name, those of the one
    ``find_vm`` takes (``name_first``)."""
    stats: dict[str, VmStats] = {}
    ranks: dict[str, int] = {}
    for summary in summaries:
        name = summary.string("ElementName")
        if name not in wanted:
            continue
        rank = name_first(power_state(summary.integer("EnabledState")))
        if rank < ranks.get(name, len(_NAME_FIRST) + 1):
            stats[name], ranks[name] = _vm_stats(summary), rank
    return stats


def _vm_info(summary: CimInstance) -> VmInfo:
    return VmInfo(
        guid=summary.string("Name") or "",
        name=summary.string("ElementName") or "",
        power=power_state(summary.integer("EnabledState")),
        notes=_note_lines(summary.string("Notes")),
        changing=changing(summary.integer("EnabledState")),
    )


def _note_lines(text: str | None) -> tuple[str, ...]:
    """Msvm_SummaryInformation.Notes is one string: the VSSD's Notes joined by newlines."""
    if not text:
        return ()
    return tuple(line.removesuffix("\r") for line in text.split("\n"))


def _vm_stats(summary: CimInstance) -> VmStats:
    return VmStats(
        cpu_utilization_percent=float(summary.integer("ProcessorLoad") or 0),
        cpus=summary.integer("NumberOfProcessors") or 0,
        memory_mb=summary.integer("MemoryUsage") or 0,
        uptime_ms=summary.integer("UpTime") or 0,
        running=power_state(summary.integer("EnabledState")) is PowerState.RUNNING,
        memory_available_percent=summary.integer("MemoryAvailable"),
        guid=(summary.string("Name") or "").upper(),
    )


# --- power-off and removal ----------------------------------------------------------------


async def turn_off(
    hv: HyperV, vm_guid: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
    confirm: bool = False, name: str | None = None,
) -> bool:
    """Hard power-off (RequestStateChange 3, no guest shutdown); True if the VM exists.

    Missing VM: nothing happens and False is returned. A VM that is already off (or in a
    state that cannot change, return code 32775) is left as it is, so a repeat is safe.
    Afterwards the VM is off, its saved state (if any) discarded, its definition and disks
    kept. On failure (MethodFailed, JobFailed, JobTimeout) Hyper-V has changed nothing
    and nothing is cleaned up. 1 call + 1 job wait (no wait when already off). With
    ``confirm`` (the caller saw the VM on) a VM that refused (32775) because it is being
    migrated live, or has left the host since, raises VmMigrating (``request_state``),
    naming the VM ``name`` (default: its GUID).
    """
    try:
        await request_state(hv, vm_guid, RequestedState.DISABLED, policy=policy,
                            confirm=confirm, name=name)
    except CimNotFound:
        return False
    return True


#: The EnabledState a VM shows once the change to a RequestedState is done, for the
#: changes whose effect is the state itself (a reset leaves a running VM running).
_REACHED: Mapping[RequestedState, EnabledState] = {
    RequestedState.ENABLED: EnabledState.ENABLED,
    RequestedState.DISABLED: EnabledState.DISABLED,
}


#: How ``migrating_refusal`` names each state change.
_CHANGE_WORDS: Mapping[RequestedState, str] = {
    RequestedState.ENABLED: "the start", RequestedState.DISABLED: "the turn-off",
    RequestedState.OFFLINE: "the save", RequestedState.QUIESCE: "the pause",
    RequestedState.REBOOT: "the reset", RequestedState.RESET: "the reset",
}


async def request_state(
    hv: HyperV, vm_guid: str, requested: RequestedState, *,
    policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY, confirm: bool = False,
    name: str | None = None,
) -> StateRequest:
    """RequestStateChange ``requested`` of the VM, and wait for its job; Hyper-V's result.
    A state that cannot change (return code 32775) is taken as done, so a repeat is safe.
    A missing VM raises CimNotFound; a refusal MethodFailed, JobFailed or JobTimeout.

    With ``confirm`` (a caller that saw the VM in a state the change applies to) a 32775 is
    told by the VM read once, on that answer alone: Hyper-V refuses a VM being migrated
    live the same way, and one whose move began after the caller looked, or that has left
    the host since, raises VmMigrating (``migrating_refusal``, ``left_refusal``) rather than
    reading as done, naming the VM ``name``: the name the caller looked it up by, which
    the management server knows it by (default: its GUID, which it never sees; one gone
    from the host has no name left to read). 1 get more on that answer, whose VM comes
    back with the result (``StateRequest.seen``): the state it was refused in.

    A job Hyper-V lost (JobLost) is told by the VM's state, read once: a VM in the state
    a start or a turn-off asks for has made the change; otherwise (the VM still
    changing, in another state, gone or unreadable, or a reset, which leaves a running VM
    as it was) the JobLost is raised. 1 call + 1 W; +1 get on a lost job."""
    params: dict[str, InValue] = {"RequestedState": int(requested)}
    result, job = await jobs.start(hv.cim, vm_path(vm_guid), "RequestStateChange", params,
                                   accept=(ReturnCode.INVALID_STATE,))
    seen = None
    if confirm and result.return_value == ReturnCode.INVALID_STATE:
        refused = MethodFailed("RequestStateChange", ReturnCode.INVALID_STATE, "invalid state")
        seen = await _explain_refusal(hv, vm_guid, name or vm_guid,
                                      _CHANGE_WORDS.get(requested, "the state change"), refused)
    if job is not None:
        try:
            await jobs.wait(hv.cim, job, "RequestStateChange", policy)
        except JobLost:
            if not await _in_state(hv, vm_guid, _REACHED.get(requested)):
                raise
            _LOG.warning("Hyper-V lost the job that changed VM %s to state %d; the VM is "
                         "in that state", vm_guid, int(requested))
    return StateRequest(result, seen)


async def _in_state(hv: HyperV, vm_guid: str, wanted: EnabledState | None) -> bool:
    """Whether the VM shows EnabledState ``wanted`` (never for None); 1 get, else none."""
    if wanted is None:
        return False
    try:
        vm = await get_vm(hv, vm_guid)
    except CimError:
        return False
    return vm is not None and vm.integer("EnabledState") == wanted


async def destroy(
    hv: HyperV, vm_guid: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
    name: str | None = None,
) -> bool:
    """Delete the VM's definition (DestroySystem); True if this call removed it.

    Missing VM (never existed or already destroyed): success, False is returned, so a
    repeat is safe. Afterwards no definition, device settings or runtime components of
    the VM remain; its VHD/VHDX/ISO files are never touched. The VM must be off: on a
    running VM Hyper-V refuses and the error (MethodFailed or JobFailed) is raised with
    the VM unchanged; nothing is cleaned up on failure. 1 call + 1 job wait; a failed
    call costs 1 more get to tell "already gone" from a real failure, and so does a job
    Hyper-V lost (JobLost): the VM gone, this call removed it; still there, JobLost.

    A VM being migrated live is not removed (Hyper-V refuses it, 32775): that get showing
    it migrating raises VmMigrating (``migrating_refusal``). A refusal for the VM's state
    (32775), or one whose words name a migration, after which the VM is gone was no
    removal: its move ended meanwhile and carried it to another host (or another removed
    it), and that raises VmMigrating too (``left_refusal``), never "already gone". Both
    name the VM ``name`` when the caller gives it (default: its GUID).
    """
    path = vm_path(vm_guid)
    try:
        await call_service(hv, "DestroySystem", {"AffectedSystem": path}, policy)
    except (MethodFailed, JobFailed, JobLost) as failure:
        found = await get_vm(hv, vm_guid)
        if found is not None:
            if migrating(found.integers("OperationalStatus")):
                raise migrating_refusal(found.string("ElementName") or name or vm_guid,
                                        "the removal") from failure
            raise
        if _says_moving(failure):
            raise left_refusal(name or vm_guid, "the removal", failure) from failure
        _forget(hv, vm_guid)
        return isinstance(failure, JobLost)
    _forget(hv, vm_guid)
    return True


def _says_moving(failure: BaseException) -> bool:
    """Whether a failed removal was refused for the VM's state (32775) or in words that
    name a migration: then a VM gone after it left by its move (``destroy``)."""
    return invalid_state(failure) or "migrat" in str(failure).casefold()


async def remove_vm(
    hv: HyperV, vm_guid: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> bool:
    """Turn the VM off, then destroy its definition; True if a VM was removed.

    Missing VM: success, False, and a single call. A repeat is safe. Afterwards the VM
    is gone and its disk files are where they were (data volumes are never deleted).
    If the power-off fails, the VM is unchanged; if DestroySystem fails, the VM is left
    off but defined and a repeat finishes the job. At most 2 calls + 2 job waits.
    """
    if not await turn_off(hv, vm_guid, policy=policy):
        return False
    return await destroy(hv, vm_guid, policy=policy)


async def remove_if_off(
    hv: HyperV, vm_guid: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> bool:
    """Destroy the definition of the VM if it is off now; True if this call removed it.

    For a caller that saw the VM off a while ago (a listing): one started since, or
    saved, paused or gone, or one Hyper-V is still stopping (it refuses to remove it
    then), is left as it is and False returned, so a stale look never turns a running VM
    off. Its disk files are never touched. If DestroySystem fails the
    VM is left off but defined (the error is raised). 1 get (+ 1 call and 1 job wait
    when it is off).
    """
    vm = await get_vm(hv, vm_guid)
    if vm is None:
        return False
    state = vm.integer("EnabledState")
    if power_state(state) is not PowerState.STOPPED or changing(state) is not None:
        return False
    return await destroy(hv, vm_guid, policy=policy)
