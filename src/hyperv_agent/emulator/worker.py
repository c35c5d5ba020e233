"""The one thread the emulator's synchronous work runs on.

The emulator is plain, CPU-bound Python and not thread-safe: a summary of thousands of
VMs or a query over them takes milliseconds. Each CIM primitive runs its work here, one
at a time, so the event loop that awaits it stays free to serve other requests; the
timers the emulator sets (a guest that shuts down a while after being asked) run their
actions here too. All emulated hosts of a process share the thread, since a migration
changes two hosts in one call.

Other threads (the listener of a cluster member) hand work in with ``call`` and wait for
its result. While the worker itself waits on another process (a migration asking its
destination), it runs such work with ``drain``, so two processes asking each other at the
same moment both proceed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger("hyperv_agent.emulator")

_T = TypeVar("_T")

_THREAD_NAME = "hyperv-emulator"


class Worker:
    """A single thread running the emulator's work in the order it is handed in."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_NAME)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handed_in: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue())
        #: Actions set for later before any event loop could time them (``later``): when
        #: each is due (``time.monotonic``), armed as the first loop hands work in.
        self._parked: list[tuple[float, Callable[[], None]]] = []
        #: Guards ``_loop`` and ``_parked`` together: an action is parked (on the worker's
        #: thread, its last loop closed) either before a new loop takes the parked ones or
        #: after it is set, when the action is timed on it instead.
        self._parking = threading.Lock()

    async def run(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` on the worker thread (with the caller's context variables, so
        its log lines keep the request id) and return what it returns."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            with self._parking:  # no action parked between the two: ``later`` reads both
                self._loop = loop
                parked, self._parked = self._parked, []
            self._arm_parked(loop, parked)
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, functools.partial(context.run, work))

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the worker thread after ``delay_s``, timed by the event loop
        that last handed in work (or the running one). Without one (a host opened before
        its loop runs, as ``serve`` opens it): at once when due now, else kept until the
        first loop hands work in, then timed for what is left of ``delay_s`` (run ahead
        of that work if nothing is left, ``_arm_parked``) — a guest that has a minute of
        its shutdown left does not finish as its host opens."""
        with self._parking:
            loop = self._loop
            if loop is None or loop.is_closed():
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    if delay_s > 0:
                        self._parked.append((time.monotonic() + delay_s, action))
                        return
                    loop = None
        if loop is None:
            action()
            return
        try:
            loop.call_soon_threadsafe(loop.call_later, delay_s, self._submit, action)
        except RuntimeError:  # the loop is closing: its timers would never fire either
            log.debug("event loop closed; a delayed action of the emulated host is dropped")

    def _arm_parked(self, loop: asyncio.AbstractEventLoop,
                    parked: list[tuple[float, Callable[[], None]]]) -> None:
        """Time the parked actions on ``loop``, as it hands in its first work: one due by
        now is handed to the thread at once, ahead of that work (the thread runs what it
        is handed in order), so the work sees what the action did — a guest that finished
        its shutdown while nothing called the host has its VM off at the first call."""
        now = time.monotonic()
        for due, action in parked:
            if due <= now:
                self._submit(action)
            else:
                loop.call_later(due - now, self._submit, action)

    @staticmethod
    def on_thread() -> bool:
        """Whether the caller runs on a worker's thread (where ``call`` would wait for
        itself)."""
        return threading.current_thread().name.startswith(_THREAD_NAME)

    def call(self, work: Callable[[], _T], timeout_s: float) -> _T:
        """Run ``work`` on the worker thread from another thread and return its result
        (its exception is raised here); TimeoutError after ``timeout_s``, and then the work
        is dropped if it has not started."""
        done: Future[Any] = Future()
        self._handed_in.put((work, done))
        self._executor.submit(self.drain)
        try:
            result: _T = done.result(timeout_s)
        except TimeoutError:
            done.cancel()
            raise
        return result

    def drain(self) -> None:
        """Run the work other threads handed in with ``call`` (on the worker thread)."""
        while True:
            try:
                work, done = self._handed_in.get_nowait()
            except queue.Empty:
                return
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(work())
            except BaseException as error:  # the caller's thread raises it
                done.set_exception(error)

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
