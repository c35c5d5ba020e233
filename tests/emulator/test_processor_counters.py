"""The host's processor counters in root\\cimv2: the hypervisor's "Hyper-V Hypervisor
Logical Processor" counters follow what the running VMs keep busy; the management OS's
own "Processor Information" counters do not see them."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CIMV2_NAMESPACE, CimInstance, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from tests.emulator.kit import define_vm, devices, ok, request_state, service

HYPERVISOR = "Win32_PerfFormattedData_HvStats_HyperVHypervisorLogicalProcessor"
ROOT = "Win32_PerfFormattedData_Counters_ProcessorInformation"


async def _total(cim: EmulatorCim, class_name: str = HYPERVISOR) -> CimInstance:
    found = await cim.query(wql.select(class_name, wql.eq("Name", "_Total")), CIMV2_NAMESPACE)
    assert len(found) == 1
    return found[0]


async def _vm(cim: EmulatorCim, name: str, cpus: int, state: int = 2) -> ObjectPath:
    path = await define_vm(cim, name)
    processor = (await devices(cim, path, "Msvm_ProcessorSettingData"))[0]
    await ok(cim, await cim.invoke(await service(cim), "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(VirtualQuantity=cpus)]}))
    await ok(cim, await request_state(cim, path, 2))
    if state != 2:
        await ok(cim, await request_state(cim, path, state))
    return path


async def _busy_hundredths(cim: EmulatorCim) -> int:
    """What the VMs' own summaries say they keep busy: ProcessorLoad (percent of the
    VM's virtual processors) times NumberOfProcessors, summed."""
    result = await cim.invoke(await service(cim), "GetSummaryInformation", {
        "SettingData": None, "RequestedInformation": [4, 101]})
    return sum((s.integer("ProcessorLoad") or 0) * (s.integer("NumberOfProcessors") or 0)
               for s in result.instances("SummaryInformation"))


def _run_time(total: CimInstance) -> int:
    value = total.integer("PercentTotalRunTime")
    assert value is not None
    return value


async def test_total_run_time_is_0_and_idle_100_when_no_vm_runs(emulator: EmulatorCim) -> None:
    await define_vm(emulator, "off")
    total = await _total(emulator)
    assert (total["PercentTotalRunTime"], total["PercentGuestRunTime"],
            total["PercentHypervisorRunTime"], total["PercentIdleTime"]) == (0, 0, 0, 100)


async def test_total_run_time_is_what_running_vms_keep_busy_over_every_logical_processor(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(cpus=4))
    try:
        await _vm(cim, "two", cpus=2)
        await _vm(cim, "four", cpus=4)
        busy = await _busy_hundredths(cim)
        total = await _total(cim)
        root = await _total(cim, ROOT)
    finally:
        await cim.close()
    assert busy > 0
    assert _run_time(total) == min(100, round(busy / 4)) > 0
    assert total["PercentGuestRunTime"] == _run_time(total)
    assert total["PercentIdleTime"] == 100 - _run_time(total)
    # the management OS sees only its own virtual processors, which are idle
    assert (root["PercentIdleTime"], root["PercentProcessorTime"]) == (100, 0)


async def test_total_run_time_falls_back_when_vms_stop_or_pause(emulator: EmulatorCim) -> None:
    # 16 virtual processors on the 16 logical ones: a load of 1 % shows (8 would read 0.5)
    running = await _vm(emulator, "running", cpus=16)
    paused = await _vm(emulator, "paused", cpus=16, state=9)
    busy = await _busy_hundredths(emulator)  # the paused VM's load reads 0
    assert _run_time(await _total(emulator)) == round(busy / 16) > 0
    await ok(emulator, await request_state(emulator, running, 3))
    assert _run_time(await _total(emulator)) == 0
    await ok(emulator, await request_state(emulator, paused, 2))
    assert _run_time(await _total(emulator)) == round(
        await _busy_hundredths(emulator) / 16) > 0


async def test_total_run_time_survives_a_restart_of_the_emulated_host(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    config = make_config()
    cim = EmulatorCim.open(config)
    try:
        await _vm(cim, "busy", cpus=16)
        before = _run_time(await _total(cim))
    finally:
        await cim.close()
    cim = EmulatorCim.open(config)
    try:
        after = _run_time(await _total(cim))
    finally:
        await cim.close()
    assert after == before > 0


RAW = "Win32_PerfRawData_HvStats_HyperVHypervisorLogicalProcessor"


async def _raw_run_time_over_10_s(make_config: Callable[..., EmulatorConfig], lps: int,
                                  vcpus: int) -> tuple[CimInstance, CimInstance, int, int]:
    """Two readings of the raw counters 10 s apart (an injected clock) on a host with
    ``lps`` logical processors running one VM with ``vcpus``, the formatted counter and
    the hundredths of a logical processor the VM keeps busy."""
    now = [1_700_000_000.0]
    cim = EmulatorCim.open(make_config(cpus=lps), lambda: now[0])
    try:
        await _vm(cim, "busy", cpus=vcpus)
        busy = await _busy_hundredths(cim)
        first = await _total(cim, RAW)
        now[0] += 10
        second = await _total(cim, RAW)
        formatted = _run_time(await _total(cim))
    finally:
        await cim.close()
    assert second.integer("Timestamp_Sys100NS") == (first.integer("Timestamp_Sys100NS")
                                                     or 0) + 10 * 10_000_000
    assert first.integer("Timestamp_Sys100NS") == (1_700_000_000 + 11_644_473_600) * 10**7
    assert second.integer("Frequency_Sys100NS") == 10_000_000
    return first, second, formatted, busy


def _change(first: CimInstance, second: CimInstance, name: str) -> int:
    return (second.integer(name) or 0) - (first.integer(name) or 0)


async def test_raw_run_time_grows_by_the_share_the_running_vms_keep_busy(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """The raw counter is a PERF_100NSEC_TIMER: run time in 100 ns units, with the
    time it was read (Timestamp_Sys100NS, 100 ns since 1601); formatted as Perfmon does
    (100 x its change / the timestamp's), it reads the exact share the VMs keep busy,
    which the formatted class shows to the whole percent."""
    first, second, formatted, busy = await _raw_run_time_over_10_s(make_config, 8, 4)
    elapsed, run = 10 * 10_000_000, _change(first, second, "PercentTotalRunTime")
    assert busy > 0
    assert 100 * 8 * run == busy * elapsed  # busy / 8 percent of the time, exactly
    assert round(Fraction(100 * run, elapsed)) == formatted
    assert run + _change(first, second, "PercentIdleTime") == elapsed


async def test_raw_run_time_grows_when_the_vms_keep_under_half_a_percent_busy(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """One virtual processor (at most 30 % busy) of 64 logical ones: the formatted class
    reads 0 %, and the raw counter still grows, as Windows's does, so a host's figure
    formatted from it is not 0."""
    first, second, formatted, busy = await _raw_run_time_over_10_s(make_config, 64, 1)
    elapsed, run = 10 * 10_000_000, _change(first, second, "PercentTotalRunTime")
    assert formatted == 0 < busy < 50
    assert 100 * 64 * run == busy * elapsed > 0
    assert run + _change(first, second, "PercentIdleTime") == elapsed
