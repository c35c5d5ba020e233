"""The management server's bodies for the soak test (``test_soak.py``), built from the
4.22 samples: two hosts of one emulated cluster, each with its local pool, both with one
SMB pool and one cifs image store holding a template and an ISO."""

from __future__ import annotations

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
MIB = 1 << 20
HOSTS = {"HV-A": "10.0.0.1", "HV-B": "10.0.0.2"}  # names and private addresses


def host_config(folder: Path, name: str) -> AgentConfig:
    """Cluster member ``name``: its state in ``folder/<name>``, the SMB pool's share and
    the image store's share mapped to ``folder/primary`` and ``folder/secondary``."""
    config = folder / f"{name}.toml"
    config.write_text(f"""[agent]
local_storage_path = '{LOCAL_PATH}'
[emulator]
host_name = "{name}"
cluster_dir = "{folder / 'cluster'}"
switches = ["vSwitch0"]
[emulator.shares]
'\\\\10.1.1.1\\primary' = '{folder / "primary"}'
'\\\\10.1.1.1\\secondary' = '{folder / "secondary"}'
""")
    return load_config(config, state_dir=folder / name, backend="emulator",
                       private_ip=HOSTS[name])


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
    fat: bool = False  # a FAT (fixed) offering's


@dataclass
class Vm:
    """A VM as the management server records it: where it runs (None: stopped)."""

    name: str
    number: int
    root: Volume
    host: str | None = None
    data: list[Volume] = field(default_factory=list)
    iso: bool = False


def volume_to(volume: Volume, vm: str | None = None) -> dict[str, Any]:
    """The VolumeObjectTO of ``volume`` (sample 21's, on its pool)."""
    to: dict[str, Any] = copy.deepcopy(
        ms422_json("21_AttachCommand.json")["disk"]["data"][VOLUME_TO])
    to |= {"uuid": volume.uuid, "path": volume.path or volume.uuid, "size": volume.size,
           "volumeType": "ROOT" if volume.root else "DATADISK", "name": volume.uuid[:8],
           "deviceId": volume.device_id, "dataStore": store(volume.pool),
           "provisioningType": "FAT" if volume.fat else "THIN"}
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


def template_copy_body(pool: str) -> dict[str, Any]:
    """CopyCommand of sample 12: the template from the image store to ``pool``."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("12_CopyCommand.json"))
    body["srcTO"][TEMPLATE_TO] |= {"path": TEMPLATE_PATH, "imageDataStore": {
        NFS_TO: {"_url": STORE_URL, "_role": "Image"}}}
    body["destTO"][TEMPLATE_TO]["imageDataStore"] = store(pool)
    return body


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
    nic = to["nics"][0]
    nic |= {"mac": f"02:00:4c:5f:{vm.number >> 8:02x}:{vm.number & 0xff:02x}",
            "nicUuid": f"a5e6e3ba-7b1a-4867-964e-{vm.number:012d}",
            "ip": f"10.1.{vm.number >> 8}.{vm.number & 0xff}"}
    return to


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


def ping_body(host: str) -> dict[str, Any]:
    """PingRoutingCommand as the MS's direct-connect resource sends it."""
    return {"hostType": "Routing", "hostId": list(HOSTS).index(host) + 1,
            "_hostVmStateReport": {}, "_gatewayAccessible": True, "_vnetAccessible": True,
            "contextMap": {}, "wait": 0}
