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
    neighbours while its VMs run."""
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


async def test_a_lasting_failure_logs_its_traceback_once_per_error_then_a_line_a_round(
        caplog: pytest.LogCaptureFixture) -> None:
    """A share broken for hours must not write a traceback every interval: the first
    failure and each new error carry one, a failure repeated is one warning line, and
    the first round that succeeds again says so once."""
    outcomes: list[Exception | None] = [
        OSError("share gone"), OSError("share gone"), OSError("share gone"),
        RuntimeError("another"), RuntimeError("another"), None, None,
        OSError("share gone")]
    done = asyncio.Event()

    async def write_heartbeats() -> None:
        if not outcomes:
            done.set()
            await asyncio.Event().wait()
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    timing = SimpleNamespace(interval_s=0.001)
    agent: Any = SimpleNamespace(host=SimpleNamespace(
        write_heartbeats=write_heartbeats, heartbeats=SimpleNamespace(timing=timing)))
    caplog.set_level(logging.INFO, logger="hyperv_agent")
    beating = asyncio.create_task(heartbeats(agent))
    await asyncio.wait_for(done.wait(), 5)
    beating.cancel()
    records = [r for r in caplog.records if "heartbeat" in r.getMessage()]
    lines = [(r.levelname, r.exc_info is not None) for r in records]
    assert lines == [("ERROR", True), ("WARNING", False), ("WARNING", False),
                     ("ERROR", True), ("WARNING", False), ("INFO", False),
                     ("ERROR", True)]
    assert "OSError: share gone" in records[1].getMessage()
