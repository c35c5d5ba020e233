"""Storage commands: pools, volumes, templates, and the pre-4.2 legacy commands."""

from typing import Annotated, ClassVar

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import Command, JBool, JInt, JLong, wire
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
    """Register (``add``) or unregister a primary storage pool on this host (protocol §5.3).

    ``localPath`` is where a Linux host would mount the pool (``/mnt//<uuid>``); a
    Hyper-V host reaches a shared pool at ``\\<pool.host><pool.path>`` instead.
    """

    FQCN: ClassVar[str] = names.MODIFY_STORAGE_POOL_COMMAND

    add: JBool = False
    pool: StorageFilerTO
    local_path: str | None = None
    storage_path: str | None = None
    details: dict[str, str] | None = None


class CreateStoragePoolCommand(ModifyStoragePoolCommand):
    """In Java a ModifyStoragePoolCommand; the C# agent answers it with a NOP."""

    FQCN: ClassVar[str] = names.CREATE_STORAGE_POOL_COMMAND

    pool: StorageFilerTO | None = None  # type: ignore[assignment]  # optional here
    create_datastore: Annotated[JBool, wire("_createDatastore")] = False
    create_details: Annotated[dict[str, str] | None, wire("_details")] = None


class DeleteStoragePoolCommand(Command):
    """Forget the pool ``_pool`` (Java's field names carry the underscore)."""

    FQCN: ClassVar[str] = names.DELETE_STORAGE_POOL_COMMAND

    pool: Annotated[StorageFilerTO | None, wire("_pool")] = None
    local_path: Annotated[str | None, wire("_localPath")] = None
    remove_datastore: Annotated[JBool, wire("_removeDatastore")] = False
    details: Annotated[dict[str, str] | None, wire("_details")] = None


class GetStorageStatsCommand(Command):
    """Capacity and usage of the pool ``pool_uuid`` of type ``pool_type`` (protocol §5.3)."""

    FQCN: ClassVar[str] = names.GET_STORAGE_STATS_COMMAND

    nfs_version: str | None = None
    pool_uuid: Annotated[str | None, wire("id")] = None
    local_path: str | None = None
    pool_type: Annotated[LenientStoragePoolType | None, wire("pooltype")] = None
    sec_url: Annotated[str | None, wire("secUrl", secret=True)] = None
    store: DataStoreTO | None = None


class GetVolumeStatsCommand(Command):
    """The sizes of the volumes ``volume_uuids`` of the pool ``pool_uuid`` (protocol §5.1):
    despite the name, each is a volume's locator, its ``path`` as the MS keeps it (the
    uuid, for the volumes the agent makes)."""

    FQCN: ClassVar[str] = names.GET_VOLUME_STATS_COMMAND

    volume_uuids: list[str] | None = None
    pool_type: LenientStoragePoolType | None = None
    pool_uuid: str | None = None


# --- volumes and templates ----------------------------------------------------------------


class AttachCommand(Command):
    """Attach ``disk`` (an ISO or a data volume) to the VM ``vm_name``."""

    FQCN: ClassVar[str] = names.ATTACH_COMMAND

    disk: DiskTO
    vm_name: str
    in_seq: JBool = False
    forced: JBool = False
    controller_info: dict[str, str] | None = None


class DettachCommand(Command):
    """Detach ``disk`` from the VM ``vm_name`` (the class name is misspelt by the MS)."""

    FQCN: ClassVar[str] = names.DETTACH_COMMAND

    disk: DiskTO
    vm_name: str
    managed: Annotated[JBool, wire("_managed")] = False
    iscsi_name: Annotated[str | None, wire("_iScsiName")] = None
    storage_host: Annotated[str | None, wire("_storageHost")] = None
    storage_port: Annotated[JInt, wire("_storagePort")] = 0
    params: dict[str, str] | None = None
    forced: JBool = False
    wait_detach_device: JLong = 0


class CopyCommand(Command):
    """Copy a template or volume between data stores (protocol §5.2)."""

    FQCN: ClassVar[str] = names.COPY_COMMAND

    src_to: Annotated[DataTO, wire("srcTO")]
    dest_to: Annotated[DataTO, wire("destTO")]
    cache_to: Annotated[DataTO | None, wire("cacheTO")] = None
    execute_in_sequence: JBool = False
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
    current_size_bytes: Annotated[JLong | None, wire("currentSize")] = None
    new_size_bytes: Annotated[JLong | None, wire("newSize")] = None
    shrink_ok: JBool = False
    vm_instance: str | None = None
    chain_info: str | None = None
    managed: JBool = False
    iscsi_name: Annotated[str | None, wire("iScsiName")] = None
    passphrase: Annotated[list[JInt] | None, wire("passphrase", secret=True)] = None
    encrypt_format: str | None = None


class MigrateVolumeCommand(Command):
    """Move the disk ``volume_path`` of the running VM ``attached_vm_name`` to ``pool``."""

    FQCN: ClassVar[str] = names.MIGRATE_VOLUME_COMMAND

    volume_id: JLong = 0
    volume_path: str
    chain_info: str | None = None
    pool: StorageFilerTO
    source_pool: StorageFilerTO | None = None
    attached_vm_name: str | None = None
    volume_type: LenientVolumeType | None = None
    host_guid_in_target_cluster: str | None = None
    src_data: DataTO | None = None
    dest_data: DataTO | None = None
    src_details: dict[str, str] | None = None
    dest_details: dict[str, str] | None = None


class HandleConfigDriveIsoCommand(Command):
    """Write (``create``) or delete the config drive ISO ``isoFile`` (``configdrive/<VM
    name>.iso``, relative) on the primary pool ``destStore``, or with ``preferHostCache``
    in this host's config drive cache; ``isoData`` is the ISO the MS built, in base64
    (it holds the guest's password and keys: never logged or echoed)."""

    FQCN: ClassVar[str] = names.HANDLE_CONFIG_DRIVE_ISO_COMMAND

    iso_data: Annotated[str | None, wire("isoData", secret=True)] = None
    iso_file: str | None = None
    create: JBool = False
    dest_store: DataStoreTO | None = None
    use_host_cache_on_unsupported_pool: JBool = False
    prefer_host_cache: JBool = False


# --- legacy (pre-4.2) storage commands ----------------------------------------------------


class CreateCommand(Command):
    """Legacy: copy the template file ``template_url`` within a Filesystem pool (protocol §5.3)."""

    FQCN: ClassVar[str] = names.CREATE_COMMAND

    vol_id: JLong = 0
    pool: StorageFilerTO
    disk_characteristics: DiskProfile
    template_url: str | None = None
    execute_in_sequence: JBool = False


class DestroyCommand(Command):
    """Legacy: detach (when ``vm_name`` is set) and delete the volume file. The MS also
    sends it to evict an unused template from a pool (``volume.mountPoint`` is the pool's
    path, ``storagePoolUuid`` the pool)."""

    FQCN: ClassVar[str] = names.DESTROY_COMMAND

    nfs_version: str | None = None
    vm_name: str | None = None
    volume: VolumeTO


class PrimaryStorageDownloadCommand(Command):
    """Legacy: copy a .vhd/.vhdx template from ``url`` into ``local_path``."""

    FQCN: ClassVar[str] = names.PRIMARY_STORAGE_DOWNLOAD_COMMAND

    nfs_version: str | None = None
    sec_url: Annotated[str | None, wire("secUrl", secret=True)] = None
    url: Annotated[str, wire("url", secret=True)]
    format: LenientImageFormat | None = None
    account_id: JLong = 0
    name: str | None = None
    local_path: str | None = None
    pool_uuid: str | None = None
    pool_id: JLong = 0
    primary_pool: StorageFilerTO | None = None
    secondary_storage_url: Annotated[str | None, wire("secondaryStorageUrl", secret=True)] = None
    primary_storage_url: str | None = None


STORAGE_COMMANDS: tuple[type[Command], ...] = (
    ModifyStoragePoolCommand,
    CreateStoragePoolCommand,
    DeleteStoragePoolCommand,
    GetStorageStatsCommand,
    GetVolumeStatsCommand,
    AttachCommand,
    DettachCommand,
    CopyCommand,
    CreateObjectCommand,
    DeleteCommand,
    ResizeVolumeCommand,
    MigrateVolumeCommand,
    HandleConfigDriveIsoCommand,
    CreateCommand,
    DestroyCommand,
    PrimaryStorageDownloadCommand,
)
