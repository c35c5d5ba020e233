"""The dispatcher bounds every wait for Hyper-V inside a command by what the management
server waits for its answer (``jobs.command_bound``); a body without a ``wait`` (a
report the agent is asked for outside the MS's command timeout) keeps the job wait."""

from __future__ import annotations

import json

import pytest

from hyperv_agent.cloudstack.answers import Answer
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.handlers.dispatch import Dispatch, Result, Route
from hyperv_agent.hyperv import jobs

CHECK = "com.cloud.agent.api.CheckVirtualMachineCommand"
JOB_WAIT = jobs.WaitPolicy(timeout_s=600.0)


async def _limits(body: dict[str, object], job_wait: jobs.WaitPolicy = JOB_WAIT,
                  ) -> list[tuple[float, str | None]]:
    seen: list[tuple[float, str | None]] = []

    async def handler(command: Command) -> Result:
        seen.append(jobs.limited(job_wait))
        with jobs.whole_wait():
            seen.append(jobs.limited(job_wait))
        return Answer(result=True)

    dispatch = Dispatch({CHECK: Route(Command, handler)})
    reply = json.loads(await dispatch(CHECK, json.dumps({"vmName": "i-2-3-VM", **body})
                                      .encode()))
    assert reply[0][next(iter(reply[0]))]["result"] is True, reply
    return seen


@pytest.mark.parametrize(("wait", "half", "whole"), [
    (2, 1.0, 2.0),  # a short wait: half of it, and all of it to stop and undo
    (0, 600.0, 600.0),  # the MS's default 1800 s: the job wait fits in half of it
    (1000, 500.0, 600.0),
])
async def test_a_commands_waits_end_within_half_its_wait(wait: int, half: float,
                                                         whole: float) -> None:
    (work_s, work_bound), (undo_s, _) = await _limits({"wait": wait})
    assert half - 0.2 < work_s <= half and whole - 0.2 < undo_s <= whole
    if half < JOB_WAIT.timeout_s:
        assert work_bound == (f"{half:g} s, half the {wait:g} s the management server "
                              "waits for CheckVirtualMachineCommand")
    else:
        assert work_bound is None


async def test_a_job_wait_longer_than_half_the_default_wait_ends_at_that_half() -> None:
    """A host configured with a job wait beyond 900 s: a VM's state change, like any
    wait, still ends within half the 1800 s the MS waits for a command whose ``wait`` is
    0, so the answer comes while the MS still listens."""
    long_wait = jobs.WaitPolicy(timeout_s=3000.0)
    (work_s, work_bound), (undo_s, _) = await _limits({"wait": 0}, long_wait)
    assert 899.8 < work_s <= 900.0 and 1799.8 < undo_s <= 1800.0
    assert work_bound == ("900 s, half the 1800 s the management server waits for "
                          "CheckVirtualMachineCommand")


async def test_a_body_without_a_wait_keeps_the_job_wait() -> None:
    assert await _limits({}) == [(600.0, None), (600.0, None)]


def test_outside_a_command_every_wait_is_the_job_wait() -> None:
    assert jobs.limited(JOB_WAIT) == (600.0, None)
