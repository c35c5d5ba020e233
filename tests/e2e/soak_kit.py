"""The management server's bodies for the soak test (``test_soak.py``), built from the
4.22 samples: two hosts of one emulated cluster, each with its local pool, both with one
SMB pool and one cifs image store holding a template and an ISO."""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator import vhd
from tests.cloudstack.fixtures import ms422_json

PRIMARY_TO, VOLUME_TO = names.PRIMARY_DATA_STORE_TO, names.VOLUME_OBJECT_TO
TEMPLATE_TO, NFS_TO = names.TEMPLATE_OBJECT_TO, names.NFS_TO
LOCAL_PATH = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
SMB = "smb"  # the shared pool's key in the model; a host's name keys its local pool
STORE_URL = "cifs://10.1.1.1/secondary"
TEMPLATE_PATH = "template/tmpl/2/201/tiny.vhdx"
ISO_PATH = "iso/2/205/install.iso"
TEMPLATE_UUID = "5c4a0e1a-0b1e-4f57-9a55-7f3d9e3c2a01"  # sample 12's template
MIB = 1 << 20
HOSTS = {"HV-A": "10.0.0.1", "HV-B": "10.0.0.2"}  # names and private addresses


def host_config(folder: Path, name: str, listen: str, admin_listen: str) -> AgentConfig:
    """Cluster member ``name``: its state in ``folder/<name>``, the SMB pool's share and
    the image store's share mapped to ``folder/primary`` and ``folder/secondary``; it
    serves CloudStack on ``listen`` and its health checks on ``admin_listen``. Its host
    has 8 logical processors and 8 GiB of memory (a VM too large for it is refused)."""
    config = folder / f"{name}.toml"
    config.write_text(f"""[agent]
local_storage_path = '{LOCAL_PATH}'
allow_from = ["127.0.0.0/8"]
[emulator]
host_name = "{name}"
cpus = 8
memory_mb = 8192
cluster_dir = "{folder / 'cluster'}"
switches = ["vSwitch0"]
[emulator.shares]
'\\\\10.1.1.1\\primary' = '{folder / "primary"}'
'\\\\10.1.1.1\\secondary' = '{folder / "secondary"}'
""")
    return load_config(config, state_dir=folder / name, backend="emulator",
                       private_ip=HOSTS[name], listen=listen, admin_listen=admin_listen,
                       console_relay_listen="")


def image_store(folder: Path) -> None:
    """The image store's template (a 64 MiB dynamic VHDX) and ISO, and the SMB pool."""
    (folder / "primary").mkdir(parents=True)
    template = folder / "secondary" / TEMPLATE_PATH
    template.parent.mkdir(parents=True)
    vhd.create(template, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 * MIB)
    iso = folder / "secondary" / ISO_PATH
    iso.parent.mkdir(parents=True)
    iso.write_bytes(b"CD001" * 400)


def store(pool: str) -> dict[str, Any]:
    """The PrimaryDataStoreTO of ``pool``: a host's local pool or the SMB pool."""
    if pool == SMB:
        sample = ms422_json("30_StartCommand_root_on_SMB_pool.json")
        return copy.deepcopy(sample["vm"]["disks"][0]["data"][VOLUME_TO]["dataStore"])
    sample = ms422_json("14_CreateObjectCommand.json")
    found: dict[str, Any] = copy.deepcopy(sample["data"][VOLUME_TO]["dataStore"])
    found[PRIMARY_TO] |= {"uuid": f"{pool}-HypervResource", "host": HOSTS[pool],
                          "name": f"{pool} Local Storage"}
    return found


def filer(pool: str) -> dict[str, Any]:
    """The StorageFilerTO of ``pool`` (ResizeVolumeCommand's ``pool``)."""
    to = store(pool)[PRIMARY_TO]
    return {"id": to["id"], "uuid": to["uuid"], "host": to["host"], "path": to["path"],
            "port": to["port"], "type": to["poolType"]}


def smb_pool_body() -> dict[str, Any]:
    return dict(ms422_json("31_ModifyStoragePoolCommand_SMB.json"))


@dataclass
class Volume:
    """A volume as the management server records it."""

    uuid: str
    pool: str
    size: int
    root: bool
    path: str = ""  # the agent's answer
    vm: str | None = None  # the VM it is attached to
    device_id: int = 0
    provisioning: str = "THIN"  # its disk offering's: THIN, SPARSE or FAT (fixed)
    clone: bool = False  # a linked clone: its file names a template as its parent


@dataclass
class Nic:
    """A NIC of a VM as the management server records it."""

    mac: str
    vlan: int | None  # None: untagged
    connected: bool = True


@dataclass
class Vm:
    """A VM as the management server records it: where it runs (None: stopped); a
    ``router`` (generation 2, so it takes and loses NICs while it runs) has NICs plugged
    and unplugged; a VM on a security-group network has the rules last sent to it."""

    name: str
    number: int
    root: Volume
    host: str | None = None
    data: list[Volume] = field(default_factory=list)
    iso: bool = False
    router: bool = False
    security_groups: bool = False
    nics: list[Nic] = field(default_factory=list)  # the first is the guest NIC
    seq: int = 0  # the last SecurityGroupRulesCmd's seqNum (0: none sent)
    rules: frozenset[str] = frozenset()  # names of RULES the last one allowed
    memory_mb: int = 512
    config_drive: bool = False  # its config drive ISO is on its root volume's pool

    def __post_init__(self) -> None:
        if not self.nics:
            mac = f"02:00:4c:5f:{self.number >> 8:02x}:{self.number & 0xff:02x}"
            self.nics.append(Nic(mac, None if self.security_groups else 261))


def volume_to(volume: Volume, vm: str | None = None) -> dict[str, Any]:
    """The VolumeObjectTO of ``volume`` (sample 21's, on its pool)."""
    to: dict[str, Any] = copy.deepcopy(
        ms422_json("21_AttachCommand.json")["disk"]["data"][VOLUME_TO])
    to |= {"uuid": volume.uuid, "path": volume.path or volume.uuid, "size": volume.size,
           "volumeType": "ROOT" if volume.root else "DATADISK", "name": volume.uuid[:8],
           "deviceId": volume.device_id, "dataStore": store(volume.pool),
           "provisioningType": volume.provisioning}
    if vm is None:
        to.pop("vmName")
    else:
        to["vmName"] = vm
    return {VOLUME_TO: to}


def create_body(volume: Volume) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(ms422_json("14_CreateObjectCommand.json"))
    to = volume_to(volume)
    to[VOLUME_TO].pop("path")
    body["data"] = to
    return body


def delete_body(volume: Volume) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(ms422_json("25_DeleteCommand.json"))
    body["data"] = volume_to(volume)
    return body


def template_copy_body(pool: str, path: str = TEMPLATE_PATH,
                       uuid: str = TEMPLATE_UUID) -> dict[str, Any]:
    """CopyCommand of sample 12: the template at ``path`` on the image store (by default
    the store's own, ``uuid`` the sample's) to ``pool``."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("12_CopyCommand.json"))
    body["srcTO"][TEMPLATE_TO] |= {"path": path, "uuid": uuid, "imageDataStore": image()}
    body["destTO"][TEMPLATE_TO] |= {"uuid": uuid, "imageDataStore": store(pool)}
    return body


def image() -> dict[str, Any]:
    """The image store's DataStoreTO."""
    return {NFS_TO: {"_url": STORE_URL, "_role": "Image"}}


def volume_to_image_body(volume: Volume, folder: str) -> dict[str, Any]:
    """CopyCommand of a volume from its pool to ``folder`` of the image store: the first
    half of the MS's cold volume migration (``VolumeServiceImpl.copyVolume``)."""
    source = volume_to(volume)
    dest = copy.deepcopy(source)
    dest[VOLUME_TO] |= {"path": folder, "dataStore": image()}
    return {"srcTO": source, "destTO": dest, "executeInSequence": False, "options": {},
            "options2": {}, "contextMap": {}, "wait": 10800}


def volume_from_image_body(volume: Volume, path: str, pool: str) -> dict[str, Any]:
    """CopyCommand of ``volume``'s copy at ``path`` on the image store into ``pool``: the
    second half of the cold volume migration (the new volume keeps its uuid as path)."""
    source = volume_to(volume)
    source[VOLUME_TO] |= {"path": path, "dataStore": image()}
    dest = copy.deepcopy(source)
    dest[VOLUME_TO] |= {"path": volume.uuid, "dataStore": store(pool)}
    return {"srcTO": source, "destTO": dest, "executeInSequence": False, "options": {},
            "options2": {}, "contextMap": {}, "wait": 10800}


def template_from_volume_body(volume: Volume, number: int, uuid: str) -> dict[str, Any]:
    """CopyCommand of a stopped VM's root volume to a new template ``number`` on the image
    store (createTemplate of a volume)."""
    dest: dict[str, Any] = copy.deepcopy(ms422_json("12_CopyCommand.json")["srcTO"])
    dest[TEMPLATE_TO] |= {"path": f"template/tmpl/2/{number}", "uuid": uuid, "id": number,
                          "name": f"{number}-2-{uuid[:8]}", "imageDataStore": image()}
    for key in ("format", "origUrl", "uniqueName", "size"):
        dest[TEMPLATE_TO].pop(key)
    return {"srcTO": volume_to(volume), "destTO": dest, "executeInSequence": False,
            "options": {}, "options2": {}, "contextMap": {}, "wait": 10800}


def evict_body(pool: str, template: str) -> dict[str, Any]:
    """The DestroyCommand TemplateManagerImpl.evictTemplateFromStoragePool sends: the
    template's install path in ``pool``, the pool's type, uuid and mount point."""
    to = store(pool)[PRIMARY_TO]
    mount = LOCAL_PATH if pool != SMB else to["path"]
    return {"volume": {"id": 9, "storagePoolType": to["poolType"],
                       "storagePoolUuid": to["uuid"], "mountPoint": mount, "path": template,
                       "size": 64 * MIB}, "contextMap": {}, "wait": 0}


def storage_stats_body(pool: str) -> dict[str, Any]:
    """GetStorageStatsCommand of ``pool``."""
    to = store(pool)[PRIMARY_TO]
    return {"id": to["uuid"], "pooltype": to["poolType"], "localPath": to["path"],
            "contextMap": {}, "wait": 0}


def scale_body(vm: Vm, cpus: int, ram_mb: int) -> dict[str, Any]:
    """ScaleVmCommand of ``vm`` to ``cpus`` and ``ram_mb``."""
    return {"vmName": vm.name, "cpus": cpus, "minSpeed": 500, "maxSpeed": 2000,
            "minRam": ram_mb * MIB, "maxRam": ram_mb * MIB, "contextMap": {}, "wait": 0}


def root_copy_body(template: str, volume: Volume, vm: str) -> dict[str, Any]:
    """CopyCommand of sample 13: a root volume from the template ``template`` in its pool."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("13_CopyCommand.json"))
    body["srcTO"][TEMPLATE_TO] |= {"path": template, "imageDataStore": store(volume.pool)}
    dest = volume_to(volume, vm)
    dest[VOLUME_TO].pop("path")
    body["destTO"] = dest
    return body


def resize_body(volume: Volume, new_size: int, vm: str | None) -> dict[str, Any]:
    body = {"path": volume.path, "pool": filer(volume.pool), "currentSize": volume.size,
            "newSize": new_size, "shrinkOk": False, "contextMap": {}, "wait": 0}
    if vm is not None:
        body["vmInstance"] = vm
    return body


def volume_disk(volume: Volume, vm: str) -> dict[str, Any]:
    """The DiskTO of ``volume`` attached to ``vm``."""
    return {"data": volume_to(volume, vm), "diskSeq": volume.device_id,
            "path": volume.path, "type": "ROOT" if volume.root else "DATADISK",
            "details": {"managed": "false", "volumeSize": str(volume.size)}}


def iso_disk(attached: bool) -> dict[str, Any]:
    """The ISO DiskTO: the install ISO on the image store, or none (a user VM's empty CD)."""
    if not attached:
        return copy.deepcopy(ms422_json("15_StartCommand.json")["vm"]["disks"][1])
    iso = {"path": ISO_PATH, "format": "ISO", "id": 205, "name": "install",
           "uuid": "0d1f3b52-8b0e-4e57-9b1c-f1e9d5f8a205",
           "imageDataStore": {NFS_TO: {"_url": STORE_URL, "_role": "Image"}}}
    return {"data": {TEMPLATE_TO: iso}, "diskSeq": 3, "type": "ISO"}


def vm_to(vm: Vm, state: str = "Starting") -> dict[str, Any]:
    """The VirtualMachineTO of ``vm``: sample 15's, with its volumes and ISO."""
    to: dict[str, Any] = copy.deepcopy(ms422_json("15_StartCommand.json")["vm"])
    to |= {"id": vm.number, "name": vm.name, "state": state,
           "uuid": f"a68c5325-84be-4f8b-ace1-{vm.number:012d}"}
    to["disks"] = [volume_disk(vm.root, vm.name),
                   *(volume_disk(v, vm.name) for v in vm.data), iso_disk(vm.iso)]
    if vm.config_drive:  # the MS lists it first, on its pool (addConfigDriveDisk)
        to["disks"].insert(0, config_drive_disk(vm))
        to["configDriveLocation"] = "PRIMARY"
    to |= {"minRam": vm.memory_mb * MIB, "maxRam": vm.memory_mb * MIB}
    first = to["nics"][0]
    first |= {"mac": vm.nics[0].mac, "nicUuid": f"a5e6e3ba-7b1a-4867-964e-{vm.number:012d}",
              "ip": vm_ip(vm)}
    if vm.security_groups:
        first |= {"broadcastType": "Native", "broadcastUri": "vlan://untagged",
                  "isolationUri": "ec2://untagged", "securityGroupEnabled": True}
    if vm.router:
        to["details"] = to["details"] | {"UEFI": "LEGACY"}  # generation 2
    # the MS's TO lists the NICs it has plugged, not those it unplugged
    to["nics"] = [first, *(nic_to(nic, index) for index, nic in enumerate(vm.nics)
                           if index and nic.connected)]
    return to


def config_drive_file(vm: Vm) -> str:
    """The config drive ISO's path in its pool, as the MS names it."""
    return f"configdrive/{vm.name}.iso"


def config_drive_disk(vm: Vm) -> dict[str, Any]:
    """The config drive's DiskTO: a TemplateObjectTO of its path on the root's pool."""
    data = {"uuid": f"4f1e7d8c-1b0e-4b67-9d43-{vm.number:012d}", "path": config_drive_file(vm),
            "format": "ISO", "id": 0, "accountId": 0, "hvm": False, "bootable": False,
            "directDownload": False, "deployAsIs": False, "followRedirects": False,
            "imageDataStore": store(vm.root.pool)}
    return {"data": {TEMPLATE_TO: data}, "diskSeq": 4, "path": config_drive_file(vm),
            "type": "ISO"}


def config_drive_image(vm: Vm) -> bytes:
    """A small ISO 9660 image: system area, primary volume descriptor, terminator, data."""
    primary = b"\x01CD001\x01".ljust(2048, b"\x00")
    terminator = b"\xffCD001\x01".ljust(2048, b"\x00")
    payload = f"#cloud-config\nhostname: {vm.name}\n".encode()
    return b"\x00" * 16 * 2048 + primary + terminator + payload.ljust(2048, b"\x00")


def config_drive_body(vm: Vm, create: bool) -> dict[str, Any]:
    """HandleConfigDriveIsoCommand of ``vm``'s config drive on its root's pool, as Gson
    writes it (a delete carries no ``isoData``)."""
    body: dict[str, Any] = {"isoFile": config_drive_file(vm), "create": create,
                            "useHostCacheOnUnsupportedPool": False, "preferHostCache": False,
                            "destStore": store(vm.root.pool), "contextMap": {}, "wait": 0,
                            "bypassHostMaintenance": False}
    if create:
        body["isoData"] = base64.b64encode(config_drive_image(vm)).decode()
    return body


def volume_stats_body(pool: str, volumes: list[Volume]) -> dict[str, Any]:
    """GetVolumeStatsCommand of ``volumes`` (by path) in ``pool``."""
    to = store(pool)[PRIMARY_TO]
    return {"volumeUuids": [v.path for v in volumes], "poolType": to["poolType"],
            "poolUuid": to["uuid"], "contextMap": {}, "wait": 60,
            "bypassHostMaintenance": False}


def vm_ip(vm: Vm) -> str:
    return f"10.1.{vm.number >> 8}.{vm.number & 0xff}"


def nic_to(nic: Nic, device_id: int) -> dict[str, Any]:
    """The NicTO of a router's NIC on a public VLAN (PlugNicCommand's ``nic``)."""
    vlan = f"vlan://{nic.vlan}" if nic.vlan is not None else "vlan://untagged"
    return {"deviceId": device_id, "networkRateMbps": 200, "defaultNic": False,
            "pxeDisable": True, "nicUuid": f"0b1c2d3e-4f50-4a6b-9c8d-{nic.mac.replace(':', '')}",
            "mtu": 1500, "networkId": 300 + device_id, "mac": nic.mac,
            "broadcastType": "Vlan", "type": "Public", "broadcastUri": vlan,
            "isolationUri": vlan, "securityGroupEnabled": False, "name": "vSwitch0",
            "ip": f"172.16.{device_id}.{int(nic.mac[-2:], 16)}", "netmask": "255.255.255.0",
            "gateway": f"172.16.{device_id}.1"}


def start_body(vm: Vm) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(ms422_json("15_StartCommand.json"))
    body["vm"] = vm_to(vm)
    return body


def stop_body(name: str) -> dict[str, Any]:
    return dict(ms422_json("24_StopCommand.json")) | {"vmName": name}


def prepare_body(vm: Vm) -> dict[str, Any]:
    return dict(ms422_json("40_PrepareForMigrationCommand.json")) | {
        "vm": vm_to(vm, "Running")}


def migrate_body(vm: Vm, destination: str) -> dict[str, Any]:
    return dict(ms422_json("41_MigrateCommand.json")) | {
        "vmName": vm.name, "virtualMachine": vm_to(vm, "Running"),
        "destinationIp": HOSTS[destination], "hostGuid": f"{destination}-HypervResource"}


def stats_body(names_: list[str], host: str) -> dict[str, Any]:
    return dict(ms422_json("19_GetVmStatsCommand.json")) | {
        "vmNames": names_, "hostName": HOSTS[host], "hostGuid": f"{host}-HypervResource"}


def attach_body(vm: str, disk: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(ms422_json("21_AttachCommand.json"))
    return body | {"vmName": vm, "disk": disk}


def dettach_body(vm: str, disk: dict[str, Any]) -> dict[str, Any]:
    return {"vmName": vm, "disk": disk, "forced": False, "contextMap": {}, "wait": 0}


def vm_body(name: str) -> dict[str, Any]:
    return {"vmName": name, "contextMap": {}, "wait": 0}


def startup_body(host: str) -> list[dict[str, Any]]:
    """StartupCommand of ``host`` as the MS sends it when the host connects: its guid is
    the uuid the agent reports for its local pool (``store``'s)."""
    body: list[dict[str, Any]] = copy.deepcopy(ms422_json("02_StartupCommand.json"))
    body[0][names.STARTUP_ROUTING_COMMAND] |= {
        "guid": f"{host}-HypervResource", "name": HOSTS[host],
        "privateIpAddress": HOSTS[host], "storageIpAddress": HOSTS[host]}
    return body


def ping_body(host: str) -> dict[str, Any]:
    """PingRoutingCommand as the MS's direct-connect resource sends it."""
    return {"hostType": "Routing", "hostId": list(HOSTS).index(host) + 1,
            "_hostVmStateReport": {}, "_gatewayAccessible": True, "_vnetAccessible": True,
            "contextMap": {}, "wait": 0}


# --- NICs, security groups, storage migration --------------------------------------------

#: The ingress rules a VM on a security-group network may be given, by name, and a
#: conversation each lets in: (remote address, local port).
RULES = {"ssh": ("tcp", 22, "192.168.1.0/24", "192.168.1.5"),
         "web": ("tcp", 80, "10.9.0.0/16", "10.9.3.4")}


def rules_body(vm: Vm, seq: int, allowed: frozenset[str]) -> dict[str, Any]:
    """SecurityGroupRulesCmd (sample 50) of ``vm`` with seqNum ``seq``, letting in what
    the RULES named ``allowed`` let in; egress open."""
    from tests.e2e import sgkit

    ingress = [sgkit.rule(proto, port, port, cidr) for name, (proto, port, cidr, _)
               in sorted(RULES.items()) if name in allowed]
    body = sgkit.rules_body(seq, ingress=ingress, egress=[])
    body |= {"vmName": vm.name, "vmId": vm.number, "guestIp": vm_ip(vm),
             "guestMac": vm.nics[0].mac, "vmTO": vm_to(vm, "Running")}
    return body


def plug_body(vm: Vm, nic: Nic, device_id: int) -> dict[str, Any]:
    return {"nic": nic_to(nic, device_id), "instanceName": vm.name, "vmType": "User",
            "contextMap": {}, "wait": 0}


def unplug_body(vm: Vm, nic: Nic, device_id: int) -> dict[str, Any]:
    return {"nic": nic_to(nic, device_id), "instanceName": vm.name, "contextMap": {},
            "wait": 0}


def modify_nic_body(vm: Vm, nic: Nic) -> dict[str, Any]:
    """ModifyVmNicConfigCommand by MAC, as the MS's router code sends it."""
    return {"vmName": vm.name, "vlan": str(nic.vlan) if nic.vlan is not None else "untagged",
            "macAddress": nic.mac, "index": 0, "enable": False, "switchLableName": None,
            "contextMap": {}, "wait": 0}


def migrate_volume_body(volume: Volume, target: str, vm: str | None) -> dict[str, Any]:
    """MigrateVolumeCommand (sample 43): ``volume`` into the pool ``target``."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("43_MigrateVolumeCommand.json"))
    body |= {"volumePath": volume.path, "pool": filer(target), "sourcePool": filer(volume.pool),
             "volumeType": "ROOT" if volume.root else "DATADISK"}
    if vm is None:
        body.pop("attachedVmName")
    else:
        body["attachedVmName"] = vm
    return body


def with_storage_body(vm: Vm, destination: str) -> dict[str, Any]:
    """MigrateWithStorageCommand (sample 42): ``vm`` to ``destination``, each of its
    volumes on the source's local pool to the destination's local pool."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("42_MigrateWithStorageCommand.json"))
    sample = body["volumeToFilerAsList"][0]
    pairs = []
    for volume in (vm.root, *vm.data):
        if volume.pool == SMB:
            continue
        t = copy.deepcopy(sample["t"]) | {
            "id": int(volume.uuid[:8], 16), "name": volume.uuid[:8], "path": volume.path,
            "size": volume.size, "type": "ROOT" if volume.root else "DATADISK",
            "storagePoolType": "Filesystem", "storagePoolUuid": f"{volume.pool}-HypervResource",
            "deviceId": volume.device_id}
        pairs.append({"t": t, "u": filer(destination)})
    return body | {"vm": vm_to(vm, "Running"), "volumeToFilerAsList": pairs,
                   "tgtHost": HOSTS[destination]}
