"""Which CIM backend drives the Hyper-V host the agent runs on (``backend = "auto"``).

On a Windows host the agent prefers local WMI through PyMI (``wmi``): in-process, no
listener to configure. Without PyMI it talks WS-Management to the host's own WinRM
listener (``wsman`` on ``http://127.0.0.1:5985/wsman``). With neither, it stops at start
with one line saying how to get either. Off Windows there is no local Hyper-V: ``auto``
is refused and the backend must be named.

The choice is a pure function of three probes, so every branch is tested on any OS; the
probes themselves (:func:`pymi_problem`, :func:`winrm_problem`) are small and separate.
"""

from __future__ import annotations

import http.client
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hyperv_agent.errors import ConfigError

WINRM_HOST = "127.0.0.1"
WINRM_HTTP_PORT = 5985  # WinRM's default HTTP listener (``winrm quickconfig``)
WINRM_PROBE_TIMEOUT_S = 3.0

Probe = Callable[[], str | None]
"""A check that returns None when the thing works, else one line saying why not."""


@dataclass(frozen=True)
class LocalChoice:
    """The backend for this host and, for ``wsman``, the WinRM endpoint on localhost."""

    backend: Literal["wmi", "wsman"]
    wsman_url: str | None
    reason: str  # one line: why this backend


def winrm_url(host: str = WINRM_HOST, port: int = WINRM_HTTP_PORT) -> str:
    return f"http://{host}:{port}/wsman"


def choose_local_backend(on_windows: bool, pymi: Probe, winrm: Probe,
                         url: str | None = None) -> LocalChoice:
    """``wmi`` when PyMI imports, else ``wsman`` when WinRM answers on localhost; the
    probes run lazily (WinRM is not probed when PyMI works). ConfigError, one line, when
    this is not a Windows host or neither backend can work."""
    if not on_windows:
        raise ConfigError("backend 'auto' chooses the local backend of a Windows Hyper-V "
                          "host; on this machine name one: --backend emulator or wsman")
    pymi_problem_text = pymi()
    if pymi_problem_text is None:
        return LocalChoice("wmi", None, "PyMI imports: local WMI")
    endpoint = url or winrm_url()
    winrm_problem_text = winrm()
    if winrm_problem_text is None:
        return LocalChoice("wsman", endpoint,
                           f"PyMI unavailable ({pymi_problem_text}): WinRM at {endpoint}")
    raise ConfigError(
        f"no local CIM backend: PyMI unavailable ({pymi_problem_text}; pip install "
        f"\"hyperv-agent[windows]\") and WinRM at {endpoint} unreachable "
        f"({winrm_problem_text}; run 'winrm quickconfig')"
    )


def choose_for_this_host() -> LocalChoice:
    """:func:`choose_local_backend` with the real probes of this machine."""
    return choose_local_backend(sys.platform == "win32", pymi_problem, winrm_problem)


def pymi_problem() -> str | None:
    """None when PyMI's ``mi`` module imports, else the import error in one line."""
    try:
        importlib.import_module("mi")
    except ImportError as error:  # also a missing DLL behind the extension module
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None


def winrm_problem(host: str = WINRM_HOST, port: int = WINRM_HTTP_PORT,
                  timeout_s: float = WINRM_PROBE_TIMEOUT_S) -> str | None:
    """None when a WS-Management listener answers at ``http://host:port/wsman``: an
    unauthenticated POST gets 401 with an authentication challenge (or 200), as WinRM
    answers it; else one line saying what happened instead."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("POST", "/wsman", body=b"",
                           headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
        reply = connection.getresponse()
        reply.read()
    except (OSError, http.client.HTTPException) as error:
        return _network_problem(error)
    finally:
        connection.close()
    if reply.status == 200 or (reply.status == 401 and reply.getheader("WWW-Authenticate")):
        return None
    return f"HTTP {reply.status} {reply.reason} is not a WS-Management answer"


def _network_problem(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "no answer (timed out)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return f"{type(error).__name__}: {error}".splitlines()[0]
