"""Storage commands: pools, volumes, templates, and the pre-4.2 legacy commands."""

from __future__ import annotations

from typing import Annotated, ClassVar

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command, wire
from hyperv_agent.cloudstack.enums import (
    LenientImageFormat,
    LenientStoragePoolType,
    LenientVolumeType,
)
from hyperv_agent.cloudstack.objects import (
    DataStoreTO,
    DataTO,
    DiskProfile,
    DiskTO,
    StorageFilerTO,
    VolumeTO,
)

# --- storage pools ------------------------------------------------------------------------


class ModifyStoragePoolCommand(Command):
    """Register (``add``) or unregister a primary storage pool on this host (§5.3)."""

    FQCN: ClassVar[str] = names.MODIFY_STORAGE_POOL_COMMAND

    pool: StorageFilerTO
    add: bool = False
    local_path: str | None = None


class CreateStoragePoolCommand(Command):
    FQCN: ClassVar[str] = names.CREATE_STORAGE_POOL_COMMAND

    pool: StorageFilerTO | None = None
    add: bool | None = None
    local_path: str | None = None


class DeleteStoragePoolCommand(Command):
    FQCN: ClassVar[str] = names.DELETE_STORAGE_POOL_COMMAND

    pool: StorageFilerTO | None = None
    local_path: str | None = None


class GetStorageStatsCommand(Command):
    """Capacity and usage of the pool ``pool_uuid`` of type ``pool_type`` (§5.3)."""

    FQCN: ClassVar[str] = names.GET_STORAGE_STATS_COMMAND

    pool_uuid: Annotated[str | None, wire("id")] = None
    pool_type: Annotated[LenientStoragePoolType | None, wire("pooltype")] = None
    local_path: str | None = None
    store: DataStoreTO | None = None
    sec_url: Annotated[str | None, wire("secUrl", secret=True)] = None
    nfs_version: str | None = None


# --- volumes and templates ----------------------------------------------------------------


class AttachCommand(Command):
    """Attach ``disk`` (an ISO or a data volume) to the VM ``vm_name``."""

    FQCN: ClassVar[str] = names.ATTACH_COMMAND

    disk: DiskTO
    vm_name: str


class DettachCommand(Command):
    """Detach ``disk`` from the VM ``vm_name`` (the class name is misspelt by the MS)."""

    FQCN: ClassVar[str] = names.DETTACH_COMMAND

    disk: DiskTO
    vm_name: str


class CopyCommand(Command):
    """Copy a template or volume between data stores (§5.2)."""

    FQCN: ClassVar[str] = names.COPY_COMMAND

    src_to: Annotated[DataTO, wire("srcTO")]
    dest_to: Annotated[DataTO, wire("destTO")]
    cache_to: Annotated[DataTO | None, wire("cacheTO")] = None
    execute_in_sequence: bool = False
    options: dict[str, str] | None = None
    options2: dict[str, str] | None = None


class CreateObjectCommand(Command):
    """Create ``data`` (a new, empty volume) on its data store."""

    FQCN: ClassVar[str] = names.CREATE_OBJECT_COMMAND

    data: DataTO


class DeleteCommand(Command):
    FQCN: ClassVar[str] = names.DELETE_COMMAND

    data: DataTO


class ResizeVolumeCommand(Command):
    FQCN: ClassVar[str] = names.RESIZE_VOLUME_COMMAND

    path: str | None = None
    pool: StorageFilerTO | None = None
    vm_instance: str | None = None
    current_size_bytes: Annotated[int | None, wire("currentSize")] = None
    new_size_bytes: Annotated[int | None, wire("newSize")] = None
    shrink_ok: bool = False
    chain_info: str | None = None


class MigrateVolumeCommand(Command):
    """Move the disk ``volume_path`` of the running VM ``attached_vm_name`` to ``pool``."""

    FQCN: ClassVar[str] = names.MIGRATE_VOLUME_COMMAND

    volume_path: str
    pool: StorageFilerTO
    volume_id: int = 0
    attached_vm_name: str | None = None
    volume_type: LenientVolumeType | None = None


# --- legacy (pre-4.2) storage commands ----------------------------------------------------


class CreateCommand(Command):
    """Legacy: copy the template file ``template_url`` within a Filesystem pool (§5.3)."""

    FQCN: ClassVar[str] = names.CREATE_COMMAND

    pool: StorageFilerTO
    disk_characteristics: DiskProfile
    vol_id: int = 0
    template_url: str | None = None
    execute_in_sequence: bool = False


class DestroyCommand(Command):
    """Legacy: detach (when ``vm_name`` is set) and delete the volume file."""

    FQCN: ClassVar[str] = names.DESTROY_COMMAND

    volume: VolumeTO
    vm_name: str | None = None


class PrimaryStorageDownloadCommand(Command):
    """Legacy: copy a .vhd/.vhdx template from ``url`` into ``local_path``."""

    FQCN: ClassVar[str] = names.PRIMARY_STORAGE_DOWNLOAD_COMMAND

    url: Annotated[str, wire("url", secret=True)]
    format: LenientImageFormat | None = None
    local_path: str | None = None
    pool_uuid: str | None = None
    pool_id: int | None = None
    name: str | None = None
    account_id: int | None = None
    secondary_storage_url: Annotated[str | None, wire("secondaryStorageUrl", secret=True)] = None
    primary_storage_url: str | None = None


STORAGE_COMMANDS: tuple[type[Command], ...] = (
    ModifyStoragePoolCommand,
    CreateStoragePoolCommand,
    DeleteStoragePoolCommand,
    GetStorageStatsCommand,
    AttachCommand,
    DettachCommand,
    CopyCommand,
    CreateObjectCommand,
    DeleteCommand,
    ResizeVolumeCommand,
    MigrateVolumeCommand,
    CreateCommand,
    DestroyCommand,
    PrimaryStorageDownloadCommand,
)
