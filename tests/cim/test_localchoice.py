"""backend = "auto": the choice of a Windows host's own backend, its probes, and the backend
open_backend then opens."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from hyperv_agent.backends import host_files, open_backend, open_host
from hyperv_agent.cim.api import CIMV2_NAMESPACE
from hyperv_agent.cim.local import LocalCim
from hyperv_agent.cim.localchoice import (
    choose_local_backend,
    pymi_problem,
    winrm_problem,
    winrm_url,
)
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.cli import main
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import ConfigError
from hyperv_agent.hostfs.local import LocalFiles
from tests.cim.pymi_fake import FakeMiSession
from tests.conftest import off_windows


class Probe:
    """A probe with a fixed answer that counts how often it was asked."""

    def __init__(self, problem: str | None) -> None:
        self.problem = problem
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.problem


def test_wmi_is_chosen_when_pymi_imports_and_winrm_is_not_probed() -> None:
    winrm = Probe("connection refused")
    choice = choose_local_backend(True, Probe(None), winrm)
    assert (choice.backend, choice.wsman_url) == ("wmi", None)
    assert winrm.calls == 0


def test_wsman_on_localhost_is_chosen_when_pymi_is_absent_and_winrm_answers() -> None:
    choice = choose_local_backend(True, Probe("ModuleNotFoundError: No module named 'mi'"),
                                  Probe(None))
    assert choice.backend == "wsman"
    assert choice.wsman_url == "http://127.0.0.1:5985/wsman"
    assert "No module named 'mi'" in choice.reason


def test_one_line_names_both_fixes_when_pymi_is_absent_and_winrm_unreachable() -> None:
    with pytest.raises(ConfigError) as caught:
        choose_local_backend(True, Probe("ModuleNotFoundError: No module named 'mi'"),
                             Probe("connection refused"))
    message = str(caught.value)
    assert "\n" not in message
    assert "No module named 'mi'" in message and "connection refused" in message
    assert 'pip install "hyperv-agent[windows]"' in message
    assert "winrm quickconfig" in message
    assert "http://127.0.0.1:5985/wsman" in message


def test_auto_is_refused_off_windows_without_probing() -> None:
    pymi, winrm = Probe(None), Probe(None)
    with pytest.raises(ConfigError, match="--backend emulator or wsman"):
        choose_local_backend(False, pymi, winrm)
    assert pymi.calls == winrm.calls == 0


@off_windows
def test_pymi_probe_reports_the_missing_module_off_windows() -> None:
    problem = pymi_problem()
    assert problem is not None and "mi" in problem and "\n" not in problem


# --- the WinRM probe against real listeners on loopback ----------------------------------


def _serve(status: int, headers: dict[str, str]) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def winrm_like() -> Iterator[int]:
    yield from _serve(401, {"WWW-Authenticate": "Negotiate"})


@pytest.fixture
def not_winrm() -> Iterator[int]:
    yield from _serve(404, {})


def test_winrm_probe_accepts_a_listener_that_challenges_for_authentication(
    winrm_like: int,
) -> None:
    assert winrm_problem("127.0.0.1", winrm_like) is None


def test_winrm_probe_rejects_another_http_server(not_winrm: int) -> None:
    assert winrm_problem("127.0.0.1", not_winrm) == (
        "HTTP 404 Not Found is not a WS-Management answer")


def test_winrm_probe_reports_a_refused_connection() -> None:
    with socket.socket() as holder:  # a port that is surely closed: bound, not listening
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        assert winrm_problem("127.0.0.1", port, timeout_s=2) == "connection refused"


def test_winrm_url_names_the_wsman_path() -> None:
    assert winrm_url("127.0.0.1", 5986) == "http://127.0.0.1:5986/wsman"


@off_windows
@pytest.mark.parametrize("how", ["file", "flag"])
def test_auto_backend_stops_the_cli_with_one_line_off_windows(tmp_path: Path, how: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nbackend = "{"auto" if how == "file" else "emulator"}"\n'
                      f"state_dir = '{tmp_path}'\n")
    flag = ["--backend", "auto"] if how == "flag" else []
    result = CliRunner().invoke(main, ["cim", "query", "--config", str(config), *flag,
                                       "SELECT Name FROM Msvm_ComputerSystem"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: backend 'auto' chooses the local backend of a Windows Hyper-V "
                     "host; on this machine name one: --backend emulator or wsman"]


# --- open_backend opens what the choice names ---------------------------------------------


def _auto(tmp_path: Path) -> AgentConfig:
    return load_config(None, backend="auto", state_dir=tmp_path / "state",
                       wsman={"operation_timeout_s": 45, "max_concurrent_requests": 2})


async def test_auto_opens_the_pymi_adapter_when_pymi_imports(
        tmp_path: Path, emulator: EmulatorCim) -> None:
    loop = asyncio.get_running_loop()
    sessions: list[FakeMiSession] = []

    def session() -> FakeMiSession:
        sessions.append(FakeMiSession(emulator, loop))
        return sessions[-1]

    winrm = Probe("connection refused")
    cim = open_backend(_auto(tmp_path), lambda: choose_local_backend(True, Probe(None), winrm),
                       mi_session=session)
    assert isinstance(cim, LocalCim) and cim.session is sessions[0] and winrm.calls == 0
    found = await cim.query("SELECT Caption FROM Win32_OperatingSystem", CIMV2_NAMESPACE)
    assert [i["Caption"] for i in found] == ["Microsoft Windows Server 2019 Datacenter"]
    await cim.close()
    assert sessions[0].closed


def test_auto_opens_wsman_on_localhost_as_the_service_account_without_pymi(
        tmp_path: Path) -> None:
    choice = partial(choose_local_backend, True, Probe("ModuleNotFoundError: No module "
                                                       "named 'mi'"), Probe(None))
    cim = open_backend(_auto(tmp_path), choice)
    assert isinstance(cim, WsmanCim)
    settings = cim.settings
    assert (settings.url, settings.auth, settings.username, settings.password) == (
        "http://127.0.0.1:5985/wsman", "negotiate", None, None)
    assert (settings.operation_timeout_s, settings.max_concurrent_requests) == (45, 2)


async def test_only_a_host_named_by_its_winrm_url_may_be_another_machine(
        tmp_path: Path) -> None:
    """The WinRM listener ``auto`` chose is this machine's own, as local WMI is: the host
    runs while the agent does (``hostcheck``: its heartbeat is never withheld); a URL in
    ``[wsman]`` may name another machine, which may be powered off."""
    choice = partial(choose_local_backend, True, Probe("ModuleNotFoundError: No module "
                                                       "named 'mi'"), Probe(None))
    local = open_host(_auto(tmp_path), choice)
    named = open_host(load_config(None, backend="wsman", state_dir=tmp_path / "state",
                                  wsman={"url": "http://10.1.1.5:5985/wsman",
                                         "username": "LAB\\agent", "password": "pw"}))
    try:
        assert local.on_this_machine and not named.on_this_machine
    finally:
        await local.close()
        await named.close()


def test_auto_stops_with_one_line_when_neither_backend_can_work(tmp_path: Path) -> None:
    choice = partial(choose_local_backend, True, Probe("ModuleNotFoundError: No module "
                                                       "named 'mi'"), Probe("timed out"))
    with pytest.raises(ConfigError) as caught:
        open_backend(_auto(tmp_path), choice)
    assert "\n" not in str(caught.value) and "winrm quickconfig" in str(caught.value)


@off_windows
def test_wmi_named_off_windows_is_one_line_naming_pymi(tmp_path: Path) -> None:
    config = load_config(None, backend="wmi", state_dir=tmp_path / "state")
    with pytest.raises(ConfigError) as caught:
        open_backend(config)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("backend 'wmi' needs PyMI on a Windows host (")
    assert "No module named 'mi'" in message and 'hyperv-agent[windows]' in message


@pytest.mark.parametrize("backend", ["wmi", "auto"])
async def test_host_files_are_the_hosts_own_for_the_local_backends(
        tmp_path: Path, emulator: EmulatorCim, backend: str) -> None:
    config = load_config(None, backend=backend, state_dir=tmp_path / "state")
    files = host_files(config)  # no emulator in this process: a local backend's files
    assert type(files) is LocalFiles  # native paths: C:\ and UNC through Windows itself
