"""Request bodies as a real management server sends them (copied into ``samples/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hyperv_agent.cloudstack import names

SAMPLES = Path(__file__).parent / "samples"

VOLUME, TEMPLATE = names.VOLUME_OBJECT_TO, names.TEMPLATE_OBJECT_TO
# The least each command needs to decode (every other field is optional), and the fields
# a failed answer echoes from it.
BASE_BODIES: dict[str, dict[str, Any]] = {
    names.START_COMMAND: {"vm": {"name": "i-2-5-VM"}},
    names.MIGRATE_WITH_STORAGE_COMMAND: {"vm": {"name": "i-2-5-VM"}},
    names.GET_VNC_PORT_COMMAND: {"name": "i-2-5-VM"},
    names.CHECK_ON_HOST_COMMAND: {"host": {}},
    names.MODIFY_STORAGE_POOL_COMMAND: {"pool": {}},
    names.ATTACH_COMMAND: {"vmName": "i-2-5-VM", "disk": {"type": "ISO"}},
    names.DETTACH_COMMAND: {"vmName": "i-2-5-VM", "disk": {"type": "ISO"}},
    names.COPY_COMMAND: {"srcTO": {TEMPLATE: {}}, "destTO": {TEMPLATE: {}}},
    names.CREATE_OBJECT_COMMAND: {"data": {VOLUME: {}}},
    names.DELETE_COMMAND: {"data": {VOLUME: {}}},
    names.MIGRATE_VOLUME_COMMAND: {"volumePath": "p", "pool": {}},
    names.SECURITY_GROUP_RULES_CMD: {"vmId": 8, "seqNum": 3},
    names.GET_VM_DISK_STATS_COMMAND: {"hostName": "hv-1", "vmNames": ["i-2-5-VM"]},
    names.GET_VM_NETWORK_STATS_COMMAND: {"hostName": "hv-1", "vmNames": ["i-2-5-VM"]},
    names.GET_VOLUME_STATS_COMMAND: {"poolUuid": "p-1", "poolType": "SMB",
                                     "volumeUuids": ["v-1"]},
    names.CREATE_COMMAND: {"pool": {}, "diskCharacteristics": {}},
    names.DESTROY_COMMAND: {"volume": {}},
    names.PRIMARY_STORAGE_DOWNLOAD_COMMAND: {"url": "cifs://10.1.1.2/secondary/t.vhd"},
    **{fqcn: {"vmName": "i-2-5-VM"} for fqcn in (
        names.STOP_COMMAND, names.REBOOT_COMMAND, names.CHECK_VIRTUAL_MACHINE_COMMAND,
        names.GET_VM_CONFIG_COMMAND, names.MODIFY_VM_NIC_CONFIG_COMMAND,
        names.ATTACH_ISO_COMMAND, names.MIGRATE_COMMAND, names.GET_VM_IP_ADDRESS_COMMAND)},
}


# Every request sample and the action (URL) it is POSTed to.
REQUESTS: dict[str, str] = {
    "0001_StartupCommand_request.json": names.STARTUP_COMMAND,
    "0004_HostVmStateReportCommand_request.json": names.HOST_VM_STATE_REPORT_COMMAND,
    "0005_StartCommand.json": names.START_COMMAND,
    "0008_StopCommand_checkBeforeCleanup.json": names.STOP_COMMAND,
    "0010_CreateCommand.json": names.CREATE_COMMAND,
    "0012_DestroyCommand.json": names.DESTROY_COMMAND,
    "0015_PrimaryStorageDownloadCommand.json": names.PRIMARY_STORAGE_DOWNLOAD_COMMAND,
    "0016_CopyCommand_template_cifs_to_primary.json": names.COPY_COMMAND,
    "0017_CopyCommand_template_to_volume.json": names.COPY_COMMAND,
    "0021_ModifyStoragePoolCommand.json": names.MODIFY_STORAGE_POOL_COMMAND,
    "0022_CreateStoragePoolCommand.json": names.CREATE_STORAGE_POOL_COMMAND,
    "0023_MaintainCommand.json": names.MAINTAIN_COMMAND,
    "0024_SetupCommand.json": names.SETUP_COMMAND,
    "0025_GetVmStatsCommand.json": names.GET_VM_STATS_COMMAND,
    "0026_GetStorageStatsCommand.json": names.GET_STORAGE_STATS_COMMAND,
    "0027_GetHostStatsCommand.json": names.GET_HOST_STATS_COMMAND,
}

STARTUP_REPLY_CSHARP = "0002_StartupCommand_response_expected_CSharpTest.json"
PRIMARY_STORE_FRAGMENT = "0029_fragment_PrimaryDataStoreTO.json"
VOLUME_FRAGMENT = "0030_fragment_VolumeObjectTO.json"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_json(name: str) -> Any:
    return json.loads(sample(name))


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def json_contains(sent: Any, wanted: Any) -> bool:
    """Whether the JSON value ``sent`` holds everything ``wanted`` holds: the same scalars,
    lists of the same length holding their counterparts, objects with at least the keys
    of ``wanted`` (Gson writes every Java primitive, so an echo may carry more keys)."""
    if isinstance(wanted, dict):
        return isinstance(sent, dict) and all(
            key in sent and json_contains(sent[key], value) for key, value in wanted.items())
    if isinstance(wanted, list):
        return isinstance(sent, list) and len(sent) == len(wanted) and all(
            json_contains(a, b) for a, b in zip(sent, wanted, strict=True))
    return bool(sent == wanted)


MS_422 = SAMPLES / "ms-4.22"  # bodies as CloudStack 4.22's own classes serialise them


def ms422_json(name: str) -> Any:
    """A request body of ``samples/ms-4.22`` (``10_ModifyStoragePoolCommand.json``)."""
    return json.loads((MS_422 / name).read_bytes())
