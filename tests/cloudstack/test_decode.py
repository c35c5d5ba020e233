"""Every sample body a real management server sends decodes to the right typed command."""

from __future__ import annotations

import json

import pytest

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack.commands import (
    COMMAND_TYPES,
    Command,
    CopyCommand,
    CreateCommand,
    CreateObjectCommand,
    CreateStoragePoolCommand,
    DeleteCommand,
    DestroyCommand,
    GetHostStatsCommand,
    GetStorageStatsCommand,
    GetVmStatsCommand,
    HostVmStateReportCommand,
    MaintainCommand,
    ModifyStoragePoolCommand,
    PrimaryStorageDownloadCommand,
    SetupCommand,
    StartCommand,
    StartupRoutingCommand,
    StopCommand,
)
from hyperv_agent.cloudstack.enums import (
    BroadcastDomainType,
    DataStoreRole,
    HostType,
    HypervisorType,
    ImageFormat,
    StoragePoolType,
    TrafficType,
    VirtualMachineType,
    VolumeType,
)
from hyperv_agent.cloudstack.objects import (
    NfsTO,
    PrimaryDataStoreTO,
    TemplateObjectTO,
    VolumeObjectTO,
)
from tests.cloudstack.fixtures import (
    MS_422,
    PRIMARY_STORE_FRAGMENT,
    REQUESTS,
    VOLUME_FRAGMENT,
    body,
    json_contains,
    sample,
    sample_json,
)

EXPECTED_CLASS = {
    "0001_StartupCommand_request.json": StartupRoutingCommand,
    "0004_HostVmStateReportCommand_request.json": HostVmStateReportCommand,
    "0005_StartCommand.json": StartCommand,
    "0008_StopCommand_checkBeforeCleanup.json": StopCommand,
    "0010_CreateCommand.json": CreateCommand,
    "0012_DestroyCommand.json": DestroyCommand,
    "0015_PrimaryStorageDownloadCommand.json": PrimaryStorageDownloadCommand,
    "0016_CopyCommand_template_cifs_to_primary.json": CopyCommand,
    "0017_CopyCommand_template_to_volume.json": CopyCommand,
    "0021_ModifyStoragePoolCommand.json": ModifyStoragePoolCommand,
    "0022_CreateStoragePoolCommand.json": CreateStoragePoolCommand,
    "0023_MaintainCommand.json": MaintainCommand,
    "0024_SetupCommand.json": SetupCommand,
    "0025_GetVmStatsCommand.json": GetVmStatsCommand,
    "0026_GetStorageStatsCommand.json": GetStorageStatsCommand,
    "0027_GetHostStatsCommand.json": GetHostStatsCommand,
}
POOL_DIR = "C:\\var\\test\\storagepool"
POOL_UUID = "5fe2bad3-d785-394e-9949-89786b8a63d2"


def _decode(name: str) -> Command:
    return codec.decode_command(REQUESTS[name], sample(name))


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_sample_decodes_to_its_class_when_posted_to_its_action(name: str) -> None:
    assert type(_decode(name)) is EXPECTED_CLASS[name]


def test_start_command_carries_the_vm_when_sample_0005() -> None:
    command = _decode("0005_StartCommand.json")
    assert isinstance(command, StartCommand)
    vm = command.vm
    assert (vm.name, vm.id, vm.type) == ("i-2-17-VM", 17, VirtualMachineType.USER)
    assert (vm.cpus, vm.speed_mhz) == (1, 500)
    assert vm.min_ram_bytes == vm.max_ram_bytes == 512 * 1024 * 1024
    assert vm.vnc_password == "31f82f29aff646eb"
    assert (vm.boot_args, vm.params, vm.enable_ha) == ("", {}, False)
    assert [disk.type for disk in vm.disks] == [VolumeType.ROOT, VolumeType.ISO]
    assert [disk.disk_seq for disk in vm.disks] == [0, 1]


def test_start_command_unwraps_the_root_volume_when_sample_0005() -> None:
    command = _decode("0005_StartCommand.json")
    assert isinstance(command, StartCommand)
    root, iso = command.vm.disks
    assert iso.data is None
    volume = root.data
    assert isinstance(volume, VolumeObjectTO)
    assert (volume.uuid, volume.name) == ("19ae8e67-cb2c-4ab4-901e-e0b864272b59", "TestVolumeTemp")
    assert (volume.size_bytes, volume.format, volume.volume_type) == (
        52428800, ImageFormat.VHDX, VolumeType.ROOT)
    store = volume.data_store
    assert isinstance(store, PrimaryDataStoreTO)
    assert (store.uuid, store.pool_type, store.path) == (POOL_UUID, StoragePoolType.FILESYSTEM,
                                                         POOL_DIR)


def test_start_command_reads_the_nic_when_sample_0005() -> None:
    command = _decode("0005_StartCommand.json")
    assert isinstance(command, StartCommand)
    (nic,) = command.vm.nics
    assert (nic.device_id, nic.mac, nic.ip, nic.netmask) == (
        0, "02:00:51:2c:00:0e", "10.1.1.67", "255.255.255.0")
    assert (nic.broadcast_uri, nic.isolation_uri) == ("vlan://261", "vlan://261")
    assert (nic.type, nic.broadcast_type) == (TrafficType.GUEST, BroadcastDomainType.VLAN)
    assert (nic.network_rate_mbps, nic.default_nic, nic.uuid) == (
        100, True, "99cb4813-23af-428c-a87a-2d1899be4f4b")


def test_undeclared_fields_are_kept_when_the_model_does_not_name_them() -> None:
    command = _decode("0005_StartCommand.json")
    assert isinstance(command, StartCommand)
    assert command.vm.model_extra == {"rebootOnCrash": False}
    store = command.vm.disks[0].data
    assert isinstance(store, VolumeObjectTO) and isinstance(store.data_store, PrimaryDataStoreTO)
    assert store.data_store.type == "Filesystem"  # a Java field now, not an extra


def test_cifs_url_is_unescaped_when_gson_wrote_html_escapes() -> None:
    raw = sample("0016_CopyCommand_template_cifs_to_primary.json")
    assert b"\\u003d" in raw and b"\\u0026" in raw
    command = codec.decode_command(names.COPY_COMMAND, raw)
    assert isinstance(command, CopyCommand)
    source = command.src_to
    assert isinstance(source, TemplateObjectTO)
    assert source.path == "template/tmpl/2/201/6dda6631-4daa-3150-a49a-d5a4b0a4c4b6.vhd"
    store = source.image_data_store
    assert isinstance(store, NfsTO)
    assert store.url == "cifs://10.1.1.1/secondary?user=administrator&password=1pass%40word1"
    assert store.role is DataStoreRole.IMAGE


def test_copy_command_names_both_ends_when_template_goes_to_primary() -> None:
    command = _decode("0016_CopyCommand_template_cifs_to_primary.json")
    assert isinstance(command, CopyCommand)
    destination = command.dest_to
    assert isinstance(destination, TemplateObjectTO)
    assert destination.path is None
    assert (destination.format, destination.hvm, command.wait_s) == (ImageFormat.VHDX, True, 10800)
    assert isinstance(destination.image_data_store, PrimaryDataStoreTO)
    assert command.cache_to is None


def test_copy_command_reads_the_volume_when_template_becomes_a_volume() -> None:
    command = _decode("0017_CopyCommand_template_to_volume.json")
    assert isinstance(command, CopyCommand)
    assert isinstance(command.src_to, TemplateObjectTO)
    volume = command.dest_to
    assert isinstance(volume, VolumeObjectTO)
    assert (volume.name, volume.vm_name, volume.size_bytes, volume.format) == (
        "ROOT-5", "i-3-5-VM", 52428800, None)
    assert isinstance(volume.data_store, PrimaryDataStoreTO)


def test_startup_command_is_the_routing_command_when_enveloped() -> None:
    command = _decode("0001_StartupCommand_request.json")
    assert isinstance(command, StartupRoutingCommand)
    assert (command.type, command.hypervisor_type) == (HostType.ROUTING, HypervisorType.HYPERV)
    assert (command.data_center, command.pod, command.cluster, command.name) == (
        "1", "1", "1", "localhost")
    assert command.guid == "16f85622-4508-415e-b13a-49a39bb14e4d"
    assert (command.private_ip_address, command.storage_ip_address) == ("1", "1")
    assert command.host_details == {
        "com.cloud.network.Networks.RouterPrivateIpStrategy": "HostLocal"}
    assert (command.cpus, command.memory_bytes, command.version) == (0, 0, "4.2.0")
    assert command.model_extra == {"vms": {}}


def test_stop_command_reads_the_vm_name_when_sample_0008() -> None:
    command = _decode("0008_StopCommand_checkBeforeCleanup.json")
    assert isinstance(command, StopCommand)
    assert (command.vm_name, command.check_before_cleanup, command.is_proxy) == (
        "i-2-17-VM", False, False)
    assert command.vm is None


def test_legacy_create_command_reads_pool_and_profile_when_sample_0010() -> None:
    command = _decode("0010_CreateCommand.json")
    assert isinstance(command, CreateCommand)
    assert (command.vol_id, command.template_url) == (10, "TestCopiedLocalTemplate.vhdx")
    assert (command.pool.type, command.pool.path, command.pool.port) == (
        StoragePoolType.FILESYSTEM, POOL_DIR, 0)
    profile = command.disk_characteristics
    assert (profile.type, profile.name, profile.size_bytes, profile.tags) == (
        VolumeType.ROOT, "ROOT-9", 0, [])
    assert (profile.hyper_type, profile.use_local_storage) == (HypervisorType.HYPERV, True)


def test_legacy_destroy_command_reads_the_volume_when_sample_0012() -> None:
    command = _decode("0012_DestroyCommand.json")
    assert isinstance(command, DestroyCommand)
    volume = command.volume
    assert (volume.path, volume.mount_point, volume.name) == (
        "storagepool", POOL_DIR, "TestVolumeTemp")
    assert (volume.storage_pool_type, volume.storage_pool_uuid) == (
        StoragePoolType.FILESYSTEM, POOL_UUID)
    assert command.vm_name is None


def test_primary_storage_download_reads_url_and_format_when_sample_0015() -> None:
    command = _decode("0015_PrimaryStorageDownloadCommand.json")
    assert isinstance(command, PrimaryStorageDownloadCommand)
    assert command.url.endswith("/af39aa7f-2b12-37e1-86d3-e23f2f005101.vhdx")
    assert (command.format, command.local_path, command.pool_uuid, command.wait_s) == (
        ImageFormat.VHDX, POOL_DIR, POOL_UUID, 10800)
    assert command.primary_storage_url == "nfs://10.1.1.1E:\\Disks\\Disks"


def test_storage_pool_commands_read_pool_when_samples_0021_0022() -> None:
    modify = _decode("0021_ModifyStoragePoolCommand.json")
    assert isinstance(modify, ModifyStoragePoolCommand)
    assert (modify.add, modify.local_path) == (True, ".\\Dummy")
    assert (modify.pool.uuid, modify.pool.host, modify.pool.port, modify.pool.user_info) == (
        "3c2e0b0a-5f1e-4c6b-9a52-0d9b8f6f2b11", "127.0.0.1", -1, "")
    create = _decode("0022_CreateStoragePoolCommand.json")
    assert isinstance(create, CreateStoragePoolCommand)
    assert (create.local_path, create.pool) == ("NULL", None)


def test_host_commands_read_their_fields_when_samples_0023_to_0027() -> None:
    setup = _decode("0024_SetupCommand.json")
    assert isinstance(setup, SetupCommand) and setup.need_setup and not setup.multipath
    vm_stats = _decode("0025_GetVmStatsCommand.json")
    assert isinstance(vm_stats, GetVmStatsCommand)
    assert (vm_stats.vm_names, vm_stats.host_guid) == (["FakeVM"], "FAKEguid")
    storage = _decode("0026_GetStorageStatsCommand.json")
    assert isinstance(storage, GetStorageStatsCommand)
    assert (storage.pool_uuid, storage.pool_type, storage.local_path) == (
        POOL_UUID, StoragePoolType.FILESYSTEM, ".\\var\\test\\storagepool")
    host = _decode("0027_GetHostStatsCommand.json")
    assert isinstance(host, GetHostStatsCommand)
    assert (host.host_id, host.host_name) == (5, "CC-SVR11")


def test_wrapped_fragments_decode_when_embedded_in_commands() -> None:
    volume = sample_json(VOLUME_FRAGMENT)
    store = sample_json(PRIMARY_STORE_FRAGMENT)
    create = codec.decode_command(names.CREATE_OBJECT_COMMAND, body({"data": volume}))
    delete = codec.decode_command(names.DELETE_COMMAND, body({"data": volume}))
    stats = codec.decode_command(names.GET_STORAGE_STATS_COMMAND, body({"store": store}))
    assert isinstance(create, CreateObjectCommand) and isinstance(delete, DeleteCommand)
    assert isinstance(create.data, VolumeObjectTO) and create.data == delete.data
    assert isinstance(stats, GetStorageStatsCommand)
    assert isinstance(stats.store, PrimaryDataStoreTO) and stats.store.id == 201


def test_body_is_read_as_latin1_when_not_utf8() -> None:
    raw = '{"vmName":"i-2-17-VM-\u00e9"}'.encode("latin-1")
    command = codec.decode_command(names.STOP_COMMAND, raw)
    assert isinstance(command, StopCommand)
    assert command.vm_name == "i-2-17-VM-\u00e9"


def test_any_command_decodes_when_sent_in_an_envelope() -> None:
    inner = sample_json("0008_StopCommand_checkBeforeCleanup.json")
    bare = codec.decode_command(names.STOP_COMMAND, body(inner))
    wrapped = codec.decode_command(names.STOP_COMMAND, body({names.STOP_COMMAND: inner}))
    enveloped = codec.decode_command(names.STOP_COMMAND, body([{names.STOP_COMMAND: inner}]))
    assert bare == wrapped == enveloped


def test_null_member_reads_as_absent_when_gson_would_skip_it() -> None:
    command = codec.decode_command(names.STOP_COMMAND, b'{"vmName":"v","vm":null,"wait":null}')
    assert isinstance(command, StopCommand)
    assert (command.vm, command.wait_s) == (None, 0)


def test_unknown_enum_name_is_kept_when_the_ms_is_newer() -> None:
    raw = body({"vm": {"name": "v", "type": "SharedFsVm",
                       "disks": [{"type": "DATADISK"}, {"type": "CONFIGDRIVE"}]}})
    command = codec.decode_command(names.START_COMMAND, raw)
    assert isinstance(command, StartCommand)
    assert command.vm.type == "SharedFsVm"
    assert [disk.type for disk in command.vm.disks] == [VolumeType.DATADISK, "CONFIGDRIVE"]
    assert b'"type":"CONFIGDRIVE"' in codec.encode_command(command)


def test_numbers_are_read_as_text_when_the_java_field_is_a_string() -> None:
    command = codec.decode_command(names.STOP_COMMAND, b'{"vmName": 17}')
    assert isinstance(command, StopCommand)
    assert command.vm_name == "17"


def test_every_model_is_registered_under_its_own_class_name() -> None:
    for fqcn, command_class in COMMAND_TYPES.items():
        assert fqcn == command_class.FQCN
    assert codec.is_known(names.START_COMMAND)
    assert codec.is_known(names.HOST_VM_STATE_REPORT_COMMAND)
    assert not codec.is_known(names.STARTUP_ROUTING_COMMAND)
    assert not codec.is_known("com.cloud.agent.api.NoSuchCommand")


def test_repr_hides_credentials_when_a_command_is_logged() -> None:
    copy = _decode("0016_CopyCommand_template_cifs_to_primary.json")
    start = _decode("0005_StartCommand.json")
    assert "1pass%40word1" not in repr(copy)
    assert "31f82f29aff646eb" not in repr(start)


MS_422_ACTIONS = {  # every body of samples/ms-4.22 and the action it is POSTed to
    "02_StartupCommand.json": names.STARTUP_COMMAND,
    "10_ModifyStoragePoolCommand.json": names.MODIFY_STORAGE_POOL_COMMAND,
    "12_CopyCommand.json": names.COPY_COMMAND,
    "13_CopyCommand.json": names.COPY_COMMAND,
    "14_CreateObjectCommand.json": names.CREATE_OBJECT_COMMAND,
    "15_StartCommand.json": names.START_COMMAND,
    "19_GetVmStatsCommand.json": names.GET_VM_STATS_COMMAND,
    "21_AttachCommand.json": names.ATTACH_COMMAND,
    "24_StopCommand.json": names.STOP_COMMAND,
    "25_DeleteCommand.json": names.DELETE_COMMAND,
    "30_StartCommand_root_on_SMB_pool.json": names.START_COMMAND,
    "31_ModifyStoragePoolCommand_SMB.json": names.MODIFY_STORAGE_POOL_COMMAND,
    "40_PrepareForMigrationCommand.json": names.PREPARE_FOR_MIGRATION_COMMAND,
    "41_MigrateCommand.json": names.MIGRATE_COMMAND,
    "42_MigrateWithStorageCommand.json": names.MIGRATE_WITH_STORAGE_COMMAND,
    "43_MigrateVolumeCommand.json": names.MIGRATE_VOLUME_COMMAND,
    "50_SecurityGroupRulesCmd.json": names.SECURITY_GROUP_RULES_CMD,
    "51_NetworkRulesVmSecondaryIpCommand.json": names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND,
    "52_NetworkRulesSystemVmCommand.json": names.NETWORK_RULES_SYSTEM_VM_COMMAND,
    "53_CleanupNetworkRulesCmd.json": names.CLEANUP_NETWORK_RULES_CMD,
}


def test_every_ms_422_body_is_a_sample_here() -> None:
    assert sorted(p.name for p in MS_422.glob("*.json")) == sorted(MS_422_ACTIONS)


@pytest.mark.parametrize(("name", "fqcn"), [(n, f) for n, f in MS_422_ACTIONS.items() if f])
def test_ms_422_body_decodes_with_every_field_kept_when_sent_as_the_ms_sends_it(
    name: str, fqcn: str
) -> None:
    raw = (MS_422 / name).read_bytes()
    command = codec.decode_command(fqcn, raw)
    sent = json.loads(raw)
    sent = sent[0][names.STARTUP_ROUTING_COMMAND] if isinstance(sent, list) else sent
    again = json.loads(codec.encode_command(command))
    assert json_contains(again, sent)  # nothing the MS sent is lost or renamed
    assert not command.model_extra, command.model_extra  # every field is a declared one


@pytest.mark.parametrize(("wait", "answer_s"), [(0, 1800.0), (None, 1800.0), (-1, 1800.0),
                                                ("30", 30.0), (30.0, 30.0)])
def test_wait_is_what_the_ms_waits_as_gson_reads_it(wait: object, answer_s: float) -> None:
    """Gson leaves a null ``wait`` at 0, and the MS waits its default for 0 or less: the
    command is bounded by 1800 s, not by nothing, as a body without a ``wait`` is."""
    body = json.dumps({"vmName": "i-2-5-VM", "wait": wait}).encode()
    assert codec.decode_command(names.STOP_COMMAND, body).answer_wait_s == answer_s
    assert codec.decode_command(names.STOP_COMMAND, b'{"vmName": "i-2-5-VM"}'
                                ).answer_wait_s is None
