"""The service's body as the service manager runs it: on its own thread, serving real
HTTPS on 127.0.0.1 from the service's agent.toml, stopped from another thread."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hyperv_agent import logs
from hyperv_agent.service import STOP_GRACE_S
from hyperv_agent.winsvc.host import RunState, StartType
from hyperv_agent.winsvc.plan import SHUTDOWN_TIMEOUT_S, InstallOptions, service_spec
from hyperv_agent.winsvc.readiness import Backoff, service_running
from hyperv_agent.winsvc.runner import (
    STOP_REPORT_EVERY_S,
    STOP_WAIT_HINT_MS,
    ServiceRun,
    StopProgress,
    StopSignal,
    run_service,
)
from tests.ports import free_port
from tests.winsvc.memoryhost import MemoryHost

LIVENESS = "HypervResource controller running, use POST to send JSON encoded RPCs"


@dataclass
class Events:
    """The event log, as a list."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))


@dataclass
class Service:
    """run_service on a thread, as pythonservice.exe runs SvcDoRun."""

    run: ServiceRun
    events: Events = field(default_factory=Events)
    stop: StopSignal = field(default_factory=StopSignal)
    code: list[int] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> Service:
        self.thread = threading.Thread(
            target=lambda: self.code.append(run_service(self.run, self.events, self.stop)))
        self.thread.start()
        return self

    def finished(self, timeout_s: float = 20) -> int:
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the service did not stop"
        return self.code[0]


def config(tmp_path: Path, port: int, backend: str = "emulator") -> Path:
    path = tmp_path / "hyperv-agent" / "agent.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[agent]\nbackend = '{backend}'\nstate_dir = '{tmp_path / 'state'}'\n"
                    f"listen = '127.0.0.1:{port}'\nadmin_listen = '127.0.0.1:{free_port()}'\n"
                    "private_ip = '192.168.100.10'\n")
    return path


def get(port: int, path: str = "/api/HypervResource", body: bytes | None = None) -> str:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=10) as reply:
        return str(reply.read().decode())


def wait_serving(port: int, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return get(port)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_serves_the_management_server_then_stops_gracefully(tmp_path: Path) -> None:
    port = free_port()
    log_file = tmp_path / "hyperv-agent" / "logs" / "agent.log"
    service = Service(ServiceRun(config(tmp_path, port), log_file)).start()
    try:
        assert wait_serving(port) == LIVENESS
        answer = json.loads(get(port, "/api/HypervResource/com.cloud.agent.api.CheckHealthCommand",
                                b'{"wait":0}'))
        assert answer[0]["com.cloud.agent.api.CheckHealthAnswer"]["result"] is True
    finally:
        service.stop.request()
    assert service.finished() == 0
    with pytest.raises(urllib.error.URLError):
        get(port)
    kinds = [kind for kind, _ in service.events.lines]
    assert kinds == ["info", "info"]
    assert service.events.lines[0][1].startswith("hyperv-agent starting: configuration ")
    assert service.events.lines[1] == ("info", "hyperv-agent stopped")
    text = log_file.read_text()
    assert f"serving CloudStack on https://127.0.0.1:{port}" in text
    assert "CheckHealthCommand" in text


def test_a_stop_requested_before_the_loop_runs_is_not_lost(tmp_path: Path) -> None:
    service = Service(ServiceRun(config(tmp_path, free_port()), tmp_path / "agent.log"))
    service.stop.request()
    assert service.start().finished() == 0
    assert service.events.lines[-1] == ("info", "hyperv-agent stopped")


def test_an_invalid_configuration_is_one_fatal_event(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\nlisten = 'everywhere'\n")
    service = Service(ServiceRun(path, tmp_path / "agent.log")).start()
    assert service.finished() == 1
    assert service.events.lines == [("error", (
        f"hyperv-agent cannot start: invalid config file {path}: agent.listen: Value error, "
        "'everywhere' is not HOST:PORT"))]


def test_a_port_in_use_is_a_fatal_event_naming_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        service = Service(ServiceRun(config(tmp_path, port), tmp_path / "agent.log")).start()
        assert service.finished() == 1
    kind, text = service.events.lines[-1]
    assert kind == "error"
    assert text.startswith(f"hyperv-agent stopped on an error: cannot listen on 127.0.0.1:{port}")


def test_an_error_that_is_no_listeners_is_a_fatal_event_saying_what_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the agent cannot write (the WinRM face's account store, a file standing in
    the way of its folder) is said as the system said it, with the file: not as "cannot
    listen on", which would send the operator to the addresses."""
    from hyperv_agent.emulator.winrm import auth

    # the store is the process's: this test's own, so the folder it fixes is not kept
    monkeypatch.setattr(auth, "_store", {})
    monkeypatch.setattr(auth, "_store_file", [])
    path = config(tmp_path, free_port())
    with path.open("a") as more:
        more.write(f"[emulator]\nwinrm = true\n[wsman]\nurl = 'http://127.0.0.1:{free_port()}"
                   "/wsman'\nusername = 'lab'\npassword = 'Lab-Pa55word!'\n")
    in_the_way = tmp_path / "state" / "winrm"
    in_the_way.parent.mkdir()
    in_the_way.write_text("not a folder")
    service = Service(ServiceRun(path, tmp_path / "agent.log")).start()
    assert service.finished() == 1
    assert service.events.lines[-1] == (
        "error", f"hyperv-agent stopped on an error: File exists: {in_the_way}")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_at_start_is_a_fatal_event_naming_the_state_dir_not_a_listener(
        tmp_path: Path) -> None:
    """A write in the state directory that fails at start (a full disk: the generated key
    goes through a link to /dev/full, which takes no byte) is said as ``serve`` says it,
    naming the folder and its settings: not as "cannot listen on No space left on
    device", which sent the operator to the listen address."""
    (tmp_path / "state" / "tls").mkdir(parents=True)
    (tmp_path / "state" / "tls" / "agent.key").symlink_to("/dev/full")
    service = Service(ServiceRun(config(tmp_path, free_port()), tmp_path / "agent.log"))
    assert service.start().finished() == 1
    assert service.events.lines[-1] == ("error", (
        "hyperv-agent stopped on an error: cannot start: No space left on device: writing "
        f"in {tmp_path / 'state'} (see [agent] state_dir, tls_cert and tls_key)"))


FAST = Backoff(first_s=0.02, max_s=0.05, limit_s=30)


def test_the_agent_waits_for_vmms_and_a_stop_ends_the_wait(tmp_path: Path) -> None:
    host = MemoryHost()
    host.add_service("vmms", RunState.STOPPED, StartType.AUTO)
    log_file = tmp_path / "agent.log"
    run = ServiceRun(config(tmp_path, free_port(), backend="wsman"), log_file,
                     service_running(host, "vmms"), FAST)
    service = Service(run).start()
    deadline = time.monotonic() + 10
    while "waiting for Hyper-V (vmms) (service vmms is stopped)" not in (
            log_file.read_text() if log_file.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    service.stop.request()
    assert service.finished() == 0
    assert service.events.lines[-1] == ("info", "hyperv-agent stopped")


def test_once_vmms_runs_the_backend_is_opened(tmp_path: Path) -> None:
    host = MemoryHost()
    host.add_service("vmms", RunState.RUNNING, StartType.AUTO)
    run = ServiceRun(config(tmp_path, free_port(), backend="wsman"), tmp_path / "agent.log",
                     service_running(host, "vmms"), FAST)
    service = Service(run).start()
    assert service.finished() == 1  # the wsman backend is opened and names what it lacks
    assert service.events.lines[-1] == ("error", (
        "hyperv-agent stopped on an error: backend wsman needs the host's WinRM URL: "
        "[wsman] url or --wsman-url (http(s)://host:port/wsman)"))


def test_hyperv_that_never_comes_is_fatal_after_the_bound(tmp_path: Path) -> None:
    host = MemoryHost()
    run = ServiceRun(config(tmp_path, free_port(), backend="wsman"), tmp_path / "agent.log",
                     service_running(host, "vmms"), Backoff(first_s=0.01, max_s=0.02,
                                                            limit_s=0.1))
    service = Service(run).start()
    assert service.finished() == 1
    assert service.events.lines[-1] == ("error", (
        "hyperv-agent stopped on an error: Hyper-V (vmms) not ready after 0 s: service vmms "
        "is not installed (is the Hyper-V role installed?)"))


def test_the_log_file_rotates_and_never_holds_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "agent.log"
    with logs.to_file(path, "INFO", max_bytes=2000, backups=2):
        for number in range(100):
            logging.getLogger("hyperv_agent.test").info(
                "copy %d from cifs://fs/share?user=a&password=hunter2", number)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["agent.log", "agent.log.1", "agent.log.2"]
    text = "".join(p.read_text() for p in path.parent.iterdir())
    assert "hunter2" not in text and "password=*****" in text
    assert "copy 99 from" in path.read_text()


def test_a_stopping_service_keeps_telling_the_manager_until_the_run_ends() -> None:
    stop, reports = StopSignal(), list[int]()
    with StopProgress(stop, reports.append, every_s=0.01, wait_hint_ms=1500):
        time.sleep(0.1)
        assert reports == []  # nothing is reported while the agent serves
        stop.request()
        deadline = time.monotonic() + 5
        while len(reports) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    after = len(reports)
    time.sleep(0.1)
    assert after >= 3 and reports == [1500] * after  # and nothing once the run has ended


def test_a_status_the_manager_refuses_does_not_end_the_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop, reports = StopSignal(), list[int]()

    def refused_once(hint_ms: int) -> None:
        reports.append(hint_ms)
        if len(reports) == 1:
            raise OSError("SetServiceStatus: The handle is invalid.")

    stop.request()
    with StopProgress(stop, refused_once, every_s=0.01):
        deadline = time.monotonic() + 5
        while len(reports) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(reports) >= 2 and "cannot report the service as stopping" in caplog.text


def test_the_hints_and_the_shutdown_timeout_cover_the_agents_stop() -> None:
    # a checkpoint moves well within each hint; the host waits for the whole grace
    assert STOP_REPORT_EVERY_S * 1000 * 2 <= STOP_WAIT_HINT_MS
    assert SHUTDOWN_TIMEOUT_S >= STOP_GRACE_S + 15
    assert service_spec(InstallOptions()).shutdown_timeout_s == SHUTDOWN_TIMEOUT_S
