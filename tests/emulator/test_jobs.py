"""Jobs: synchronous or asynchronous, Running then Completed or Exception, then gone."""

from __future__ import annotations

from collections.abc import Callable

from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import CimNotFound
from tests.emulator.kit import Clock, define_vm, request_state, state

RUNNING_JOB, COMPLETED, EXCEPTION = 4, 7, 10



async def test_job_runs_then_completes_when_its_duration_passes(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    clock = Clock()
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=2.0)), clock)
    try:
        vm = await define_vm(cim)
        result = await request_state(cim, vm, 2)
        assert result.return_value == 4096
        job_path = result.path("Job")
        assert job_path is not None and job_path.class_name == "Msvm_ConcreteJob"
        job = await cim.get(job_path)
        assert job["JobState"] == RUNNING_JOB
        clock.now += 1.0
        assert (await cim.get(job_path))["PercentComplete"] == 50
        clock.now += 1.5
        done = await cim.get(job_path)
        assert (done["JobState"], done["ErrorCode"], done["PercentComplete"]) == (COMPLETED, 0, 100)
        clock.now += 301
        try:
            await cim.get(job_path)
            raise AssertionError("a job must vanish 5 minutes after it ends")
        except CimNotFound:
            pass
    finally:
        await cim.close()


async def test_job_ends_in_exception_and_changes_nothing_when_fault_injected(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    emulator.faults.fail_next_job("RequestStateChange", 32768, "the worker process died")
    result = await request_state(emulator, vm, 2)
    assert result.return_value == 4096
    job_path = result.path("Job")
    assert job_path is not None
    job = await emulator.get(job_path)
    assert job["JobState"] == EXCEPTION
    assert job["ErrorCode"] == 32768
    assert job["ErrorDescription"] == "the worker process died"
    assert await state(emulator, vm) == 3
    # the fault was one-shot
    retry = await request_state(emulator, vm, 2)
    retry_job = retry.path("Job")
    assert retry_job is not None and (await emulator.get(retry_job))["JobState"] == COMPLETED


async def test_job_never_finishes_when_hang_injected(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    result = await request_state(emulator, vm, 2)
    job_path = result.path("Job")
    assert job_path is not None
    for _ in range(3):
        assert (await emulator.get(job_path))["JobState"] == RUNNING_JOB


async def test_call_returns_injected_code_when_fault_injected(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    emulator.faults.fail_next_call("RequestStateChange", 32769)
    result = await request_state(emulator, vm, 2)
    assert (result.return_value, result.path("Job")) == (32769, None)
    assert await state(emulator, vm) == 3


async def test_methods_complete_synchronously_when_jobs_are_synchronous(
    sync_emulator: EmulatorCim,
) -> None:
    vm = await define_vm(sync_emulator)
    result = await request_state(sync_emulator, vm, 2)
    assert (result.return_value, result.path("Job")) == (0, None)
    assert await state(sync_emulator, vm) == 2
    assert sync_emulator.round_trips()["jobs_started"] == 0


async def test_affected_element_links_job_to_vm(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    result = await request_state(emulator, vm, 2)
    job_path = result.path("Job")
    assert job_path is not None
    linked = await emulator.associators(job_path, assoc_class="Msvm_AffectedJobElement")
    assert [i.path for i in linked] == [vm]
