"""The lab arrangement as an operator runs it, in processes: ``emulator wsman`` (the face),
``serve --backend wsman`` (the agent), and the commands run against them, plus a TCP
server standing in for the host's VMConnect."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPLATE = Path("template/tmpl/1/1/hyperv-agent-probe.vhdx")


def command(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``hyperv-agent ARGS`` run to the end."""
    return subprocess.run([sys.executable, "-m", "hyperv_agent.cli", *args],
                          capture_output=True, text=True, timeout=timeout_s)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hyperv_agent.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(process: subprocess.Popen[str]) -> str:
    """Stop ``process``; what it wrote to stderr."""
    process.terminate()
    _, errors = process.communicate(timeout=30)
    return errors


def make_template(store: Path) -> Path:
    target = store / TEMPLATE
    made = command("template", "make", str(target), timeout_s=60)
    assert made.returncode == 0, made.stderr
    return target


@contextmanager
def face(config: Path, state_dir: Path, user: str, password: str) -> Iterator[str]:
    """``emulator wsman`` on a free port of 127.0.0.1 (HTTP, NTLM); yields its URL."""
    process = start("emulator", "wsman", "--listen", "127.0.0.1:0", "--state-dir",
                    str(state_dir), "--config", str(config), "--user", user,
                    "--password", password)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.communicate(timeout=30)[1]
        yield str(json.loads(line)["url"])
    finally:
        errors = stop(process)
        assert password not in errors


@contextmanager
def agent(*args: str, port: int, password: str) -> Iterator[str]:
    """``serve ARGS`` listening on 127.0.0.1:``port``, ready; yields its URL."""
    process = start("serve", "--listen", f"127.0.0.1:{port}", *args)
    url = f"https://127.0.0.1:{port}"
    try:
        _wait_ready(f"{url}/api/HypervResource", process)
        yield url
    finally:
        errors = stop(process)
        assert password not in errors


def _wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            urllib.request.urlopen(url, context=context, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the agent did not become ready")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, VmConnect)
        self.request.sendall(b"RDP-HELLO")
        while data := self.request.recv(1024):
            self.request.sendall(b"echo:" + data)
        server.closed.set()


class VmConnect(socketserver.ThreadingTCPServer):
    """Stands in for the host's VMConnect: greets, echoes, notes when its client left."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.closed = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextmanager
def vmconnect() -> Iterator[VmConnect]:
    server = VmConnect()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def console_round_trip(relay_port: int, stand_in: VmConnect) -> bytes:
    """Connect to the agent's console relay, read the greeting, send a byte, read its echo,
    close; what came back. Waits until the stand-in saw the close."""
    with socket.create_connection(("127.0.0.1", relay_port), timeout=5) as client:
        got = b""
        while len(got) < len(b"RDP-HELLO") + len(b"echo:x"):
            if len(got) == len(b"RDP-HELLO"):
                client.sendall(b"x")
            chunk = client.recv(1024)
            assert chunk, f"the relay closed after {got!r}"
            got += chunk
    assert stand_in.closed.wait(5), "VMConnect did not see the console close"
    return got
