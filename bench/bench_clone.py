"""Linked-clone budgets (CopyCommand case B: a root volume from a template on its pool).

- A linked clone (a differencing VHDX whose parent is the template) made through the real
  agent over HTTPS on the emulator takes < 100 ms (median) for a 1 GiB and for an 8 GiB
  template, and the 8 GiB one is within 2x of the 1 GiB one: the template's data is
  never read or copied.
- Each clone costs 1 call + 1 job wait once the agent is warm.
- For contrast: a full copy (``fullCloneFlag``) of the same templates.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import report, require, verdict
from hyperv_agent import server
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.service import Agent, build_agent

COPY = "org.apache.cloudstack.storage.command.CopyCommand"
PRIMARY_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
GIB = 1 << 30
MIB = 1 << 20
ROUNDS = 15
FULL_ROUNDS = 3
TEMPLATE_DATA_BYTES = 256 * MIB  # written into each template, so a full copy has work to do


def _store(full_clone: bool) -> dict[str, Any]:
    return {PRIMARY_TO: {"uuid": "bench-pool", "id": 1, "host": "127.0.0.1",
                         "type": "Filesystem", "poolType": "Filesystem", "path": "C:\\pool",
                         "port": 0, "fullCloneFlag": full_clone}}


def _body(template: str, full_clone: bool) -> bytes:
    return json.dumps({
        "srcTO": {"org.apache.cloudstack.storage.to.TemplateObjectTO": {
            "path": template, "format": "VHDX", "imageDataStore": _store(False)}},
        "destTO": {"org.apache.cloudstack.storage.to.VolumeObjectTO": {
            "uuid": str(uuid.uuid4()), "volumeType": "ROOT", "dataStore": _store(full_clone),
            "size": GIB}},
        "wait": 0}).encode()


def _templates(pool: Path) -> None:
    """A 1 GiB and an 8 GiB dynamic VHDX template, each holding the same data, flushed."""
    pool.mkdir(parents=True, exist_ok=True)
    chunk = bytes(range(256)) * (MIB // 256)
    for name, size in (("tmpl-1g", GIB), ("tmpl-8g", 8 * GIB)):
        path = pool / f"{name}.vhdx"
        vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, size)
        for offset in range(0, TEMPLATE_DATA_BYTES, MIB):
            vhd.write_data(path, offset, chunk)
    os.sync()


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, pool: Path,
                template: str, linked: bool) -> float:
    """Seconds of one CopyCommand, checked to have made the kind of volume it names: a
    differencing disk whose parent is ``template`` (``linked``), else a disk of its own."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
        answer = await r.json(content_type=None)
    elapsed = time.perf_counter() - started
    ((_, fields),) = answer[0].items()
    assert fields["result"] is True, fields
    volume = next(iter(fields["newData"].values()))
    info = vhd.read_info(pool / f"{volume['path']}.vhdx")
    made = (info.type, info.parent_path) if linked else (info.type is vhd.DiskType.DIFFERENCING,)
    wanted = ((vhd.DiskType.DIFFERENCING, f"C:\\pool\\{template}.vhdx") if linked
              else (False,))
    require(made == wanted, f"a {'linked clone of' if linked else 'full copy of'} {template} "
            f"(made {made})")
    return elapsed


async def _measure(agent: Agent, url: str, pool: Path) -> dict[str, float]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    emulator = agent.emulator
    assert emulator is not None
    figures: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async def copy(name: str, linked: bool) -> float:
            return await _post(session, url, _body(name, not linked), pool, name, linked)

        await copy("tmpl-1g", True)  # warm: service and class cached
        for name in ("tmpl-1g", "tmpl-8g"):
            before = emulator.round_trips()
            samples = [await copy(name, True) for _ in range(ROUNDS)]
            spent = emulator.round_trips() - before
            figures[f"{name} linked ms"] = statistics.median(samples) * 1000
            figures[f"{name} calls"] = spent.calls / ROUNDS
            figures[f"{name} waits"] = spent.waits / ROUNDS
        for name in ("tmpl-1g", "tmpl-8g"):  # after the clones: their writes load the disk
            full = [await copy(name, False) for _ in range(FULL_ROUNDS)]
            figures[f"{name} full ms"] = statistics.median(full) * 1000
    return figures


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "state"
        pool = state / "emulator" / "drives" / "C" / "pool"
        _templates(pool)
        agent = build_agent(load_config(None, state_dir=state, backend="emulator",
                                        private_ip="127.0.0.1", local_storage_path="C:\\pool"))
        runner = await server.start(agent.app(), server.Listener("127.0.0.1", 0),
                                    agent.ssl_context())
        port = runner.addresses[0][1]
        try:
            figures = await _measure(agent, f"https://127.0.0.1:{port}/api/HypervResource/{COPY}",
                                     pool)
        finally:
            await runner.cleanup()
            await agent.close()
    small, big = figures["tmpl-1g linked ms"], figures["tmpl-8g linked ms"]
    ratio = big / small
    report("clone", [
        ("linked clone, 1 GiB template", f"{small:.1f} ms", "< 100 ms", verdict(small < 100)),
        ("linked clone, 8 GiB template", f"{big:.1f} ms", "< 100 ms", verdict(big < 100)),
        ("8 GiB / 1 GiB", f"{ratio:.2f}x", "<= 2x", verdict(ratio <= 2)),
        ("round trips per linked clone (size check + clone)",
         f"{figures['tmpl-8g calls']:.0f} + {figures['tmpl-8g waits']:.0f} W", "2 + 1 W",
         verdict(figures["tmpl-1g calls"] == figures["tmpl-8g calls"] == 2
                 and figures["tmpl-1g waits"] == figures["tmpl-8g waits"] == 1)),
        ("full copy, 1 GiB template (contrast)", f"{figures['tmpl-1g full ms']:.1f} ms",
         "-", "-"),
        ("full copy, 8 GiB template (contrast)", f"{figures['tmpl-8g full ms']:.1f} ms",
         "-", "-"),
    ])


if __name__ == "__main__":
    asyncio.run(main())
