"""Storage transfer objects, and the two polymorphic types that travel wrapped.

Where a Java field is declared with the interface ``DataStoreTO`` or ``DataTO``, Gson
writes the object inside a one-key object naming its class (protocol §3.3)::

    "dataStore": {"org.apache.cloudstack.storage.to.PrimaryDataStoreTO": {"uuid": ...}}

:data:`DataStoreTO` and :data:`DataTO` are externally tagged unions: on input the key picks
the class and the object inside is validated against it (an unknown class name fails
with the names allowed); the Python value is the bare object; on output it is wrapped
again under its class name. The same classes appear unwrapped where Java declares the
concrete type (MigrateWithStorageAnswer.volumeTos).
"""

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    BeforeValidator,
    Discriminator,
    SerializerFunctionWrapHandler,
    Tag,
    WrapSerializer,
)

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.base import JBool, JEnumName, JInt, JLong, JObject, WireModel, wire
from hyperv_agent.cloudstack.enums import (
    LenientDataStoreRole,
    LenientHypervisorType,
    LenientImageFormat,
    LenientProvisioningType,
    LenientStoragePoolType,
    LenientVolumeType,
)


class WrappedTO(WireModel):
    """A transfer object that travels as ``{"<FQCN>": {...}}`` where its type is abstract."""

    FQCN: ClassVar[str]


def wrapper_key(value: Any) -> str:
    """The class name a wrapped value names: its only key, or its model's FQCN; else ""."""
    if isinstance(value, dict):
        return str(next(iter(value))) if len(value) == 1 else ""
    fqcn = getattr(type(value), "FQCN", "")
    return fqcn if isinstance(fqcn, str) else ""


def _unwrap(fqcn: str) -> BeforeValidator:
    def unwrap(value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and fqcn in value:
            return value[fqcn]
        return value

    return BeforeValidator(unwrap)


def _rewrap(fqcn: str) -> WrapSerializer:
    def rewrap(value: Any, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {fqcn: handler(value)}

    return WrapSerializer(rewrap)


def _tagged(fqcn: str) -> tuple[BeforeValidator, WrapSerializer, Tag]:
    return _unwrap(fqcn), _rewrap(fqcn), Tag(fqcn)


_PRIMARY = _tagged(names.PRIMARY_DATA_STORE_TO)
_NFS = _tagged(names.NFS_TO)
_S3 = _tagged(names.S3_TO)
_SWIFT = _tagged(names.SWIFT_TO)
_VOLUME = _tagged(names.VOLUME_OBJECT_TO)
_TEMPLATE = _tagged(names.TEMPLATE_OBJECT_TO)
_by_key: Callable[[Any], str] = wrapper_key


# --- data stores (DataStoreTO) ------------------------------------------------------------


class PrimaryDataStoreTO(WrappedTO):
    """A primary storage pool: ``Filesystem`` (a host directory) or ``SMB`` (a share).

    For SMB, ``path`` is ``/share/dir?user=..&password=..&domain=..`` (protocol §10).
    """

    FQCN: ClassVar[str] = names.PRIMARY_DATA_STORE_TO

    uuid: str | None = None
    name: str | None = None
    type: str | None = None  # the store's provider ("PrimaryDataStoreProvider"), not poolType
    id: JLong = 0
    pool_type: LenientStoragePoolType | None = None
    host: str | None = None
    path: Annotated[str | None, wire("path", secret=True)] = None
    port: JInt = 0
    url: Annotated[str | None, wire("url", secret=True)] = None
    details: dict[str, str] | None = None
    full_clone_flag: JBool | None = None
    disk_provisioning_strictness_flag: JBool | None = None
    is_managed: JBool = False
    parent_pool_type: LenientStoragePoolType | None = None


class NfsTO(WrappedTO):
    """Secondary storage; on Hyper-V ``url`` is ``cifs://host/share/dir?user=..`` (protocol §10)."""

    FQCN: ClassVar[str] = names.NFS_TO

    url: Annotated[str | None, wire("_url", secret=True)] = None
    role: Annotated[LenientDataStoreRole | None, wire("_role")] = None
    uuid: str | None = None
    nfs_version: str | None = None


class S3TO(WrappedTO):
    """An S3 image store (note ``endPoint`` with a capital P)."""

    FQCN: ClassVar[str] = names.S3_TO

    id: JLong | None = None
    uuid: str | None = None
    access_key: Annotated[str | None, wire("accessKey", secret=True)] = None
    secret_key: Annotated[str | None, wire("secretKey", secret=True)] = None
    end_point: str | None = None
    bucket_name: str | None = None
    signer: str | None = None
    https_flag: JBool | None = None
    use_tcp_keep_alive: Annotated[JBool | None, wire("useTCPKeepAlive")] = None
    connection_timeout: JInt | None = None
    max_error_retry: JInt | None = None
    socket_timeout: JInt | None = None
    connection_ttl: JInt | None = None
    created: str | None = None
    enable_rrs: Annotated[JBool, wire("enableRRS")] = False
    max_single_upload_size_bytes: Annotated[JLong, wire("maxSingleUploadSizeInBytes")] = 0


class SwiftTO(WrappedTO):
    """A Swift image store."""

    FQCN: ClassVar[str] = names.SWIFT_TO

    id: JLong | None = None
    url: str | None = None
    account: str | None = None
    user_name: str | None = None
    key: Annotated[str | None, wire("key", secret=True)] = None
    storage_policy: str | None = None


DataStoreTO = Annotated[
    Annotated[PrimaryDataStoreTO, *_PRIMARY]
    | Annotated[NfsTO, *_NFS]
    | Annotated[S3TO, *_S3]
    | Annotated[SwiftTO, *_SWIFT],
    Discriminator(_by_key),
]
"""A field declared ``DataStoreTO`` in Java: wrapped on the wire, bare in Python."""


# --- data objects (DataTO) ----------------------------------------------------------------


class VolumeObjectTO(WrappedTO):
    """A volume (a VHD/VHDX file) on a data store."""

    FQCN: ClassVar[str] = names.VOLUME_OBJECT_TO

    uuid: str | None = None
    volume_type: LenientVolumeType | None = None
    data_store: DataStoreTO | None = None
    name: str | None = None
    size_bytes: Annotated[JLong | None, wire("size")] = None
    usable_size_bytes: Annotated[JLong | None, wire("usableSize")] = None
    path: str | None = None
    volume_id: JLong | None = None
    vm_name: str | None = None
    account_id: JLong = 0
    chain_info: str | None = None
    format: LenientImageFormat | None = None
    provisioning_type: LenientProvisioningType | None = None
    pool_id: JLong | None = None
    id: JLong = 0
    device_id: JLong | None = None
    bytes_read_rate: JLong | None = None
    bytes_read_rate_max: JLong | None = None
    bytes_read_rate_max_length: JLong | None = None
    bytes_write_rate: JLong | None = None
    bytes_write_rate_max: JLong | None = None
    bytes_write_rate_max_length: JLong | None = None
    iops_read_rate: JLong | None = None
    iops_read_rate_max: JLong | None = None
    iops_read_rate_max_length: JLong | None = None
    iops_write_rate: JLong | None = None
    iops_write_rate_max: JLong | None = None
    iops_write_rate_max_length: JLong | None = None
    cache_mode: JEnumName | None = None
    hypervisor_type: LenientHypervisorType | None = None
    migration_options: JObject | None = None
    direct_download: JBool = False
    data_store_uuid: str | None = None
    deploy_as_is: JBool = False
    updated_data_store_uuid: Annotated[str | None, wire("updatedDataStoreUUID")] = None
    vsphere_storage_policy_id: Annotated[str | None, wire("vSphereStoragePolicyId")] = None
    passphrase: Annotated[list[JInt] | None, wire("passphrase", secret=True)] = None
    encrypt_format: str | None = None
    checkpoint_paths: list[str] | None = None
    checkpoint_image_store_urls: list[str] | None = None
    follow_redirects: JBool = False


class TemplateObjectTO(WrappedTO):
    """A template or ISO on a data store."""

    FQCN: ClassVar[str] = names.TEMPLATE_OBJECT_TO

    path: str | None = None
    orig_url: str | None = None
    uuid: str | None = None
    id: JLong = 0
    format: LenientImageFormat | None = None
    account_id: JLong = 0
    checksum: str | None = None
    hvm: JBool = False
    display_text: str | None = None
    image_data_store: DataStoreTO | None = None
    name: str | None = None
    guest_os_type: str | None = None
    size_bytes: Annotated[JLong | None, wire("size")] = None
    physical_size_bytes: Annotated[JLong | None, wire("physicalSize")] = None
    hypervisor_type: LenientHypervisorType | None = None
    bootable: JBool = False
    unique_name: str | None = None
    direct_download: JBool = False
    deploy_as_is: JBool = False
    deploy_as_is_configuration: str | None = None
    follow_redirects: JBool = False


DataTO = Annotated[
    Annotated[VolumeObjectTO, *_VOLUME] | Annotated[TemplateObjectTO, *_TEMPLATE],
    Discriminator(_by_key),
]
"""A field declared ``DataTO`` in Java: wrapped on the wire, bare in Python."""

DATA_TO_CLASSES: tuple[type[WrappedTO], ...] = (VolumeObjectTO, TemplateObjectTO)
DATA_STORE_TO_CLASSES: tuple[type[WrappedTO], ...] = (PrimaryDataStoreTO, NfsTO, S3TO, SwiftTO)


# --- plain (concrete) storage objects -----------------------------------------------------


class StorageFilerTO(WireModel):
    """A storage pool as the legacy commands name it (ModifyStoragePool, Create, ...)."""

    id: JLong = 0
    uuid: str | None = None
    host: str | None = None
    path: Annotated[str | None, wire("path", secret=True)] = None
    user_info: Annotated[str | None, wire("userInfo", secret=True)] = None
    port: JInt = 0
    type: LenientStoragePoolType | None = None


class VolumeTO(WireModel):
    """com.cloud.agent.api.to.VolumeTO: a volume in the legacy (pre-4.2) commands."""

    id: JLong = 0
    name: str | None = None
    mount_point: str | None = None
    path: str | None = None
    size_bytes: Annotated[JLong, wire("size")] = 0
    type: LenientVolumeType | None = None
    storage_pool_type: LenientStoragePoolType | None = None
    storage_pool_uuid: str | None = None
    device_id: JLong = 0
    chain_info: str | None = None
    guest_os_type: str | None = None
    bytes_read_rate: JLong | None = None
    bytes_write_rate: JLong | None = None
    iops_read_rate: JLong | None = None
    iops_write_rate: JLong | None = None
    cache_mode: str | None = None
    chain_size_bytes: Annotated[JLong | None, wire("chainSize")] = None


class DiskProfile(WireModel):
    """com.cloud.vm.DiskProfile: what the legacy CreateCommand asks for."""

    size_bytes: Annotated[JLong, wire("size")] = 0
    tags: list[str | None] | None = None
    type: LenientVolumeType | None = None
    name: str | None = None
    use_local_storage: JBool = False
    recreatable: JBool = False
    disk_offering_id: JLong = 0
    template_id: JLong | None = None
    volume_id: JLong = 0
    path: str | None = None
    provisioning_type: LenientProvisioningType | None = None
    bytes_read_rate: JLong | None = None
    bytes_write_rate: JLong | None = None
    iops_read_rate: JLong | None = None
    iops_write_rate: JLong | None = None
    cache_mode: str | None = None
    min_iops: JLong | None = None
    max_iops: JLong | None = None
    requires_encryption: JBool = False
    hyper_type: LenientHypervisorType | None = None


class StoragePoolInfo(WireModel):
    """com.cloud.agent.api.StoragePoolInfo (StartupStorageCommand, ModifyStoragePoolAnswer)."""

    uuid: str | None = None
    name: str | None = None
    host: str | None = None
    local_path: str | None = None
    host_path: Annotated[str | None, wire("hostPath", secret=True)] = None
    pool_type: LenientStoragePoolType | None = None
    capacity_bytes: JLong = 0
    available_bytes: JLong = 0
    details: dict[str, str] | None = None
