"""Ports for the servers tests start.

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, the range it
also takes every outgoing connection's local port from: between a test choosing one and
its server binding it, any connection made meanwhile (the test's own agents talking to
their WinRM faces, say) can take it, and the server fails with "address already in use".
Ports here come from below that range, which the kernel never hands out by itself, and
none twice in one test run.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: Linux's default ephemeral range begins at 32768; the range read from the machine wins.
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000
_given: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_port(*addresses: str) -> int:
    """A port free on every address given (127.0.0.1 when none), outside the kernel's
    ephemeral range and not given before in this run."""
    wanted = addresses or ("127.0.0.1",)
    top = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(_LOWEST, top)
        if port not in _given and all(_free(address, port) for address in wanted):
            _given.add(port)
            return port
    raise AssertionError(f"no port free on {', '.join(wanted)} below {top}")
