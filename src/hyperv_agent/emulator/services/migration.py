"""Msvm_VirtualSystemMigrationService: moving VMs between emulated hosts.

MigrateVirtualSystemToHost, and its checks CheckVirtualSystemIsMigratableToHost (a verdict
at once) and CheckVirtualSystemIsMigratable (a job that ends as the move would, with its
error). The VM's host plans the move here into an ``Offer``; the destination takes it in
with ``arrival.receive``. Destinations are found by name or address:

* a host of the cluster (``cluster_dir``), in another process or in this one, when the
  VM's host is a cluster member: the destination checks the offer during the call and
  takes the VM at its commit, through the hand-over of :mod:`.handover`;
* otherwise a host of this process (``EmulatedHost.named``; a name two live hosts of the
  process share names no destination): the destination's changes are staged in a
  transaction on its store during the call.

A move is checked at the call and made as its job completes (``_made``, the job's
``finish``): until then the VM is on its source only, running as it was, and shows the
move under way there (``model.operational_status``: OperationalStatus In Service (11),
Migrating Virtual Machine (32774), the values Microsoft documents for a VM "being
migrated live from one physical computer to another"); its destination holds nothing of
it (a planned VM the move names stays planned). Microsoft does not say what a
destination shows during a live migration: holding nothing there until the move ends is
the emulator's choice, one that shows the VM on exactly one host at every moment. A
move that has become impossible as its job ends (the VM or a host changed meanwhile)
fails its job then, with both hosts as they were. Without jobs (``async_jobs`` off) the move is
made at the call. Making it is committing a transaction (``_Linked``): the destination
takes the VM (files copied first), the source commits, and the source files of a
storage move are removed.

Decisions where Hyper-V's documentation is silent:

* A VM moves when running, paused, saved or off (Hyper-V 2012 R2 and later move stopped
  VMs too); only a VM in a transition (starting, shutting down) is refused.
* A VM whose move (live or storage) the host has accepted and not finished, under way or
  queued, is not moved again: the second move's job fails with 32775 (Invalid state for
  this operation, among the codes Microsoft lists for MigrateVirtualSystemToHost, which
  does not say which one a VM being migrated gets), as a VM in transition's does, and
  the checks answer 5 (invalid state). A move is told by its job, not by the VM.
* While its live move runs (its job begun, not ended) the VM takes no change on its
  source: its state changes, a shutdown asked of its guest, its settings, devices and
  removal are refused with 32775, as while its state changes (``model.being_migrated``),
  so the move carries the VM as it was when it began.
* A null MigrationSettingData means a live move (32768) with default settings.
* DestinationHost matches a host name, ignoring case (also by its first DNS label), and in
  a cluster also a host's private or listener address.
* A non-empty DestinationIPAddressList must hold one of the destination's listener addresses.
* NewResourceSettingData is used by 32769 and 32771 only. Disks it does not name stay where
  they are; for a move to another host they must then be on shared storage. A DVD drive's
  ISO is such a file too: one the destination cannot open at its path fails the move (and
  its checks) at the destination with 0x80070002, the error Hyper-V gives when it cannot
  open a drive's attachment.
* NewSystemSettingData contributes its data roots (ConfigurationDataRoot, …) only.
* A live move takes over the destination's planned VM of the same GUID when
  DestinationPlannedVirtualSystemId names it; any other VM with the GUID blocks the move.
* Only the named file of a disk moves, not the parents of a differencing disk, which it
  keeps naming at their old paths. Microsoft's Move-VMStorage help implies Hyper-V copies
  a differencing disk's parents too (-RetainVhdCopiesOnSource keeps them on the source,
  -RemoveSourceUnmanagedVhds removes them) without saying where they go by default (the
  settings' UnmanagedVhds, of Msvm_MoveUnmanagedVhd, name a place for one): the agent's
  MigrateVolume therefore never moves a running VM's linked clone away from its template's
  folder, nor its MigrateWithStorage one to another host unless the template is in a
  shared target pool, so that no outcome rests on this choice.
* A failed job's ErrorDescription reads as Hyper-V's: "Virtual machine migration operation
  for '<VM>' failed at migration source|destination '<host>'. <reason>".
* A move the host accepts while as many run as its settings allow
  (MaximumActiveVirtualSystemMigration; MaximumActiveStorageMigration for a storage
  move) waits, its job queued (``jobs.Queue``), until one of them ends. It is checked at
  the call (a refusal then fails its job at once), and nothing of it happens until its
  job begins: the VM stays on, and runs on, its source. Then it is planned and checked
  again from the call's arguments, on both hosts as they are then (a refusal then fails
  the job as it begins), and runs as a move whose job runs at the call does; a queued
  move that is stopped (its job's RequestStateChange) never happens.
* A move is checked in full as it begins (at the call, or as its queued job begins),
  whether each host takes moves included (EnableVirtualSystemMigration of both, the
  destination's listener addresses). As its job ends it is made unless it has become
  impossible meanwhile: the VM gone, in transition or (a live move) no longer running,
  the destination unknown, down or ambiguous, its switch or storage gone, a disk's file
  missing or a target file taken, a VM of its GUID there, or too little memory there for
  a running VM (the emulator holds none for the move meanwhile). A host that stops
  taking moves after one began lets it finish (``_Move.begun``, ``Offer.begun``):
  Microsoft does not say what Disable-VMMigration does to a move under way; a setting
  that governs what a host accepts is the emulator's reading, not a stop of what it is
  doing.
* A live move whose VM stops running before its switch-over (its guest, asked to shut
  down before the move began, is off meanwhile: the guest's own doing, which Hyper-V
  does not hold back) fails its job as it ends (``_Carried``, ``STOPPED_DURING_MOVE``),
  the VM left on its source, off: a live migration carries a running VM's memory and
  state, and a VM that no longer runs has none to carry. Microsoft does not say what a
  move does when its VM turns off midway; failing it, rather than completing it as a
  move of an off VM (which the move's caller did not ask for), is the emulator's choice.
* CheckVirtualSystemIsMigratableToHost returns 0 with IsMigratable false when the move
  would fail on the VM's or the destination's configuration (switch, storage, memory,
  GUID), 5 (invalid state) when a host or the VM is not in a state to move (down,
  unknown, migration disabled, a transition), 4 for invalid parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hyperv_agent.cim.api import ObjectPath, OutValue
from hyperv_agent.emulator import arrival, cluster, jobs, model, peers
from hyperv_agent.emulator.arrival import DESTINATION_UNREACHABLE, SWITCH_MISSING, FileCopy
from hyperv_agent.emulator.calls import Call, Embedded, MethodError, handles
from hyperv_agent.emulator.codes import CheckResult, EnabledState, ReturnCode
from hyperv_agent.emulator.handover import Handover
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.jobbook import Settle
from hyperv_agent.emulator.offer import (
    ARRIVAL,
    LIVE,
    LIVE_AND_STORAGE,
    MIGRATION_TYPES,
    STORAGE,
    Offer,
    failure_text,
)
from hyperv_agent.emulator.schema import CLASSES
from hyperv_agent.emulator.services import power
from hyperv_agent.emulator.store import Record, Store, Transaction
from hyperv_agent.errors import CimInvalidParameter

SERVICE = "Msvm_VirtualSystemMigrationService"
SETTINGS = "Msvm_VirtualSystemMigrationServiceSettingData"
#: Moves at once on a host without migration settings: Hyper-V's default.
DEFAULT_SIMULTANEOUS = 2
MOVABLE_STATES = (EnabledState.ENABLED, EnabledState.DISABLED, EnabledState.OFFLINE,
                  EnabledState.QUIESCE)
SASD = arrival.SASD
PORT = arrival.PORT

# Refusals without a documented code: the emulator's choices.
SAME_HOST = ReturnCode.INVALID_PARAMETER
STATE_IN_TRANSITION = ReturnCode.INVALID_STATE
BEING_MIGRATED = ReturnCode.INVALID_STATE
#: A live move whose VM stopped running before its switch-over (``_Carried``): Failed,
#: since the VM's state was valid when the move began.
STOPPED_DURING_MOVE = ReturnCode.FAILED
#: The slots a move holds while it runs or waits (``_slots``): live, and storage.
LIVE_SLOTS = model.LIVE_MOVE_SLOTS
STORAGE_SLOTS = "MaximumActiveStorageMigration"
#: Return codes of the checks that say a host or the VM is in no state to move.
NOT_NOW = (ReturnCode.SYSTEM_NOT_AVAILABLE, ReturnCode.NOT_SUPPORTED, ReturnCode.INVALID_STATE)
# A name no host has, as Windows words it (WSAHOST_NOT_FOUND).
NO_SUCH_HOST = "No such host is known. (0x80072AF9)"
# A name several live hosts of this process share (each made in its own state directory):
# a real name resolves to one host, these to none in particular, so the move is refused
# as one to a host it cannot reach (the emulator's choice and wording), not sent to
# whichever opened last.
AMBIGUOUS_HOST = ("{count} emulated hosts of this process are named so; the destination "
                  "is ambiguous")


class _Linked(Transaction):
    """The call's transaction on the source, carrying what the move does elsewhere.

    The backend commits ``call.txn`` only when the method succeeded and no job fault was
    injected, so the destination's records and the file copies wait for that commit. A
    hand-over the destination refuses at that moment raises MethodError, with nothing
    changed on either host.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.destination: Transaction | None = None
        self.handover: Handover | None = None
        self.copies: list[FileCopy] = []
        self.removals: list[Path] = []
        #: a destination of this process the VM arrives on, and its GUID: its guest's
        #: requests are timed there as it arrives, as a hand-over's destination does
        self.arrival: tuple[EmulatedHost, str] | None = None

    def commit(self) -> None:
        if self.handover is not None:
            self.removals = self._removed(self.handover.complete())
        copied: list[Path] = []
        try:
            _copy_files(self.copies, copied)
            if self.destination is not None:
                self.destination.commit()
        except BaseException:
            for target in copied:
                target.unlink(missing_ok=True)
            raise
        super().commit()  # failing here leaves the VM on both hosts, never on neither
        for path in self.removals:
            path.unlink(missing_ok=True)
        if self.handover is not None:
            self.handover.finish()
        if self.arrival is not None:  # a guest shutting down or restarting goes on there
            power.guest_arrived(*self.arrival)

    def _removed(self, copied_sources: list[Path]) -> list[Path]:
        assert self.handover is not None
        return [] if self.handover.offer.retain_source_files else copied_sources


def _copy_files(copies: list[FileCopy], copied: list[Path]) -> None:
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(target)


@dataclass
class _Move:
    call: Call
    txn: _Linked  # the source's changes
    vm: Record
    settings: Embedded
    destination: EmulatedHost | cluster.Peer  # the VM's own host for a storage move
    system: Embedded | None = None
    new_paths: dict[str, str] = field(default_factory=dict)  # SASD InstanceID (lower) -> path
    job: ObjectPath | None = None  # the move's job, as it is made when the job ends
    begun: bool = False  # made as its job ends: only what makes it impossible is checked

    @property
    def guid(self) -> str:
        return str(self.vm["Name"])

    @property
    def kind(self) -> int:
        return self.settings.integer("MigrationType") or LIVE


@handles(SERVICE, "MigrateVirtualSystemToHost")
def migrate_virtual_system_to_host(call: Call) -> Mapping[str, OutValue]:
    txn = _Linked(call.host.store)
    call.txn = txn  # read by the backend after this returns: without a job it runs the move
    vm = _movable_vm(call)
    carried = _Carried()
    with _worded(call.host, vm):
        move = _plan(call, txn, vm)
        slots = _slots(call.host, txn, move.kind)
        now = call.host.clock()
        begin = jobs.slot_free_at(call.host, txn, slots, now)
        with_job = call.host.config.async_jobs
        queued = begin > now and with_job
        if with_job:
            move.txn = _Linked(call.host.store)  # checked only: it is made as its job ends
        _prepare(move, applied=not with_job)
    if not queued:
        carried.began(move)
    call.queue = jobs.Queue(slots, begin,
                            (lambda _: _checked(call, carried)) if queued else None,
                            functools.partial(_made, call, carried) if with_job else None)
    return {}


@dataclass
class _Carried:
    """The run of the VM a live move carries: its worker process id as the move began
    (None: the VM did not run, or the move leaves it on its host). Kept in this process
    with the move's work (``jobs.defer``), read as the move ends (``still_runs``)."""

    process_id: int | None = None

    def began(self, move: _Move) -> None:
        running = move.kind in (LIVE, LIVE_AND_STORAGE) and model.is_running(move.vm)
        process_id = move.vm["ProcessID"] if running else None
        self.process_id = process_id if isinstance(process_id, int) else None

    def still_runs(self, vm: Record) -> None:
        """MethodError (``STOPPED_DURING_MOVE``) when the VM ran as the move began and no
        longer runs that run: its guest shut it down meanwhile (no state change of Hyper-V
        is taken while the move runs, ``model.being_migrated``)."""
        if self.process_id is not None and vm["ProcessID"] != self.process_id:
            raise MethodError(STOPPED_DURING_MOVE,
                              "The virtual machine stopped running during the move, before "
                              "the switch-over (its guest shut it down): a live migration "
                              "carries a running virtual machine, so it was not moved.")


def _checked(call: Call, carried: _Carried) -> tuple[int, str] | None:
    """A queued move as its job begins: checked again on both hosts as they are now;
    None when it may go on (the VM's run it carries noted in ``carried``), else the
    error that ends its job."""
    begun = dataclasses.replace(call, txn=_Linked(call.host.store), queue=None)
    try:
        vm = _source_vm(begun)
        with _worded(begun.host, vm):
            move = _plan(begun, _Linked(call.host.store), vm)
            _prepare(move, applied=False)
    except MethodError as error:
        return error.code, error.description
    carried.began(move)
    return None


def _made(call: Call, carried: _Carried, settle: Settle) -> tuple[int, str] | None:
    """A move as its job ends: made as a move without a job is at the call, on both
    hosts as they are now, its job settled in the same commit (a host stopped before it
    finds the move undone and fails its job); None when it was, else the error that ends
    its job. Only what makes it impossible is checked again (``_Move.begun``): whether
    the hosts take moves was asked as it began; a live move's VM must still run the run
    it carries (``_Carried.still_runs``)."""
    txn = _Linked(call.host.store)
    ending = dataclasses.replace(call, txn=txn, queue=None)
    try:
        vm = _source_vm(ending)
        with _worded(ending.host, vm):
            carried.still_runs(vm)
            move = _plan(ending, txn, vm)
            move.job, move.begun = settle.job, True
            _prepare(move, applied=True)
        settle(txn)
        txn.commit()
    except MethodError as error:
        return error.code, error.description
    return None


def _slots(host: EmulatedHost, txn: Transaction, kind: int) -> jobs.Slots:
    """How many moves of ``kind`` the VM's host runs at once (its service settings): a
    storage move counts against MaximumActiveStorageMigration, any other against
    MaximumActiveVirtualSystemMigration. Only the source's count is kept: a move does not
    wait for the destination's moves (the emulator's choice)."""
    limit = STORAGE_SLOTS if kind == STORAGE else LIVE_SLOTS
    found = [record.integer(limit) for record in host.records(SETTINGS, txn)]
    return jobs.Slots(limit, found[0] if found else DEFAULT_SIMULTANEOUS)


@handles(SERVICE, "CheckVirtualSystemIsMigratable")
def check_virtual_system_is_migratable(call: Call) -> Mapping[str, OutValue]:
    """Its job ends as the move's would (with the same error); nothing moves."""
    vm = _movable_vm(call)
    with _worded(call.host, vm):
        _prepare(_plan(call, _Linked(call.host.store), vm), applied=False)
    return {}


@handles(SERVICE, "CheckVirtualSystemIsMigratableToHost")
def check_virtual_system_is_migratable_to_host(call: Call) -> Mapping[str, OutValue]:
    try:
        _prepare(_plan(call, _Linked(call.host.store), _movable_vm(call)), applied=False)
    except MethodError as error:
        if error.immediate:
            raise MethodError(CheckResult.INVALID_PARAMETER, error.description,
                              immediate=True) from None
        if error.code in NOT_NOW:
            raise MethodError(CheckResult.INVALID_STATE, error.description,
                              immediate=True) from None
        return {"IsMigratable": False}
    return {"IsMigratable": True}


class _AtDestination(MethodError):
    """The destination's refusal."""

    def __init__(self, host: str, error: MethodError | cluster.PeerRefused) -> None:
        super().__init__(error.code, error.description, immediate=error.immediate)
        self.host = host


@contextlib.contextmanager
def _worded(host: EmulatedHost, vm: Record) -> Iterator[None]:
    """A refusal that ends the job reads as Hyper-V's job error."""
    try:
        yield
    except MethodError as error:
        if error.immediate:
            raise
        side, where = ("source", host.name)
        if isinstance(error, _AtDestination):
            side, where = "destination", error.host
        raise MethodError(error.code, failure_text(str(vm["ElementName"]), side, where,
                                                   error.description)) from None


def _prepare(move: _Move, *, applied: bool) -> None:
    """Check the move on both hosts; with ``applied``, stage it for the call's commit."""
    _check(move)
    offer = _offer(move)
    if move.kind == STORAGE:
        _storage(move, offer)
        return
    _at_destination(move, offer, applied)
    if applied and offer.moves_the_vm:
        for record in _records_of(move.txn, move.guid):
            move.txn.delete(record.path)


# --- parameters ---------------------------------------------------------------------------


def _plan(call: Call, txn: _Linked, vm: Record) -> _Move:
    settings = _migration_settings(call)
    destination = _destination(call, settings.integer("MigrationType") or LIVE)
    move = _Move(call, txn, vm, settings, destination, _system_settings(call))
    move.new_paths = _new_paths(move)
    return move


def _invalid(description: str) -> MethodError:
    return MethodError(ReturnCode.INVALID_PARAMETER, description, immediate=True)


def _source_vm(call: Call) -> Record:
    vm = call.require(call.path("ComputerSystem"), "virtual machine")
    if not model.is_vm(vm):
        raise _invalid(f"{vm.path} is not a virtual machine")
    return vm


def _movable_vm(call: Call) -> Record:
    """The VM a new move (or its check) names, refused while a move of it the host
    accepted is under way or queued (its job holds or waits for a slot)."""
    path = call.path("ComputerSystem")
    job = _move_of(call, path) if path is not None else None
    if path is None or job is None:
        return _source_vm(call)
    now = call.host.clock()
    vm = call.txn.get(path)
    name = str(vm["ElementName"]) if vm is not None else path.key("Name")
    where = "queued" if float(job.meta.get("begin", now)) > now else "under way"
    raise MethodError(BEING_MIGRATED, failure_text(
        name, "source", call.host.name,
        f"The virtual machine is being migrated: its move (job {job['InstanceID']}) is "
        f"{where}; it takes no other move until that one ends."))


def _move_of(call: Call, vm: ObjectPath) -> Record | None:
    """The host's move of the VM ``vm`` that runs or waits queued, if any."""
    now = call.host.clock()
    for slots in (LIVE_SLOTS, STORAGE_SLOTS):
        for job in jobs.holding(call.host, call.txn, slots, now):
            affected = job.meta.get("affected")
            if affected and ObjectPath.parse(str(affected)).normalized == vm.normalized:
                return job
    return None


def _migration_settings(call: Call) -> Embedded:
    if call.text("MigrationSettingData") is None:
        return Embedded(CLASSES["Msvm_VirtualSystemMigrationSettingData"], {"MigrationType": LIVE})
    settings = call.embedded("MigrationSettingData")
    if not settings.is_a("CIM_VirtualSystemMigrationSettingData"):
        raise _invalid(f"MigrationSettingData is a {settings.class_def.name}")
    kind = settings.integer("MigrationType")
    if kind not in MIGRATION_TYPES:
        raise _invalid(f"MigrationType {kind} is not one of 32768, 32769, 32770, 32771")
    return settings


def _system_settings(call: Call) -> Embedded | None:
    if call.text("NewSystemSettingData") is None:
        return None
    given = call.embedded("NewSystemSettingData")
    if not given.is_a("Msvm_VirtualSystemSettingData"):
        raise _invalid(f"NewSystemSettingData is a {given.class_def.name}")
    return given


def _destination(call: Call, kind: int) -> EmulatedHost | cluster.Peer:
    name = call.text("DestinationHost")
    if not name:
        if kind == STORAGE:
            return call.host
        raise _invalid("DestinationHost is required unless MigrationType is 32769 (storage)")
    found = _find(call.host, name)
    if kind == STORAGE and found is not call.host:
        raise _invalid(f"a storage move stays on the VM's host {call.host.name}, not {name}")
    if kind != STORAGE and found is call.host:
        raise MethodError(SAME_HOST, f"the destination {name} is the VM's own host")
    return found


def _find(host: EmulatedHost, name: str) -> EmulatedHost | cluster.Peer:
    """The host ``name`` names: in the VM's host's cluster, else in this process."""
    if host.cluster is not None:
        try:
            return host if host.cluster.is_me(name) else host.cluster.find(name)
        except cluster.PeerUnknown:
            raise _unreachable(name, NO_SUCH_HOST) from None
    found = EmulatedHost.named(name) or EmulatedHost.named(name.split(".", 1)[0])
    if not found:
        raise _unreachable(name, NO_SUCH_HOST)
    if len(found) > 1:
        raise _unreachable(name, AMBIGUOUS_HOST.format(count=len(found)))
    return found[0]


def _unreachable(name: str, reason: str) -> MethodError:
    return MethodError(DESTINATION_UNREACHABLE,
                       f"Failed to establish a connection with host '{name}': {reason}")


def _new_paths(move: _Move) -> dict[str, str]:
    if move.kind not in (STORAGE, LIVE_AND_STORAGE):
        return {}
    items = move.call.embedded_list("NewResourceSettingData")
    if move.kind == STORAGE and not items:
        raise _invalid("a storage move needs NewResourceSettingData naming the new disk paths")
    return dict(_new_path(move, item) for item in items)


def _new_path(move: _Move, item: Embedded) -> tuple[str, str]:
    instance_id = item.text("InstanceID") or ""
    record = move.txn.get(ObjectPath.for_keys(SASD, InstanceID=instance_id))
    if not item.is_a(SASD) or record is None or model.guid_of(record) != move.guid:
        raise _invalid(f"NewResourceSettingData {instance_id!r} is not a disk of the VM")
    paths = item.strings("HostResource")
    if not paths or not paths[0]:
        raise _invalid(f"NewResourceSettingData {instance_id!r} has no HostResource")
    return instance_id.lower(), paths[0]


# --- checks on the source -----------------------------------------------------------------


def _check(move: _Move) -> None:
    state = model.enabled_state(move.call.host, move.vm)
    if state not in MOVABLE_STATES:
        raise MethodError(STATE_IN_TRANSITION, f"the VM is in transition (state {state}); "
                          "it moves when running, paused, saved or off")
    if move.kind != STORAGE and not move.begun:
        arrival.check_enabled(move.call.host, move.txn, "source")


# --- the offer ----------------------------------------------------------------------------


def _records_of(txn: Transaction, guid: str) -> list[Record]:
    """The VM, its settings, devices, port features and runtime components."""
    return model.owned_records(txn, tuple(CLASSES.values()), guid)


def _offer(move: _Move) -> Offer:
    records = tuple(_records_of(move.txn, move.guid))
    settings, system = move.settings, move.system
    roots = {name: system.text(name) or "" for name in arrival.DATA_ROOTS} if system else {}
    return Offer(
        kind=move.kind, source=move.call.host.name, destination=move.destination.name,
        guid=move.guid, vm_name=str(move.vm["ElementName"]), records=records,
        running=model.is_running(move.vm), memory_mb=int(move.vm.meta.get("memory_mb", 0)),
        listener_addresses=settings.strings("DestinationIPAddressList"),
        planned_id=settings.text("DestinationPlannedVirtualSystemId") or "",
        retain_source_files=settings.get("RetainVhdCopiesOnSource") is True,
        incarnation=move.vm.meta.get(ARRIVAL),
        switch_names={} if move.kind == STORAGE else _switch_names(move, records),
        new_paths=move.new_paths,
        source_files={iid: str(_source_file(move, iid, records)) for iid in move.new_paths},
        data_roots={k: v for k, v in roots.items() if v},
        job="" if move.job is None else str(move.job), begun=move.begun)


def _switch_names(move: _Move, records: tuple[Record, ...]) -> dict[str, str]:
    """The name of each connected port's switch on the source."""
    names = {}
    for port in records:
        paths = port["HostResource"]
        if port.class_def.name == PORT and isinstance(paths, tuple) and paths and paths[0]:
            names[str(port["InstanceID"]).lower()] = _switch_name(move, str(paths[0]), port)
    return names


def _switch_name(move: _Move, path: str, port: Record) -> str:
    try:
        switch = move.txn.get(ObjectPath.parse(path))
    except CimInvalidParameter:
        switch = None
    name = switch["ElementName"] if switch is not None else port["LastKnownSwitchName"]
    if not isinstance(name, str) or not name:
        raise MethodError(SWITCH_MISSING, f"the port is connected to an unknown switch {path}")
    return name


def _source_file(move: _Move, instance_id: str, records: tuple[Record, ...]) -> Path:
    """The local file of the disk ``instance_id`` (lower case), which must exist."""
    sasd = next(r for r in records if str(r["InstanceID"]).lower() == instance_id)
    paths = sasd["HostResource"]
    path = str(paths[0]) if isinstance(paths, tuple) and paths else ""
    local = move.call.host.paths.file(path)
    if local is None:
        raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the file {path} cannot be found")
    return local


# --- the moves ----------------------------------------------------------------------------


def _at_destination(move: _Move, offer: Offer, applied: bool) -> None:
    """The destination checks the offer; with ``applied`` the call's commit hands it over."""
    destination = move.destination
    if isinstance(destination, cluster.Peer):
        _ask_peer(move, destination, offer)
        if applied:
            member = move.call.host.cluster
            assert member is not None  # a peer is found through the host's cluster
            move.txn.handover = Handover(member.directory.handovers, move.call.host,
                                         destination, offer)
        return
    target = destination.store.transaction()
    copies = _at_destination_side(destination,
                                  lambda: arrival.receive(destination, target, offer))
    if applied:
        move.txn.destination, move.txn.copies = target, copies
        if not offer.retain_source_files:
            move.txn.removals = [source for source, _ in copies]
        if offer.moves_the_vm:
            move.txn.arrival = (destination, offer.guid)


def _ask_peer(move: _Move, peer: cluster.Peer, offer: Offer) -> None:
    try:
        peer.check(offer, between=move.call.host.worker.drain)
    except cluster.PeerDown as error:
        raise _unreachable(peer.name, peers.why(error)) from None
    except cluster.PeerRefused as refused:
        raise _AtDestination(peer.name, refused) from None


def _at_destination_side(host: EmulatedHost,
                         work: Callable[[], list[FileCopy]]) -> list[FileCopy]:
    try:
        return work()
    except MethodError as error:
        raise _AtDestination(host.name, error) from None


def _storage(move: _Move, offer: Offer) -> None:
    """32769: the disks (and settings' data roots) change; the VM stays on its host."""
    copies: list[FileCopy] = []
    for record in _records_of(move.txn, move.guid):
        if record.class_def.name in (SASD, arrival.VSSD):
            staged = move.txn.edit(record.path)
            assert staged is not None
            arrival.adapted(move.call.host, offer, staged, copies)
    move.txn.copies = copies
    if not offer.retain_source_files:
        move.txn.removals = [source for source, _ in copies]

