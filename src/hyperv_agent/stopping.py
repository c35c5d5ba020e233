"""Stopping a long-running command (``serve``, the emulator's WinRM face) on SIGINT or
SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_on_signals() -> asyncio.Event:
    """An event the running loop sets when the process gets SIGINT or SIGTERM (where the
    loop can watch signals: not on Windows, whose service manager stops the agent)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(getattr(signal, name), stop.set)
    return stop
