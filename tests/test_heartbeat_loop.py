"""The periodic heartbeat outlives a stamp that fails unexpectedly."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from hyperv_agent.service import heartbeats


async def test_a_stamp_that_fails_unexpectedly_does_not_end_the_heartbeat(
        caplog: pytest.LogCaptureFixture) -> None:
    """One failure no layer below turned into an agent error (a library's own exception)
    must not end the task for good: a host no longer stamped is called down by its
    neighbours, and HA starts its running VMs a second time elsewhere."""
    stamps: list[str] = []

    async def write_heartbeats() -> None:
        stamps.append("tried")
        if len(stamps) == 1:
            raise RuntimeError("a library's own error")

    timing = SimpleNamespace(interval_s=0.01)
    agent: Any = SimpleNamespace(host=SimpleNamespace(
        write_heartbeats=write_heartbeats, heartbeats=SimpleNamespace(timing=timing)))
    beating = asyncio.create_task(heartbeats(agent))
    await asyncio.sleep(0.2)
    assert not beating.done()
    beating.cancel()
    assert len(stamps) >= 3
    assert any("heartbeat" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
