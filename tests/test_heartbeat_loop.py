"""The periodic heartbeat outlives a stamp that fails unexpectedly, and keeps its cadence."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from hyperv_agent.handlers.heartbeat import Heartbeats, HeartbeatTiming
from hyperv_agent.service import heartbeats


def _beats(timing: SimpleNamespace) -> SimpleNamespace:
    """Heartbeats' face the loop uses: its timing, and ``close``."""

    async def close() -> None:
        return None

    return SimpleNamespace(timing=timing, close=close)


async def _beat_until(write_heartbeats: Callable[..., Awaitable[object]], interval_s: float,
                      done: Callable[[], bool]) -> None:
    """Run the heartbeat loop over ``write_heartbeats`` every ``interval_s`` until
    ``done``, then stop it."""
    agent: Any = SimpleNamespace(host=SimpleNamespace(
        write_heartbeats=write_heartbeats,
        heartbeats=_beats(SimpleNamespace(interval_s=interval_s))))
    beating = asyncio.create_task(heartbeats(agent))
    while not done():
        await asyncio.sleep(0.01)
    beating.cancel()
    await asyncio.gather(beating, return_exceptions=True)


async def test_a_stamp_that_fails_unexpectedly_does_not_end_the_heartbeat(
        caplog: pytest.LogCaptureFixture) -> None:
    """One failure no layer below turned into an agent error (a library's own exception)
    must not end the task for good: a host no longer stamped is called down by its
    neighbours while its VMs run."""
    stamps: list[str] = []

    async def write_heartbeats(within_s: float | None = None) -> None:
        stamps.append("tried")
        if len(stamps) == 1:
            raise RuntimeError("a library's own error")

    timing = SimpleNamespace(interval_s=0.01)
    agent: Any = SimpleNamespace(host=SimpleNamespace(
        write_heartbeats=write_heartbeats, heartbeats=_beats(timing)))
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

    async def write_heartbeats(within_s: float | None = None) -> None:
        if not outcomes:
            done.set()
            await asyncio.Event().wait()
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    timing = SimpleNamespace(interval_s=0.001)
    agent: Any = SimpleNamespace(host=SimpleNamespace(
        write_heartbeats=write_heartbeats, heartbeats=_beats(timing)))
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


async def test_rounds_start_every_interval_while_a_pools_write_outlasts_the_round() -> None:
    """A round's writes are waited for until the next round is due, no longer (a pool
    whose file server hangs goes on alone): the next round starts an interval after the
    last one started, not an interval after the slowest write ended, which left every
    pool's stamps later each round."""
    interval_s = 0.2
    starts: list[float] = []
    waited: list[float | None] = []

    async def write_heartbeats(within_s: float | None = None) -> float:
        starts.append(time.monotonic())
        waited.append(within_s)
        await asyncio.sleep(min(0.6 * interval_s, within_s or 0.6 * interval_s))
        return starts[-1]

    await _beat_until(write_heartbeats, interval_s, lambda: len(starts) >= 8)
    assert starts[7] - starts[0] < 7 * interval_s * 1.25, starts
    assert all(within is not None and within <= interval_s for within in waited), waited


async def test_a_round_whose_writes_started_late_is_followed_an_interval_after_them(
        ) -> None:
    """Writes that started only after the next round was due (the host check waited for
    a late answer) are not followed at once by another round, which would find them
    still under way: the next round comes an interval after they started."""
    interval_s = 0.2
    starts: list[float] = []

    async def write_heartbeats(within_s: float | None = None) -> float:
        starts.append(time.monotonic())
        if len(starts) == 1:
            await asyncio.sleep(1.5 * interval_s)  # the host answers late
        return time.monotonic()

    await _beat_until(write_heartbeats, interval_s, lambda: len(starts) >= 2)
    assert starts[1] - starts[0] >= 2.5 * interval_s - 0.02, starts


async def test_a_round_that_wrote_nothing_and_ended_late_is_not_followed_at_once(
        ) -> None:
    """A round that found the host gone only after a long wait (its host check outlasting
    the interval) wrote nothing: the rounds it overran are not run back to back, each
    asking the gone host again, but the next comes an interval after it ended."""
    interval_s = 0.2
    starts: list[float] = []

    async def write_heartbeats(within_s: float | None = None) -> None:
        starts.append(time.monotonic())
        if len(starts) == 1:
            await asyncio.sleep(3.5 * interval_s)  # the host check gives up late

    await _beat_until(write_heartbeats, interval_s, lambda: len(starts) >= 3)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= interval_s - 0.02 for gap in gaps[1:]), starts
    assert gaps[0] >= 4.5 * interval_s - 0.02, starts


async def test_the_heartbeat_stopped_cancels_the_stamps_under_way() -> None:
    """Cancelled (the agent stops), the loop closes the heartbeats: writes still under
    way, to a hung file server, are cancelled, not left pending."""
    closed: list[bool] = []

    async def write_heartbeats(within_s: float | None = None) -> None:
        await asyncio.Event().wait()

    async def close() -> None:
        closed.append(True)

    agent: Any = SimpleNamespace(host=SimpleNamespace(
        write_heartbeats=write_heartbeats,
        heartbeats=SimpleNamespace(timing=SimpleNamespace(interval_s=1.0), close=close)))
    beating = asyncio.create_task(heartbeats(agent))
    await asyncio.sleep(0.05)
    beating.cancel()
    await asyncio.gather(beating, return_exceptions=True)
    assert closed == [True]


async def test_a_write_failing_after_its_round_is_raised_by_the_next_and_not_repeated(
        ) -> None:
    """Each pool's write is waited for until the round ends, no longer: the other pool is
    stamped, the slow one not started again while under way, and an error nobody
    expected that it meets after its round is raised by the next round, once (the loop
    logs it), not lost in a task nobody awaits."""
    release = asyncio.Event()
    written: list[str] = []

    async def write_text(path: str, text: str) -> None:
        written.append(path)
        if path.startswith("\\\\slow") and written.count(path) == 1:
            await release.wait()
            raise RuntimeError("a library's own error")

    async def stat(path: str) -> None:
        return None

    files: Any = SimpleNamespace(write_text=write_text, stat=stat)
    pools: Any = SimpleNamespace(roots=lambda: ("\\\\slow\\pool", "\\\\quick\\pool"))
    beats = Heartbeats(files, pools, private_ip="192.168.100.10")
    await beats.stamp_all(within_s=0.05)
    await beats.stamp_all(within_s=0.05)
    assert written == ["\\\\slow\\pool\\hb-192.168.100.10",
                       "\\\\quick\\pool\\hb-192.168.100.10",
                       "\\\\quick\\pool\\hb-192.168.100.10"]
    release.set()
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="a library's own error"):
        await beats.stamp_all(within_s=0.05)
    await beats.stamp_all(within_s=0.05)
    await beats.close()
    assert len(written) == 7


async def test_writes_of_several_pools_failing_unexpectedly_are_each_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """Each pool's stamp is written in its own task; when the writes of two pools fail
    with errors no layer below turned into an agent error, the loop logs both, each with
    its pool: not the first alone, the other pool's failure dropped unseen for as long
    as it lasts."""

    async def write_text(path: str, text: str) -> None:
        if path.startswith("\\\\a\\"):
            raise RuntimeError("a library's own error")
        raise KeyError("another library's error")

    async def stat(path: str) -> None:
        return None

    files: Any = SimpleNamespace(write_text=write_text, stat=stat)
    pools: Any = SimpleNamespace(roots=lambda: ("\\\\a\\pool", "\\\\b\\pool"))
    beats = Heartbeats(files, pools, timing=HeartbeatTiming(interval_s=0.05),
                       private_ip="192.168.100.10")
    agent: Any = SimpleNamespace(host=SimpleNamespace(write_heartbeats=beats.stamp_all,
                                                      heartbeats=beats))
    beating = asyncio.create_task(heartbeats(agent))
    await asyncio.sleep(0.3)
    beating.cancel()
    await asyncio.gather(beating, return_exceptions=True)
    said = "\n".join(r.getMessage() + (logging.Formatter().formatException(r.exc_info)
                                        if r.exc_info else "") for r in caplog.records)
    assert "a library's own error" in said and "\\\\a\\pool" in said, said
    assert "another library's error" in said and "\\\\b\\pool" in said, said
