"""A job's RequestStateChange: Terminate (4) and Kill (5) stop a job still running and
cancellable; it ends Terminated or Killed with ERROR_CANCELLED and nothing of its work
done. A job that has ended answers 4097; other requests are refused."""

from __future__ import annotations

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import define_vm, request_state, state

TERMINATED, KILLED, COMPLETED = 8, 9, 7
ENABLED, DISABLED = 2, 3


async def _hung_start(emulator: EmulatorCim) -> tuple[ObjectPath, ObjectPath]:
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    result = await request_state(emulator, vm, ENABLED)
    job = result.path("Job")
    assert result.return_value == 4096 and job is not None
    return vm, job


async def test_terminate_stops_a_running_job_and_its_work_never_happens(
        emulator: EmulatorCim) -> None:
    vm, job = await _hung_start(emulator)
    assert (await emulator.get(job))["Cancellable"] is True
    stopped = await emulator.invoke(job, "RequestStateChange", {"RequestedState": 4})
    assert stopped.return_value == 0
    ended = await emulator.get(job)
    assert (ended["JobState"], ended["ErrorCode"]) == (TERMINATED, 32768)
    assert "canceled" in str(ended["ErrorDescription"])
    assert ended["Cancellable"] is False
    assert await state(emulator, vm) == DISABLED
    again = await emulator.invoke(job, "RequestStateChange", {"RequestedState": 4})
    assert again.return_value == 4097


async def test_kill_ends_the_job_killed(emulator: EmulatorCim) -> None:
    _, job = await _hung_start(emulator)
    assert (await emulator.invoke(job, "RequestStateChange",
                                  {"RequestedState": 5})).return_value == 0
    assert (await emulator.get(job))["JobState"] == KILLED


async def test_a_job_whose_work_is_done_cannot_be_stopped(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    result = await request_state(emulator, vm, ENABLED)
    job = result.path("Job")
    assert job is not None
    assert (await emulator.get(job))["Cancellable"] is False
    refused = await emulator.invoke(job, "RequestStateChange", {"RequestedState": 4})
    assert refused.return_value == 4097
    assert await state(emulator, vm) == ENABLED


async def test_other_requests_are_refused(emulator: EmulatorCim) -> None:
    _, job = await _hung_start(emulator)
    for requested, code in ((2, 1), (3, 1), (6, 1), (99, 5)):
        result = await emulator.invoke(job, "RequestStateChange",
                                       {"RequestedState": requested})
        assert result.return_value == code, requested
    assert (await emulator.get(job))["JobState"] == 4
