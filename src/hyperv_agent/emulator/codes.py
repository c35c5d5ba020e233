"""Return codes, states and identifiers the emulator uses, with the documented values.

Where Microsoft documents no code for a refusal (a slot collision, IDE on generation 2,
changing a running VM's processors), the emulator's choice is named here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType


class ReturnCode(IntEnum):
    COMPLETED = 0
    JOB_STARTED = 4096
    FAILED = 32768
    ACCESS_DENIED = 32769
    NOT_SUPPORTED = 32770
    STATUS_UNKNOWN = 32771
    TIMEOUT = 32772
    INVALID_PARAMETER = 32773
    SYSTEM_IN_USE = 32774
    INVALID_STATE = 32775
    INCORRECT_DATA_TYPE = 32776
    SYSTEM_NOT_AVAILABLE = 32777
    OUT_OF_MEMORY = 32778
    FILE_NOT_FOUND = 32779
    NOT_READY = 32780
    MACHINE_LOCKED = 32781
    SHUTDOWN_IN_PROGRESS = 32782
    #: "Vhd differencing chain cycle detected", which ValidateVirtualHardDisk's page lists
    #: (Windows Server 2012 R2 on).
    VHD_CHAIN_CYCLE = 32787


class CheckResult(IntEnum):
    """ReturnValue of CheckVirtualSystemIsMigratableToHost (CIM's values, not Msvm's)."""

    COMPLETED = 0
    NOT_SUPPORTED = 1
    FAILED = 2
    TIMEOUT = 3
    INVALID_PARAMETER = 4
    INVALID_STATE = 5
    INCOMPATIBLE_PARAMETERS = 6


# Refusals without a documented code: the emulator's choices.
SLOT_IN_USE = ReturnCode.SYSTEM_IN_USE
IDE_ON_GENERATION_2 = ReturnCode.NOT_SUPPORTED
CHANGE_WHILE_RUNNING = ReturnCode.INVALID_STATE
CHANGE_WHILE_SUSPENDED = ReturnCode.INVALID_STATE  # a device of a paused or saved VM
# A device or setting of a VM whose state is changing (Starting, Stopping, Saving, ...):
# the WMI pages of Add/Modify/RemoveResourceSettings and ModifySystemSettings list no code
# for it; 32775 (invalid state), as RequestStateChange answers meanwhile.
CHANGE_WHILE_CHANGING_STATE = ReturnCode.INVALID_STATE
# A state change, settings or device change, guest shutdown or DestroySystem of a VM
# whose live move is under way (``model.being_migrated``): Microsoft lists no code for
# it; 32775 (invalid state), as for a VM whose state is changing.
CHANGE_WHILE_MIGRATING = ReturnCode.INVALID_STATE
DESTROY_WHILE_RUNNING = ReturnCode.INVALID_STATE
#: A VM's start whose differencing disk stands on a parent that cannot be found, or on one
#: that is not the disk it was made from (``vhd.BrokenChain``): Hyper-V's start job fails
#: with the virtual disk driver's error (0xC03A000D, 0xC03A000E) in its description, and
#: RequestStateChange's page lists no job ErrorCode for it. A missing parent is 32779
#: (file not found), as the disk's own missing file is; any other break 32768 (failed).
PARENT_MISSING = ReturnCode.FILE_NOT_FOUND
PARENT_BROKEN = ReturnCode.FAILED
BROKEN_PARENT = ReturnCode.INVALID_PARAMETER
UNKNOWN_PATH_ARGUMENT = ReturnCode.INVALID_PARAMETER
KVP_KEY_EXISTS = ReturnCode.INVALID_PARAMETER
KVP_KEY_MISSING = ReturnCode.INVALID_PARAMETER
KVP_VALUE_TOO_LONG = ReturnCode.INVALID_PARAMETER
UNKNOWN_SECURE_BOOT_TEMPLATE = ReturnCode.INVALID_PARAMETER
TEMPLATE_READ_ONLY = ReturnCode.ACCESS_DENIED
#: BootSourceOrder naming a path that is not one of the VM's own boot sources.
UNKNOWN_BOOT_SOURCE = ReturnCode.INVALID_PARAMETER
#: An extended ACL whose Weight another ACL of the port already has in the same Direction
#: (Remove-VMNetworkAdapterExtendedAcl names an ACL by Weight and Direction, so the pair is
#: unique per port; Microsoft documents no code for the refusal).
ACL_WEIGHT_IN_USE = ReturnCode.SYSTEM_IN_USE
#: An extended ACL whose text fields do not parse (address, port, protocol), whose
#: Direction or Action is not a documented value, or whose text exceeds its MaxLen.
ACL_INVALID = ReturnCode.INVALID_PARAMETER
#: A stateful extended ACL that denies, or whose Protocol is not TCP or UDP. Microsoft
#: writes that stateful rules "always allow traffic and are not used to block traffic"
#: and that they track sessions by addresses, protocol and ports; the emulator refuses
#: the others rather than guess what Hyper-V makes of them.
ACL_STATEFUL_UNSUPPORTED = ReturnCode.INVALID_PARAMETER


class EnabledState(IntEnum):
    UNKNOWN = 0
    ENABLED = 2
    DISABLED = 3
    SHUTTING_DOWN = 4
    OFFLINE = 6  # saved
    QUIESCE = 9  # paused
    STARTING = 10
    SAVING = 32773
    PAUSING = 32776
    RESUMING = 32777


class RequestedState(IntEnum):
    ENABLED = 2
    DISABLED = 3
    SHUT_DOWN = 4
    OFFLINE = 6
    TEST = 7
    DEFER = 8
    QUIESCE = 9
    REBOOT = 10
    RESET = 11
    NOT_APPLICABLE = 12


class JobState(IntEnum):
    NEW = 2
    STARTING = 3
    RUNNING = 4
    SUSPENDED = 5
    SHUTTING_DOWN = 6
    COMPLETED = 7
    TERMINATED = 8
    KILLED = 9
    EXCEPTION = 10


class JobRequest(IntEnum):
    """A job's RequestStateChange RequestedState (CIM_ConcreteJob)."""

    START = 2
    SUSPEND = 3
    TERMINATE = 4
    KILL = 5
    SERVICE = 6


class JobStateChange(IntEnum):
    """ReturnValue of a job's RequestStateChange (CIM_ConcreteJob's values, which
    Msvm_ConcreteJob's v2 page repeats)."""

    COMPLETED = 0
    NOT_SUPPORTED = 1
    INVALID_PARAMETER = 5
    INVALID_STATE_TRANSITION = 4097


#: A job's work is done when the emulator starts it (its progress is only a function of
#: the clock), so only a job whose work never started (a job that never finishes) can be
#: stopped: it is the one ``Cancellable`` job. Terminating any other job, or a job that
#: has ended, is refused with 4097 (Invalid State Transition); Microsoft documents no code
#: for "past the point of no return".
JOB_NOT_CANCELLABLE = JobStateChange.INVALID_STATE_TRANSITION
#: How a terminated (or killed) job reports its end: ErrorCode 32768 and Windows'
#: ERROR_CANCELLED text. Microsoft documents neither for a cancelled job.
JOB_CANCELLED_ERROR = (32768, "The operation was canceled by the user. (0x800704C7)")


class AclDirection(IntEnum):
    """Msvm_EthernetSwitchPortExtendedAclSettingData.Direction (from the VM's side)."""

    INCOMING = 1
    OUTGOING = 2


class AclAction(IntEnum):
    """Msvm_EthernetSwitchPortExtendedAclSettingData.Action."""

    ALLOW = 1
    DENY = 2


class ResourceType(IntEnum):
    OTHER = 1
    PROCESSOR = 3
    MEMORY = 4
    IDE_CONTROLLER = 5
    SCSI_CONTROLLER = 6
    ETHERNET_ADAPTER = 10
    DVD_DRIVE = 16
    DISK_DRIVE = 17
    LOGICAL_DISK = 31
    ETHERNET_CONNECTION = 33


class BootSourceType(IntEnum):
    """Msvm_BootSourceSettingData.BootSourceType."""

    UNKNOWN = 0
    DRIVE = 1
    NETWORK = 2
    FILE = 3


class HealthState(IntEnum):
    OK = 5


class Heartbeat(IntEnum):
    OK = 2
    NO_CONTACT = 12


class OperationalStatus(IntEnum):
    """CIM_ManagedSystemElement.OperationalStatus values an integration component shows."""

    OK = 2
    NO_CONTACT = 12


SUBTYPE_PROCESSOR = "Microsoft:Hyper-V:Processor"
SUBTYPE_MEMORY = "Microsoft:Hyper-V:Memory"
SUBTYPE_IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
SUBTYPE_SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
SUBTYPE_DISK_DRIVE = "Microsoft:Hyper-V:Synthetic Disk Drive"
SUBTYPE_DVD_DRIVE = "Microsoft:Hyper-V:Synthetic DVD Drive"
SUBTYPE_PHYSICAL_DISK = "Microsoft:Hyper-V:Physical Disk Drive"
SUBTYPE_VHD = "Microsoft:Hyper-V:Virtual Hard Disk"
SUBTYPE_ISO = "Microsoft:Hyper-V:Virtual CD/DVD Disk"
SUBTYPE_NIC = "Microsoft:Hyper-V:Synthetic Ethernet Port"
SUBTYPE_PORT = "Microsoft:Hyper-V:Ethernet Connection"
KVP_COMPONENT_TYPE = "Microsoft:Hyper-V:Key-Value Pair Exchange Component"

REALIZED = "Microsoft:Hyper-V:System:Realized"
PLANNED = "Microsoft:Hyper-V:System:Planned"
#: VirtualSystemType of the secure boot template VSSDs. Microsoft documents none; the
#: emulator's choice, deliberately neither a VM's nor a snapshot's type.
SECURE_BOOT_TEMPLATE = "Microsoft:Hyper-V:SecureBootTemplate"
#: The secure boot templates of 2016+ hosts: (ElementName, SecureBootTemplateId). The first
#: two GUIDs are the ones Hyper-V ships, as public Hyper-V and HCS code uses them
#: (Set-VMFirmware -SecureBootTemplateId); a new generation 2 VM gets MicrosoftWindows.
#: Public sources disagree on OpenSourceShieldedVM's, so the emulator uses a fixed one of
#: its own.
SECURE_BOOT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("MicrosoftWindows", "1734c6e8-3154-4dda-ba5f-a874cc483422"),
    ("MicrosoftUEFICertificateAuthority", "272e7447-90a4-4563-a4b9-8e4ab00526ce"),
    ("OpenSourceShieldedVM", "5e1f2c0a-9d3b-5c7e-8a41-0b6d2f9e7c13"),
)
DEFAULT_SECURE_BOOT_TEMPLATE = "MicrosoftWindows"
#: Secure boot templates (SecureBootTemplateId) exist from Windows Server 2016 (10.0).
SECURE_BOOT_TEMPLATES_SINCE_MAJOR = 10
#: A running generation 2 VM gains and loses network adapters from Windows Server 2016
#: (10.0) on ("What's new in Hyper-V on Windows Server 2016": hot add and remove of
#: network adapters is new there); an older host refuses, as for generation 1.
HOT_ADD_NICS_SINCE_MAJOR = 10
#: Methods a host has only from a Windows version on: (class, method), lower-case, ->
#: the first major version with it. Msvm_ShutdownComponent.InitiateReboot is new in
#: Windows Server 2016 (10.0; its reference page's "Minimum supported server"); an
#: older host answers a call of it, and its class declaration, as for no such method.
METHODS_SINCE_MAJOR: Mapping[tuple[str, str], int] = MappingProxyType({
    ("msvm_shutdowncomponent", "initiatereboot"): 10,
})
_TB_MB = 1 << 20
#: The most virtual processors and memory (MB) Hyper-V gives one VM, by the host's Windows
#: version and the VM's generation: (first version of the row, its release, {generation:
#: (vCPUs, memory MB)}), oldest first; a host takes the last row its version reaches.
#: Microsoft's "Plan for Hyper-V scalability in Windows Server", Maximums for virtual
#: machines: 2016 (10.0.14393) 240 vCPUs and 12 TB for generation 2; 2019 (10.0.17763)
#: 250 and 12 TB; 2022 (10.0.20348) 1,024 and 240 TB; 2025 (10.0.26100) 2,048 and 240 TB;
#: generation 1, 64 and 1 TB on each. "Hyper-V scalability in Windows Server 2012 and
#: Windows Server 2012 R2": 64 and 1 TB for any VM. A build between releases is held to
#: the release before it (the emulator's choice; Microsoft lists releases only).
VM_MAXIMUMS: tuple[tuple[tuple[int, ...], str, Mapping[int, tuple[int, int]]], ...] = (
    ((0,), "Windows Server 2012 R2", MappingProxyType({1: (64, _TB_MB), 2: (64, _TB_MB)})),
    ((10, 0), "Windows Server 2016",
     MappingProxyType({1: (64, _TB_MB), 2: (240, 12 * _TB_MB)})),
    ((10, 0, 17763), "Windows Server 2019",
     MappingProxyType({1: (64, _TB_MB), 2: (250, 12 * _TB_MB)})),
    ((10, 0, 20348), "Windows Server 2022",
     MappingProxyType({1: (64, _TB_MB), 2: (1024, 240 * _TB_MB)})),
    ((10, 0, 26100), "Windows Server 2025",
     MappingProxyType({1: (64, _TB_MB), 2: (2048, 240 * _TB_MB)})),
)
GENERATION_1 = "Microsoft:Hyper-V:SubType:1"
GENERATION_2 = "Microsoft:Hyper-V:SubType:2"

CAPTION_VM = "Virtual Machine"
CAPTION_HOST = "Hosting Computer System"

#: Slots per controller kind.
IDE_SLOTS = 2
SCSI_SLOTS = 64

#: KVP limits (Msvm_KvpExchangeDataItem MAXLEN and AddKvpItems's item count).
KVP_NAME_MAX_CHARS = 1024
#: MAXLEN 1024 counts the terminating NUL: values of 1024 characters or more are refused.
KVP_DATA_MAX_CHARS = 1023
KVP_ITEMS_PER_CALL = 128

#: How long a finished job stays queryable (TimeBeforeRemoval, 5 minutes).
JOB_RETENTION_S = 300.0


class ProcessReturn(IntEnum):
    """Win32_Process.Create and Terminate return values (Microsoft's method pages)."""

    SUCCESS = 0
    ACCESS_DENIED = 2
    INSUFFICIENT_PRIVILEGE = 3
    UNKNOWN_FAILURE = 8
    PATH_NOT_FOUND = 9
    INVALID_PARAMETER = 21


#: Programs the emulated host has in C:\Windows\System32 (the emulator's choice: every
#: Windows Server has these); Create finds a bare program name only among them, and a
#: full path only when the file exists on the host's drives. It runs nothing: a created
#: process lives until Terminate.
SYSTEM32_PROGRAMS = frozenset({
    "cmd.exe", "ping.exe", "timeout.exe", "powershell.exe", "notepad.exe", "whoami.exe",
    "hostname.exe", "netsh.exe", "sc.exe",
})
SYSTEM32 = "C:\\Windows\\System32"
#: Processes the host starts (Win32_Process.Create, a VM's worker process) get ids
#: above it, 4 apart as on Windows (``model.new_process_id``).
FIRST_PROCESS_ID = 1000
