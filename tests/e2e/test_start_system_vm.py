"""StartCommand for system VMs over real HTTPS (protocol §9.2–§9.4): the system VM ISO from the
image store, spare router NICs, boot arguments too long for one KVP item, and processor
limit and weight from the VM's speeds."""

from __future__ import annotations

import base64
import copy
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from tests.e2e import systemvm_guest as guest
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.emulator.kit import devices, ok, request_state

START = "com.cloud.agent.api.StartCommand"
START_ANSWER = "com.cloud.agent.api.StartAnswer"
GET_CONFIG = "com.cloud.agent.api.GetVmConfigCommand"
MODIFY_NIC = "com.cloud.agent.api.ModifyVmNicConfigCommand"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
SECONDARY = "cifs://10.1.1.2/secondary?user=admin&password=s3cret&domain=LAB"
SHARE = "\\\\10.1.1.2\\secondary"
ISO_NAME = "systemvm-4.2.0.iso"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
KEY_BYTES, VALUE_BYTES = 512, 2048  # one record of the guest's .kvp_pool_0
ROUTER_MACS = ("0e:00:a9:fe:01:5b", "06:5e:4c:00:00:0c", "02:00:1c:b2:00:02")
SPARE_MACS = tuple(f"06:a2:c8:00:00:{n:02x}" for n in range(0x19, 0x1e))
MB = 1024 * 1024


# --- fixtures and bodies ------------------------------------------------------------------


def _serve(tmp_path: Path, secondary: Path) -> AbstractAsyncContextManager[Running]:
    return serving(config_with_shares(tmp_path, {SHARE: secondary}))


@pytest.fixture
def secondary(tmp_path: Path) -> Path:
    """The image store's folder, with ``systemvm\\systemvm-4.2.0.iso``."""
    folder = tmp_path / "secondary" / "systemvm"
    folder.mkdir(parents=True)
    (folder / ISO_NAME).write_bytes(b"\0" * 4096)
    (folder / "readme.txt").write_text("not an ISO")
    return folder.parent


@pytest.fixture
async def agent(tmp_path: Path, secondary: Path) -> AsyncIterator[Running]:
    """The agent with the emulated share \\\\10.1.1.2\\secondary mapped to ``secondary``."""
    async with _serve(tmp_path, secondary) as running:
        yield running


def _volume(running: Running, name: str) -> dict[str, Any]:
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    vhd.create(folder / f"{name}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
    return {"type": "ROOT", "diskSeq": 0, "data": {VOLUME_TO: {
        "uuid": name, "volumeType": "ROOT", "format": "VHDX", "dataStore": {STORE_TO: {
            "uuid": "5fe2bad3-d785-394e-9949-89786b8a63d2", "host": "10.1.1.1",
            "poolType": "Filesystem", "path": "C:\\pool", "port": 0}}}}}


def _nic(device_id: int, mac: str, *, vlan: str = "vlan://untagged", spare: bool = False,
         ip: str = "10.1.1.67") -> dict[str, Any]:
    return {"deviceId": device_id, "mac": mac, "type": "Public" if spare else "Guest",
            "ip": "0.0.0.0" if spare else ip,
            "netmask": "255.255.255.255" if spare else "255.255.255.0",
            "broadcastType": "Vlan", "broadcastUri": vlan, "isolationUri": vlan,
            "name": "External", "defaultNic": device_id == 0}


def _body(running: Running, name: str = "s-1-VM", *, kind: str = "SecondaryStorageVm",
          secondary: str | None = SECONDARY, **vm: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "vm": {"id": 1, "name": name, "uuid": "3f6d1a2e-7c1b-4d3e-9a8f-0b1c2d3e4f50",
               "type": kind, "cpus": 1, "speed": 500,
               "minRam": 256 * MB, "maxRam": 256 * MB, "limitCpuUse": False,
               "bootArgs": f" template=domP type=secstorage name={name}",
               "disks": [_volume(running, f"root-{name}")],
               "nics": [_nic(0, ROUTER_MACS[0])]},
        "contextMap": {}, "wait": 0}
    if secondary is not None:
        body["secondaryStorage"] = secondary
    body["vm"].update(vm)
    return body


def _router_body(running: Running, boot_args: str | None = None) -> dict[str, Any]:
    """A router padded to 8 NICs as HypervGuru pads it: 3 in use, 5 spare public NICs."""
    nics = [_nic(0, ROUTER_MACS[0], ip="169.254.1.91"), _nic(1, ROUTER_MACS[1]),
            _nic(2, ROUTER_MACS[2], vlan="vlan://300", ip="172.16.0.5")]
    nics += [_nic(3 + n, mac, vlan="vlan://300", spare=True) for n, mac in enumerate(SPARE_MACS)]
    macs = "|".join(nic["mac"] for nic in nics)
    args = boot_args or " template=domP name=r-4-VM eth0ip=169.254.1.91 type=router"
    return _body(running, "r-4-VM", kind="DomainRouter", bootArgs=f"{args} nic_macs={macs}",
                 nics=nics)


async def _answer(running: Running, body: dict[str, Any]) -> dict[str, Any]:
    key, answer = await running.answer(START, body)
    assert key == START_ANSWER
    return answer


async def _vm(cim: EmulatorCim, name: str) -> ObjectPath:
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)
                                       & wql.eq("Caption", "Virtual Machine")))
    assert vm.path is not None
    return vm.path


async def _vm_count(cim: EmulatorCim) -> int:
    return len(await cim.query(wql.select("Msvm_ComputerSystem",
                                          wql.eq("Caption", "Virtual Machine"))))


async def _dvds(cim: EmulatorCim, vm: ObjectPath) -> dict[tuple[str, int], str]:
    """Every DVD drive by (bus, slot), with the ISO in it ("" when empty)."""
    rasd = await devices(cim, vm, "Msvm_ResourceAllocationSettingData")
    media = {ObjectPath.parse(str(m["Parent"])): m.strings("HostResource")[0]
             for m in await devices(cim, vm, "Msvm_StorageAllocationSettingData")}
    buses = {c.path: f"ide{c['Address']}" if c["ResourceSubType"] == IDE else "scsi"
             for c in rasd if c["ResourceType"] in (5, 6)}
    return {(buses[ObjectPath.parse(str(d["Parent"]))], int(str(d["AddressOnParent"]))):
            str(media.get(d.path, "")) if d.path is not None else ""
            for d in rasd if d["ResourceSubType"] == DVD}


async def _kvp(cim: EmulatorCim, vm: ObjectPath) -> dict[str, str]:
    (settings,) = await devices(cim, vm, "Msvm_KvpExchangeComponentSettingData")
    items = [cim.parse_embedded(text) for text in settings.strings("HostExchangeItems")]
    return {str(item["Name"]): str(item["Data"]) for item in items}


def _guest_words(items: dict[str, str]) -> list[str]:
    """What a system VM reads: its .kvp_pool_0 (records of a 512-byte key and a 2048-byte
    value, UTF-8, NUL-padded; longer text is cut) copied as its command line, NULs
    dropped, split into words."""
    pool = b"".join(key.encode()[:KEY_BYTES - 1].ljust(KEY_BYTES, b"\0")
                    + value.encode()[:VALUE_BYTES - 1].ljust(VALUE_BYTES, b"\0")
                    for key, value in items.items())
    return pool.replace(b"\0", b"").decode().split()


async def _processor(cim: EmulatorCim, vm: ObjectPath) -> tuple[int, int, int]:
    (processor,) = await devices(cim, vm, "Msvm_ProcessorSettingData")
    return (int(processor.integer("Limit") or 0), int(processor.integer("Reservation") or 0),
            int(processor.integer("Weight") or 0))


# --- the system VM ISO (protocol §9.3) ----------------------------------------------------


async def test_start_inserts_system_vm_iso_on_ide1_when_store_has_exactly_one(
    agent: Running,
) -> None:
    answer = await _answer(agent, _body(agent))
    assert answer["result"] is True, answer
    iso = f"{SHARE}\\systemvm\\{ISO_NAME}"
    assert iso in answer["details"] and "s3cret" not in answer["details"]
    vm = await _vm(agent.emulator, "s-1-VM")
    assert await _dvds(agent.emulator, vm) == {("ide1", 0): iso}


async def test_start_fills_the_empty_dvd_drive_when_the_vm_asks_for_one(agent: Running) -> None:
    body = _body(agent, "v-2-VM", kind="ConsoleProxy")
    body["vm"]["disks"].append({"type": "ISO", "diskSeq": 3})
    assert (await _answer(agent, body))["result"] is True
    vm = await _vm(agent.emulator, "v-2-VM")
    assert await _dvds(agent.emulator, vm) == {("ide1", 0): f"{SHARE}\\systemvm\\{ISO_NAME}"}


async def test_start_puts_system_vm_iso_on_next_scsi_slot_when_generation_is_2(
    agent: Running,
) -> None:
    assert (await _answer(agent, _body(agent, bootType="UEFI")))["result"] is True
    vm = await _vm(agent.emulator, "s-1-VM")
    assert await _dvds(agent.emulator, vm) == {("scsi", 1): f"{SHARE}\\systemvm\\{ISO_NAME}"}


async def test_start_finds_system_vm_by_name_when_type_is_missing(agent: Running) -> None:
    body = _body(agent, "r-9-VM")
    del body["vm"]["type"]
    assert (await _answer(agent, body))["result"] is True
    vm = await _vm(agent.emulator, "r-9-VM")
    assert list((await _dvds(agent.emulator, vm)).values()) == [
        f"{SHARE}\\systemvm\\{ISO_NAME}"]
    assert set(await _kvp(agent.emulator, vm)) == {"cloudstack-vm-userdata"}


async def test_start_adds_no_iso_when_vm_is_a_user_vm(agent: Running) -> None:
    answer = await _answer(agent, _body(agent, "i-2-3-VM", kind="User", bootArgs=""))
    assert (answer["result"], answer.get("details")) == (True, None)
    vm = await _vm(agent.emulator, "i-2-3-VM")
    assert await _dvds(agent.emulator, vm) == {}
    assert await _kvp(agent.emulator, vm) == {}


@pytest.mark.parametrize(("isos", "expected"), [
    ((), "0 systemvm*.iso files"),
    (("systemvm-4.2.0.iso", "SystemVM-4.3.0.ISO"), "2 systemvm*.iso files"),
])
async def test_start_runs_without_iso_and_says_why_when_store_has_none_or_several(
    tmp_path: Path, isos: tuple[str, ...], expected: str,
) -> None:
    store = tmp_path / "store"
    (store / "systemvm").mkdir(parents=True)
    for name in isos:
        (store / "systemvm" / name).write_bytes(b"\0" * 2048)
    async with _serve(tmp_path, store) as running:
        answer = await _answer(running, _body(running))
        assert answer["result"] is True, answer
        assert expected in answer["details"] and "started without" in answer["details"]
        assert await _dvds(running.emulator, await _vm(running.emulator, "s-1-VM")) == {}


async def test_start_runs_without_iso_when_store_has_no_systemvm_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty").mkdir()
    async with _serve(tmp_path, tmp_path / "empty") as running:
        answer = await _answer(running, _body(running))
        assert answer["result"] is True, answer
        assert "cannot be listed" in answer["details"]


async def test_start_runs_without_iso_when_secondary_storage_is_not_cifs(
    agent: Running,
) -> None:
    answer = await _answer(agent, _body(agent, secondary="nfs://10.1.1.2/export/secondary"))
    assert answer["result"] is True
    assert "no cifs:// secondaryStorage" in answer["details"]
    assert await _dvds(agent.emulator, await _vm(agent.emulator, "s-1-VM")) == {}


async def test_start_fails_and_creates_nothing_when_secondary_storage_url_is_bad(
    agent: Running,
) -> None:
    answer = await _answer(agent, _body(agent, secondary="cifs://bad host/x?password=s3cret"))
    assert answer["result"] is False
    assert answer["details"].startswith("StartCommand failed: ")
    assert "s3cret" not in answer["details"]
    assert await _vm_count(agent.emulator) == 0


# --- spare router NICs (protocol §9.4) ----------------------------------------------------


async def test_start_leaves_spare_router_nics_disconnected_when_router_has_eight_nics(
    agent: Running,
) -> None:
    cim = agent.emulator
    answer = await _answer(agent, _router_body(agent))
    assert answer["result"] is True, answer
    vm = await _vm(cim, "r-4-VM")
    ports = await devices(cim, vm, "Msvm_EthernetPortAllocationSettingData")
    assert sorted(int(p.integer("EnabledState") or 0) for p in ports) == [2] * 3 + [3] * 5
    vlans = await devices(cim, vm, "Msvm_EthernetSwitchPortVlanSettingData")
    assert [v.integer("AccessVlanId") for v in vlans] == [300]  # the public NIC only
    _, config = await agent.answer(GET_CONFIG, {"vmName": "r-4-VM", "contextMap": {}})
    spares = [mac.replace(":", "").upper() for mac in SPARE_MACS]
    assert config["nics"][3:] == [{"macAddress": mac, "vlanid": "-1", "state": False}
                                  for mac in spares]
    assert [nic["state"] for nic in config["nics"][:3]] == [True] * 3
    assert config["nics"][2]["vlanid"] == "300"


async def test_modify_vm_nic_config_wires_a_spare_when_router_was_started_with_spares(
    agent: Running,
) -> None:
    assert (await _answer(agent, _router_body(agent)))["result"] is True
    _, changed = await agent.answer(MODIFY_NIC, {
        "vmName": "r-4-VM", "vlan": "301", "macAddress": None, "index": 3, "enable": True,
        "switchLableName": "External", "contextMap": {}})
    assert changed["result"] is True, changed
    _, config = await agent.answer(GET_CONFIG, {"vmName": "r-4-VM", "contextMap": {}})
    assert config["nics"][3] == {"macAddress": "06A2C8000019", "vlanid": "301", "state": True}
    assert [nic["state"] for nic in config["nics"][4:]] == [False] * 4


# --- a secondary storage VM's NICs as an advanced zone gives them -------------------------


def _ssvm_nics(storage_uri: str | None) -> list[dict[str, Any]]:
    """The NICs of s-1-VM as 4.22 builds them: public (PublicNetworkGuru), control
    (link-local, no URI), management (PodBasedNetworkGuru: Native, ``vlan://`` of the pod's
    VLAN) and storage (StorageNetworkGuru: ``storage://<vlan>``, no isolationUri)."""
    def nic(device_id: int, mac: str, kind: str, broadcast: str, uri: str | None,
            ip: str) -> dict[str, Any]:
        body = {"deviceId": device_id, "mac": mac, "type": kind, "broadcastType": broadcast,
                "ip": ip, "netmask": "255.255.255.0", "name": "External",
                "defaultNic": device_id == 0}
        if uri is not None:
            body["broadcastUri"] = uri
        return body
    public = nic(0, "1e:00:3f:00:00:07", "Public", "Vlan", "vlan://50", "172.16.0.7")
    public["isolationUri"] = "vlan://50"
    return [public,
            nic(1, "0e:00:a9:fe:02:11", "Control", "LinkLocal", None, "169.254.2.17"),
            nic(2, "1e:00:d1:00:00:2a", "Management", "Native", "vlan://20", "10.1.1.42"),
            nic(3, "1e:00:e5:00:00:09", "Storage", "Storage", storage_uri, "10.2.2.9")]


async def test_start_tags_the_storage_nic_with_its_vlan_when_storage_network_has_one(
    agent: Running,
) -> None:
    answer = await _answer(agent, _body(agent, nics=_ssvm_nics("storage://120")))
    assert answer["result"] is True, answer
    _, config = await agent.answer(GET_CONFIG, {"vmName": "s-1-VM", "contextMap": {}})
    assert [(nic["vlanid"], nic["state"]) for nic in config["nics"]] == [
        ("50", True), ("-1", True), ("20", True), ("120", True)]


async def test_start_leaves_the_storage_nic_untagged_when_storage_network_has_no_vlan(
    agent: Running,
) -> None:
    answer = await _answer(agent, _body(agent, nics=_ssvm_nics(None)))
    assert answer["result"] is True, answer
    _, config = await agent.answer(GET_CONFIG, {"vmName": "s-1-VM", "contextMap": {}})
    assert [nic["vlanid"] for nic in config["nics"]] == ["50", "-1", "20", "-1"]


# --- boot arguments longer than one KVP item (protocol §9.2) ------------------------------


def _long_args(words: int) -> str:
    return " template=domP name=r-4-VM type=router" + "".join(
        f" dns{n}=10.{n // 250}.{n % 250}.1" for n in range(words))


async def test_start_splits_long_boot_args_into_items_the_guest_reads_whole(
    agent: Running,
) -> None:
    body = _router_body(agent, _long_args(200))
    args = body["vm"]["bootArgs"]
    assert len(args) > 3000
    answer = await _answer(agent, body)
    assert answer["result"] is True, answer
    assert "KVP items" in answer["details"]
    items = await _kvp(agent.emulator, await _vm(agent.emulator, "r-4-VM"))
    assert len(items) >= 3 and "cloudstack-vm-userdata" in items
    assert all(len(value) <= 1023 and value.startswith(" ") and value.endswith(" ")
               for value in items.values())
    words = [w for w in _guest_words(items) if not w.startswith("cloudstack-vm-userdata")]
    assert words == args.split()


async def test_start_sends_boot_args_as_one_item_when_they_fit(agent: Running) -> None:
    body = _router_body(agent)
    assert (await _answer(agent, body))["result"] is True
    items = await _kvp(agent.emulator, await _vm(agent.emulator, "r-4-VM"))
    assert items == {"cloudstack-vm-userdata": body["vm"]["bootArgs"]}
    assert _guest_words(items)[1:] == body["vm"]["bootArgs"].split()


async def test_start_splits_by_utf8_bytes_when_boot_args_are_not_ascii(agent: Running) -> None:
    args = "".join(f" n{n}={'€' * 30}" for n in range(28))  # 3 bytes of UTF-8 per €
    assert len(args) <= 1023 and len(args.encode()) > 2047
    body = _body(agent, bootArgs=args)
    assert (await _answer(agent, body))["result"] is True
    items = await _kvp(agent.emulator, await _vm(agent.emulator, "s-1-VM"))
    assert len(items) == 2 and all(len(v.encode()) <= 2047 for v in items.values())
    words = [w for w in _guest_words(items) if not w.startswith("cloudstack-vm-userdata")]
    assert words == body["vm"]["bootArgs"].split()


@pytest.mark.parametrize(("args", "expected"), [
    (" a=1 b=" + "x" * 1100, "at most 1023 characters"),
    (" a=1 b=" + "€" * 700, "2047 bytes of UTF-8"),
    ("".join(f" key{n}={'v' * 1000}" for n in range(130)), "at most 128"),
])
async def test_start_fails_naming_the_limit_and_creates_nothing_when_boot_args_cannot_fit(
    agent: Running, args: str, expected: str,
) -> None:
    before = agent.emulator.round_trips()
    answer = await _answer(agent, _body(agent, bootArgs=args))
    assert answer["result"] is False
    assert "vm.bootArgs" in answer["details"] and expected in answer["details"], answer
    assert (agent.emulator.round_trips() - before)["invoke:DefineSystem"] == 0
    assert await _vm_count(agent.emulator) == 0


# Secrets the MS puts in boot arguments: vmpassword, authorized_key, router_password,
# keystore_password, baremetalnotificationsecuritykey, userdata.
_SECRET = "Zq9" * 400


@pytest.mark.parametrize(("args", "named"), [
    (f" template=domP type=secstorage name=s-1-VM vmpassword={_SECRET}",
     "word 4 (key 'vmpassword', 1211 characters)"),
    (f" template=domP name=r-4-VM userdata={_SECRET} type=router",
     "word 3 (key 'userdata', 1209 characters)"),
    (f" template=domP {_SECRET} type=router", "word 2 (no key, 1200 characters)"),
])
async def test_start_fails_naming_the_key_and_word_but_never_the_value_when_a_word_cannot_fit(
    agent: Running, args: str, named: str,
) -> None:
    answer = await _answer(agent, _body(agent, bootArgs=args))
    assert answer["result"] is False
    assert named in answer["details"], answer
    assert "Zq9" not in answer["details"], answer
    assert await _vm_count(agent.emulator) == 0


async def test_start_counts_the_boot_args_as_the_ms_sent_them_when_they_lack_a_leading_space(
    agent: Running,
) -> None:
    answer = await _answer(agent, _body(agent, bootArgs="b" * 1100))
    assert answer["result"] is False
    assert "vm.bootArgs (1100 characters)" in answer["details"], answer


@pytest.mark.parametrize(("args", "char"), [
    (" template=domP type=secstorage name=s-1-VM note=a\x00b", "\\x00"),
    (" template=domP type=secstorage name=s-1-VM note=a\x1bb", "\\x1b"),
    (" template=domP type=secstorage name=s-1-VM note=\ufffe", "\\ufffe"),
    ("".join(f" key{n}={'v' * 100}" for n in range(20)) + " note=a\x00b", "\\x00"),
])
async def test_start_fails_naming_the_character_and_creates_nothing_when_no_kvp_item_carries_it(
    agent: Running, args: str, char: str,
) -> None:
    before = agent.emulator.round_trips()
    answer = await _answer(agent, _body(agent, bootArgs=args))
    assert answer["result"] is False
    offset = min(args.find(c) for c in "\x00\x1b\ufffe" if c in args)
    assert "vm.bootArgs" in answer["details"] and char in answer["details"], answer
    assert f"at offset {offset}," in answer["details"], answer
    assert "of word" in answer["details"] and "(key 'note'" in answer["details"], answer
    assert "a\\x00b" not in answer["details"] and "a\\x1bb" not in answer["details"], answer
    assert (agent.emulator.round_trips() - before)["invoke:DefineSystem"] == 0
    assert await _vm_count(agent.emulator) == 0


# --- what the system VM template makes of the items (protocol §9.2) ----------------------

# An OpenSSH RSA 4096 public key, base64-encoded as the MS passes ``ssh.publickey``.
_MS_KEY = base64.b64encode(b"ssh-rsa " + base64.b64encode(bytes(range(256)) * 3)[:716]
                           + b" cloud@ms1").decode()
_SSVM_ARGS = (
    " template=domP type=secstorage host=10.1.1.5 port=8250 name=s-1-VM zone=1 pod=1"
    " guid=s-1-VM workers=5 authorized_key=" + _MS_KEY +
    " resource=com.cloud.storage.resource.PremiumSecondaryStorageResource"
    " instance=SecStorage sslcopy=false role=templateProcessor mtu=1500"
    " eth2ip=192.0.2.20 eth2mask=255.255.255.0 gateway=192.0.2.1"
    " public.network.device=eth2 eth0ip=169.254.3.4 eth0mask=255.255.0.0"
    " eth1ip=10.1.1.67 eth1mask=255.255.255.0 mgmtcidr=10.1.1.0/24 localgw=10.1.1.1"
    " private.network.device=eth1 internaldns1=10.1.1.2 dns1=8.8.8.8 dns2=8.8.4.4"
    " nfsVersion=null keystore_password=Zm9vYmFyYmF6cXV4")
_CPVM_ARGS = (
    " template=domP type=consoleproxy host=10.1.1.5 port=8250 name=v-2-VM zone=1 pod=1"
    " guid=Proxy.2 proxy_vm=2 disable_rp_filter=true eth0ip=169.254.0.9"
    " eth0mask=255.255.0.0 dns1=8.8.8.8 keystore_password=cXV4cXV1eA")
_ROUTER_ARGS = (
    " template=domP name=r-4-VM authorized_key=" + _MS_KEY +
    " eth0ip=10.0.0.1 eth0mask=255.255.255.0 privateMtu=1500 eth1ip=169.254.1.91"
    " eth1mask=255.255.0.0 mgmtcidr=10.1.1.0/24 localgw=10.1.1.1 eth2ip=192.0.2.30"
    " eth2mask=255.255.255.0 gateway=192.0.2.1 publicMtu=1500 has_public_network=true"
    " type=router disable_rp_filter=true dns1=8.8.8.8 dns2=8.8.4.4 domain=cs1cloud.internal"
    " dhcprange=10.0.0.1 extra_pubnics=5")
_CKS_ARGS = (
    " template=domP name=k8s-node-1 type=cksnode eth0ip=10.0.0.31 eth0mask=255.255.255.0"
    " gateway=10.0.0.1 internaldns1=10.1.1.2 dns1=8.8.8.8")


@pytest.mark.parametrize(("name", "kind", "args", "role"), [
    ("s-1-VM", "SecondaryStorageVm", _SSVM_ARGS, "secstorage"),
    ("v-2-VM", "ConsoleProxy", _CPVM_ARGS, "consoleproxy"),
    ("r-4-VM", "DomainRouter", _ROUTER_ARGS, "router"),
    ("i-2-30-VM", "User", _CKS_ARGS, "cksnode"),
])
async def test_start_pushes_boot_args_the_system_vm_template_reads_whatever_the_item_order(
    agent: Running, name: str, kind: str, args: str, role: str,
) -> None:
    body = _router_body(agent, args) if kind == "DomainRouter" else _body(
        agent, name, kind=kind, bootArgs=args)
    meant = body["vm"]["bootArgs"]
    assert (await _answer(agent, body))["result"] is True
    items = await _kvp(agent.emulator, await _vm(agent.emulator, name))
    assert items and all(len(key.encode()) < guest.KEY_BYTES
                         and len(value.encode()) < guest.VALUE_BYTES
                         for key, value in items.items())
    expected = guest.parse_cmd_line(meant)
    assert not set(items) & set(expected)
    for order in guest.orders(list(items.items())):
        text = guest.cmdline_text(guest.pool_file(order))
        settings = guest.parse_cmd_line(text)
        # The item keys are words of their own, without "=": no setting of the MS's.
        assert {key: settings.pop(key) for key in items} == {key: key for key in items}
        assert settings == expected
        assert settings["type"] == role
        if role == "router":
            assert guest.dnsmasq_dns1(text) == "8.8.8.8"
    if len(meant) > 1023:
        assert len(items) > 1


async def test_start_keeps_first_boot_arg_apart_from_the_key_when_args_lack_a_space(
    agent: Running,
) -> None:
    args = "type=secstorage template=domP name=s-1-VM"
    assert (await _answer(agent, _body(agent, bootArgs=args)))["result"] is True
    items = await _kvp(agent.emulator, await _vm(agent.emulator, "s-1-VM"))
    settings = guest.parse_cmd_line(guest.cmdline_text(guest.pool_file(items.items())))
    assert settings == {"cloudstack-vm-userdata": "cloudstack-vm-userdata",
                        "type": "secstorage", "template": "domP", "name": "s-1-VM"}


@pytest.mark.parametrize("args", [
    "\u00a0type=secstorage template=domP name=s-1-VM",
    " type=secstorage template=domP name=s-1-VM" + "".join(
        f" note{n}=a\u00a0b\u2028c\x85d\re\u3000f" for n in range(150)),
])
async def test_start_splits_boot_args_only_where_the_guest_splits_words(
    agent: Running, args: str,
) -> None:
    assert (await _answer(agent, _body(agent, bootArgs=args)))["result"] is True
    items = await _kvp(agent.emulator, await _vm(agent.emulator, "s-1-VM"))
    assert (len(items) == 1) == (len(args) < 1023)
    for order in guest.orders(list(items.items())):
        settings = guest.parse_cmd_line(guest.cmdline_text(guest.pool_file(order)))
        assert {key: settings.pop(key) for key in items} == {key: key for key in items}
        assert settings == guest.parse_cmd_line(args)


async def test_start_pushes_no_items_when_user_vm_has_no_boot_args(agent: Running) -> None:
    assert (await _answer(agent, _body(agent, "i-2-31-VM", kind="User", bootArgs=" ")))[
        "result"] is True
    assert await _kvp(agent.emulator, await _vm(agent.emulator, "i-2-31-VM")) == {}


# --- processor limit, reservation and weight from the speeds ------------------------------


@pytest.mark.parametrize(("vm", "expected"), [
    ({"speed": 1200, "minSpeed": 600, "maxSpeed": 1200, "limitCpuUse": True},
     (50000, 25000, 50)),
    ({"speed": 1200, "minSpeed": 600, "maxSpeed": 1200, "limitCpuUse": False},
     (100000, 0, 50)),
    ({"speed": 4800, "limitCpuUse": True}, (100000, 0, 200)),
    ({"speed": 12, "limitCpuUse": True}, (500, 0, 1)),
    ({"speed": None, "limitCpuUse": True}, (100000, 0, 100)),
])
async def test_start_sets_processor_shares_from_speeds_when_host_core_runs_at_2400_mhz(
    agent: Running, vm: dict[str, Any], expected: tuple[int, int, int],
) -> None:
    answer = await _answer(agent, _body(agent, "i-2-50-VM", kind="User", cpus=2, **vm))
    assert answer["result"] is True, answer
    assert await _processor(agent.emulator, await _vm(agent.emulator, "i-2-50-VM")) == expected


async def test_start_fails_and_creates_nothing_when_a_speed_is_negative(agent: Running) -> None:
    answer = await _answer(agent, _body(agent, "i-2-51-VM", kind="User", minSpeed=-5))
    assert answer["result"] is False
    assert "must not be negative" in answer["details"]
    assert await _vm_count(agent.emulator) == 0


async def test_start_sets_processor_shares_again_when_a_stopped_router_is_recreated(
    agent: Running,
) -> None:
    body = _router_body(agent)
    body["vm"].update(speed=600, maxSpeed=600, limitCpuUse=True)
    assert (await _answer(agent, body))["result"] is True
    first = await _vm(agent.emulator, "r-4-VM")
    await ok(agent.emulator, await request_state(agent.emulator, first, 3))
    assert (await _answer(agent, copy.deepcopy(body)))["result"] is True
    second = await _vm(agent.emulator, "r-4-VM")
    assert second != first
    assert await _processor(agent.emulator, second) == (25000, 0, 25)

