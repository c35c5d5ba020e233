"""A silent SMB server: the watchdog's echo, and SmbFiles against a frozen Samba process
(SIGSTOP keeps its TCP connection open and acknowledged by the kernel, as a hung server or
a host whose packets still flow but whose SMB server no longer answers)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.config import load_config
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.locations import Credentials, ShareLocation
from hyperv_agent.hostfs.routed import RoutedFiles
from hyperv_agent.hostfs.smb import CLOSE_GRACE_S, SmbFiles
from hyperv_agent.hostfs.smbwatch import Watchdog, connection_socket
from hyperv_agent.service import Agent, build_agent, run_agent
from tests.ports import free_port
from tests.samba import Samba, serving_pid, session_ports

PROBE_S, ANSWER_S = 0.5, 1.0
BOUND_S = PROBE_S + ANSWER_S + 2.5  # the watchdog's ticks and the wake-up, with room


class _FakeConnection:
    """Answers echoes at once, or never (until released) when silent."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.echoes = 0
        self.released = threading.Event()

    def echo(self, sid: int = 0, timeout: float = 60) -> int:
        self.echoes += 1
        if self.silent:
            self.released.wait(timeout)
        return 1

    def disconnect(self, close: bool = True) -> None:
        self.released.set()


def _watchdog(connection: _FakeConnection, dropped: list[Any]) -> Watchdog:
    return Watchdog(0.1, 0.3, lambda server: connection,
                    lambda server, conn: dropped.append((server, conn)))


def test_a_slow_call_on_a_server_that_answers_echoes_is_left_alone() -> None:
    connection, dropped = _FakeConnection(silent=False), list[Any]()
    watchdog = _watchdog(connection, dropped)
    with watchdog.watching("FS1") as call:
        time.sleep(1.0)
    assert not call.dropped and dropped == []
    assert connection.echoes >= 2  # asked again while the call kept waiting


def test_a_call_on_a_server_that_does_not_answer_an_echo_has_its_connection_dropped() -> None:
    connection, dropped = _FakeConnection(silent=True), list[Any]()
    watchdog = _watchdog(connection, dropped)
    try:
        with watchdog.watching("FS1") as call:
            deadline = time.monotonic() + 3
            # the call is marked first, then its connection dropped (then shut, waking it)
            while not (call.dropped and dropped) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert call.dropped
        assert dropped == [("fs1", connection)]
    finally:
        connection.released.set()


def _location(samba: Samba) -> ShareLocation:
    return ShareLocation(samba.server, samba.share, credentials=Credentials(
        user=samba.user, domain=samba.server, password=samba.password))


@pytest.fixture
def watched(samba: Samba) -> Iterator[SmbFiles]:
    files = SmbFiles(port=samba.port, connect_timeout_s=3, probe_after_s=PROBE_S,
                     echo_answer_s=ANSWER_S)
    files.use_credentials(_location(samba))
    yield files
    files.close()


@pytest.fixture
def folder(samba: Samba) -> tuple[str, Path]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    (samba.share_dir / name).mkdir()
    return f"{samba.unc}\\{name}", samba.share_dir / name


def _socket_of(files: SmbFiles, server: str) -> socket.socket:
    connection = files._pooled(server)
    assert connection is not None
    sock = connection_socket(connection)
    assert sock is not None, "smbprotocol no longer keeps its socket in Tcp._sock"
    return sock


async def test_the_socket_of_a_pooled_connection_is_reached(
    watched: SmbFiles, samba: Samba, folder: tuple[str, Path]
) -> None:
    await watched.stat(folder[0])
    sock = _socket_of(watched, samba.server)
    assert sock.getpeername()[1] == samba.port


async def test_a_pooled_connection_has_the_kernel_notice_a_peer_that_is_gone(
    watched: SmbFiles, samba: Samba, folder: tuple[str, Path]
) -> None:
    await watched.stat(folder[0])
    sock = _socket_of(watched, samba.server)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    tcp = {name: sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
           for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")}
    assert tcp == {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3,
                   "TCP_USER_TIMEOUT": 25_000}


async def test_a_connection_the_kernel_closed_fails_naming_the_server_and_reconnects(
    watched: SmbFiles, samba: Samba, folder: tuple[str, Path]
) -> None:
    """What smbprotocol's receive thread meets when keepalive or TCP_USER_TIMEOUT gives
    up on the peer: recv() fails with ETIMEDOUT, which the next call is given."""
    unc, local = folder
    (local / "f").write_text("x")
    await watched.stat(unc)
    connection = watched._pooled(samba.server)
    assert connection is not None
    connection._t_exc = TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
    with pytest.raises(HostFileError) as failure:
        await watched.stat(f"{unc}\\f")
    assert str(failure.value).endswith(
        f"SMB server {samba.server} port {samba.port} cannot be reached: connection timed out")
    assert await watched.read_text(f"{unc}\\f") == "x"


@contextmanager
def _frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_calls_on_a_frozen_server_fail_within_the_bound_and_the_next_call_reconnects(
    watched: SmbFiles, samba: Samba, folder: tuple[str, Path]
) -> None:
    unc, local = folder
    (local / "hb").write_text("before")
    assert await watched.read_text(f"{unc}\\hb") == "before"
    pid = serving_pid(samba, _socket_of(watched, samba.server).getsockname()[1])
    with _frozen(pid):
        started = time.monotonic()
        with pytest.raises(HostFileError) as failure:
            await watched.stat(f"{unc}\\hb")
        assert time.monotonic() - started < BOUND_S
        assert f"SMB server {samba.server} port {samba.port} stopped answering" \
            in str(failure.value)
        assert "next call reconnects" in str(failure.value)
        assert watched.open_connections == 0  # dropped from the pool
    # Samba hands a new connection from the same client to the process already serving it,
    # so the next call waits for the frozen process to run again.
    await watched.write_text(f"{unc}\\hb", "after")
    assert (local / "hb").read_text() == "after"
    assert await watched.read_text(f"{unc}\\hb") == "after"


async def test_a_write_cut_off_by_a_frozen_server_says_it_may_be_partial(
    watched: SmbFiles, samba: Samba, folder: tuple[str, Path]
) -> None:
    unc, local = folder
    (local / "hb").write_text("before")
    await watched.stat(unc)
    pid = serving_pid(samba, _socket_of(watched, samba.server).getsockname()[1])
    with _frozen(pid):
        started = time.monotonic()
        with pytest.raises(HostFileError, match=r"stopped answering.*may be left partial"):
            await watched.write_text(f"{unc}\\hb", "after")
        assert time.monotonic() - started < BOUND_S
    assert (local / "hb").read_text() == "before"  # never renamed over the old file
    await asyncio.sleep(0)
    assert await watched.read_text(f"{unc}\\hb") == "before"


async def test_close_cuts_the_connection_of_a_frozen_server_after_its_grace(
    watched: SmbFiles, samba: Samba, folder: tuple[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """smbprotocol waits for the logoff's answer without a bound: a frozen server would
    hold the agent's shutdown for as long as it stays frozen."""
    unc, local = folder
    (local / "hb").write_text("before")
    assert await watched.read_text(f"{unc}\\hb") == "before"
    pid = serving_pid(samba, _socket_of(watched, samba.server).getsockname()[1])
    grace_s = 1.0
    with _frozen(pid):
        started = time.monotonic()
        await asyncio.wait_for(asyncio.to_thread(watched.close, grace_s), timeout=30)
        took = time.monotonic() - started
        assert grace_s <= took < grace_s + 10  # frozen, the logoff waits for ever
        assert watched.open_connections == 0
    assert f"SMB server {samba.server} did not answer the logoff within 1 s" in caplog.text
    assert await watched.read_text(f"{unc}\\hb") == "before"  # reconnects


async def test_close_logs_off_a_server_that_answers_without_waiting_for_the_grace(
    watched: SmbFiles, samba: Samba, folder: tuple[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await watched.stat(folder[0])
    started = time.monotonic()
    await asyncio.to_thread(watched.close, 10.0)
    assert time.monotonic() - started < 5
    assert watched.open_connections == 0
    assert "did not answer the logoff" not in caplog.text


# --- the agent's shutdown -----------------------------------------------------------------


def _agent_on(samba: Samba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    """An agent (emulated host) reaching the Samba server with a configured account."""
    monkeypatch.setenv("HV_TEST_SMB_PASSWORD", samba.password)
    accounts = {samba.server: {"username": samba.user, "password_env": "HV_TEST_SMB_PASSWORD"}}
    return build_agent(load_config(
        None, state_dir=tmp_path / "state", backend="emulator",
        listen=f"127.0.0.1:{free_port()}", admin_listen=f"127.0.0.1:{free_port()}",
        smb_port=samba.port, smb_credentials=accounts))


def _smb_of(agent: Agent) -> SmbFiles:
    files = agent.opened.files
    assert isinstance(files, RoutedFiles) and isinstance(files.smb, SmbFiles)
    return files.smb


async def _stopped_agent(agent: Agent) -> float:
    """Run ``agent`` and stop it at once; the seconds the run took."""
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(run_agent(agent, stop), timeout=60)
    return time.monotonic() - started


async def test_a_stopping_agent_logs_its_smb_sessions_off(
    samba: Samba, folder: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without it the server keeps the agent's sessions until its own timeout."""
    agent = _agent_on(samba, tmp_path, monkeypatch)
    smb = _smb_of(agent)
    assert await agent.opened.files.stat(folder[0]) is not None
    client_port = _socket_of(smb, samba.server).getsockname()[1]
    held = session_ports(samba)
    assert held is None or client_port in held
    await _stopped_agent(agent)
    assert smb.open_connections == 0
    deadline = time.monotonic() + 5
    while (held := session_ports(samba)) and client_port in held \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert held is None or client_port not in held


async def test_a_frozen_smb_server_holds_the_agents_stop_no_longer_than_the_grace(
    samba: Samba, folder: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = _agent_on(samba, tmp_path, monkeypatch)
    smb = _smb_of(agent)
    assert await agent.opened.files.stat(folder[0]) is not None
    pid = serving_pid(samba, _socket_of(smb, samba.server).getsockname()[1])
    with _frozen(pid):
        took = await _stopped_agent(agent)
        assert took < CLOSE_GRACE_S + 20  # frozen, the logoff waits for ever
        assert smb.open_connections == 0
    assert f"SMB server {samba.server} did not answer the logoff" in caplog.text
