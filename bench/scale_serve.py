"""The served agent for the scale benchmark: `serve` in its own process, its start-up
time, the CLI's, and ping latency on one kept-alive connection while state reports run
back to back on another (sent by a second process, so the client never competes with
the pings it times)."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import multiprocessing
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import aiohttp

REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
PING_FQCN = "com.cloud.agent.api.PingRoutingCommand"
PING = {"_hostVmStateReport": {}, "_gatewayAccessible": True, "_vnetAccessible": True,
        "hostType": "Routing", "hostId": 1, "contextMap": {}, "wait": 0}
API = "/api/HypervResource"
AGENT = [sys.executable, "-m", "hyperv_agent.cli"]
SCRIPT = Path(sys.executable).parent / "hyperv-agent"


def client_ssl() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    ready_s: float

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{API}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def serve(state_dir: Path, timeout_s: float = 120.0) -> Served:
    """Start `hyperv-agent serve`; ready when the liveness route answers."""
    port, admin = free_port(), free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [*AGENT, "serve", "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{admin}"], stderr=subprocess.DEVNULL)
    context = client_ssl()
    while time.perf_counter() - started < timeout_s:
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}{API}", context=context,
                                   timeout=1).read()
            return Served(process, port, time.perf_counter() - started)
        except OSError:
            time.sleep(0.002)
    process.kill()
    raise RuntimeError(f"serve did not become ready within {timeout_s} s")


def compiled() -> bool:
    """Whether every module of the agent has bytecode no older than its source, as an
    installed agent has (``./dev`` compiles the checkout at set-up)."""
    spec = importlib.util.find_spec("hyperv_agent")
    assert spec is not None and spec.origin is not None
    for source in Path(spec.origin).parent.rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists() or cached.stat().st_mtime < source.stat().st_mtime:
            return False
    return True


def ready_s(state_dir: Path, rounds: int) -> float:
    """The fastest of ``rounds`` starts of `serve` on ``state_dir``."""
    best = float("inf")
    for _ in range(rounds):
        served = serve(state_dir)
        best = min(best, served.ready_s)
        served.stop()
    return best


def help_s(rounds: int) -> float:
    """The median wall time of `hyperv-agent --help`."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([str(SCRIPT), "--help"], capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _hammer(port: int, started: Event, stop: Event, done: Connection) -> None:
    """State reports back to back on one kept-alive connection until ``stop``; sends how
    many were answered."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=client_ssl())
    sent = 0
    while not stop.is_set():
        connection.request("POST", f"{API}/{REPORT}", body=b"{}",
                           headers={"content-type": "application/json"})
        reply = connection.getresponse()
        body = reply.read()
        assert reply.status == 200 and body.startswith(b"["), reply.status
        sent += 1
        started.set()
    done.send(sent)


@dataclass(frozen=True)
class PingFigures:
    p50_ms: float
    p99_ms: float
    pings: int
    reports: int


async def pings_while_reporting(port: int, pings: int, gap_s: float,
                                reporting: bool) -> PingFigures:
    """Ping latency on one kept-alive connection, with (or without) another process
    sending state reports back to back meanwhile."""
    context = multiprocessing.get_context("spawn")
    started, stop = context.Event(), context.Event()
    receiving, sending = context.Pipe(duplex=False)
    hammer = context.Process(target=_hammer, args=(port, started, stop, sending))
    if reporting:
        hammer.start()
        if not started.wait(120):
            hammer.kill()
            raise RuntimeError("the report sender got no state report answered")
    try:
        samples = await _pings(port, pings, gap_s)
    finally:
        stop.set()
    reports = 0
    if reporting:
        if not receiving.poll(120):
            hammer.kill()
            raise RuntimeError("the report sender did not finish")
        reports = receiving.recv()
        hammer.join()
    ordered = sorted(samples)
    return PingFigures(statistics.median(ordered) * 1000,
                       ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
                       len(ordered), reports)


async def _pings(port: int, count: int, gap_s: float) -> list[float]:
    connector = aiohttp.TCPConnector(ssl=client_ssl(), limit=1)
    body = json.dumps(PING).encode()
    url = f"https://127.0.0.1:{port}{API}/{PING_FQCN}"
    samples = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, data=body,
                                    headers={"content-type": "application/json"}) as reply:
                await reply.read()
                assert reply.status == 200
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(gap_s)
    return samples
