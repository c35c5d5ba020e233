"""Every answer the agent can send, by Java class name.

Every answer has ``result`` and ``details`` and the Command fields it inherits in Java
(``contextMap`` always written; ``wait`` and ``bypassHostMaintenance`` only when not the
default, which is what the C# agent's answers look like, §13). Every field but
``result`` has a default, so any answer class can be built as a plain failure.

Where the C# agent and the Java classes disagree on a name (§12), the answer writes
both: GetStorageStatsAnswer ``capacityBytes``/``usedBytes`` and ``capacity``/``used``,
CheckVirtualMachineAnswer ``state`` and ``powerstate``. Either name is read on input.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, ClassVar

from pydantic import (
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import WireModel, wire
from hyperv_agent.cloudstack.enums import PowerState
from hyperv_agent.cloudstack.objects import (
    DataTO,
    DiskTO,
    HostStatsEntry,
    NicDetails,
    StoragePoolInfo,
    VirtualMachineTO,
    VmDiskStatsEntry,
    VmStatsEntry,
    VolumeObjectTO,
    VolumeTO,
)


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

    result: bool
    details: str | None = None
    context_map: dict[str, str] = Field(default_factory=dict)
    wait_s: Annotated[int, Field(alias="wait", exclude_if=_is_zero)] = 0
    bypass_host_maintenance: Annotated[bool, Field(exclude_if=_is_false)] = False
    # Sent by the C# agent on Ping and Setup answers; true makes the MS reconnect the host.
    reconnect: Annotated[bool | None, wire("_reconnect")] = None


class UnsupportedAnswer(Answer):
    FQCN: ClassVar[str] = names.UNSUPPORTED_ANSWER


class ReadyAnswer(Answer):
    FQCN: ClassVar[str] = names.READY_ANSWER


class SetupAnswer(Answer):
    FQCN: ClassVar[str] = names.SETUP_ANSWER

    reconnect: Annotated[bool | None, wire("_reconnect")] = False


class CheckHealthAnswer(Answer):
    FQCN: ClassVar[str] = names.CHECK_HEALTH_ANSWER


class CheckNetworkAnswer(Answer):
    FQCN: ClassVar[str] = names.CHECK_NETWORK_ANSWER


class MaintainAnswer(Answer):
    FQCN: ClassVar[str] = names.MAINTAIN_ANSWER

    will_migrate: bool = True
    reconnect: Annotated[bool | None, wire("_reconnect")] = False


class PrepareForMigrationAnswer(Answer):
    FQCN: ClassVar[str] = names.PREPARE_FOR_MIGRATION_ANSWER


class CheckSshAnswer(Answer):
    FQCN: ClassVar[str] = names.CHECK_SSH_ANSWER


class PlugNicAnswer(Answer):
    FQCN: ClassVar[str] = names.PLUG_NIC_ANSWER


class UnPlugNicAnswer(Answer):
    FQCN: ClassVar[str] = names.UNPLUG_NIC_ANSWER


class ModifyStoragePoolAnswer(Answer):
    FQCN: ClassVar[str] = names.MODIFY_STORAGE_POOL_ANSWER

    local_path: str | None = None
    template_info: dict[str, JsonValue] = Field(default_factory=dict)
    pool_info: StoragePoolInfo | None = None


class GetStorageStatsAnswer(Answer):
    """Writes ``capacityBytes``/``usedBytes`` (Java now) and ``capacity``/``used`` (Java
    before, and the C# agent)."""

    FQCN: ClassVar[str] = names.GET_STORAGE_STATS_ANSWER

    capacity_bytes: int = 0
    used_bytes: int = 0
    capacity_iops: int | None = None
    used_iops: int | None = None

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


class GetHostStatsAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_HOST_STATS_ANSWER

    host_stats: HostStatsEntry | None = None


class GetVmStatsAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_VM_STATS_ANSWER

    vm_stats_map: dict[str, VmStatsEntry] = Field(default_factory=dict)


class GetVmDiskStatsAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_VM_DISK_STATS_ANSWER

    host_name: str | None = None
    vm_disk_stats_map: dict[str, list[VmDiskStatsEntry]] = Field(default_factory=dict)


class CheckVirtualMachineAnswer(Answer):
    """Writes the VM's power state as ``state`` (Java) and ``powerstate`` (C# agent)."""

    FQCN: ClassVar[str] = names.CHECK_VIRTUAL_MACHINE_ANSWER

    state: PowerState | None = None
    vnc_port: int | None = None

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
    """``address`` is ``instanceId=<VM GUID>``; port -9 tells the MS to use RDP (§8)."""

    FQCN: ClassVar[str] = names.GET_VNC_PORT_ANSWER

    # The C# agent's GetVncPortAnswer is the one answer without contextMap (§2.8).
    context_map: Annotated[dict[str, str], Field(exclude_if=_is_empty)] = Field(
        default_factory=dict)
    address: str | None = None
    port: int = -9


class StartAnswer(Answer):
    FQCN: ClassVar[str] = names.START_ANSWER

    vm: VirtualMachineTO | None = None


class StopAnswer(Answer):
    FQCN: ClassVar[str] = names.STOP_ANSWER

    vm: VirtualMachineTO | None = None
    platform: str | None = None


class RebootAnswer(Answer):
    FQCN: ClassVar[str] = names.REBOOT_ANSWER

    bytes_sent: int | None = None
    bytes_received: int | None = None
    vnc_port: int | None = None


class ScaleVmAnswer(Answer):
    FQCN: ClassVar[str] = names.SCALE_VM_ANSWER


class MigrateAnswer(Answer):
    FQCN: ClassVar[str] = names.MIGRATE_ANSWER

    vnc_port: int | None = None


class MigrateWithStorageAnswer(Answer):
    FQCN: ClassVar[str] = names.MIGRATE_WITH_STORAGE_ANSWER

    volume_tos: list[VolumeObjectTO] | None = None  # plain (concrete type), not wrapped


class MigrateVolumeAnswer(Answer):
    FQCN: ClassVar[str] = names.MIGRATE_VOLUME_ANSWER

    volume_path: str | None = None
    volume_chain_info: str | None = None


class AttachAnswer(Answer):
    FQCN: ClassVar[str] = names.ATTACH_ANSWER

    disk: DiskTO | None = None


class DettachAnswer(Answer):
    FQCN: ClassVar[str] = names.DETTACH_ANSWER

    disk: DiskTO | None = None


class CreateObjectAnswer(Answer):
    FQCN: ClassVar[str] = names.CREATE_OBJECT_ANSWER

    data: DataTO | None = None


class CopyCmdAnswer(Answer):
    FQCN: ClassVar[str] = names.COPY_CMD_ANSWER

    new_data: DataTO | None = None


class GetVmConfigAnswer(Answer):
    FQCN: ClassVar[str] = names.GET_VM_CONFIG_ANSWER

    vm_name: str | None = None
    nics: list[NicDetails] = Field(default_factory=list)


class ModifyVmNicConfigAnswer(Answer):
    FQCN: ClassVar[str] = names.MODIFY_VM_NIC_CONFIG_ANSWER

    vm_name: str | None = None


class CheckOnHostAnswer(Answer):
    """Inverted by the C# agent (§5.3): ``result`` false means "the host is alive"."""

    FQCN: ClassVar[str] = names.CHECK_ON_HOST_ANSWER

    determined: bool | None = None
    alive: bool | None = None


class ResizeVolumeAnswer(Answer):
    FQCN: ClassVar[str] = names.RESIZE_VOLUME_ANSWER

    new_size_bytes: Annotated[int, wire("newSize")] = 0


class CreateAnswer(Answer):
    FQCN: ClassVar[str] = names.CREATE_ANSWER

    volume: VolumeTO | None = None


class PrimaryStorageDownloadAnswer(Answer):
    FQCN: ClassVar[str] = names.PRIMARY_STORAGE_DOWNLOAD_ANSWER

    install_path: str | None = None
    template_size_bytes: Annotated[int, wire("templateSize")] = 0


class SecurityGroupRuleAnswer(Answer):
    FQCN: ClassVar[str] = names.SECURITY_GROUP_RULE_ANSWER

    log_sequence_number: int | None = None
    vm_id: int | None = None


ANSWER_TYPES: Mapping[str, type[Answer]] = MappingProxyType({
    cls.FQCN: cls for cls in (
        Answer, UnsupportedAnswer, ReadyAnswer, SetupAnswer, CheckHealthAnswer,
        CheckNetworkAnswer, MaintainAnswer, PrepareForMigrationAnswer, CheckSshAnswer,
        PlugNicAnswer, UnPlugNicAnswer, ModifyStoragePoolAnswer, GetStorageStatsAnswer,
        GetHostStatsAnswer, GetVmStatsAnswer, GetVmDiskStatsAnswer, CheckVirtualMachineAnswer,
        GetVncPortAnswer, StartAnswer, StopAnswer, RebootAnswer, ScaleVmAnswer, MigrateAnswer,
        MigrateWithStorageAnswer, MigrateVolumeAnswer, AttachAnswer, DettachAnswer,
        CreateObjectAnswer, CopyCmdAnswer, GetVmConfigAnswer, ModifyVmNicConfigAnswer,
        CheckOnHostAnswer, ResizeVolumeAnswer, CreateAnswer, PrimaryStorageDownloadAnswer,
        SecurityGroupRuleAnswer,
    )
})
"""Every answer model by its Java class name."""
