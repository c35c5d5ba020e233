"""The console relay of agentless mode: a TCP server stands in for the host's VMConnect."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hyperv_agent import relay, service
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.errors import ConfigError
from hyperv_agent.relay import ConsoleRelay, RelayTarget
from hyperv_agent.server import Listener
from hyperv_agent.service import build_agent
from tests.ports import free_port

WAIT_S = 5.0


@dataclass
class VmConnect:
    """A stand-in for VMConnect: greets, echoes what it gets, notes when its client left."""

    server: asyncio.Server
    clients: int = 0
    received: bytearray = field(default_factory=bytearray)
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    hang_up: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def vmconnect() -> AsyncIterator[VmConnect]:
    stand_in: VmConnect

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stand_in.clients += 1
        writer.write(b"RDP-HELLO")
        hang_up = asyncio.create_task(stand_in.hang_up.wait())
        while True:
            read = asyncio.create_task(reader.read(1024))
            await asyncio.wait((read, hang_up), return_when=asyncio.FIRST_COMPLETED)
            if hang_up.done():
                read.cancel()
                writer.close()
                return
            if not read.result():
                stand_in.client_gone.set()
                writer.close()
                return
            stand_in.received += read.result()
            writer.write(b"echo:" + read.result())

    stand_in = VmConnect(await asyncio.start_server(serve, "127.0.0.1", 0))
    try:
        yield stand_in
    finally:
        stand_in.server.close()


@contextlib.asynccontextmanager
async def relaying(target_port: int, allow_from: tuple[str, ...] = (),
                   max_connections: int = 8) -> AsyncIterator[ConsoleRelay]:
    networks = [ipaddress.ip_network(n) for n in allow_from]
    console = ConsoleRelay(RelayTarget("127.0.0.1", target_port), networks, max_connections,
                           connect_timeout_s=2)
    await console.start(Listener("127.0.0.1", 0))
    try:
        yield console
    finally:
        await console.close()


async def _read(reader: asyncio.StreamReader, size: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(size), WAIT_S)


async def _none_open(console: ConsoleRelay) -> bool:
    """Whether the relay holds no connection within a second."""
    for _ in range(50):
        if console.open_count == 0:
            return True
        await asyncio.sleep(0.02)
    return console.open_count == 0


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), WAIT_S) == b""
    except ConnectionError:
        return True


async def test_bytes_flow_both_ways_and_vmconnect_sees_the_close_when_the_client_closes(
) -> None:
    async with vmconnect() as stand_in, relaying(stand_in.port) as console:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _read(reader, 9) == b"RDP-HELLO"
        writer.write(b"\x03\x00\x00\x13")
        assert await _read(reader, 9) == b"echo:\x03\x00\x00\x13"
        writer.close()
        await asyncio.wait_for(stand_in.client_gone.wait(), WAIT_S)
    assert bytes(stand_in.received) == b"\x03\x00\x00\x13"


async def test_the_client_is_closed_when_vmconnect_hangs_up() -> None:
    async with vmconnect() as stand_in, relaying(stand_in.port) as console:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _read(reader, 9) == b"RDP-HELLO"
        stand_in.hang_up.set()
        assert await _closed(reader)
        writer.close()
        assert await _none_open(console)


@contextlib.asynccontextmanager
async def answering_after_the_end(linger: asyncio.Event | None = None
                                  ) -> AsyncIterator[asyncio.Server]:
    """A stand-in for VMConnect that reads its client to the end, then answers what it got
    and closes; or, given ``linger``, answers and keeps its side open until it is set."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.read()
        await asyncio.sleep(0.2)  # the answer comes after the client's end
        writer.write(b"answer:" + got + bytes(256 * 1024))
        if linger is not None:
            await linger.wait()
        writer.close()

    stand_in = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield stand_in
    finally:
        stand_in.close()


async def test_a_client_that_finishes_sending_still_gets_the_answer_sent_after_its_end(
) -> None:
    """A side that shuts down writing has its end passed on after its bytes, and what the
    other side sends afterwards still reaches it, whole; cutting the connection at the
    first end lost the answer."""
    async with answering_after_the_end() as stand_in, relaying(
            stand_in.sockets[0].getsockname()[1]) as console:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        writer.write(b"\x03\x00\x00\x13")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), WAIT_S)
        assert answer == b"answer:\x03\x00\x00\x13" + bytes(256 * 1024)
        writer.close()
        assert await _none_open(console)


async def test_a_side_that_never_finishes_after_the_other_did_is_closed_in_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "HALF_CLOSED_S", 0.5)
    linger = asyncio.Event()
    async with answering_after_the_end(linger) as stand_in, relaying(
            stand_in.sockets[0].getsockname()[1]) as console:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        writer.write(b"x")
        writer.write_eof()
        assert (await asyncio.wait_for(reader.read(), WAIT_S)).startswith(b"answer:x")
        assert await _none_open(console)  # closed though VMConnect's side is still open
        linger.set()
        writer.close()


async def test_a_client_that_sends_nothing_is_closed_and_frees_its_slot(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An RDP client speaks first; one that connects and stays silent held its slot and a
    connection to VMConnect for good, and enough of them locked every console out."""
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    monkeypatch.setattr(relay, "FIRST_BYTE_S", 0.5, raising=False)
    async with vmconnect() as stand_in, relaying(stand_in.port, max_connections=1) as console:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _read(reader, 9) == b"RDP-HELLO"
        assert await _closed(reader)
        await asyncio.wait_for(stand_in.client_gone.wait(), WAIT_S)  # VMConnect's side too
        assert await _none_open(console)
        writer.close()
        speaking_reader, speaking = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _read(speaking_reader, 9) == b"RDP-HELLO"  # the slot is free again
        speaking.write(b"x")
        await asyncio.sleep(1.0)  # past the time for the first byte: it came, so it goes on
        speaking.write(b"y")
        assert await _read(speaking_reader, 12) == b"echo:xecho:y"
        speaking.close()
        assert await _none_open(console)
    assert "console relay: 127.0.0.1 sent nothing within" in caplog.text


async def test_a_client_outside_allow_from_is_closed_without_reaching_vmconnect(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    async with vmconnect() as stand_in, relaying(stand_in.port, ("10.0.0.0/8",)) as console:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _closed(reader)
        writer.close()
    assert stand_in.clients == 0
    assert "refused 127.0.0.1: not in allow_from" in caplog.text


async def test_a_client_beyond_the_cap_is_closed_while_the_first_is_relayed() -> None:
    async with vmconnect() as stand_in, relaying(stand_in.port, max_connections=1) as console:
        first_reader, first = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _read(first_reader, 9) == b"RDP-HELLO"
        second_reader, second = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _closed(second_reader)
        first.write(b"x")
        assert await _read(first_reader, 6) == b"echo:x"
        first.close()
        second.close()
    assert stand_in.clients == 1


async def test_the_client_is_closed_and_the_reason_logged_when_vmconnect_is_unreachable(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    port = free_port()  # nothing listens there
    async with relaying(port) as console:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _closed(reader)
        writer.close()
    assert f"cannot reach VMConnect at 127.0.0.1:{port}" in caplog.text


async def test_a_host_name_none_of_whose_addresses_answers_is_logged_with_each_failure(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A Hyper-V host's name often has an IPv6 and an IPv4 address; with VMConnect down on
    both, asyncio raises one OSError holding every address's failure and no errno, and
    the warning said only "(OSError)"."""
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    port = free_port()  # nothing listens there, on either address
    _resolve_to_both_loopbacks(monkeypatch, "hv01.lab", port)
    line = await _unreached_line(RelayTarget("hv01.lab", port), caplog)
    assert f"cannot reach VMConnect at hv01.lab:{port}" in line
    assert "(OSError)" not in line
    assert "::1" in line and "127.0.0.1" in line, line


async def test_a_vmconnect_that_never_answers_is_logged_as_the_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    """The connect timing out was logged as "(TimeoutError)"."""
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    with never_accepting() as port:
        line = await _unreached_line(RelayTarget("127.0.0.1", port), caplog,
                                     connect_timeout_s=0.5)
    assert f"cannot reach VMConnect at 127.0.0.1:{port} for " in line
    assert "(no answer within 0.5 s)" in line


async def test_a_refusal_on_windows_is_logged_in_windows_words_not_unknown_error(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """On Windows a refused connect raises an OSError whose errno is a Winsock code
    (errno.ECONNREFUSED is 10061 there) and whose strerror holds the system's words; its
    C library's strerror knows no Winsock code, so the warning read "(unknown error)".
    Such an error, as Windows raises it, is given here."""
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    words = "No connection could be made because the target machine actively refused it"

    real_open_connection = asyncio.open_connection
    vmconnect_port = free_port()

    async def refused_at_vmconnect(host: str, port: int, **kwargs: object) -> object:
        if port != vmconnect_port:
            return await real_open_connection(host, port, **kwargs)  # type: ignore[arg-type]
        error = ConnectionRefusedError(10061, words)
        error.winerror = 10061  # type: ignore[attr-defined]  # set by Windows only
        raise error

    monkeypatch.setattr(asyncio, "open_connection", refused_at_vmconnect)
    line = await _unreached_line(RelayTarget("127.0.0.1", vmconnect_port), caplog)
    assert line.endswith(f"({words})"), line


@contextlib.contextmanager
def never_accepting() -> Iterator[int]:
    """A port whose listener's queue is full: a connection to it is neither accepted nor
    refused (its SYN goes unanswered), like a host dropping VMConnect's traffic."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        port = int(listening.getsockname()[1])
        queued = [socket.socket() for _ in range(3)]
        try:
            for sock in queued:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", port))
            yield port
        finally:
            for sock in queued:
                sock.close()


async def test_closing_the_relay_ends_the_connections_still_reaching_vmconnect() -> None:
    """A connection admitted while VMConnect does not answer waits up to the connect
    timeout; closing the relay (the agent stopping) ends it too, instead of leaving it to
    run on after the relay said it was closed."""
    with never_accepting() as port:
        console = ConsoleRelay(RelayTarget("127.0.0.1", port), connect_timeout_s=60)
        await console.start(Listener("127.0.0.1", 0))
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        for _ in range(50):
            if console.open_count:
                break
            await asyncio.sleep(0.02)
        assert console.open_count == 1
        await asyncio.wait_for(console.close(), WAIT_S)
        running = [task for task in asyncio.all_tasks()
                   if "ConsoleRelay" in repr(task.get_coro())]
        assert running == []
        assert console.open_count == 0
        assert await _closed(reader)
        writer.close()


async def test_a_host_name_with_an_unanswering_address_is_reached_at_its_next_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hyper-V host's name often has an IPv6 and an IPv4 address; where the first goes
    unanswered (a firewall dropping it) the relay waited on it for the whole connect
    timeout and closed the console, never trying the address that works."""
    async with vmconnect() as stand_in:
        port = stand_in.port
        with socket.socket(socket.AF_INET6) as dropping:
            dropping.bind(("::1", port))
            dropping.listen(0)
            queued = [socket.socket(socket.AF_INET6) for _ in range(3)]
            for sock in queued:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("::1", port))
            _resolve_to_both_loopbacks(monkeypatch, "hv01.lab", port)
            console = ConsoleRelay(RelayTarget("hv01.lab", port), connect_timeout_s=3)
            await console.start(Listener("127.0.0.1", 0))
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
                assert await _read(reader, 9) == b"RDP-HELLO"
                writer.close()
            finally:
                await console.close()
                for sock in queued:
                    sock.close()


async def test_both_sides_of_a_relayed_connection_probe_a_peer_that_vanished(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A console proxy VM that is destroyed or loses its network leaves its connections
    half-open: no FIN ever comes. With a console whose screen does not change nothing is
    sent either way, so without TCP keepalive such a connection holds its relay slot and
    two descriptors for good, and enough of them lock every console out."""
    opened: list[asyncio.StreamWriter] = []
    real_open = asyncio.open_connection

    async def noting(*args: object, **kwargs: object
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await real_open(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(writer)
        return reader, writer

    monkeypatch.setattr(asyncio, "open_connection", noting)
    async with vmconnect() as stand_in, relaying(stand_in.port) as console:
        reader, writer = await real_open("127.0.0.1", console.port)
        assert await _read(reader, 9) == b"RDP-HELLO"
        (client_side,) = list(console._open)
        (far_side,) = [w for w in opened if w.get_extra_info("peername")[1] == stand_in.port]
        for side in (client_side, far_side):
            sock = side.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            if hasattr(socket, "TCP_KEEPIDLE"):
                idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
                interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
                probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
                assert idle + interval * probes <= 300  # a dead peer is let go within minutes
        writer.close()
        assert await _none_open(console)


# --- when the agent relays --------------------------------------------------------------


def _config(tmp_path: Path, backend: str, url: str | None = None, listen: str | None = None,
            target_port: int | None = None) -> AgentConfig:
    agent: dict[str, object] = {"state_dir": tmp_path, "backend": backend}
    if listen is not None:
        agent["console_relay_listen"] = listen
    if target_port is not None:
        agent["console_relay_target_port"] = target_port
    return load_config(None, wsman={"url": url} if url else None, **agent)


def test_a_remote_wsman_host_is_relayed_to_its_vmconnect_port(tmp_path: Path) -> None:
    config = _config(tmp_path, "wsman", "https://hv01.lab:5986/wsman")
    assert relay.relay_target(config, on_windows=False) == RelayTarget("hv01.lab", 2179)
    assert relay.relay_target(config, on_windows=True) == RelayTarget("hv01.lab", 2179)
    assert relay.console_port(config) == 2179
    moved = _config(tmp_path, "wsman", "https://hv01.lab:5986/wsman", "0.0.0.0:3390", 2200)
    assert relay.relay_target(moved, on_windows=False) == RelayTarget("hv01.lab", 2200)
    assert relay.console_port(moved) == 3390


def test_nothing_is_relayed_on_the_emulator_on_the_host_itself_or_when_turned_off(
        tmp_path: Path) -> None:
    assert relay.relay_target(_config(tmp_path, "emulator"), on_windows=False) is None
    local = _config(tmp_path, "wsman", "http://127.0.0.1:5985/wsman")
    assert relay.relay_target(local, on_windows=True) is None  # the Hyper-V host itself
    # off Windows: this machine's WinRM is a tunnel or the emulator's face; relayed unless
    # the relay would listen on the very port it relays to
    tunnel = _config(tmp_path, "wsman", "http://127.0.0.1:5985/wsman", target_port=12179)
    assert relay.relay_target(tunnel, on_windows=False) == RelayTarget("127.0.0.1", 12179)
    assert relay.relay_target(local, on_windows=False) is None
    assert relay.relays_to_itself(local, on_windows=False)
    assert not relay.relays_to_itself(tunnel, on_windows=False)
    assert not relay.relays_to_itself(local, on_windows=True)
    mapped = _config(tmp_path, "wsman", "http://[::ffff:127.0.0.1]:5985/wsman")
    assert relay.relays_to_itself(mapped, on_windows=False)  # 127.0.0.1 in IPv6 form
    assert relay.relay_target(mapped, on_windows=True) is None
    off = _config(tmp_path, "wsman", "https://hv01.lab:5986/wsman", listen="")
    assert relay.relay_target(off, on_windows=False) is None
    assert relay.console_port(off) == 2179


def test_a_relay_listen_address_without_a_port_stops_the_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="console_relay_listen"):
        _config(tmp_path, "wsman", "https://hv01.lab:5986/wsman", listen="0.0.0.0")


async def test_a_relay_address_in_use_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    async with vmconnect() as stand_in:
        taken = f"127.0.0.1:{stand_in.port}"
        config = _config(tmp_path, "wsman", "https://hv01.lab:5986/wsman", listen=taken)
        with pytest.raises(OSError, match=re.escape(
                f"{taken} ([agent] console_relay_listen): the address is in use")):
            await relay.start_for(config, [])


async def test_a_relay_to_this_machine_on_its_own_port_is_not_started(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    port = free_port()
    config = _config(tmp_path, "wsman", "http://localhost:5985/wsman",
                     listen=f"127.0.0.1:{port}", target_port=port)
    assert await relay.start_for(config, []) is None
    assert relay.console_port(config) == 2179
    assert f"no console relay: the WinRM URL names this machine and console_relay_listen " \
           f"127.0.0.1:{port}" in caplog.text
    with pytest.raises(OSError):  # nothing listens there
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize("itself", ["127.0.0.1", "localhost", "::ffff:127.0.0.1"])
async def test_a_connection_that_comes_back_to_the_relay_is_closed_not_relayed_again(
        itself: str, caplog: pytest.LogCaptureFixture) -> None:
    """Its own address, a name for it, or its IPv4-mapped IPv6 form (a connection to which
    reaches the IPv4 listener): relayed, each connection came back as a new one until
    every slot was taken."""
    caplog.set_level(logging.INFO, "hyperv_agent.relay")
    async with relaying(0, max_connections=8) as console:
        port = console.port
        console.target = RelayTarget(itself, port)  # an address naming itself
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed(reader)
        writer.close()
        assert await _none_open(console)
    assert f"{itself}:{port} is this relay's own listener" in caplog.text
    assert "<->" not in caplog.text  # no connection was relayed


async def test_the_relay_and_the_cloudstack_listener_share_the_open_file_limit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hyperv_agent.relay")
    config = load_config(None, wsman={"url": "https://hv01.lab:5986/wsman", "username": "u",
                                      "password": "p"},
                         state_dir=tmp_path, backend="wsman", max_connections=1000,
                         console_relay_listen=f"127.0.0.1:{free_port()}")
    agent = build_agent(config)
    started = await relay.start_for(config, [], file_limit=1024)
    assert started is not None
    try:
        listener = agent.limits(1024).max_connections
        sockets = listener + 2 * started.max_connections  # a console holds two
        assert sockets <= 1024 - 1024 // 4, (listener, started.max_connections)
        assert (listener, started.max_connections) == (256, 256)
        assert "console relay: max_connections lowered from 1000 to 256" in caplog.text
    finally:
        await started.close()
        await agent.close()


# --- when the agent stops -----------------------------------------------------------------


async def test_a_stopping_agent_relays_no_new_console_but_the_open_ones_go_on_in_the_grace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """From the stop signal on, a console proxy reaching the relay is refused, like a new
    command; a console relayed before keeps flowing while a command in flight is answered,
    and closes when the agent has stopped."""
    caplog.set_level(logging.INFO)
    config = load_config(None, state_dir=tmp_path, backend="emulator",
                         listen=f"127.0.0.1:{free_port()}",
                         admin_listen=f"127.0.0.1:{free_port()}")
    agent = build_agent(config)
    release = asyncio.Event()

    async def held(fqcn: str, body: bytes) -> object:
        await release.wait()
        return await answer(fqcn, body)

    answer = agent.dispatch._answer
    monkeypatch.setattr(agent.dispatch, "_answer", held)
    async with vmconnect() as stand_in:
        started: list[ConsoleRelay] = []

        async def relay_for(*_: object, **__: object) -> ConsoleRelay:
            console = ConsoleRelay(RelayTarget("127.0.0.1", stand_in.port), [], 8, 2)
            await console.bind(Listener("127.0.0.1", 0))
            started.append(console)
            return console

        monkeypatch.setattr(relay, "bind_for", relay_for)
        stop = asyncio.Event()
        running = asyncio.create_task(service.run_agent(agent, stop))
        for _ in range(200):
            if started and any("serving CloudStack" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        (console,) = started
        port = console.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read(reader, 9) == b"RDP-HELLO"
        in_flight = asyncio.create_task(
            agent.dispatch("com.cloud.agent.api.ReadyCommand", b'[{"com.cloud.agent.api.'
                           b'ReadyCommand": {"dcId": 1, "hostId": 1, "wait": 0}}]'))
        await asyncio.sleep(0.05)
        stop.set()
        for _ in range(200):
            if any("waiting up to" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        with pytest.raises(OSError):  # a new console is refused at once
            await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"still")
        assert await _read(reader, 10) == b"echo:still"  # the open one goes on
        assert not running.done()
        release.set()
        assert b"ReadyAnswer" in await in_flight
        await asyncio.wait_for(running, WAIT_S)
        assert await _closed(reader)  # closed once the agent stopped
        writer.close()
    assert stand_in.clients == 1


@pytest.mark.parametrize("platform", ["posix", "nt"])
async def test_listeners_take_address_reuse_only_where_it_cannot_share_a_port(
        monkeypatch: pytest.MonkeyPatch, platform: str) -> None:
    """The CloudStack listener and the console relay set SO_REUSEADDR as asyncio chooses for
    the platform it runs on (``os.name``, read as the socket is bound): on Unix, so a
    restarted agent listens again past its last connections in TIME_WAIT; never on
    Windows, where the option lets a second socket bind a port already listened on — a
    second agent, or a C# agent left running on 8250, would start without "address in
    use" and share the management server's connections."""
    from aiohttp import web

    from hyperv_agent import server

    console = ConsoleRelay(RelayTarget("127.0.0.1", 2179))
    with monkeypatch.context() as patched:
        patched.setattr(os, "name", platform)
        runner = await server.bind(web.Application(), Listener("127.0.0.1", 0), None)
        try:
            await console.bind(Listener("127.0.0.1", 0))
        except BaseException:
            await runner.cleanup()
            raise
    try:
        servers = [site._server for site in runner.sites] + [console._server]
        assert all(isinstance(bound, asyncio.Server) for bound in servers), servers
        sockets = [sock for bound in servers if isinstance(bound, asyncio.Server)
                   for sock in bound.sockets]
        reuse = {bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
                 for sock in sockets}
        assert reuse == {platform == "posix"}
    finally:
        await console.close()
        await runner.cleanup()


def _resolve_to_both_loopbacks(monkeypatch: pytest.MonkeyPatch, name: str, port: int) -> None:
    """Have the running loop resolve ``name`` as a host with an IPv6 and an IPv4 address
    does (::1 first, then 127.0.0.1, both at ``port``); other names as before."""
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo

    async def both(host: object, *args: object, **kwargs: object) -> object:
        if host != name:
            return await real_getaddrinfo(host, *args, **kwargs)  # type: ignore
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", both)


async def _unreached_line(target: RelayTarget, caplog: pytest.LogCaptureFixture,
                          connect_timeout_s: float = 3) -> str:
    """The warning a relay to ``target`` logs for a client it could not connect (the
    client's connection closed, nothing relayed)."""
    console = ConsoleRelay(target, connect_timeout_s=connect_timeout_s)
    await console.start(Listener("127.0.0.1", 0))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        assert await _closed(reader)
        writer.close()
    finally:
        await console.close()
    return next(record.getMessage() for record in caplog.records
                if "cannot reach VMConnect" in record.getMessage())
