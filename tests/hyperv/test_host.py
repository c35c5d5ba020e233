"""hyperv.host: host facts, statistics, NICs and switches read from the emulated host."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.host import (
    HYPERVISOR_LP_COUNTERS,
    NIC_RECEIVE_BPS,
    NIC_SEND_BPS,
    UPLINK_RECEIVE_BPS,
    UPLINK_SEND_BPS,
)
from hyperv_agent.emulator.lab import open_emulator
from hyperv_agent.emulator.model import RUNNING_CPUS, processor_load
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.hyperv import host
from hyperv_agent.hyperv.schema import CIMV2, Class
from tests.emulator.kit import (
    define_vm,
    ok,
    request_state,
    running_vm_with_cpus,
)
from tests.sessions import hv

GIB = 1 << 30


async def test_facts_match_host_when_config_is_default(emulator: EmulatorCim) -> None:
    before = emulator.round_trips()
    facts = await host.host_facts(hv(emulator))
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["query"], spent.waits) == (2, 2, 0)
    assert facts == host.HostFacts(
        cores=16, sockets=2, cpu_mhz=2400, memory_bytes=64 * GIB, os_version="10.0.17763",
        product_version="10.0", host_name="HYPERV-EMU",
        os_caption="Microsoft Windows Server 2019 Datacenter", logical_processors=16,
    )
    assert facts.runs_generation_2


async def test_facts_follow_config_when_host_is_custom(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(cpus=8, memory_mb=8192, switches=("A", "B"),
                                       host_name="SMALL", os_version="6.3.9600"))
    try:
        facts = await host.host_facts(hv(cim))
        before = cim.round_trips()
        names = await host.switch_names(hv(cim))
        spent = cim.round_trips() - before
    finally:
        await cim.close()
    assert (facts.cores, facts.sockets, facts.cpu_mhz) == (8, 2, 2400)
    assert facts.memory_bytes == 8192 * 1024 * 1024
    assert (facts.os_version, facts.product_version, facts.host_name) == (
        "6.3.9600", "6.3", "SMALL")
    assert sorted(names) == ["A", "B"]
    assert spent.calls == 1


async def test_switch_names_list_external_when_config_is_default(
    emulator: EmulatorCim,
) -> None:
    before = emulator.round_trips()
    assert await host.switch_names(hv(emulator)) == ("External",)
    assert (emulator.round_trips() - before).calls == 1


async def test_external_switch_is_the_first_external_when_internal_and_private_come_first(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(
        switches=("Host only", "Isolated", "Uplink", "Uplink 2"),
        switch_types={"Host only": "Internal", "Isolated": "Private"}))
    session = hv(cim)
    try:
        before = cim.round_trips()
        assert await host.external_switch(session) == "Uplink"
        cold = cim.round_trips() - before
        assert await host.nic_switches(session, unlabelled=True) == (
            ("Host only", "Isolated", "Uplink", "Uplink 2"), "Uplink")
        warm = cim.round_trips() - before - cold
    finally:
        await cim.close()
    assert cold.calls == 5  # the switches, then each one's ports (ASSOCIATORS OF)
    assert warm.calls == warm["query"] == 1  # their kinds are kept by the session


async def test_external_switch_refuses_naming_switches_when_none_is_external(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(
        switches=("Host only", "Isolated"),
        switch_types={"Host only": "Internal", "Isolated": "Private"}))
    try:
        with pytest.raises(InvalidRequest, match="no External virtual switch") as refused:
            await host.external_switch(hv(cim))
    finally:
        await cim.close()
    assert "'Host only', 'Isolated'" in str(refused.value)


async def test_management_nic_finds_private_nic_when_ip_is_configured(
    emulator: EmulatorCim, make_config: Callable[..., EmulatorConfig],
) -> None:
    config = make_config()
    before = emulator.round_trips()
    nic = await host.management_nic(hv(emulator), config.private_ip)
    assert (emulator.round_trips() - before).calls == 1
    assert nic is not None
    assert (nic.ip, nic.netmask) == (config.private_ip, config.private_netmask)
    assert nic.mac == config.private_mac.replace(":", "").upper() == "00155D0A0B0C"
    assert nic.gateway is None  # the emulated NIC has no default gateway


async def test_management_nic_is_the_first_ipv4_one_when_no_nic_is_on_the_ips_subnet(
    emulator: EmulatorCim, make_config: Callable[..., EmulatorConfig],
) -> None:
    config = make_config()
    for ip in ("10.9.8.7", "not-an-ip", ""):
        nic = await host.management_nic(hv(emulator), ip)
        assert nic is not None and nic.ip == config.private_ip


async def test_all_nics_lists_every_address_when_host_has_one_nic(
    emulator: EmulatorCim, make_config: Callable[..., EmulatorConfig],
) -> None:
    config = make_config()
    before = emulator.round_trips()
    nics = await host.all_nics(hv(emulator))
    assert (emulator.round_trips() - before).calls == 1
    assert [(n.ip, n.netmask, n.mac) for n in nics] == [
        (config.private_ip, config.private_netmask, "00155D0A0B0C")]


async def test_stats_report_idle_cpu_and_all_memory_free_when_no_vm_runs(
    emulator: EmulatorCim,
) -> None:
    before = emulator.round_trips()
    stats = await host.host_stats(hv(emulator))
    spent = emulator.round_trips() - before
    # CPU, memory, network, sent at once; the CPU counter read again: a session's first
    assert spent.calls == 4 and spent.waits == 0
    assert (stats.cpu_utilization_percent, stats.total_memory_kib, stats.free_memory_kib) == (
        0.0, 64 * 1024 * 1024, 64 * 1024 * 1024)


async def test_stats_network_counters_grow_when_time_passes(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    now = [1_700_000_000.0]
    cim = EmulatorCim.open(make_config(), lambda: now[0])
    try:
        first = await host.host_stats(hv(cim))
        now[0] += 10
        second = await host.host_stats(hv(cim))
        assert second.received_bytes > first.received_bytes >= 0
        assert second.sent_bytes > first.sent_bytes >= 0
    finally:
        await cim.close()


async def test_stats_count_the_management_nics_traffic_not_every_interface(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    now = [1_700_000_000.0]
    cim = EmulatorCim.open(make_config(), lambda: now[0])
    private_ip = cim.host.config.private_ip
    try:
        session = hv(cim)
        before = cim.round_trips()
        await host.host_stats(session, private_ip)
        # finding the NIC beside the rest, and the CPU counter's second reading
        assert (cim.round_trips() - before).calls == 5
        now[0] += 10
        before = cim.round_trips()
        mine = await host.host_stats(session, private_ip)
        assert (cim.round_trips() - before).calls == 3  # the NIC's counters kept
        every = await host.host_stats(session)  # no address: every interface
        # on no NIC (an agent on another machine): the NIC registration reports for it
        unknown = await host.host_stats(session, "192.0.2.77")
    finally:
        await cim.close()
    assert (mine.received_bytes, mine.sent_bytes) == (10 * NIC_RECEIVE_BPS, 10 * NIC_SEND_BPS)
    both = (10 * (NIC_RECEIVE_BPS + UPLINK_RECEIVE_BPS), 10 * (NIC_SEND_BPS + UPLINK_SEND_BPS))
    assert (every.received_bytes, every.sent_bytes) == both
    assert (unknown.received_bytes, unknown.sent_bytes) == (
        10 * NIC_RECEIVE_BPS, 10 * NIC_SEND_BPS)


def test_an_interface_counter_is_named_after_its_adapter_with_windows_replacements() -> None:
    assert host.interface_counter_name("Intel(R) Ethernet Connection #2") == (
        "Intel[R] Ethernet Connection _2")
    assert host.interface_counter_name("a/b\\c") == "a_b_c"
    assert host.interface_counter_name("Hyper-V Virtual Ethernet Adapter") == (
        "Hyper-V Virtual Ethernet Adapter")


async def test_stats_read_no_network_traffic_and_say_so_when_the_counters_are_missing(
    make_config: Callable[..., EmulatorConfig], caplog: pytest.LogCaptureFixture,
) -> None:
    cim = open_emulator(make_config(lab_missing_classes=frozenset({Class.NIC_PERF})))
    try:
        stats = await host.host_stats(hv(cim))
    finally:
        await cim.close()
    assert (stats.received_bytes, stats.sent_bytes) == (0, 0)
    assert stats.total_memory_kib == 64 * 1024 * 1024
    assert "host network statistics read 0" in caplog.text



async def _counter(cim: EmulatorCim, class_name: str, name: str) -> int:
    found = await cim.query(wql.select(class_name, wql.eq("Name", "_Total")), CIMV2)
    value = found[0].integer(name)
    assert value is not None
    return value


async def test_stats_report_the_hypervisors_run_time_when_vms_keep_the_host_busy(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(cpus=4))
    try:
        idle = await host.host_stats(hv(cim))
        vms = {await running_vm_with_cpus(cim, "two", cpus=2): 2,
               await running_vm_with_cpus(cim, "four", cpus=4): 4}
        before = cim.round_trips()
        busy = await host.host_stats(hv(cim))
        spent = cim.round_trips() - before
        run_time = await _counter(cim, HYPERVISOR_LP_COUNTERS, "PercentTotalRunTime")
        root_idle = await _counter(cim, "Win32_PerfFormattedData_Counters_ProcessorInformation",
                                   "PercentIdleTime")
    finally:
        await cim.close()
    assert idle.cpu_utilization_percent == 0.0
    # the share the VMs keep busy to the hundredth, which the formatted class rounds
    share = sum(processor_load(vm.key("Name")) * cpus for vm, cpus in vms.items()) / 4
    assert busy.cpu_utilization_percent == pytest.approx(share, abs=0.01)
    assert run_time == round(share) > 0
    assert spent.calls == 3 and spent.waits == 0  # still CPU, memory, network, at once
    # the management OS's own processors are idle: that counter would have read 0 %
    assert root_idle == 100


def _as_before_the_hypervisor_counters(config: EmulatorConfig) -> None:
    """The state directory as versions before the hypervisor's processor counters left
    it: no instance of that counter set, and no VM record keeping the virtual processors
    its VM started with."""
    with sqlite3.connect(config.state_dir / "emulator.sqlite3") as db:
        assert db.execute("DELETE FROM records WHERE class = ?",
                          (Class.HYPERVISOR_LP_PERF,)).rowcount == 1
        rows = db.execute("SELECT id, doc FROM records WHERE class = 'Msvm_ComputerSystem'")
        for row_id, doc in rows.fetchall():
            data = json.loads(doc)
            data["meta"].pop(RUNNING_CPUS, None)
            db.execute("UPDATE records SET doc = ? WHERE id = ?", (json.dumps(data), row_id))


async def test_stats_of_a_state_dir_made_before_the_hypervisor_counters_count_its_vms(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A host whose state directory an earlier version made, with VMs running and paused
    in it, reports their run time from its first GetHostStats after the upgrade, and a
    paused VM counts again once resumed."""
    config = make_config(cpus=2)
    cim = EmulatorCim.open(config)
    try:
        await running_vm_with_cpus(cim, "running", cpus=2)
        paused = await running_vm_with_cpus(cim, "paused", cpus=2)
        both = (await host.host_stats(hv(cim))).cpu_utilization_percent
        await ok(cim, await request_state(cim, paused, 9))
        one = (await host.host_stats(hv(cim))).cpu_utilization_percent
    finally:
        await cim.close()
    assert both > one > 0
    _as_before_the_hypervisor_counters(config)

    cim = EmulatorCim.open(config)
    try:
        # over a few milliseconds, the counter's 100 ns steps show in the second decimal
        assert (await host.host_stats(hv(cim))).cpu_utilization_percent == pytest.approx(
            one, abs=0.05)
        await ok(cim, await request_state(cim, paused, 2))
        assert (await host.host_stats(hv(cim))).cpu_utilization_percent == pytest.approx(
            both, abs=0.05)
    finally:
        await cim.close()


async def test_external_switch_is_found_when_the_state_dir_predates_switch_ports(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Earlier versions made switches without their ports' settings; opening such a state
    directory adds them (and no second physical adapter)."""
    config = make_config(switches=("Host only", "Uplink"), switch_types={"Host only": "Internal"})
    await EmulatorCim.open(config).close()
    with sqlite3.connect(config.state_dir / "emulator.sqlite3") as db:
        rows = db.execute("SELECT id, doc FROM records WHERE class = ?", (Class.EPASD,))
        ports = [row_id for row_id, doc in rows.fetchall() if "Definition" not in doc]
        assert len(ports) == 3  # Uplink's two (adapter, management OS), Host only's one
        db.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in ports])
    cim = EmulatorCim.open(config)
    try:
        chosen = await host.external_switch(hv(cim))
        adapters = await cim.query(wql.select(Class.EXTERNAL_PORT))
    finally:
        await cim.close()
    assert chosen == "Uplink"
    assert len(adapters) == 1


SECOND = 10_000_000  # 100 ns units


def _readings(emulator: EmulatorCim, monkeypatch: pytest.MonkeyPatch,
              readings: list[tuple[int, int]]) -> list[int]:
    """The emulated host's raw run time counter reads ``readings`` (run time, timestamp)
    in turn; the list returned grows by one per reading."""
    query = emulator.query
    taken: list[int] = []

    async def reading(text: str, namespace: str = CIMV2) -> list[CimInstance]:
        found = await query(text, namespace)
        if Class.HYPERVISOR_LP_PERF not in text:
            return found
        run, at = readings[len(taken)]
        taken.append(at)
        return [i.updated(PercentTotalRunTime=run, Timestamp_Sys100NS=at) for i in found]

    monkeypatch.setattr(emulator, "query", reading)
    return taken


async def test_cpu_figure_is_the_run_time_since_the_previous_reading(
    emulator: EmulatorCim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counter is a rate: one reading says nothing, so the session's first figure
    reads it twice and later ones from the previous reading on; a counter that went back
    (the host restarted) or a reading older than the window starts a new pair."""
    late = 5 * SECOND + host.RUN_TIME_WINDOW_100NS + 1
    taken = _readings(emulator, monkeypatch, [
        (0, 0), (SECOND // 4, SECOND),  # the first figure: two readings, 25 %
        (SECOND // 4 + 6 * SECOND // 5, 3 * SECOND),  # 1.2 s run in 2 s: 60 %
        (SECOND // 10, 4 * SECOND), (SECOND // 10 + SECOND // 2, 5 * SECOND),  # went back
        (SECOND, late), (SECOND + SECOND // 10, late + SECOND),  # after the window
    ])
    figures = [await host.cpu_run_time_percent(hv(emulator), sample_s=0) for _ in range(4)]
    assert figures == [25.0, 60.0, 50.0, 10.0]
    assert len(taken) == 7


async def test_cpu_run_time_is_clamped_when_the_counter_passes_100(
    emulator: EmulatorCim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _readings(emulator, monkeypatch, [(0, 0), (SECOND + 1, SECOND)])
    assert await host.cpu_run_time_percent(hv(emulator), sample_s=0) == 100.0


async def test_first_cpu_figure_waits_between_its_two_readings(
    emulator: EmulatorCim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read twice with no time between, the counter would give no figure; the session's
    first one waits ``sample_s`` between the readings, later ones do not wait. (The waits
    asked for are recorded, not timed: a loaded machine must not fail the test.)"""
    sleep = asyncio.sleep
    waits: list[float] = []

    async def recorded(delay: float) -> None:
        waits.append(delay)
        await sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    _readings(emulator, monkeypatch, [(0, 0), (SECOND // 2, SECOND), (SECOND, 2 * SECOND)])
    assert await host.cpu_run_time_percent(hv(emulator), sample_s=0.3) == 50.0
    assert waits == [0.3]
    assert await host.cpu_run_time_percent(hv(emulator), sample_s=0.3) == 50.0
    assert waits == [0.3]


async def test_stats_fail_naming_the_class_when_the_hypervisor_counters_are_missing(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = open_emulator(make_config(
        lab_missing_classes=frozenset({Class.HYPERVISOR_LP_PERF})))
    try:
        with pytest.raises(HyperVError) as raised:
            await host.host_stats(hv(cim))
    finally:
        await cim.close()
    assert Class.HYPERVISOR_LP_PERF in str(raised.value)
    assert "lodctr /R" in str(raised.value)


async def test_stats_count_vm_memory_as_used_when_a_vm_runs(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "runner")
    await ok(emulator, await request_state(emulator, vm, 2))
    stats = await host.host_stats(hv(emulator))
    assert stats.total_memory_kib - stats.free_memory_kib == 1024 * 1024  # its 1024 MB


async def test_facts_come_from_one_processor_per_socket_when_the_host_has_several(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(cpus=24, sockets=4, cpu_mhz=3100,
                                       os_version="6.2.9200"))
    try:
        sockets = await cim.query("SELECT DeviceID, NumberOfCores, MaxClockSpeed, Status "
                                  "FROM Win32_Processor", "root\\cimv2")
        facts = await host.host_facts(hv(cim))
    finally:
        await cim.close()
    assert [(s["DeviceID"], s["NumberOfCores"], s["MaxClockSpeed"], s["Status"])
            for s in sockets] == [(f"CPU{n}", 6, 3100, "OK") for n in range(4)]
    assert (facts.sockets, facts.cores, facts.cpu_mhz) == (4, 24, 3100)
    assert not facts.runs_generation_2  # Windows Server 2012 (6.2) has no generation 2


async def test_host_clock_reads_the_hosts_own_time_when_it_differs_from_ours(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(), clock=lambda: 1_700_000_000.25)
    try:
        before = cim.round_trips()
        now = await host.host_clock(hv(cim))
        spent = cim.round_trips() - before
    finally:
        await cim.close()
    assert now == 1_700_000_000.25
    assert spent.calls == 1
