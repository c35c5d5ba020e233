"""Stopping a long-running command (``serve``, the emulator's WinRM face) on SIGINT or
SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_on_signals(at_once: asyncio.Event | None = None) -> asyncio.Event:
    """An event the running loop sets when the process gets SIGINT or SIGTERM (where the
    loop can watch signals: not on Windows, whose service manager stops the agent). A
    second signal sets ``at_once``: stop without waiting for work in flight."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def signalled() -> None:
        if stop.is_set() and at_once is not None:
            at_once.set()
        stop.set()

    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(getattr(signal, name), signalled)
    return stop
