"""hyperv.jobs: invoke -> return code -> bounded job wait -> typed error, on the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import pytest

from hyperv_agent.cim.api import Cim, CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.errors import CimUnavailable, JobFailed, JobLost, JobTimeout, MethodFailed
from hyperv_agent.hyperv import jobs
from tests.emulator.kit import define_vm, state

FAST = jobs.WaitPolicy(timeout_s=0.3, first_poll_s=0.01, max_poll_s=0.05)


async def test_call_waits_for_job_when_method_starts_one(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=0.1)))
    try:
        vm = await define_vm(cim)
        started = time.monotonic()
        await jobs.call(cim, vm, "RequestStateChange", {"RequestedState": 2})
        assert time.monotonic() - started >= 0.1
        assert await state(cim, vm) == 2
        spent = cim.round_trips()
        assert spent["invoke:RequestStateChange"] == 1 and spent["job_poll"] >= 2
    finally:
        await cim.close()


async def test_call_returns_at_once_when_method_completes_synchronously(
    sync_emulator: EmulatorCim,
) -> None:
    vm = await define_vm(sync_emulator)
    before = sync_emulator.round_trips()
    result = await jobs.call(sync_emulator, vm, "RequestStateChange", {"RequestedState": 2})
    assert result.return_value == 0
    spent = sync_emulator.round_trips() - before
    assert (spent.calls, spent["job_poll"]) == (1, 0)


async def test_job_failure_raises_with_code_and_description(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    emulator.faults.fail_next_job("RequestStateChange", 32778, "not enough memory")
    with pytest.raises(JobFailed) as raised:
        await jobs.call(emulator, vm, "RequestStateChange", {"RequestedState": 2}, policy=FAST)
    assert (raised.value.job_state, raised.value.error_code) == (10, 32778)
    assert "not enough memory" in str(raised.value)


async def test_wait_times_out_when_job_never_finishes(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    started = time.monotonic()
    with pytest.raises(JobTimeout, match=r"did not finish within 0\.3 s") as timeout:
        await jobs.call(emulator, vm, "RequestStateChange", {"RequestedState": 2}, policy=FAST)
    assert time.monotonic() - started < 1.0
    assert timeout.value.job_state == 4  # Running: what the caller answers tells it apart


async def test_failure_code_raises_method_failed_unless_accepted(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    with pytest.raises(MethodFailed) as raised:
        await jobs.call(emulator, vm, "RequestStateChange", {"RequestedState": 3})
    assert raised.value.return_value == 32775
    assert "invalid state" in str(raised.value)
    result = await jobs.call(emulator, vm, "RequestStateChange", {"RequestedState": 3},
                             accept=(32775,))
    assert result.return_value == 32775


class _OutOfReach:
    """The emulated host, its next ``outages`` reads of a job failing as an unreachable
    WinRM service fails them."""

    def __init__(self, cim: EmulatorCim, outages: int) -> None:
        self.cim, self.outages = cim, outages

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cim, name)

    async def get(self, path: ObjectPath) -> CimInstance:
        if path.class_name == "Msvm_ConcreteJob" and self.outages:
            self.outages -= 1
            raise CimUnavailable("hv01:5986: cannot reach the WinRM service (refused)")
        return await self.cim.get(path)


async def test_a_job_is_polled_through_a_short_outage_of_its_host(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """The job runs on while the host cannot be reached for a moment; its outcome is
    what the call returns, not the outage."""
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=0.1)))
    try:
        vm = await define_vm(cim)
        flaky = _OutOfReach(cim, outages=3)
        await jobs.call(cast(Cim, flaky), vm, "RequestStateChange", {"RequestedState": 2},
                        policy=jobs.WaitPolicy(timeout_s=5, first_poll_s=0.01, max_poll_s=0.02))
        assert flaky.outages == 0
        assert await state(cim, vm) == 2
    finally:
        await cim.close()


async def test_a_host_out_of_reach_longer_than_the_grace_fails_the_wait(
    make_config: Callable[..., EmulatorConfig], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "UNREACHABLE_GRACE_S", 0.2)
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=5)))
    try:
        vm = await define_vm(cim)
        started = time.monotonic()
        with pytest.raises(CimUnavailable, match="cannot reach the WinRM service"):
            await jobs.call(cast(Cim, _OutOfReach(cim, outages=10_000)), vm,
                            "RequestStateChange", {"RequestedState": 2},
                            policy=jobs.WaitPolicy(timeout_s=5, first_poll_s=0.01,
                                                   max_poll_s=0.02))
        assert time.monotonic() - started < 1.5
    finally:
        await cim.close()


async def test_a_job_its_host_loses_at_once_fails_the_wait_at_the_first_poll(
    emulator: EmulatorCim,
) -> None:
    """The Virtual Machine Management Service restarts as the job starts: the job's path
    answers not found at the first poll, and the wait ends there, naming the method and
    the lost job, without polling again."""
    vm = await define_vm(emulator)
    emulator.faults.lose_next_job("RequestStateChange", done=False)
    before = emulator.round_trips()
    with pytest.raises(JobLost, match="Hyper-V lost track of its RequestStateChange job"):
        await jobs.call(emulator, vm, "RequestStateChange", {"RequestedState": 2},
                        policy=FAST)
    assert (emulator.round_trips() - before)["job_poll"] == 1
    assert await state(emulator, vm) == 3  # none of its work was done


async def test_a_job_that_goes_once_ended_before_a_poll_reads_it_fails_the_wait(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """The job is seen running, then ends and is removed before the next poll comes: the
    wait ends at that poll, however the job ended, with JobLost, not a hang nor a
    success."""
    cim = EmulatorCim.open(make_config(latency=LatencyModel(job_s=0.1)))
    try:
        vm = await define_vm(cim)
        cim.faults.lose_next_job("RequestStateChange", done=True)
        before = cim.round_trips()
        with pytest.raises(JobLost) as lost:
            await jobs.call(cim, vm, "RequestStateChange", {"RequestedState": 2},
                            policy=jobs.WaitPolicy(timeout_s=5, first_poll_s=0.01,
                                                   max_poll_s=0.05))
        assert lost.value.method == "RequestStateChange"
        assert (cim.round_trips() - before)["job_poll"] >= 2
    finally:
        await cim.close()


async def test_a_stop_the_host_refuses_is_a_job_not_stopped(emulator: EmulatorCim) -> None:
    """Terminate refused with a code other than "cannot stop now" (4097) says nothing of
    where the job is: the job was not stopped, as for one Hyper-V cannot stop, rather
    than a failure of its own for every caller to handle."""
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    _, job = await jobs.start(emulator, vm, "RequestStateChange", {"RequestedState": 2})
    assert job is not None
    emulator.faults.fail_next_call("RequestStateChange", 1)
    assert await jobs.terminate(emulator, job) is False
    assert (await emulator.get(job)).integer("JobState") == 4  # still running
    assert await jobs.terminate(emulator, job) is True  # asked again, it is stopped


async def test_a_job_whose_stop_is_refused_has_its_file_removed_once_it_ends(
    emulator: EmulatorCim,
) -> None:
    """A job given up on whose stop the host refuses runs on: what ``after_job`` asked
    for is done in the background, once the job's own wait is over, and the wait that
    gave up fails as it would have."""
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    _, job = await jobs.start(emulator, vm, "RequestStateChange", {"RequestedState": 2})
    assert job is not None
    emulator.faults.fail_next_call("RequestStateChange", 1)
    done = asyncio.Event()

    async def then() -> None:
        done.set()

    with jobs.after_job(then), pytest.raises(JobTimeout):
        await jobs.wait_or_stop(emulator, job, "RequestStateChange", FAST, FAST)
    assert not done.is_set()  # the job runs on: not yet
    await asyncio.wait_for(done.wait(), 5.0)
    assert (await emulator.get(job)).integer("JobState") == 4


@pytest.mark.parametrize("with_after_job", [False, True], ids=["alone", "after-job"])
async def test_a_stop_the_host_refuses_is_one_warning_naming_the_refusal(
    emulator: EmulatorCim, caplog: pytest.LogCaptureFixture, with_after_job: bool,
) -> None:
    """A job given up on whose stop the host refuses is one event in the log: one
    warning, naming the job, the refusal and what follows (it runs on; what it writes is
    removed once it ends), not one line from each step that saw it."""
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    _, job = await jobs.start(emulator, vm, "RequestStateChange", {"RequestedState": 2})
    assert job is not None
    emulator.faults.fail_next_call("RequestStateChange", 1)
    done = asyncio.Event()

    async def then() -> None:
        done.set()

    caplog.set_level("INFO", logger="hyperv_agent.hyperv.jobs")
    with (jobs.after_job(then) if with_after_job else contextlib.nullcontext()), \
            pytest.raises(JobTimeout):
        await jobs.wait_or_stop(emulator, job, "RequestStateChange", FAST, FAST)
    warned = [r.getMessage() for r in caplog.records
              if r.name == "hyperv_agent.hyperv.jobs" and r.levelname == "WARNING"]
    assert len(warned) == 1, warned
    assert "the RequestStateChange job was not stopped: the host refused to stop it " \
           "(RequestStateChange failed with return code 1)" in warned[0], warned
    if with_after_job:
        assert warned[0].endswith("; what it writes is removed once it ends"), warned
        await asyncio.wait_for(done.wait(), 5.0)


class _SlowToStop:
    """The emulated host, whose jobs take a request to stop (Terminate: 4096, transition
    started) and run on meanwhile, as a job past the point where its work can be cut
    short finishes it first."""

    def __init__(self, cim: EmulatorCim) -> None:
        self.cim = cim

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cim, name)

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        if path.class_name.endswith("Job") and method == "RequestStateChange":
            return MethodResult.build(4096, {})
        return await self.cim.invoke(path, method, params)


@pytest.mark.parametrize("with_after_job", [False, True], ids=["alone", "after-job"])
async def test_a_job_still_running_after_its_stop_is_one_warning(
    emulator: EmulatorCim, caplog: pytest.LogCaptureFixture, with_after_job: bool,
) -> None:
    """A job given up on that takes the request to stop and still runs at the end of the
    grace is one event in the log, from the give-up to the removal of what it writes once
    it ends: one warning, naming the job, how long it ran on and what follows, not one
    line from the stop and another from the clean-up."""
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    _, job = await jobs.start(emulator, vm, "RequestStateChange", {"RequestedState": 2})
    assert job is not None
    done = asyncio.Event()

    async def then() -> None:
        done.set()

    caplog.set_level("INFO", logger="hyperv_agent.hyperv.jobs")
    slow = cast(Cim, _SlowToStop(emulator))
    with (jobs.after_job(then) if with_after_job else contextlib.nullcontext()), \
            pytest.raises(JobTimeout):
        await jobs.wait_or_stop(slow, job, "RequestStateChange", FAST, FAST)
    assert (await emulator.get(job)).integer("JobState") == 4  # it runs on
    assert await jobs.terminate(emulator, job) is True  # it ends, a while later
    if with_after_job:
        await asyncio.wait_for(done.wait(), 5.0)
    warned = [r.getMessage() for r in caplog.records
              if r.name == "hyperv_agent.hyperv.jobs" and r.levelname == "WARNING"]
    assert len(warned) == 1, warned
    assert "the RequestStateChange job was asked to stop and still ran 0.3 s later" in \
        warned[0], warned
    if with_after_job:
        assert warned[0].endswith("; what it writes is removed once it ends"), warned


async def test_a_stop_cut_short_by_the_commands_bound_says_how_long_it_waited(
    emulator: EmulatorCim, caplog: pytest.LogCaptureFixture,
) -> None:
    """The wait after the request to stop ends at the command's bound, long before the
    grace's own 5 s: the warning tells the seconds the job was waited on, not the 5 s
    it never had."""
    vm = await define_vm(emulator)
    emulator.faults.hang_next_job("RequestStateChange")
    _, job = await jobs.start(emulator, vm, "RequestStateChange", {"RequestedState": 2})
    assert job is not None
    caplog.set_level("INFO", logger="hyperv_agent.hyperv.jobs")
    grace = jobs.WaitPolicy(timeout_s=5.0, first_poll_s=0.01, max_poll_s=0.05)
    slow = cast(Cim, _SlowToStop(emulator))
    began = time.monotonic()
    with jobs.command_bound("StopCommand", 1.0), pytest.raises(JobTimeout):
        await jobs.wait_or_stop(slow, job, "RequestStateChange", FAST, grace)
    assert time.monotonic() - began < 1.5
    warned = [r.getMessage() for r in caplog.records
              if r.name == "hyperv_agent.hyperv.jobs" and r.levelname == "WARNING"]
    assert len(warned) == 1, warned
    assert re.search(r"the RequestStateChange job was asked to stop and still ran "
                     r"0\.[5-7] s later", warned[0]), warned
    assert await jobs.terminate(emulator, job) is True
