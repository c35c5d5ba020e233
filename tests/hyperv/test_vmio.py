"""The network traffic of running VMs from the "Hyper-V Virtual Network Adapter" counters
(``vmio.adapter_counters``), on the emulator, and the emulator's counters themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from hyperv_agent.cim.api import V2_NAMESPACE, CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.emulator.lab import open_emulator
from hyperv_agent.emulator.services import metrics
from hyperv_agent.errors import CimError, CimNotFound
from hyperv_agent.hyperv import build, devices, drives, nics, vmio, vms
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.vms import VmRef
from tests.emulator.kit import ok, request_state
from tests.hyperv.kit import image_file
from tests.sessions import hv

MB = 1 << 20
CALL_S = 0.25
CIMV2 = "root\\cimv2"
MACS = ("0200512C0001", "0200512C0002")
GUID = "4D6F6E6F-7665-4D00-8A12-0123456789AB"
ADAPTER = "A1B2C3D4-0000-4000-8000-00000000002A"


async def _vm(cim: EmulatorCim, name: str, macs: tuple[str, ...] = MACS[:1],
              running: bool = True) -> VmRef:
    vm = await build.define_vm(hv(cim), VmSpec(name=name, notes=(), generation=2, cpus=1,
                                               memory_mb=512))
    for index, mac in enumerate(macs):
        await nics.add_nic(hv(cim), vm, mac=mac, switch_name="External", vlan=None,
                           rate_mbps=None, name=f"nic{index}")
    if running:
        await ok(cim, await request_state(cim, vm.path, 2))
    return vm


# --- which VM an instance counts for ---------------------------------------------------------


@pytest.mark.parametrize("instance", [
    f"i-2-10-VM_Network Adapter_{GUID}--{ADAPTER}",
    f"i-2-10-vm_network adapter_{GUID.lower()}--{ADAPTER.lower()}",  # any case
    f"web_01_Network Adapter_{GUID}--{{{ADAPTER}}}",  # "_" in the VM's name, braced GUID
    f"{ADAPTER}--{ADAPTER}_nic_{GUID}--{ADAPTER}",  # a VM named after a GUID pair
])
def test_an_adapter_instance_counts_for_the_vm_whose_guid_comes_before_the_dashes(
    instance: str,
) -> None:
    assert vmio.adapter_vm_guid(instance) == GUID


@pytest.mark.parametrize("instance", [
    "Intel[R] Ethernet Connection__DEVICE_{0A1B2C3D-0000-0000-0000-000000000001}",
    f"i-2-10-VM_Network Adapter_{GUID}",
    "",
])
def test_an_instance_of_another_form_counts_for_no_vm(instance: str) -> None:
    assert vmio.adapter_vm_guid(instance) is None


# --- adapter_counters over the emulator ------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3, vmio.NAMED_AT_MOST + 4])
async def test_adapter_counters_take_one_query_whatever_the_number_of_vms(
    emulator: EmulatorCim, count: int,
) -> None:
    guids = {}
    for index in range(count):
        vm = await _vm(emulator, f"i-7-{index}-VM")
        guids[vm.name] = vm.guid
        assert traffic.network_io(emulator.host, vm.name, MACS[0], received_bytes=index * MB,
                                  sent_bytes=index)
    before = emulator.round_trips()
    totals = {guid: vmio.total(nics) for guid, nics in (
        await vmio.adapter_counters(hv(emulator), list(guids.values()))).items()}
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["query"]) == (1, 1)
    assert {guid: (t.received_bytes, t.sent_bytes) for guid, t in totals.items()} == {
        guid.upper(): (index * MB, index) for index, guid in enumerate(guids.values())}


async def test_adapter_counters_read_each_adapter_and_leave_out_vms_not_asked_for(
    emulator: EmulatorCim,
) -> None:
    two = await _vm(emulator, "i-7-20-VM", MACS)
    other = await _vm(emulator, "i-7-21-VM")
    quiet = await _vm(emulator, "i-7-22-VM")
    host = emulator.host
    assert traffic.network_io(host, two.name, MACS[0], received_bytes=MB, sent_bytes=10)
    assert traffic.network_io(host, two.name, "02-00-51-2c-00-02", received_bytes=2 * MB)
    assert traffic.network_io(host, other.name, MACS[0], sent_bytes=7)
    counters = await vmio.adapter_counters(hv(emulator), [two.guid.lower(), quiet.guid])
    assert list(counters) == [two.guid.upper()] and len(counters[two.guid.upper()]) == 2
    assert sorted(counters[two.guid.upper()].values(), key=lambda t: t.sent_bytes) == [
        vmio.IoTotals(received_bytes=2 * MB), vmio.IoTotals(received_bytes=MB, sent_bytes=10)]
    before = emulator.round_trips()
    assert await vmio.adapter_counters(hv(emulator), []) == {}
    assert (emulator.round_trips() - before).calls == 0


async def _vm_with_disk(cim: EmulatorCim, tmp_path: Path, name: str) -> VmRef:
    """A running VM with one NIC and one virtual hard disk, C:\\images\\r.vhdx."""
    vm = await _vm(cim, name, running=False)
    await devices.add_scsi_controller(hv(cim), vm)
    await drives.attach_volume(hv(cim), vm, 0, image_file(tmp_path, "r.vhdx"))
    await ok(cim, await request_state(cim, vm.path, 2))
    return vm


async def test_io_since_last_reads_disks_and_adapters_in_three_queries(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm_with_disk(emulator, tmp_path, "i-7-30-VM")
    session = hv(emulator)
    stats = await vms.vm_stats(session, [vm.name])
    uptimes = {vm.guid: stats[vm.name].uptime_ms}
    assert await vmio.io_since_last(session, uptimes) == {vm.guid.upper(): vmio.IoTotals()}
    assert traffic.network_io(emulator.host, vm.name, MACS[0], received_bytes=5 * MB,
                              sent_bytes=MB)
    metrics.disk_io(emulator.host, vm.name, "C:\\images\\r.vhdx", read_bytes=MB, reads=3)
    before = emulator.round_trips()
    uptimes = {vm.guid: uptimes[vm.guid] + 1000}
    found = await vmio.io_since_last(session, uptimes)
    spent = emulator.round_trips() - before
    assert found == {vm.guid.upper(): vmio.IoTotals(read_bytes=MB, reads=3,
                                                    received_bytes=5 * MB, sent_bytes=MB)}
    assert (spent.calls, spent["query"]) == (3, 3)


async def test_io_since_last_reads_the_adapters_beside_the_disk_files(
    make_config: Callable[..., EmulatorConfig], tmp_path: Path,
) -> None:
    cim = EmulatorCim.open(make_config())
    vm = await _vm_with_disk(cim, tmp_path, "i-7-31-VM")
    await cim.close()
    slow = EmulatorCim.open(make_config(latency=LatencyModel(call_s=CALL_S)))
    try:
        started = time.perf_counter()
        assert await vmio.io_since_last(hv(slow), {vm.guid: 1}) == {
            vm.guid.upper(): vmio.IoTotals()}
        elapsed = time.perf_counter() - started
        assert 2 * CALL_S <= elapsed < 2.8 * CALL_S  # 3 queries in 2 round trips, not 3
        assert slow.round_trips().calls == 3
    finally:
        await slow.close()


class _CountersFailOnce(EmulatorCim):
    """The emulated host, whose network adapter counters cannot be read once (a timeout)."""

    failing = True

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        if self.failing and traffic.ADAPTER_COUNTERS in wql:
            self.failing = False
            raise CimError("the operation timed out")
        return await super().query(wql, namespace)


async def test_removing_an_adapter_never_makes_the_others_count_their_history_again(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "i-7-33-VM", MACS)  # generation 2: adapters come and go running
    host, session = emulator.host, hv(emulator)
    assert traffic.network_io(host, vm.name, MACS[0], received_bytes=5 * MB)
    assert traffic.network_io(host, vm.name, MACS[1], received_bytes=3 * MB)
    await vmio.io_since_last(session, {vm.guid: 1000})  # the baseline: 8 MB received
    assert traffic.network_io(host, vm.name, MACS[0], received_bytes=MB)
    (_, second) = await nics.list_nics(session, vm.guid)
    await nics.remove(session, second)
    assert await vmio.io_since_last(session, {vm.guid: 2000}) == {
        vm.guid.upper(): vmio.IoTotals(received_bytes=MB)}  # not the first adapter's 6 MB
    await nics.add_nic(session, vm, mac=MACS[1], switch_name="External", vlan=None,
                       rate_mbps=None, name="nic1")
    assert traffic.network_io(host, vm.name, MACS[1], sent_bytes=512)
    assert await vmio.io_since_last(session, {vm.guid: 3000}) == {
        vm.guid.upper(): vmio.IoTotals(sent_bytes=512)}  # a new adapter: all it holds


async def test_a_report_that_cannot_read_the_counters_counts_nothing_and_loses_nothing(
    make_config: Callable[..., EmulatorConfig], tmp_path: Path,
) -> None:
    cim = _CountersFailOnce.open(make_config())
    assert isinstance(cim, _CountersFailOnce)
    cim.failing = False
    try:
        vm = await _vm_with_disk(cim, tmp_path, "i-7-32-VM")
        session, uptime = hv(cim), {vm.guid: 1000}
        assert traffic.network_io(cim.host, vm.name, MACS[0], received_bytes=5 * MB)
        await vmio.io_since_last(session, uptime)  # the baseline: 5 MB received
        metrics.disk_io(cim.host, vm.name, "C:\\images\\r.vhdx", read_bytes=MB, reads=3)
        assert traffic.network_io(cim.host, vm.name, MACS[0], received_bytes=2 * MB)
        cim.failing = True
        assert await vmio.io_since_last(session, {vm.guid: 2000}) == {
            vm.guid.upper(): vmio.IoTotals()}  # this report: none
        metrics.disk_io(cim.host, vm.name, "C:\\images\\r.vhdx", read_bytes=MB, reads=1)
        assert await vmio.io_since_last(session, {vm.guid: 3000}) == {
            vm.guid.upper(): vmio.IoTotals(read_bytes=2 * MB, reads=4,
                                           received_bytes=2 * MB)}  # both intervals, once
        assert await vmio.io_since_last(session, {vm.guid: 4000}) == {
            vm.guid.upper(): vmio.IoTotals()}
    finally:
        await cim.close()


async def test_a_vm_gone_from_the_host_is_forgotten_after_a_listing_and_the_rest_go_on(
    emulator: EmulatorCim,
) -> None:
    gone, stays = await _vm(emulator, "i-7-34-VM"), await _vm(emulator, "i-7-35-VM", MACS[1:])
    session, host = hv(emulator), emulator.host
    assert traffic.network_io(host, stays.name, MACS[1], received_bytes=5 * MB)
    await vmio.io_since_last(session, {gone.guid: 1000, stays.guid: 1000})  # baselines
    assert await vms.remove_vm(session, gone.guid)
    await vmio.io_since_last(session, {stays.guid: 2000})
    kept = session.kept(vmio._Kept).seen
    assert gone.guid.upper() in kept  # no listing of every VM since it went: kept
    await vms.list_vms(session)  # a state report lists every VM
    assert traffic.network_io(host, stays.name, MACS[1], received_bytes=MB)
    assert await vmio.io_since_last(session, {stays.guid: 3000}) == {
        stays.guid.upper(): vmio.IoTotals(received_bytes=MB)}  # its interval, not a new start
    assert set(kept) == {stays.guid.upper()}


class _ListingHeld(EmulatorCim):
    """The emulated host, whose answer to a summary of every VM is held back until
    ``release`` is set: the listing is taken (``taken`` is set), then reaches the agent
    later."""

    taken: asyncio.Event
    release: asyncio.Event

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        answer = await super().invoke(path, method, params)
        if (method == "GetSummaryInformation" and params is not None
                and params.get("SettingData") is None):
            self.taken.set()
            await self.release.wait()
        return answer


async def test_a_vm_read_after_a_listing_was_asked_for_is_kept_though_the_listing_lacks_it(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = _ListingHeld.open(make_config())
    assert isinstance(cim, _ListingHeld)
    try:
        session, cim.taken, cim.release = hv(cim), asyncio.Event(), asyncio.Event()
        listing = asyncio.create_task(vms.list_vms(session))  # an empty host, held back
        await cim.taken.wait()
        vm = await _vm(cim, "i-7-36-VM")
        assert traffic.network_io(cim.host, vm.name, MACS[0], received_bytes=2 * MB)
        await vmio.io_since_last(session, {vm.guid: 1000})  # the baseline: 2 MB received
        cim.release.set()
        assert await listing == []
        assert traffic.network_io(cim.host, vm.name, MACS[0], received_bytes=MB)
        assert await vmio.io_since_last(session, {vm.guid: 2000}) == {
            vm.guid.upper(): vmio.IoTotals(received_bytes=MB)}  # not a new baseline
    finally:
        await cim.close()


async def test_a_host_without_the_adapter_counters_reads_no_traffic_and_says_so(
    make_config: Callable[..., EmulatorConfig], caplog: pytest.LogCaptureFixture,
) -> None:
    cim = open_emulator(make_config(lab_missing_classes=frozenset({traffic.ADAPTER_COUNTERS})))
    try:
        vm = await _vm(cim, "i-7-40-VM")
        assert await vmio.adapter_counters(hv(cim), [vm.guid]) == {}
        assert "network adapter counters cannot be read" in caplog.text
    finally:
        await cim.close()


# --- the emulator's counters --------------------------------------------------------------


async def test_emulated_counters_are_named_after_vm_adapter_and_guids_and_restart_with_the_vm(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "i-7-50-VM")
    host = emulator.host
    assert traffic.network_io(host, vm.name, MACS[0], received_bytes=100, sent_bytes=40,
                              received_packets=2, sent_packets=1)
    assert traffic.network_io(host, vm.name, MACS[0], received_bytes=20)
    (nic,) = await emulator.query(
        "SELECT InstanceID FROM Msvm_SyntheticEthernetPortSettingData "
        f"WHERE InstanceID LIKE 'Microsoft:{vm.guid}\\\\%'")
    adapter = str(nic["InstanceID"]).rpartition("\\")[2]
    (counter,) = await emulator.query(f"SELECT * FROM {traffic.ADAPTER_COUNTERS}", CIMV2)
    assert counter["Name"] == f"i-7-50-VM_nic0_{vm.guid}--{adapter}"
    assert vmio.adapter_vm_guid(str(counter["Name"])) == vm.guid.upper()
    assert [counter[c] for c in ("BytesReceivedPersec", "BytesSentPersec", "BytesPersec",
                                 "PacketsReceivedPersec", "PacketsSentPersec",
                                 "PacketsPersec")] == [120, 40, 160, 2, 1, 3]
    await ok(emulator, await request_state(emulator, vm.path, 3))
    assert not traffic.network_io(host, vm.name, MACS[0], received_bytes=1)  # off
    await ok(emulator, await request_state(emulator, vm.path, 2))
    assert traffic.network_io(host, vm.name, MACS[0], sent_bytes=9)
    (counter,) = await emulator.query(f"SELECT * FROM {traffic.ADAPTER_COUNTERS}", CIMV2)
    assert (counter["BytesReceivedPersec"], counter["BytesSentPersec"]) == (0, 9)


async def test_emulated_counters_are_gone_when_the_vm_stops_or_the_adapter_is_removed(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "i-7-55-VM", MACS)
    host, session = emulator.host, hv(emulator)
    for mac in MACS:
        assert traffic.network_io(host, vm.name, mac, received_bytes=100)
    names = [str(c["Name"]) for c in await emulator.query(
        f"SELECT Name FROM {traffic.ADAPTER_COUNTERS}", CIMV2)]
    assert len(names) == 2
    (_, second) = await nics.list_nics(session, vm.guid)
    await nics.remove(session, second)
    left = await emulator.query(f"SELECT Name FROM {traffic.ADAPTER_COUNTERS}", CIMV2)
    assert len(left) == 1 and left[0]["Name"] in names
    gone = ObjectPath.for_keys(traffic.ADAPTER_COUNTERS, CIMV2,
                               Name=next(n for n in names if n != left[0]["Name"]))
    with pytest.raises(CimNotFound):
        await emulator.get(gone)
    await ok(emulator, await request_state(emulator, vm.path, 3))
    assert await emulator.query(f"SELECT Name FROM {traffic.ADAPTER_COUNTERS}", CIMV2) == []


async def test_emulated_traffic_needs_a_connected_port_and_refuses_bad_input(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "i-7-60-VM", MACS)
    (_, second) = await nics.list_nics(hv(emulator), vm.guid)
    await nics.disconnect(hv(emulator), second)
    host = emulator.host
    assert not traffic.network_io(host, vm.name, MACS[1], received_bytes=1)
    assert await emulator.query(f"SELECT * FROM {traffic.ADAPTER_COUNTERS}", CIMV2) == []
    with pytest.raises(LookupError):
        traffic.network_io(host, "no-such-VM", MACS[0], received_bytes=1)
    with pytest.raises(LookupError):
        traffic.network_io(host, vm.name, "0200512C00FF", received_bytes=1)
    with pytest.raises(ValueError, match="negative"):
        traffic.network_io(host, vm.name, MACS[0], sent_bytes=-1)
