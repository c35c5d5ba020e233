"""Moving VMs with Hyper-V's Virtual System Migration Service: a live migration to another
host (the disks stay where they are, on storage both hosts reach), the same with the
disks (shared nothing), and the disks of a VM on its own host (storage migration).

A move is asked of Hyper-V in two steps. ``check`` asks CheckVirtualSystemIsMigratableToHost,
which answers at once but gives no reason; when it says no, CheckVirtualSystemIsMigratable
runs the same checks as a job that ends with the move's own error, and that error is the
reason. ``migrate`` calls MigrateVirtualSystemToHost and waits for its Msvm_MigrationJob
within a bound; a job still running at the bound is asked to stop (Terminate) and waited
for a little longer: Hyper-V leaves a stopped migration's VM on its source. A job that
completes anyway (it was past the point where it could stop) is a success, so the answer
always says where the VM is. A job still queued (New) at the bound never started: the
host ran as many other moves as it allows at once the whole time, and the answer says so,
with what would let it run (the host's limit, or a longer wait).

The destination is named as Hyper-V needs it: ``DestinationHost`` a host name (Kerberos
constrained delegation needs one; CredSSP also takes an address) and, when given,
``DestinationIPAddressList`` addresses its migration listener takes moves on
(``MigrationServiceListenerIPAddressList`` there). The source cannot read that list (it is
the destination's), so the caller names the address it knows, as the C# agent does; an
empty list leaves the choice to Hyper-V. The settings of each kind of move are
the host's own ``Msvm_VirtualSystemMigrationSettingData`` of that MigrationType, read once
and kept by the session.

Round trips once the session is warm (W = job waits); a session's first move costs one
query more for the service's path and one for the settings of its kind:

=================  ====================================================================
``check``          1 call; 2 calls + 1 W when the move would fail (the reason)
``migrate``        1 call + 1 W; +1 call and a second bounded wait when the first ends;
                   +1 get when Hyper-V loses the job of a move to another host
``host_settings``  1 query
=================  ====================================================================

A move whose job Hyper-V loses before it is seen to end (``jobs.JobLost``: the source's
Virtual Machine Management Service restarted, or the job was removed once ended) is told
by one get of the VM on this host, on that failure alone, for a move to another host: a
VM no longer here has moved (Hyper-V removes it from its source only as the move
completes; the management server then checks it on the destination), and one here and
not migrating (OperationalStatus without Migrating Virtual Machine) has not, a failure
that says the VM stays here. A VM here still migrating, one that cannot be read, and a
storage move (whose VM stays here either way) fail saying the job was lost, to see where
the VM is before trying again.

Nothing here touches a file: Hyper-V copies the disks of a storage move and removes the
files it moved from. A move to another host makes the session forget the VM's ports
(``acls.forget_vm``): their ACLs travel with the VM and may be changed where it runs.
"""

from __future__ import annotations

import logging
import ntpath
from dataclasses import dataclass, field

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, InValue, ObjectPath
from hyperv_agent.errors import (
    CimError,
    CimUnavailable,
    HyperVError,
    JobFailed,
    JobLost,
    JobTimeout,
    MethodFailed,
    MigrationFailed,
)
from hyperv_agent.hyperv import acls, jobs, vms
from hyperv_agent.hyperv.drives import VmStorage
from hyperv_agent.hyperv.schema import (
    NAMESPACE,
    Class,
    JobState,
    MigrationCheck,
    MigrationTransport,
    MigrationType,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import VmRef

log = logging.getLogger("hyperv_agent.hyperv.migration")
MIGRATE = "MigrateVirtualSystemToHost"
CHECK_TO_HOST = "CheckVirtualSystemIsMigratableToHost"
CHECK = "CheckVirtualSystemIsMigratable"
_MISSING = "is the Hyper-V role installed?"
#: How long CheckVirtualSystemIsMigratable's job may take to give its reason.
REASON_WAIT = jobs.WaitPolicy(timeout_s=60.0)
#: Hyper-V's words, lower case, when the destination's processors cannot run the VM as it
#: runs (event 21502, in Microsoft's "Troubleshoot live migration issues"): they lack
#: features it uses, or they are of another vendor.
PROCESSOR_REFUSALS = ("processor-specific features",
                      "hardware on the destination computer is not compatible",
                      "hardware on the destination computer isn't compatible")


@dataclass(frozen=True)
class DiskMove:
    """A disk of the VM and where its file goes."""

    medium: CimInstance  # the VM's Msvm_StorageAllocationSettingData of the disk
    target: str  # the file's new host path

    @property
    def source(self) -> str:
        """The file's host path now (the medium's HostResource)."""
        return self.medium.strings("HostResource")[0]


@dataclass(frozen=True)
class Move:
    """One move of a VM, or of its disks."""

    vm: VmRef
    kind: MigrationType = MigrationType.VIRTUAL_SYSTEM
    destination: str | None = None  # DestinationHost; None for a storage move
    addresses: tuple[str, ...] = ()  # DestinationIPAddressList; () leaves it to Hyper-V
    disks: tuple[DiskMove, ...] = ()  # NewResourceSettingData; the others stay


@dataclass(frozen=True)
class HostSettings:
    """The host's migration service settings (Msvm_VirtualSystemMigrationServiceSettingData)."""

    enabled: bool  # EnableVirtualSystemMigration: incoming and outgoing live migrations
    authentication: int | None  # AuthenticationType: 0 CredSSP, 1 Kerberos
    simultaneous: int  # MaximumActiveVirtualSystemMigration


@dataclass
class _Kept:
    """What the session keeps for this module: the host's settings of each kind of move."""

    settings: dict[int, CimInstance] = field(default_factory=dict)


async def check(hv: HyperV, move: Move) -> str | None:
    """None when Hyper-V would make ``move`` now; otherwise why not, in Hyper-V's words.
    Read-only and safe to repeat: 1 call, 2 calls + 1 W when the answer is no."""
    params = await _params(hv, move)
    service = await hv.service_path(Class.MIGRATION_SERVICE, _MISSING)
    result = await hv.cim.invoke(service, CHECK_TO_HOST, params)
    if result.return_value == MigrationCheck.COMPLETED and result["IsMigratable"] is True:
        return None
    return await _reason(hv, params)


def processor_refusal(reason: str) -> bool:
    """Whether ``reason`` (a refusal in Hyper-V's words) is about the destination's
    processors."""
    text = reason.lower()
    return any(words in text for words in PROCESSOR_REFUSALS)


async def _reason(hv: HyperV, params: dict[str, InValue]) -> str:
    try:
        await hv.call_service(Class.MIGRATION_SERVICE, _MISSING, CHECK, params, REASON_WAIT)
    except JobFailed as failed:
        return failed.description or str(failed)
    except (MethodFailed, JobTimeout) as error:
        return str(error)
    return "Hyper-V found the move impossible now and gave no reason"


async def migrate(hv: HyperV, move: Move, policy: jobs.WaitPolicy,
                  grace: jobs.WaitPolicy) -> None:
    """Make ``move``; MigrationFailed, with the VM (and its disks) where they were, when it
    did not happen. Its job is waited on for ``policy.timeout_s``, then asked to stop and
    waited on for ``grace.timeout_s``: a job that completes meanwhile is a success; one
    that cannot be stopped and is still running is a failure that says so, and so is a
    job Hyper-V lost whose outcome one read of the VM cannot tell (``_told_without_job``).
    Not safe to repeat blindly: a repeat after a success finds the VM gone. 1 call + 1 W
    (+1 call and the grace wait when the first wait ends; +1 get on a lost job)."""
    params = await _params(hv, move)
    try:
        _, job = await jobs.start(hv.cim, await hv.service_path(Class.MIGRATION_SERVICE,
                                                                _MISSING), MIGRATE, params)
    except MethodFailed as refused:
        raise MigrationFailed(f"Hyper-V refused the move: {refused}") from None
    try:
        if job is not None:
            try:
                await _bounded(hv, job, policy, grace, move.kind)
            except JobLost as lost:
                await _told_without_job(hv, move, lost)
    finally:
        if move.kind != MigrationType.STORAGE:
            # The ports' ACLs go with the VM and may change on the other host; when it
            # comes back (with its GUID) its ports are read again, never planned from
            # what this session knew before it left. A move that failed costs one read.
            acls.forget_vm(hv, move.vm.name)


async def _bounded(hv: HyperV, job: ObjectPath, policy: jobs.WaitPolicy,
                   grace: jobs.WaitPolicy, kind: MigrationType) -> None:
    """Wait for the move's job as ``migrate`` says. A host that stops answering while
    the job is waited on (past the job wait's grace for outages) fails the move saying
    so: the job was running, so where the VM is cannot be told from here."""
    try:
        await jobs.wait(hv.cim, job, MIGRATE, policy)
        return
    except JobFailed as failed:
        raise MigrationFailed(failed.description or str(failed)) from None
    except CimUnavailable as silent:
        raise MigrationFailed(f"the host stopped answering while the move was under way "
                              f"({silent}); whether the VM moved is not known: see where "
                              "it is before trying again") from None
    except JobTimeout as timeout:
        queued, waited = timeout.job_state == JobState.NEW, timeout.timeout_s
        within = (f"the command's bound ({timeout.bound})" if timeout.bound
                  else f"{policy.timeout_s:g} s")
        # whether it took the request: a refusal leaves the move running as far as the
        # agent can tell, and the answer is the move's own failure (late, could not be
        # stopped), not the stop request's return code, which says nothing of the VM
        stopping = await jobs.terminate(hv.cim, job)
    late, hint = f"the move did not finish within {within}", ""
    if queued:
        late, hint = _never_started(waited, policy, grace, kind)
    try:
        with jobs.whole_wait():  # stopping it may use what is left of the command's wait
            await jobs.wait(hv.cim, job, MIGRATE, grace)
    except JobFailed as failed:
        # a long "never started" clause is closed by a comma before its "and"
        raise MigrationFailed(f"{late}{',' if queued else ''} and was cancelled; the VM "
                              f"stays where it was "
                              f"({failed.description or failed}){hint}") from None
    except JobTimeout as overdue:  # its wait may end before grace's at the command's bound
        asked = "was asked to stop" if stopping else "could not be stopped"
        raise MigrationFailed(f"{late}, {asked} and was still running {overdue.later()}; "
                              f"see where the VM is before trying again{hint}") from None
    except CimUnavailable as silent:
        asked = "was asked to stop" if stopping else "could not be stopped"
        raise MigrationFailed(f"{late}, {asked}, and the host stopped answering before it "
                              f"ended ({silent}); see where the VM is before trying "
                              f"again{hint}") from None


async def _told_without_job(hv: HyperV, move: Move, lost: JobLost) -> None:
    """Whether the move whose job Hyper-V lost was made: returns when the VM is no longer
    on this host (a move to another host); MigrationFailed otherwise. 1 get, none for a
    storage move."""
    unknown = f"{lost}; see where the VM is before trying again"
    if move.kind == MigrationType.STORAGE:
        raise MigrationFailed(f"{lost}; see where the VM's disks are before trying again")
    try:
        vm = await vms.get_vm(hv, move.vm.guid)
    except CimError:
        raise MigrationFailed(unknown) from None
    if vm is None:
        log.warning("Hyper-V lost the job that moved VM %s; the VM has left this host",
                    move.vm.name)
        return
    if vms.migrating(vm.integers("OperationalStatus")):
        raise MigrationFailed(f"{lost}; the VM is still migrating from this host; "
                              "see where the VM is before trying again")
    raise MigrationFailed(f"{lost}; the VM is still on this host and not moving: it was "
                          "not moved")


def _never_started(waited_s: float, policy: jobs.WaitPolicy, grace: jobs.WaitPolicy,
                   kind: MigrationType) -> tuple[str, str]:
    """What befell a move whose job was still queued (New) when its wait ended, after
    ``waited_s`` (``policy.timeout_s``, or less when the command's bound came first: a
    slow check before the move), and what would let it run."""
    limit = "MaximumStorageMigrations" if kind == MigrationType.STORAGE else (
        "MaximumVirtualMachineMigrations")
    return (f"the move never started: for the {round(waited_s, 1):g} s it was waited on, its "
            "job stayed queued, the host's other migrations holding every slot it has for "
            "moves at once",
            f". Let the host run more moves at once (Set-VMHost -{limit}) or give the "
            f"command a longer wait than {policy.timeout_s + grace.timeout_s:g} s")


async def _params(hv: HyperV, move: Move) -> dict[str, InValue]:
    settings = (await _settings(hv, move.kind)).updated(
        TransportType=int(MigrationTransport.TCP),
        DestinationIPAddressList=list(move.addresses) or None)
    resources = [disk.medium.updated(HostResource=[disk.target], PoolID="")
                 for disk in move.disks]
    return {"ComputerSystem": vms.vm_path(move.vm.guid), "DestinationHost": move.destination,
            "MigrationSettingData": settings, "NewSystemSettingData": None,
            "NewResourceSettingData": resources or None}


async def _settings(hv: HyperV, kind: MigrationType) -> CimInstance:
    """The host's migration settings of ``kind``: 1 query, then kept."""
    kept = hv.kept(_Kept).settings
    if kind not in kept:
        query = wql.select(Class.MIGRATION_SETTINGS, wql.eq("MigrationType", int(kind)))
        found = await hv.cim.query(query, NAMESPACE)
        if not found:
            raise HyperVError(f"the host has no {Class.MIGRATION_SETTINGS} of MigrationType "
                              f"{int(kind)}; {_MISSING}")
        kept[kind] = found[0]
    return kept[kind]


async def host_settings(hv: HyperV) -> HostSettings:
    """Whether the host takes part in live migrations, and how they authenticate; 1 query,
    read-only. HyperVError when the host has no such settings (no Hyper-V)."""
    query = wql.select(Class.MIGRATION_SERVICE_SETTINGS, properties=(
        "InstanceID", "EnableVirtualSystemMigration", "AuthenticationType",
        "MaximumActiveVirtualSystemMigration"))
    found = await hv.cim.query(query, NAMESPACE)
    if not found:
        raise HyperVError(f"the host has no {Class.MIGRATION_SERVICE_SETTINGS}; {_MISSING}")
    return HostSettings(enabled=found[0].boolean("EnableVirtualSystemMigration") is True,
                        authentication=found[0].integer("AuthenticationType"),
                        simultaneous=found[0].integer("MaximumActiveVirtualSystemMigration")
                        or 0)


def disk_of(storage: VmStorage, volume_path: str) -> CimInstance | None:
    """The medium (Msvm_StorageAllocationSettingData) of the VM's disk whose file is the
    volume ``volume_path`` names: its file name, or that name without its extension (a
    CloudStack volume path is the file's uuid). Case is ignored, as Windows ignores it."""
    wanted = ntpath.basename(volume_path.replace("/", "\\")).casefold()
    for drive in storage.drives:
        image = drive.image
        if drive.dvd or image is None or drive.medium is None:
            continue
        name = ntpath.basename(image).casefold()
        if wanted in (name, ntpath.splitext(name)[0]):
            return drive.medium
    return None
