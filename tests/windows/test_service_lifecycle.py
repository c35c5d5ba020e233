"""The real Windows service: `hyperv-agent service install` registers it with pywin32,
it serves HTTPS from %ProgramData%\\hyperv-agent\\agent.toml (on the emulator: the
workflow's runner has no Hyper-V), stops and starts on request, writes to the event log,
and `service remove` takes it away (run by the Windows workflow, as an administrator)."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import win32evtlog
import win32service

from hyperv_agent.winsvc.paths import SERVICE_NAME, ServicePaths
from hyperv_agent.winsvc.plan import SHUTDOWN_TIMEOUT_S
from hyperv_agent.winsvc.runner import STOP_WAIT_HINT_MS
from hyperv_agent.winsvc.windows import WindowsServiceHost
from tests.ports import free_port

LIVENESS = "HypervResource controller running, use POST to send JSON encoded RPCs"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "service", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def get(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/api/HypervResource",
                                context=context, timeout=10) as reply:
        return str(reply.read().decode())


def wait_serving(port: int, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return get(port)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def event_texts(source: str) -> list[str]:
    handle = win32evtlog.OpenEventLog(None, "Application")
    flags = win32evtlog.EVENTLOG_BACKWARDS_READ | win32evtlog.EVENTLOG_SEQUENTIAL_READ
    texts: list[str] = []
    try:
        while records := win32evtlog.ReadEventLog(handle, flags, 0):
            texts += [" ".join(r.StringInserts or ()) for r in records if r.SourceName == source]
    finally:
        win32evtlog.CloseEventLog(handle)
    return texts


@pytest.fixture
def agent_port(tmp_path: Path) -> Iterator[int]:
    config = Path(str(ServicePaths.on_this_host().config_file))
    if config.exists() or WindowsServiceHost().service_state(SERVICE_NAME) is not None:
        pytest.fail(f"{SERVICE_NAME} is already set up on this machine; not touching it")
    port = free_port()
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[agent]\nbackend = 'emulator'\nstate_dir = '{tmp_path / 'state'}'\n"
                      f"listen = '127.0.0.1:{port}'\n"
                      f"admin_listen = '127.0.0.1:{free_port()}'\n", encoding="utf-8")
    try:
        yield port
    finally:
        cli("remove")
        config.unlink(missing_ok=True)


def test_the_service_installs_serves_restarts_and_is_removed(agent_port: int) -> None:
    installed = cli("install")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "[9/9] Start service 'hyperv-agent', waiting up to 60 s: running" in installed.stdout
    assert wait_serving(agent_port) == LIVENESS

    shown = cli("status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "service hyperv-agent: running (start auto)" in shown.stdout
    assert 'firewall rule "hyperv-agent-cloudstack-tcp-8250": present' in shown.stdout

    assert cli("stop").returncode == 0
    with pytest.raises(urllib.error.URLError):
        get(agent_port)
    assert cli("start").returncode == 0
    assert wait_serving(agent_port) == LIVENESS
    texts = event_texts(SERVICE_NAME)
    assert any(t.startswith("hyperv-agent starting: configuration ") for t in texts), texts
    assert any(t == "hyperv-agent stopped" for t in texts), texts

    removed = cli("remove")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    gone = cli("status")
    assert gone.returncode == 3
    assert "service hyperv-agent: not installed" in gone.stdout


def test_install_again_updates_in_place(agent_port: int) -> None:
    assert cli("install").returncode == 0
    again = cli("install", "--delayed-start")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already installed: configuration updated" in again.stdout
    assert "already running" in again.stdout
    assert "(start delayed-auto)" in cli("status").stdout


def test_the_service_accepts_preshutdown_and_reports_itself_stopping(agent_port: int) -> None:
    """What `service install` sets and the service answers beyond pywin32's defaults: a
    60 s preshutdown timeout, the preshutdown control accepted, and SERVICE_STOP_PENDING
    with the agent's wait hint while it stops."""
    assert cli("install").returncode == 0
    assert wait_serving(agent_port) == LIVENESS
    manager = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_CONNECT)
    try:
        handle = win32service.OpenService(
            manager, SERVICE_NAME, win32service.SERVICE_QUERY_CONFIG
            | win32service.SERVICE_QUERY_STATUS | win32service.SERVICE_STOP)
        try:
            timeout_ms = win32service.QueryServiceConfig2(
                handle, win32service.SERVICE_CONFIG_PRESHUTDOWN_INFO)
            assert timeout_ms == SHUTDOWN_TIMEOUT_S * 1000
            accepted = win32service.QueryServiceStatus(handle)[2]
            assert accepted & win32service.SERVICE_ACCEPT_PRESHUTDOWN
            assert accepted & win32service.SERVICE_ACCEPT_STOP

            stopping = win32service.ControlService(handle, win32service.SERVICE_CONTROL_STOP)
            deadline = time.monotonic() + 60
            while stopping[1] != win32service.SERVICE_STOPPED:
                assert stopping[1] == win32service.SERVICE_STOP_PENDING, stopping
                assert stopping[6] == STOP_WAIT_HINT_MS, stopping  # dwWaitHint
                assert time.monotonic() < deadline, "still stopping after 60 s"
                time.sleep(0.2)
                stopping = win32service.QueryServiceStatus(handle)
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(manager)
    with pytest.raises(urllib.error.URLError):
        get(agent_port)
