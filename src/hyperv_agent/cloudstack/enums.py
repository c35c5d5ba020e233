"""Java enums as they travel on the wire: by constant name (``"ROOT"``, ``"Hyperv"``).

Every member's value is the Java constant name, so a member serialises as the name.

Fields the MS fills use the ``Lenient*`` types: a name this module knows becomes the
member, any other string stays a plain string. The MS's enums grow with every release
(storage pool types, broadcast domain types, ...); a name unknown here must not make a
whole command undecodable, and an echoed object must go back with the name it came with.
A value that is not a string at all is a decoding error.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import PlainValidator


class HypervisorType(StrEnum):
    HYPERV = "Hyperv"
    KVM = "KVM"
    XEN_SERVER = "XenServer"
    VMWARE = "VMware"
    BARE_METAL = "BareMetal"
    SIMULATOR = "Simulator"
    LXC = "LXC"
    ANY = "Any"
    NONE = "None"


class HostType(StrEnum):
    """com.cloud.host.Host.Type."""

    ROUTING = "Routing"
    STORAGE = "Storage"
    CONSOLE_PROXY = "ConsoleProxy"
    SECONDARY_STORAGE = "SecondaryStorage"
    SECONDARY_STORAGE_VM = "SecondaryStorageVM"
    LOCAL_SECONDARY_STORAGE = "LocalSecondaryStorage"


class StoragePoolType(StrEnum):
    """com.cloud.storage.Storage.StoragePoolType (the ones a Hyper-V zone can meet)."""

    FILESYSTEM = "Filesystem"
    NETWORK_FILESYSTEM = "NetworkFilesystem"
    SMB = "SMB"
    ISCSI = "Iscsi"
    ISCSI_LUN = "IscsiLUN"
    ISO = "ISO"
    LVM = "LVM"
    CLVM = "CLVM"
    RBD = "RBD"
    SHARED_MOUNT_POINT = "SharedMountPoint"
    VMFS = "VMFS"
    PRE_SETUP = "PreSetup"
    EXT = "EXT"
    OCFS2 = "OCFS2"
    GLUSTER = "Gluster"


class StorageResourceType(StrEnum):
    """com.cloud.storage.Storage.StorageResourceType (StartupStorageCommand.resourceType)."""

    STORAGE_POOL = "STORAGE_POOL"
    STORAGE_HOST = "STORAGE_HOST"
    SECONDARY_STORAGE = "SECONDARY_STORAGE"
    LOCAL_SECONDARY_STORAGE = "LOCAL_SECONDARY_STORAGE"


class VolumeType(StrEnum):
    """com.cloud.storage.Volume.Type (DiskTO.type, VolumeObjectTO.volumeType)."""

    UNKNOWN = "UNKNOWN"
    ROOT = "ROOT"
    SWAP = "SWAP"
    DATADISK = "DATADISK"
    ISO = "ISO"


class ImageFormat(StrEnum):
    """com.cloud.storage.Storage.ImageFormat."""

    VHD = "VHD"
    VHDX = "VHDX"
    QCOW2 = "QCOW2"
    RAW = "RAW"
    ISO = "ISO"
    OVA = "OVA"
    VMDK = "VMDK"
    TAR = "TAR"
    ZIP = "ZIP"
    DIR = "DIR"
    BAREMETAL = "BAREMETAL"


class ProvisioningType(StrEnum):
    """com.cloud.storage.Storage.ProvisioningType: how a disk offering's volumes take space
    (VolumeObjectTO.provisioningType, DiskProfile.provisioningType)."""

    THIN = "THIN"
    SPARSE = "SPARSE"
    FAT = "FAT"


class DataStoreRole(StrEnum):
    """com.cloud.storage.DataStoreRole (NfsTO._role)."""

    PRIMARY = "Primary"
    IMAGE = "Image"
    IMAGE_CACHE = "ImageCache"
    BACKUP = "Backup"


class ConfigDriveLocation(StrEnum):
    """com.cloud.network.element.NetworkElement.Location: where a VM's config drive ISO
    is (VirtualMachineTO.configDriveLocation, HandleConfigDriveIsoAnswer.location)."""

    SECONDARY = "SECONDARY"
    PRIMARY = "PRIMARY"
    HOST = "HOST"


class TrafficType(StrEnum):
    """com.cloud.network.Networks.TrafficType (NicTO.type)."""

    NONE = "None"
    PUBLIC = "Public"
    GUEST = "Guest"
    STORAGE = "Storage"
    MANAGEMENT = "Management"
    CONTROL = "Control"
    VPN = "Vpn"


class BroadcastDomainType(StrEnum):
    """com.cloud.network.Networks.BroadcastDomainType (NicTO.broadcastType)."""

    NATIVE = "Native"
    VLAN = "Vlan"
    VSWITCH = "Vswitch"
    LINK_LOCAL = "LinkLocal"
    VNET = "Vnet"
    STORAGE = "Storage"
    LSWITCH = "Lswitch"
    MIDO = "Mido"
    PVLAN = "Pvlan"
    VXLAN = "Vxlan"
    UNDECIDED = "UnDecided"


class PvlanSetupType(StrEnum):
    """com.cloud.agent.api.PvlanSetupCommand.Type: whose NIC the command sets up."""

    DHCP = "DHCP"  # the network's DHCP server (its virtual router)
    VM = "VM"


class VirtualMachineType(StrEnum):
    """com.cloud.vm.VirtualMachine.Type (VirtualMachineTO.type)."""

    USER = "User"
    DOMAIN_ROUTER = "DomainRouter"
    CONSOLE_PROXY = "ConsoleProxy"
    SECONDARY_STORAGE_VM = "SecondaryStorageVm"
    ELASTIC_IP_VM = "ElasticIpVm"
    ELASTIC_LOAD_BALANCER_VM = "ElasticLoadBalancerVm"
    INTERNAL_LOAD_BALANCER_VM = "InternalLoadBalancerVm"
    NET_SCALER_VM = "NetScalerVm"
    INSTANCE = "Instance"


class PowerState(StrEnum):
    """com.cloud.vm.VirtualMachine.PowerState: the MS accepts exactly these four names."""

    POWER_ON = "PowerOn"
    POWER_OFF = "PowerOff"
    POWER_UNKNOWN = "PowerUnknown"
    POWER_REPORT_MISSING = "PowerReportMissing"


def _lenient(enum: type[StrEnum]) -> Callable[[Any], StrEnum | str]:
    """A validator: a known name -> its member, another string -> itself, else an error."""
    known: dict[str, StrEnum] = {member.value: member for member in enum}

    def validate(value: Any) -> StrEnum | str:
        if isinstance(value, enum):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a {enum.__name__} name (a string)")
        return known.get(value, value)

    return validate


LenientHypervisorType = Annotated[HypervisorType | str, PlainValidator(_lenient(HypervisorType))]
LenientHostType = Annotated[HostType | str, PlainValidator(_lenient(HostType))]
LenientStoragePoolType = Annotated[
    StoragePoolType | str, PlainValidator(_lenient(StoragePoolType))
]
LenientStorageResourceType = Annotated[
    StorageResourceType | str, PlainValidator(_lenient(StorageResourceType))
]
LenientVolumeType = Annotated[VolumeType | str, PlainValidator(_lenient(VolumeType))]
LenientImageFormat = Annotated[ImageFormat | str, PlainValidator(_lenient(ImageFormat))]
LenientProvisioningType = Annotated[
    ProvisioningType | str, PlainValidator(_lenient(ProvisioningType))
]
LenientDataStoreRole = Annotated[DataStoreRole | str, PlainValidator(_lenient(DataStoreRole))]
LenientTrafficType = Annotated[TrafficType | str, PlainValidator(_lenient(TrafficType))]
LenientBroadcastDomainType = Annotated[
    BroadcastDomainType | str, PlainValidator(_lenient(BroadcastDomainType))
]
LenientVirtualMachineType = Annotated[
    VirtualMachineType | str, PlainValidator(_lenient(VirtualMachineType))
]
LenientPowerState = Annotated[PowerState | str, PlainValidator(_lenient(PowerState))]
