"""The one thread the emulator's synchronous work runs on.

The emulator is plain, CPU-bound Python and not thread-safe: a summary of thousands of
VMs or a query over them takes milliseconds. Each CIM primitive runs its work here, one
at a time, so the event loop that awaits it stays free to serve other requests; the
timers the emulator sets (a guest that shuts down a while after being asked) run their
actions here too. All emulated hosts of a process share the thread, since a migration
changes two hosts in one call.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger("hyperv_agent.emulator")

_T = TypeVar("_T")


class Worker:
    """A single thread running the emulator's work in the order it is handed in."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperv-emulator")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` on the worker thread (with the caller's context variables, so
        its log lines keep the request id) and return what it returns."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, functools.partial(context.run, work))

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the worker thread after ``delay_s``, timed by the event loop
        that last handed in work (or the running one); at once when there is none."""
        loop = self._loop
        if loop is None or loop.is_closed():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                action()
                return
        try:
            loop.call_soon_threadsafe(loop.call_later, delay_s, self._submit, action)
        except RuntimeError:  # the loop is closing: its timers would never fire either
            log.debug("event loop closed; a delayed action of the emulated host is dropped")

    def _submit(self, action: Callable[[], None]) -> None:
        self._executor.submit(action).add_done_callback(_log_failure)


def _log_failure(done: Future[None]) -> None:
    error = done.exception()
    if error is not None:
        log.error("a delayed action of the emulated host failed", exc_info=error)


@functools.cache
def shared() -> Worker:
    """The worker of this process."""
    return Worker()
