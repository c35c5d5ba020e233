"""Every answer the agent can send, by Java class name.

Every answer has ``result`` and ``details`` and the Command fields it inherits in Java
(``contextMap`` always written; ``wait`` and ``bypassHostMaintenance`` only when not the
default, which is what the C# agent's answers look like, protocol §13). Every field but
``result`` has a default, so any answer class can be built as a plain failure.

The management server casts an answer to the class it expects and reads its fields, also
when ``result`` is false. ``Answer.failed`` builds the failure of any class: each class
declares in ``ECHO`` which of its fields it copies from its command (a failed
StartAnswer still carries the VM, a failed GetVmConfigAnswer the VM's name), and fields
the MS iterates without checking ``result`` (GetVmConfigAnswer.nics,
ModifyStoragePoolAnswer.datastoreClusterChildren) default to empty lists, never null.
Answers never carry secrets: a StartAnswer's VM goes back without its VNC password and
with the secrets of its boot arguments replaced. A failed answer stays small whatever its
command carried: a string it echoes longer than ``ECHO_MAX_CHARS`` (any name or path of a
valid command is shorter) and ``details`` longer than ``DETAILS_MAX_CHARS`` are cut, with a
marker saying how long they were (``cut``), and a field that is still larger than
``ECHO_FIELD_MAX_CHARS`` (very many short strings) is not echoed; the MS reads no such field
of a failed answer.

Where the C# agent and the Java classes disagree on a name (protocol §12), the answer writes
both: GetStorageStatsAnswer ``capacityBytes``/``usedBytes`` and ``capacity``/``used``,
CheckVirtualMachineAnswer ``state`` and ``powerstate``. Either name is read on input.
"""

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hyperv_agent import logs
from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import (
    Command,
    JBool,
    JEnumName,
    JInt,
    JLong,
    JObject,
    WireModel,
    wire,
)
from hyperv_agent.cloudstack.enums import ConfigDriveLocation, LenientStoragePoolType, PowerState
from hyperv_agent.cloudstack.objects import (
    DataTO,
    DiskTO,
    HostStatsEntry,
    NicDetails,
    StoragePoolInfo,
    VirtualMachineTO,
    VmDiskStatsEntry,
    VmNetworkStatsEntry,
    VmStatsEntry,
    VolumeObjectTO,
    VolumeStatsEntry,
    VolumeTO,
)

#: The longest string a failed answer echoes from its command (or says in a field its
#: failure names): four times the longest name a command may carry (``bounds``), longer than
#: any path and than a system VM's usual boot arguments. Longer ones are cut (``cut``).
ECHO_MAX_CHARS: Final = 4096
#: The longest ``details`` of a failed answer; longer ones are cut (``cut``).
DETAILS_MAX_CHARS: Final = 8192
#: The most a failed answer echoes of one field, in characters of its strings and items
#: of its lists and maps once its strings are cut: a VM of a valid command, boot arguments
#: cut, is a few thousand. A larger value (a command with a hundred thousand NICs or VM
#: details) is not echoed, and ``details`` says so.
ECHO_FIELD_MAX_CHARS: Final = 65536

#: SecurityGroupRuleAnswer.FailureReason names.
FAILURE_NONE = "NONE"
FAILURE_PROGRAMMING_FAILED = "PROGRAMMING_FAILED"
FAILURE_CANNOT_BRIDGE_FIREWALL = "CANNOT_BRIDGE_FIREWALL"


def _is_zero(value: int) -> bool:
    return value == 0


def _is_false(value: bool) -> bool:
    return not value


def _is_empty(value: dict[str, str]) -> bool:
    return not value


def _adopt_legacy_names(data: Any, current_for_legacy: Mapping[str, str]) -> Any:
    """Read an answer written with the C# agent's names into the Java names."""
    if not isinstance(data, dict) or not any(old in data for old in current_for_legacy):
        return data
    adopted = dict(data)
    for old, new in current_for_legacy.items():
        value = adopted.pop(old, None)
        if value is not None and adopted.get(new) is None:
            adopted[new] = value
    return adopted


class Answer(WireModel):
    """com.cloud.agent.api.Answer, the base of every answer and a generic answer itself."""

    FQCN: ClassVar[str] = names.ANSWER
    #: The fields a failed answer copies from its command: answer field (Python name) ->
    #: the command's Java field name.
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({})

    result: JBool
    details: str | None = None
    context_map: dict[str, str] = Field(default_factory=dict)
    wait_s: Annotated[JInt, Field(alias="wait", exclude_if=_is_zero)] = 0
    bypass_host_maintenance: Annotated[JBool, Field(exclude_if=_is_false)] = False
    external_details: dict[str, dict[str, str]] | None = None

    #: What a failed answer of this class says besides ``details`` (Java field names),
    #: unless the failure says otherwise (``fields`` of ``failed``).
    ON_FAILURE: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    @classmethod
    def failed(cls, details: str, source: Command | Mapping[str, Any] | None = None,
               fields: Mapping[str, Any] | None = None) -> Self:
        """A ``result:false`` answer of this class with ``details``, carrying the ``ECHO``
        fields of ``source``: the decoded command, or the command's JSON object when it
        did not decode (an echoed value that is itself malformed is left out); and
        ``ON_FAILURE`` with ``fields`` over it (Java names; those the class does not have,
        or whose value it would not take, are left out). Every string echoed or said is
        cut to ``ECHO_MAX_CHARS``, ``details`` to ``DETAILS_MAX_CHARS``; a field larger
        than ``ECHO_FIELD_MAX_CHARS`` is not echoed (``details`` says so)."""
        echoed: dict[str, Any] = {}
        for field, java_name in cls.ECHO.items():
            value = _plain(_field_of(source, java_name))
            alias = cls.model_fields[field].alias or field
            if value is not None and _over(value, ECHO_FIELD_MAX_CHARS):
                details += (f" (the command's {java_name} is not echoed: it holds more than "
                            f"{ECHO_FIELD_MAX_CHARS} characters and items)")
                continue
            value = _bounded(value)
            if value is not None and _valid(cls, {alias: value}):
                echoed[alias] = value
        names = {info.alias or name for name, info in cls.model_fields.items()}
        said = {name: _bounded(value)
                for name, value in {**cls.ON_FAILURE, **(fields or {})}.items()
                if name in names}
        said = {name: value for name, value in said.items() if _valid(cls, {name: value})}
        return cls.model_validate({"result": False, "details": cut(details, DETAILS_MAX_CHARS),
                                   **said, **echoed})


def cut(text: str, limit: int) -> str:
    """``text``, or when it is longer than ``limit`` characters its first ``limit`` with a
    marker saying how long it was. The secrets of the whole text are redacted first, so a
    cut never leaves part of one behind; the marker starts with a space, so a secret's value
    cut short still ends where the redaction of the answer looks for its end."""
    if len(text) <= limit:
        return text
    return f"{logs.redact(text)[:limit]} ...[cut: the value had {len(text)} characters]"


def _bounded(value: Any) -> Any:
    """``value`` (a plain JSON value or a model) as plain JSON with every string, member
    names included, cut to ``ECHO_MAX_CHARS``."""
    if isinstance(value, str):
        return cut(value, ECHO_MAX_CHARS)
    if isinstance(value, BaseModel):
        return _bounded(_plain(value))
    if isinstance(value, Mapping):
        return {_bounded(key): _bounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    """``value`` as plain JSON: a model dumped as the answer would write it."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return value


def _over(value: Any, most: int) -> bool:
    """Whether plain JSON ``value`` holds more than ``most`` characters of strings, as
    ``_bounded`` cuts them (member names included), and items of lists and maps; it stops
    counting there."""
    pending, total = [value], 0
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += min(len(item), ECHO_MAX_CHARS)
        elif isinstance(item, dict):
            total += len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            total += len(item)
            pending.extend(item)
        else:
            total += 1
        if total > most:
            return True
    return False


def _field_of(source: Command | Mapping[str, Any] | None, java_name: str) -> Any:
    """The value of the Java field ``java_name`` in a command or its JSON object."""
    if isinstance(source, Command):
        for name, info in type(source).model_fields.items():
            if (info.alias or name) == java_name:
                return getattr(source, name)
        return None
    return source.get(java_name) if source is not None else None


def _valid(cls: type[Answer], fields: dict[str, Any]) -> bool:
    try:
        cls.model_validate({"result": False, **fields})
    except ValidationError:
        return False
    return True


class UnsupportedAnswer(Answer):
    FQCN: ClassVar[str] = names.UNSUPPORTED_ANSWER


class ReadyAnswer(Answer):
    """``detailsMap`` tells the MS what the host can do (``host.uefi.enable``)."""

    FQCN: ClassVar[str] = names.READY_ANSWER

    details_map: dict[str, str] | None = None


class SetupAnswer(Answer):
    FQCN: ClassVar[str] = names.SETUP_ANSWER

    # True would make the MS reconnect the host.
    reconnect: Annotated[JBool, wire("_reconnect")] = False


class CheckHealthAnswer(Answer):
    FQCN: ClassVar[str] = names.CHECK_HEALTH_ANSWER


class CheckNetworkAnswer(Answer):
    FQCN: ClassVar[str] = names.CHECK_NETWORK_ANSWER

    reconnect: Annotated[JBool, wire("_reconnect")] = False


class MaintainAnswer(Answer):
    FQCN: ClassVar[str] = names.MAINTAIN_ANSWER

    will_migrate: JBool = True


class PrepareForMigrationAnswer(Answer):
    FQCN: ClassVar[str] = names.PREPARE_FOR_MIGRATION_ANSWER

    dpdk_interface_mapping: dict[str, JObject] | None = None
    new_vm_cpu_shares: JInt | None = None


class CheckSshAnswer(Answer):
    FQCN: ClassVar[str] = names.CHECK_SSH_ANSWER


class SetupPersistentNetworkAnswer(Answer):
    FQCN: ClassVar[str] = names.SETUP_PERSISTENT_NETWORK_ANSWER


class CleanupPersistentNetworkResourceAnswer(Answer):
    FQCN: ClassVar[str] = names.CLEANUP_PERSISTENT_NETWORK_RESOURCE_ANSWER


class PatchSystemVmAnswer(Answer):
    """The MS casts the answer to this class (ManagementServerImpl.patchSystemVm): any
    other class there is a ClassCastException, and a network restart with live patching
    fails on it."""

    FQCN: ClassVar[str] = names.PATCH_SYSTEM_VM_ANSWER

    template_version: str | None = None
    scripts_version: str | None = None


class PlugNicAnswer(Answer):
    FQCN: ClassVar[str] = names.PLUG_NIC_ANSWER


class UnPlugNicAnswer(Answer):
    FQCN: ClassVar[str] = names.UNPLUG_NIC_ANSWER


class ModifyStoragePoolAnswer(Answer):
    """``poolInfo`` is null on failure: every reader in the MS checks ``result`` first.
    ``datastoreClusterChildren`` is always a list (the MS iterates it)."""

    FQCN: ClassVar[str] = names.MODIFY_STORAGE_POOL_ANSWER

    pool_info: StoragePoolInfo | None = None
    template_info: dict[str, JObject] = Field(default_factory=dict)
    local_datastore_name: str | None = None
    pool_type: str | None = None
    datastore_cluster_children: list["ModifyStoragePoolAnswer"] = Field(default_factory=list)


class GetStorageStatsAnswer(Answer):
    """Writes ``capacityBytes``/``usedBytes`` (Java now) and ``capacity``/``used`` (Java
    before, and the C# agent)."""

    FQCN: ClassVar[str] = names.GET_STORAGE_STATS_ANSWER
    LEGACY_NAMES: ClassVar[tuple[str, ...]] = ("capacity", "used")

    used_bytes: JLong = 0
    capacity_bytes: JLong = 0
    capacity_iops: JLong | None = None
    used_iops: JLong | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_legacy_names(cls, data: Any) -> Any:
        return _adopt_legacy_names(data, {"capacity": "capacityBytes", "used": "usedBytes"})

    @model_serializer(mode="wrap")
    def _with_legacy_names(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data["capacity"] = self.capacity_bytes
        data["used"] = self.used_bytes
        return data


class HandleConfigDriveIsoAnswer(Answer):
    """Where the config drive ISO now is. The MS reads ``location`` after a create only
    (PRIMARY on a pool, HOST in the host's cache) and keeps it as the VM's
    ``configDriveLocation``; Java's field starts as SECONDARY, which a delete's answer
    and a failed one carry, as Java writes them."""

    FQCN: ClassVar[str] = names.HANDLE_CONFIG_DRIVE_ISO_ANSWER

    location: ConfigDriveLocation = ConfigDriveLocation.SECONDARY


class GetHostStatsAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_HOST_STATS_ANSWER

    host_stats: HostStatsEntry | None = None


class GetVmStatsAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_VM_STATS_ANSWER

    vm_stats_map: dict[str, VmStatsEntry] = Field(default_factory=dict)


class GetVmDiskStatsAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_VM_DISK_STATS_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"host_name": "hostName"})

    host_name: str | None = None
    vm_disk_stats_map: dict[str, list[VmDiskStatsEntry]] = Field(default_factory=dict)


class GetVolumeStatsAnswer(Answer):
    """The sizes of a pool's volumes, by the locator the command named. The MS adds every
    entry of ``volumeStats`` to its volume statistics and skips a null map (Java's failed
    answer carries none)."""

    FQCN: ClassVar[str] = names.GET_VOLUME_STATS_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"pool_uuid": "poolUuid",
                                                          "pool_type": "poolType"})

    pool_uuid: str | None = None
    pool_type: LenientStoragePoolType | None = None
    volume_stats: dict[str, VolumeStatsEntry] | None = None


class GetVmNetworkStatsAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_VM_NETWORK_STATS_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"host_name": "hostName"})

    host_name: str | None = None
    vm_network_stats_map: dict[str, list[VmNetworkStatsEntry]] = Field(default_factory=dict)


class CheckVirtualMachineAnswer(Answer):
    """Writes the VM's power state as ``state`` (Java) and ``powerstate`` (C# agent)."""

    FQCN: ClassVar[str] = names.CHECK_VIRTUAL_MACHINE_ANSWER
    LEGACY_NAMES: ClassVar[tuple[str, ...]] = ("powerstate",)

    vnc_port: JInt | None = None
    state: PowerState | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_legacy_name(cls, data: Any) -> Any:
        return _adopt_legacy_names(data, {"powerstate": "state"})

    @model_serializer(mode="wrap")
    def _with_legacy_name(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.state is not None:
            data["powerstate"] = self.state.value
        return data


class GetVncPortAnswer(Answer):
    """``address`` is ``instanceId=<VM GUID>``; port -9 tells the MS to use RDP (protocol §8)."""

    FQCN: ClassVar[str] = names.GET_VNC_PORT_ANSWER

    # The C# agent's GetVncPortAnswer is the one answer without contextMap (protocol §2.8).
    context_map: Annotated[dict[str, str], Field(exclude_if=_is_empty)] = Field(
        default_factory=dict)
    address: str | None = None
    port: JInt = -9


class StartAnswer(Answer):
    """``vm`` is the VM as asked for (the MS reads its NICs and disks back), without its
    VNC password, its ``vmData`` (the guest's password, user data and keys, which the MS
    never reads back but logs) and the secret entries of its ``details``, and with the
    secrets of its boot arguments replaced."""

    FQCN: ClassVar[str] = names.START_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"vm": "vm"})

    vm: VirtualMachineTO | None = None
    host_guid: str | None = None
    iqn_to_data: Annotated[dict[str, dict[str, str]] | None, wire("_iqnToData")] = None

    @field_validator("vm")
    @classmethod
    def _without_secrets(cls, vm: VirtualMachineTO | None) -> VirtualMachineTO | None:
        if vm is None:
            return None
        return vm.model_copy(update={"vnc_password": None, "vm_data": None,
                                     "details": without_secret_entries(vm.details),
                                     "boot_args": scrub_boot_args(vm.boot_args)})


class RebootAnswer(Answer):
    FQCN: ClassVar[str] = names.REBOOT_ANSWER

    vnc_port: JInt | None = None


class StopAnswer(RebootAnswer):
    FQCN: ClassVar[str] = names.STOP_ANSWER

    platform: str | None = None


class ScaleVmAnswer(Answer):
    FQCN: ClassVar[str] = names.SCALE_VM_ANSWER


class MigrateAnswer(Answer):
    FQCN: ClassVar[str] = names.MIGRATE_ANSWER

    vnc_port: JInt | None = None


class MigrateWithStorageAnswer(Answer):
    FQCN: ClassVar[str] = names.MIGRATE_WITH_STORAGE_ANSWER

    volume_tos: list[VolumeObjectTO] | None = None  # plain (concrete type), not wrapped


class MigrateVolumeAnswer(Answer):
    FQCN: ClassVar[str] = names.MIGRATE_VOLUME_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"volume_path": "volumePath"})

    volume_path: str | None = None
    volume_chain: str | None = None  # the MS reads it as getVolumeChainInfo()


class AttachAnswer(Answer):
    FQCN: ClassVar[str] = names.ATTACH_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"disk": "disk"})

    disk: DiskTO | None = None


class DettachAnswer(Answer):
    FQCN: ClassVar[str] = names.DETTACH_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"disk": "disk"})

    disk: DiskTO | None = None


class CreateObjectAnswer(Answer):
    FQCN: ClassVar[str] = names.CREATE_OBJECT_ANSWER

    data: DataTO | None = None


class CopyCmdAnswer(Answer):
    FQCN: ClassVar[str] = names.COPY_CMD_ANSWER

    new_data: DataTO | None = None


class GetVmConfigAnswer(Answer):
    """``nics`` is a list also on failure: the MS iterates it without checking ``result``."""

    FQCN: ClassVar[str] = names.GET_VM_CONFIG_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"vm_name": "vmName"})

    vm_name: str | None = None
    nics: list[NicDetails] = Field(default_factory=list)


class ModifyVmNicConfigAnswer(Answer):
    FQCN: ClassVar[str] = names.MODIFY_VM_NIC_CONFIG_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({"vm_name": "vmName"})

    vm_name: str | None = None


class CheckOnHostAnswer(Answer):
    """Inverted by the C# agent (protocol §5.3): ``result`` false means "the host is alive"."""

    FQCN: ClassVar[str] = names.CHECK_ON_HOST_ANSWER

    determined: JBool = False
    alive: JBool = False


class ResizeVolumeAnswer(Answer):
    FQCN: ClassVar[str] = names.RESIZE_VOLUME_ANSWER

    new_size_bytes: Annotated[JLong, wire("newSize")] = 0


class CreateAnswer(Answer):
    FQCN: ClassVar[str] = names.CREATE_ANSWER

    volume: VolumeTO | None = None
    request_template_reload: JBool = False


class PrimaryStorageDownloadAnswer(Answer):
    FQCN: ClassVar[str] = names.PRIMARY_STORAGE_DOWNLOAD_ANSWER

    install_path: str | None = None
    template_size_bytes: Annotated[JLong, wire("templateSize")] = 0


class SecurityGroupRuleAnswer(Answer):
    """The MS unboxes ``vmId`` and ``logSequenceNumber`` also on failure: they are echoed
    from the command's ``vmId`` and ``seqNum``, and 0 when those cannot be read. ``reason``
    tells the MS what to do about a failure (SecurityGroupListener): PROGRAMMING_FAILED,
    the default here, is retried (three times); CANNOT_BRIDGE_FIREWALL is not."""

    FQCN: ClassVar[str] = names.SECURITY_GROUP_RULE_ANSWER
    ECHO: ClassVar[Mapping[str, str]] = MappingProxyType({
        "log_sequence_number": "seqNum", "vm_id": "vmId"})
    ON_FAILURE: ClassVar[Mapping[str, Any]] = MappingProxyType({
        "reason": FAILURE_PROGRAMMING_FAILED})

    log_sequence_number: JLong = 0
    vm_id: JLong = 0
    reason: JEnumName | None = None  # FailureReason: NONE, UNKNOWN, PROGRAMMING_FAILED, ...


# --- secrets in the VM an answer echoes -----------------------------------------------------

#: Boot argument keys whose values are secrets (system VM passwords and private keys).
SECRET_BOOT_ARGS = re.compile(
    r"(?i)(?<![^\s])((?:[a-z0-9_.]*(?:password|passwd|secret|privatekey|private_key)"
    r"[a-z0-9_.]*)=)\S*")
#: Detail keys whose values are secrets: ``password`` (the guest password the MS keeps
#: encrypted while a VM starts), ``Encrypted.Password``, ``kvm.vnc.password``, ...
SECRET_DETAIL_KEY = re.compile(r"(?i)password|passwd|secret|privatekey|private_key")
REDACTED = "*****"


def without_secret_entries(details: dict[str, str] | None) -> dict[str, str] | None:
    """``details`` without the entries whose key names a secret."""
    if not details:
        return details
    return {key: value for key, value in details.items() if not SECRET_DETAIL_KEY.search(key)}


def scrub_boot_args(boot_args: str | None) -> str | None:
    """``boot_args`` with the value of every secret ``key=value`` replaced by ``*****``."""
    if not boot_args:
        return boot_args
    return SECRET_BOOT_ARGS.sub(rf"\g<1>{REDACTED}", boot_args)


ANSWER_TYPES: Mapping[str, type[Answer]] = MappingProxyType({
    cls.FQCN: cls for cls in (
        Answer, UnsupportedAnswer, ReadyAnswer, SetupAnswer, CheckHealthAnswer,
        CheckNetworkAnswer, MaintainAnswer, PrepareForMigrationAnswer, CheckSshAnswer,
        SetupPersistentNetworkAnswer, CleanupPersistentNetworkResourceAnswer,
        PatchSystemVmAnswer,
        PlugNicAnswer, UnPlugNicAnswer, ModifyStoragePoolAnswer, GetStorageStatsAnswer,
        HandleConfigDriveIsoAnswer,
        GetHostStatsAnswer, GetVmStatsAnswer, GetVmDiskStatsAnswer, GetVmNetworkStatsAnswer,
        GetVolumeStatsAnswer,
        CheckVirtualMachineAnswer,
        GetVncPortAnswer, StartAnswer, StopAnswer, RebootAnswer, ScaleVmAnswer, MigrateAnswer,
        MigrateWithStorageAnswer, MigrateVolumeAnswer, AttachAnswer, DettachAnswer,
        CreateObjectAnswer, CopyCmdAnswer, GetVmConfigAnswer, ModifyVmNicConfigAnswer,
        CheckOnHostAnswer, ResizeVolumeAnswer, CreateAnswer, PrimaryStorageDownloadAnswer,
        SecurityGroupRuleAnswer,
    )
})
"""Every answer model by its Java class name."""
