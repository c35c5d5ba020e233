"""VMs caught in a state change on an emulated host: jobs made slow so the change lasts,
the host's clock stopped so it lasts however slowly a test runs, and a change asked for
without waiting for it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import LatencyModel
from tests.e2e.conftest import Running
from tests.emulator.kit import request_state

JOB_S = 0.5  # how long each state change runs on the emulated host
#: Msvm_ComputerSystem.EnabledState while it changes
STARTING, STOPPING, SAVING, PAUSING = 10, 4, 32773, 32776


def slow(running: Running, job_s: float = JOB_S) -> None:
    """From now on each job of the emulated host runs ``job_s``."""
    host = running.emulator.host
    host.config = dataclasses.replace(host.config, latency=LatencyModel(job_s=job_s))


def frozen(running: Running) -> Callable[[float], None]:
    """Stop the emulated host's clock (a state change then lasts until it is moved on,
    however slowly the machine runs the test); the function returned moves it on."""
    host = running.emulator.host
    now = [host.clock()]
    host.clock = lambda: now[0]

    def advance(seconds: float) -> None:
        now[0] += seconds
    return advance


async def changing(cim: EmulatorCim, path: ObjectPath, requested: int, shown: int) -> None:
    """Ask for ``requested`` without waiting for its job: the VM shows ``shown``."""
    assert (await request_state(cim, path, requested)).return_value == 4096
    assert (await cim.get(path))["EnabledState"] == shown
