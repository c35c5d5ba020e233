"""Bounded resources: pings keep answering in < 50 ms under three loads on 127.0.0.1.

- 5x the connection cap in idle TLS connections (handshake done, nothing sent): every
  PingRoutingCommand, each on a new TLS connection as the management server makes them,
  answers in < 50 ms, and the agent never holds more connections than the cap;
- a gzip bomb (1 GiB of zeros in ~1 MB), posted with four encodings, again and again: each
  answered 415 without being inflated, pings in < 50 ms;
- a StopCommand whose vmName is 10 MB, posted again and again: each a failed StopAnswer
  naming the field, pings in < 50 ms.

The load comes from a separate process (its own work of building and encrypting megabytes
must not stall the pings measured here), one request per thread every 0.1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import report, verdict
from hyperv_agent import connections, server
from hyperv_agent.config import load_config
from hyperv_agent.service import Agent, build_agent

API = "/api/HypervResource/"
PING = "com.cloud.agent.api.PingRoutingCommand"
PING_BODY = json.dumps({"hostType": "Routing", "hostId": 1, "contextMap": {}, "wait": 0})
PING_BUDGET_MS = 50.0
CAP = 64
LOAD_S = 1.5

#: One thread per encoding posts its body again and again for ``load_s``, 0.1 s apart (a
#: stream of such requests, not a flood that saturates the machine's cores); prints the
#: answers and when the load began and ended.
LOAD_CLIENT = """
import gzip, http.client, json, ssl, sys, threading, time
port, kind, load_s, pause_s = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), 0.1
if kind == "bomb":  # 1 GiB of zeros as 64 gzip members of 16 MiB: about 1 MB
    body = gzip.compress(bytes(1 << 24), compresslevel=9) * 64
    encodings = ["gzip", "deflate", "br", "GZIP, identity"]
else:  # a 10 MB vmName
    body = json.dumps({"vmName": "x" * (10 << 20), "contextMap": {}, "wait": 0}).encode()
    encodings = ["identity"]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
answers = []

def post(encoding, until):
    while True:
        started = time.time()
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        connection.request("POST", "/api/HypervResource/com.cloud.agent.api.StopCommand", body,
                           {"Content-Encoding": encoding, "Content-Type": "application/json"})
        reply = connection.getresponse()
        answers.append({"status": reply.status, "text": reply.read().decode()[:300],
                        "seconds": time.time() - started, "size": len(body)})
        connection.close()
        if time.time() > until:
            return
        time.sleep(pause_s)

began = time.time()
threads = [threading.Thread(target=post, args=(e, began + load_s)) for e in encodings]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"began": began, "ended": time.time(), "answers": answers}))
"""


def client_tls() -> ssl.SSLContext:
    """Trusts anything, as the management server does (made once per run: loading the
    system's CA list takes ~50 ms)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_TLS = client_tls()


@dataclass
class Served:
    """An agent serving HTTPS on 127.0.0.1 within its configured limits."""

    agent: Agent
    runner: web.AppRunner

    @property
    def port(self) -> int:
        return int(self.runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def guard(self) -> connections.Guard:
        (site,) = self.runner.sites
        assert isinstance(site, connections.GuardedSite)
        return site.guard


@contextlib.asynccontextmanager
async def serving(agent: Agent) -> AsyncIterator[Served]:
    limits = agent.limits(connections.open_file_limit())
    runner = await server.start(agent.app(), server.Listener("127.0.0.1", 0),
                                agent.ssl_context(), limits)
    try:
        yield Served(agent, runner)
    finally:
        await runner.cleanup()


async def ping(url: str) -> float:
    """Seconds for one PingRoutingCommand on a new TLS connection; checks the answer."""
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(ssl=_TLS, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
        url + API + PING, data=PING_BODY.encode()
    ) as reply:
        assert reply.status == 200, reply.status
        data = await reply.json()
    assert data[0]["com.cloud.agent.api.Answer"]["result"] is True, data
    return time.perf_counter() - started


async def idle_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection, handshake done, that sends nothing."""
    return await asyncio.open_connection("127.0.0.1", port, ssl=_TLS)


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within_s) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True


@dataclass(frozen=True)
class IdleRun:
    ping_s: list[float]
    most_held: int  # the most connections the agent held at once
    still_open: list[bool]  # per idle connection, in the order opened


async def pings_beyond_cap(served: Served, idle_count: int, pings: int) -> IdleRun:
    """``idle_count`` idle TLS connections, then ``pings`` pings one after the other."""
    idle = []
    most_held = 0
    for _ in range(idle_count):
        idle.append(await idle_connection(served.port))
        most_held = max(most_held, served.guard.open_count)
    times = []
    for _ in range(pings):
        times.append(await ping(served.url))
        most_held = max(most_held, served.guard.open_count)
    still_open = [not await closed_by_server(reader, 0.05) for reader, _ in idle]
    for _, writer in idle:
        writer.close()
    return IdleRun(times, most_held, still_open)


@dataclass(frozen=True)
class LoadRun:
    ping_s: list[float]  # every ping, before, during and after the load
    during: int  # how many pings started while the load ran
    answers: list[dict[str, Any]]


async def pings_during_load(port: int, kind: str, load_s: float) -> LoadRun:
    """Ping one after the other while :data:`LOAD_CLIENT` sends its ``kind`` of load
    ("bomb" or "field") from another process."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOAD_CLIENT, str(port), kind, str(load_s),
        stdout=asyncio.subprocess.PIPE)
    output = asyncio.ensure_future(client.communicate())
    pings: list[tuple[float, float]] = []  # (wall clock at start, seconds)
    deadline = time.time() + 60 + load_s
    while not output.done() and time.time() < deadline:
        pings.append((time.time(), await ping(f"https://127.0.0.1:{port}")))
        await asyncio.sleep(0.005)
    stdout, _ = await output
    assert client.returncode == 0
    load = json.loads(stdout)
    during = sum(1 for when, _ in pings if load["began"] <= when <= load["ended"])
    return LoadRun([seconds for _, seconds in pings], during, load["answers"])


def ping_figures(times: Sequence[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"max {ms[-1]:.0f} ms, p95 {p95:.0f}, median {statistics.median(ms):.0f} ({len(ms)})"


def refused_bombs(answers: Sequence[dict[str, Any]]) -> bool:
    return bool(answers) and all(a["status"] == 415 and a["size"] < 1_100_000
                                 and "not accepted" in a["text"] for a in answers)


def refused_fields(answers: Sequence[dict[str, Any]]) -> bool:
    prefix = "StopCommand: malformed request: vmName: a name of 10485760 characters"
    return bool(answers) and all(
        a["status"] == 200 and json.loads(a["text"])[0]["com.cloud.agent.api.StopAnswer"]
        ["details"].startswith(prefix) for a in answers)


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        config = load_config(None, state_dir=Path(scratch), backend="emulator",
                             max_connections=CAP)
        agent = build_agent(config)
        async with serving(agent) as served:
            idle = await pings_beyond_cap(served, 5 * CAP, 50)
            bomb = await pings_during_load(served.port, "bomb", LOAD_S)
            field = await pings_during_load(served.port, "field", LOAD_S)
        await agent.close()
    budget = f"< {PING_BUDGET_MS:.0f} ms each"
    report("limits", [
        (f"pings beside {5 * CAP} idle TLS connections (cap {CAP})", ping_figures(idle.ping_s),
         budget, verdict(max(idle.ping_s) * 1000 < PING_BUDGET_MS)),
        ("connections the agent held at once", str(idle.most_held), f"<= {CAP}",
         verdict(idle.most_held <= CAP)),
        ("idle connections left open at the end", str(sum(idle.still_open)), f"<= {CAP}",
         verdict(sum(idle.still_open) <= CAP)),
        (f"pings during gzip bombs ({len(bomb.answers)} posted, {bomb.during} pings during)",
         ping_figures(bomb.ping_s), budget,
         verdict(max(bomb.ping_s) * 1000 < PING_BUDGET_MS and bomb.during > 0)),
        ("gzip bombs answered 415, never inflated", str(refused_bombs(bomb.answers)), "True",
         verdict(refused_bombs(bomb.answers))),
        (f"pings during 10 MB vmNames ({len(field.answers)} posted, {field.during} during)",
         ping_figures(field.ping_s), budget,
         verdict(max(field.ping_s) * 1000 < PING_BUDGET_MS and field.during > 0)),
        ("10 MB vmNames: failed StopAnswer naming the field", str(refused_fields(field.answers)),
         "True", verdict(refused_fields(field.answers))),
        ("slowest 10 MB vmName answer", f"{max(a['seconds'] for a in field.answers):.2f} s",
         "-", "-"),
    ])


if __name__ == "__main__":
    asyncio.run(main())
