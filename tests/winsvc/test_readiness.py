"""Waiting for Hyper-V before serving: backoff, stop, bound, and the vmms probe."""

from __future__ import annotations

import asyncio
import time

import pytest

from hyperv_agent.errors import HostNotReady
from hyperv_agent.winsvc.host import RunState, StartType
from hyperv_agent.winsvc.readiness import Backoff, service_running, wait_until_ready
from tests.winsvc.memoryhost import MemoryHost


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff().delays()
    assert [next(delays) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


class Flaky:
    """Not ready for the first ``failures`` looks."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.looks: list[float] = []

    async def __call__(self) -> str | None:
        self.looks.append(time.monotonic())
        return "vmms is start_pending" if len(self.looks) <= self.failures else None


FAST = Backoff(first_s=0.02, factor=2, max_s=0.08, limit_s=5)


async def test_ready_after_a_few_looks_spaced_by_the_backoff() -> None:
    probe = Flaky(failures=4)
    assert await wait_until_ready("Hyper-V (vmms)", probe, asyncio.Event(), FAST)
    gaps = [b - a for a, b in zip(probe.looks, probe.looks[1:], strict=False)]
    assert len(probe.looks) == 5
    assert all(g >= d * 0.9 for g, d in zip(gaps, [0.02, 0.04, 0.08, 0.08], strict=True))


async def test_a_stop_request_ends_the_wait_at_once() -> None:
    stop = asyncio.Event()
    slow = Backoff(first_s=30, limit_s=600)
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    assert not await wait_until_ready("Hyper-V (vmms)", Flaky(10**6), stop, slow)
    assert time.monotonic() - started < 2


async def test_the_wait_gives_up_after_its_limit_naming_the_last_reason() -> None:
    with pytest.raises(HostNotReady, match=r"^Hyper-V \(vmms\) not ready after 0 s: "
                                           r"vmms is start_pending$"):
        await wait_until_ready("Hyper-V (vmms)", Flaky(10**6), asyncio.Event(),
                               Backoff(first_s=0.01, max_s=0.02, limit_s=0.1))


async def test_vmms_probe_reads_the_service_manager() -> None:
    host = MemoryHost()
    probe = service_running(host, "vmms")
    assert await probe() == "service vmms is not installed (is the Hyper-V role installed?)"
    host.add_service("vmms", RunState.START_PENDING, StartType.AUTO)
    assert await probe() == "service vmms is start_pending"
    host.add_service("vmms", RunState.RUNNING, StartType.AUTO)
    assert await probe() is None
