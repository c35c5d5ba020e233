"""Answers leave in the shapes the management server reads (protocol §2.8, §4.3, §4.5, §13)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack.answers import (
    ANSWER_TYPES,
    Answer,
    CheckVirtualMachineAnswer,
    CopyCmdAnswer,
    CreateObjectAnswer,
    GetHostStatsAnswer,
    GetStorageStatsAnswer,
    GetVmConfigAnswer,
    GetVmStatsAnswer,
    GetVncPortAnswer,
    MaintainAnswer,
    MigrateWithStorageAnswer,
    ModifyStoragePoolAnswer,
    ModifyVmNicConfigAnswer,
    ReadyAnswer,
    SetupAnswer,
    StartAnswer,
    StopAnswer,
)
from hyperv_agent.cloudstack.commands import (
    COMMAND_TYPES,
    CopyCommand,
    StartCommand,
    StartupRoutingCommand,
    StartupStorageCommand,
)
from hyperv_agent.cloudstack.enums import (
    ImageFormat,
    PowerState,
    StoragePoolType,
    StorageResourceType,
)
from hyperv_agent.cloudstack.objects import (
    HostStatsEntry,
    NicDetails,
    StoragePoolInfo,
    TemplateObjectTO,
    VmStatsEntry,
    VolumeObjectTO,
)
from tests.cloudstack.fixtures import (
    REQUESTS,
    STARTUP_REPLY_CSHARP,
    json_contains,
    sample,
    sample_json,
)

VHD_DIR = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
SMB_UNC = "\\\\10.1.1.2\\SMB-Share\\primary"


def _sent(answer: Answer) -> Any:
    return json.loads(codec.encode_answers([answer]))


def _fields(answer: Answer) -> Any:
    ((key, value),) = _sent(answer)[0].items()
    assert key == type(answer).FQCN
    return value


def test_ready_answer_has_no_details_key_when_details_is_none() -> None:
    assert _sent(ReadyAnswer(result=True)) == [
        {"com.cloud.agent.api.ReadyAnswer": {"result": True, "contextMap": {}}}]


def test_setup_answer_says_no_reconnect_when_it_succeeds() -> None:
    assert _sent(SetupAnswer(result=True, details="success - NOP")) == [
        {"com.cloud.agent.api.SetupAnswer": {
            "result": True, "details": "success - NOP", "_reconnect": False, "contextMap": {}}}]


def test_ping_answer_is_the_generic_answer_when_the_command_is_a_ping() -> None:
    answer = Answer(result=True, details="success - NOP for PingRoutingCommand")
    assert _sent(answer) == [{"com.cloud.agent.api.Answer": {
        "result": True, "details": "success - NOP for PingRoutingCommand", "contextMap": {}}}]


def test_maintain_answer_will_migrate_when_it_succeeds() -> None:
    assert _fields(MaintainAnswer(result=True, details="success - NOP for MaintainCommand")) == {
        "result": True, "willMigrate": True, "details": "success - NOP for MaintainCommand",
        "contextMap": {}}


def test_stop_answer_is_minimal_when_vm_is_none() -> None:
    assert _sent(StopAnswer(result=True)) == [
        {"com.cloud.agent.api.StopAnswer": {"result": True, "contextMap": {}}}]


def test_wait_is_written_when_it_is_not_the_default() -> None:
    assert _fields(StopAnswer(result=True, wait_s=20, bypass_host_maintenance=True)) == {
        "result": True, "contextMap": {}, "wait": 20, "bypassHostMaintenance": True}


def test_start_answer_echoes_the_request_vm_without_its_vnc_password_when_it_fails() -> None:
    command = codec.decode_command(names.START_COMMAND, sample("0005_StartCommand.json"))
    assert isinstance(command, StartCommand)
    details = "com.cloud.agent.api.StartCommand fail on exceptioni-2-17-VM: no volume"
    fields = _fields(StartAnswer.failed(details, command))
    wanted = sample_json("0005_StartCommand.json")["vm"]
    assert wanted.pop("vncPassword") and "vncPassword" not in fields["vm"]
    assert (fields["result"], fields["details"]) == (False, details)
    assert json_contains(fields["vm"], wanted)


def test_check_vm_answer_writes_both_state_names_when_state_is_known() -> None:
    assert _fields(CheckVirtualMachineAnswer(result=True, state=PowerState.POWER_ON)) == {
        "result": True, "state": "PowerOn", "powerstate": "PowerOn", "contextMap": {}}


def test_host_stats_answer_matches_section_13_when_stats_are_read() -> None:
    stats = HostStatsEntry(host_id=5, cpu_utilization_percent=3.0, network_read_kb=123456789.0,
                           network_write_kb=98765432.0, total_memory_kb=33476120.0,
                           free_memory_kb=20123456.0)
    assert _fields(GetHostStatsAnswer(result=True, host_stats=stats)) == {
        "result": True, "contextMap": {}, "hostStats": {
            "hostId": 5, "entityType": "host", "cpuUtilization": 3.0, "averageLoad": 0.0,
            "networkReadKBs": 123456789.0, "networkWriteKBs": 98765432.0,
            "totalMemoryKBs": 33476120.0, "freeMemoryKBs": 20123456.0}}


def test_vm_stats_answer_matches_section_13_when_one_vm_is_running() -> None:
    entry = VmStatsEntry(cpu_utilization_percent=2.0, network_read_kb=1.0, network_write_kb=1.0,
                         num_cpus=1)
    assert _fields(GetVmStatsAnswer(result=True, vm_stats_map={"i-2-17-VM": entry})) == {
        "result": True, "contextMap": {}, "vmStatsMap": {"i-2-17-VM": {
            "vmId": 0, "cpuUtilization": 2.0, "networkReadKBs": 1.0, "networkWriteKBs": 1.0,
            "diskReadIOs": 0.0, "diskWriteIOs": 0.0, "diskReadKBs": 0.0, "diskWriteKBs": 0.0,
            "memoryKBs": 0.0, "intFreeMemoryKBs": 0.0, "targetMemoryKBs": 0.0,
            "numCPUs": 1, "entityType": "vm"}}}


def test_storage_stats_answer_writes_old_and_new_names_when_sizes_are_known() -> None:
    answer = GetStorageStatsAnswer(result=True, capacity_bytes=536870912000,
                                   used_bytes=268435456000)
    assert _fields(answer) == {
        "result": True, "contextMap": {}, "capacity": 536870912000, "used": 268435456000,
        "capacityBytes": 536870912000, "usedBytes": 268435456000}


def test_modify_pool_answer_matches_section_13_when_an_smb_pool_is_added() -> None:
    host_path = "/SMB-Share/primary?user=a&password=b&domain=D"
    pool = StoragePoolInfo(host="10.1.1.2", host_path=host_path, local_path=SMB_UNC,
                           pool_type=StoragePoolType.SMB, capacity_bytes=1099511627776,
                           available_bytes=549755813888)
    answer = ModifyStoragePoolAnswer(result=True, pool_info=pool)
    assert _fields(answer) == {
        "result": True, "templateInfo": {}, "contextMap": {}, "datastoreClusterChildren": [],
        "poolInfo": {"host": "10.1.1.2", "hostPath": host_path.replace("=b", "=*****"),
                     "localPath": SMB_UNC,
                     "poolType": "SMB", "capacityBytes": 1099511627776,
                     "availableBytes": 549755813888}}


def test_vnc_port_answer_has_no_context_map_when_like_the_csharp_agent() -> None:
    address = "instanceId=5C0A2C5E-1B7B-4E8C-9E0F-3A6F0B1C2D3E"
    assert _sent(GetVncPortAnswer(result=True, address=address)) == [
        {"com.cloud.agent.api.GetVncPortAnswer": {"result": True, "address": address,
                                                   "port": -9}}]


def test_vm_config_answer_matches_section_13_when_a_router_has_nics() -> None:
    nics = [NicDetails(mac_address="0200512C000E", state=True),
            NicDetails(mac_address="06A2C8000018", vlan_id="261", state=True),
            NicDetails(mac_address="06A2C8000019")]
    assert _fields(GetVmConfigAnswer(result=True, vm_name="r-4-VM", nics=nics)) == {
        "vmName": "r-4-VM", "result": True, "contextMap": {}, "nics": [
            {"macAddress": "0200512C000E", "vlanid": "-1", "state": True},
            {"macAddress": "06A2C8000018", "vlanid": "261", "state": True},
            {"macAddress": "06A2C8000019", "vlanid": "-1", "state": False}]}
    assert _fields(ModifyVmNicConfigAnswer(result=True, vm_name="r-4-VM")) == {
        "vmName": "r-4-VM", "result": True, "contextMap": {}}


def test_create_object_answer_wraps_the_volume_when_it_is_created() -> None:
    uuid = "19ae8e67-cb2c-4ab4-901e-e0b864272b59"
    volume = VolumeObjectTO(uuid=uuid, path=uuid, name="DATA-7", format=ImageFormat.VHDX,
                            size_bytes=5368709120)
    fields = _fields(CreateObjectAnswer(result=True, data=volume))
    assert list(fields["data"]) == [names.VOLUME_OBJECT_TO]
    assert json_contains(fields, {
        "result": True, "contextMap": {}, "data": {names.VOLUME_OBJECT_TO: {
            "uuid": uuid, "path": uuid, "name": "DATA-7", "format": "VHDX", "size": 5368709120}}})


def test_copy_answer_wraps_the_template_and_its_store_when_a_download_succeeds() -> None:
    command = codec.decode_command(
        names.COPY_COMMAND, sample("0016_CopyCommand_template_cifs_to_primary.json"))
    assert isinstance(command, CopyCommand) and isinstance(command.dest_to, TemplateObjectTO)
    done = command.dest_to.model_copy(update={"path": "f00d", "size_bytes": 42})
    new_data = _fields(CopyCmdAnswer(result=True, new_data=done))["newData"]
    (inner,) = new_data.values()
    assert list(new_data) == [names.TEMPLATE_OBJECT_TO]
    assert (inner["path"], inner["size"], inner["format"]) == ("f00d", 42, "VHDX")
    assert list(inner["imageDataStore"]) == [names.PRIMARY_DATA_STORE_TO]


def test_migrate_with_storage_answer_leaves_volumes_plain_when_the_type_is_concrete() -> None:
    answer = MigrateWithStorageAnswer(result=True, volume_tos=[VolumeObjectTO(path="a.vhdx")])
    (volume,) = _fields(answer)["volumeTos"]
    assert volume["path"] == "a.vhdx" and names.VOLUME_OBJECT_TO not in volume


def test_state_report_is_a_bare_array_when_vms_run() -> None:
    report = {"i-2-17-VM": PowerState.POWER_ON, "r-4-VM": PowerState.POWER_ON}
    assert codec.encode_state_report(report) == b'[{"i-2-17-VM":"PowerOn"},{"r-4-VM":"PowerOn"}]'
    assert codec.encode_state_report({}) == b"[]"


def test_state_report_escapes_vm_names_as_json_strings() -> None:
    names_ = ['q"uote\\back', "tab\tnew\nline", "caf\u00e9 \u2603"]
    report = {name: PowerState.POWER_OFF for name in names_}
    body = codec.encode_state_report(report)
    assert body.isascii()
    assert json.loads(body) == [{name: "PowerOff"} for name in names_]


def test_startup_reply_has_every_csharp_member_when_the_request_is_filled_in() -> None:
    request = codec.decode_command(names.STARTUP_COMMAND,
                                   sample("0001_StartupCommand_request.json"))
    assert isinstance(request, StartupRoutingCommand)
    routing, storage = _filled_startup(request)
    reply = json.loads(codec.encode_startup_reply(routing, storage))
    expected = sample_json(STARTUP_REPLY_CSHARP)
    assert [list(element) for element in reply] == [list(element) for element in expected]
    for sent, wanted in zip(reply, expected, strict=True):
        ((_, sent_fields),) = sent.items()
        ((_, wanted_fields),) = wanted.items()
        assert _drop_nulls(wanted_fields).items() <= sent_fields.items()
        # Java primitives the C# agent's test sample leaves out; Gson writes them.
        assert set(sent_fields) - set(wanted_fields) <= {
            "contextMap", "wait", "bypassHostMaintenance", "connectionTransferred",
            "supportsClonedVolumes", "totalSize"}


def _filled_startup(
    request: StartupRoutingCommand,
) -> tuple[StartupRoutingCommand, StartupStorageCommand]:
    nic = {"netmask": "255.255.240.0", "mac": "101F742C6B88"}
    routing = request.model_copy(update={
        "cpus": 8, "speed_mhz": 2130, "memory_bytes": 34359738368,
        "dom0_min_memory_bytes": 2147483648, "caps": "hvm", "private_ip_address": "10.1.1.1",
        "storage_ip_address": "10.1.1.1", "private_netmask": nic["netmask"],
        "private_mac_address": nic["mac"], "storage_netmask": nic["netmask"],
        "storage_mac_address": nic["mac"], "gateway_ip_address": "10.70.176.1"})
    pool = StoragePoolInfo(uuid=request.guid, host="10.1.1.1", local_path=VHD_DIR,
                           host_path=VHD_DIR, pool_type=StoragePoolType.FILESYSTEM,
                           capacity_bytes=536870912000, available_bytes=268435456000)
    storage = StartupStorageCommand(pool_info=pool, guid=request.guid, data_center="1",
                                    resource_type=StorageResourceType.STORAGE_POOL)
    return routing, storage


def _drop_nulls(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: _drop_nulls(value) if isinstance(value, dict) else value
            for key, value in fields.items() if value is not None}


@pytest.mark.parametrize("command", sorted(names.ANSWER_FOR))
def test_failed_answer_uses_the_commands_answer_class_when_a_command_fails(command: str) -> None:
    answer = codec.failed_answer(command, "it broke")
    assert names.ANSWER_FOR[command] == type(answer).FQCN
    fields = _fields(answer)
    assert (fields["result"], fields["details"]) == (False, "it broke")


def test_failed_answer_is_the_generic_answer_when_the_command_has_no_answer_class() -> None:
    for command in (names.STARTUP_COMMAND, "com.cloud.agent.api.NoSuchCommand"):
        assert type(codec.failed_answer(command, "x")) is Answer


def test_answer_table_names_only_modelled_classes_when_checked() -> None:
    assert set(names.ANSWER_FOR) <= set(COMMAND_TYPES)
    assert set(names.ANSWER_FOR.values()) <= set(ANSWER_TYPES)
    assert set(REQUESTS.values()) <= set(names.ANSWER_FOR) | names.SPECIAL_REPLIES
    assert names.DETTACH_COMMAND.endswith(".DettachCommand")
    for fqcn, answer_class in ANSWER_TYPES.items():
        assert fqcn == answer_class.FQCN


def test_nan_statistic_is_written_as_null_when_a_counter_is_broken() -> None:
    entry = VmStatsEntry(cpu_utilization_percent=float("nan"), num_cpus=2)
    sent = _fields(GetVmStatsAnswer(result=True, vm_stats_map={"v": entry}))
    assert sent["vmStatsMap"]["v"]["cpuUtilization"] is None
