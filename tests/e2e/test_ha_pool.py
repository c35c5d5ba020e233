"""HA between two hosts on one SMB pool: two agents, each serving HTTPS on its own private
address, registered on one folder of a real smbd, which both reach as the same service
account that owns the folder (files created 0644). Each stamps its heartbeat there, on its
own loop, and answers CheckOnHost about the other, as the management server asks a
neighbour about a suspect host. Timing is short (stamps every second, stale after three)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from hyperv_agent.config import AgentConfig
from hyperv_agent.handlers.heartbeat import parse_heartbeat
from hyperv_agent.service import heartbeats
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.samba import Samba, samba_with_accounts

MODIFY = "com.cloud.agent.api.ModifyStoragePoolCommand"
CHECK_ON_HOST = "com.cloud.agent.api.CheckOnHostCommand"
POOL_UUID = "c4c4c4c4-0000-4000-8000-0000000000c4"
USER, PASSWORD = "daemon", "Serv1ce-Acc0unt!pw"  # an existing Unix account: the pool's owner
ADDRESSES = {"a": "192.168.100.21", "b": "192.168.100.22"}
FOLDER = "ha-pool"
INTERVAL_S, STALE_S = 1.0, 3.0

@pytest.fixture
def service_pool() -> Iterator[Samba]:
    """smbd serving the pool's folder, owned by the service account and closed to others."""
    with samba_with_accounts({USER: PASSWORD}) as server:
        folder = server.share_dir / FOLDER
        folder.mkdir()
        shutil.chown(folder, USER, USER)
        folder.chmod(0o700)
        yield server


def _config(tmp_path: Path, samba: Samba, host: str) -> AgentConfig:
    (tmp_path / host).mkdir()
    return config_with_shares(tmp_path / host, {}, f'smb_servers = ["{samba.server}"]\n'
                              f"smb_port = {samba.port}", private_ip=ADDRESSES[host],
                              heartbeat_interval_s=INTERVAL_S, heartbeat_stale_s=STALE_S)


def _pool(samba: Samba, password: str = PASSWORD) -> dict[str, Any]:
    """ModifyStoragePoolCommand as the MS sends it for the pool, with the account's
    ``password``."""
    return {"add": True, "pool": {
        "type": "SMB", "host": samba.server, "port": 445, "uuid": POOL_UUID,
        "path": f"/{samba.share}/{FOLDER}?user={USER}&password={quote(password, safe='')}"},
        "localPath": f"/mnt//{POOL_UUID}", "details": {}, "contextMap": {}, "wait": 300}


Hosts = dict[str, Running]
Loops = dict[str, "asyncio.Task[None]"]


@contextlib.asynccontextmanager
async def _hosts(tmp_path: Path, samba: Samba) -> AsyncIterator[tuple[Hosts, Loops]]:
    """Both hosts, the pool registered on each, each stamping on its own heartbeat loop
    (cancelled: the host's stamps stop, as when its agent stops)."""
    async with serving(_config(tmp_path, samba, "a")) as a, \
            serving(_config(tmp_path, samba, "b")) as b:
        hosts = {"a": a, "b": b}
        for running in hosts.values():
            _, added = await running.answer(MODIFY, _pool(samba))
            assert added["result"] is True, added
        loops = {name: asyncio.create_task(heartbeats(running.agent))
                 for name, running in hosts.items()}
        try:
            yield hosts, loops
        finally:
            for loop in loops.values():
                loop.cancel()
            await asyncio.gather(*loops.values(), return_exceptions=True)


async def _says(running: Running, suspect: str) -> tuple[bool, str]:
    """``running``'s CheckOnHostAnswer about ``suspect``: (result, details)."""
    key, value = await running.answer(CHECK_ON_HOST, {
        "host": {"guid": suspect, "privateNetwork": {"ip": ADDRESSES[suspect]}},
        "reportCheckFailureIfOneStorageIsDown": False, "contextMap": {}, "wait": 20})
    assert key == "com.cloud.agent.api.CheckOnHostAnswer"
    return value["result"], value["details"]


def _stamp(samba: Samba, host: str) -> Path:
    return samba.share_dir / FOLDER / f"hb-{ADDRESSES[host]}"


async def test_two_live_hosts_call_each_other_alive_while_both_stamp(
        tmp_path: Path, service_pool: Samba) -> None:
    """Each host's stamp is renewed every round, written as the service account, nothing
    left aside once a round has gone through; asked at any moment, also while the
    other's stamp is being replaced (a read that meets the rename may fail: that says
    nothing of the host), neither calls the other down."""
    samba = service_pool
    async with _hosts(tmp_path, samba) as (hosts, loops):
        written: dict[str, set[str]] = {host: set() for host in hosts}
        answers: list[tuple[bool, str]] = []
        until = time.monotonic() + 4 * INTERVAL_S
        while time.monotonic() < until:
            for host, other in (("a", "b"), ("b", "a")):
                answers.append(await _says(hosts[host], other))
                written[other].add(_stamp(samba, other).read_text())
            await asyncio.sleep(0.05)
        assert not [said for said in answers if said[0]], answers
        assert answers.count((False, "host is alive")) > len(answers) / 2, answers
        for host, texts in written.items():  # a new stamp every round
            stamped = sorted(parse_heartbeat(text) or 0 for text in texts)
            assert len(stamped) >= 3 and stamped[-1] - stamped[0] >= 2, texts
            assert _stamp(samba, host).owner() == USER
        for loop in loops.values():
            loop.cancel()
        await asyncio.gather(*loops.values(), return_exceptions=True)
        for running in hosts.values():  # a round whose rename met a read left its file
            await running.agent.host.write_heartbeats()  # aside: the next one takes it
        assert sorted(os.listdir(samba.share_dir / FOLDER)) == sorted(
            f"hb-{address}" for address in ADDRESSES.values())


@pytest.mark.parametrize("clock_off_s", [0.0, 300.0, -300.0])
async def test_a_host_that_stops_stamping_is_down_after_the_stale_age_and_not_before(
        tmp_path: Path, service_pool: Samba, clock_off_s: float) -> None:
    """Host b stops stamping (its agent stopped): host a calls it alive until its last
    stamp is STALE_S old by the file server's clock, then down, whether b's clock was
    right or five minutes ahead or behind (its stamps said so)."""
    samba = service_pool
    async with _hosts(tmp_path, samba) as (hosts, loops):
        a, b = hosts["a"], hosts["b"]
        b.agent.host.heartbeats.clock = lambda: time.time() + clock_off_s
        await asyncio.sleep(1.5 * INTERVAL_S)  # b stamps with that clock
        loops["b"].cancel()
        await asyncio.gather(loops["b"], return_exceptions=True)
        await asyncio.sleep(0.3)  # a rename already sent has ended
        said = parse_heartbeat(_stamp(samba, "b").read_text())
        assert said == pytest.approx(time.time() + clock_off_s, abs=5)
        last = _stamp(samba, "b").stat().st_mtime
        seen: list[tuple[float, float, bool]] = []  # ages before and after the answer
        while time.time() - last < STALE_S + 1.5:
            asked = time.time() - last
            result, _ = await _says(a, "b")
            seen.append((asked, time.time() - last, result))
            await asyncio.sleep(0.2)
        assert _stamp(samba, "b").stat().st_mtime == last  # stopped indeed
        assert all(not result for _, answered, result in seen if answered < STALE_S - 0.3)
        assert all(result for asked, _, result in seen if asked > STALE_S + 0.5), seen
        assert [result for *_, result in seen].count(False) >= 5, seen  # not at once
        assert await _says(b, "a") == (False, "host is alive")


async def test_a_password_rotated_on_one_host_keeps_both_hosts_stamping(
        tmp_path: Path, service_pool: Samba) -> None:
    """The service account's password is changed on the file server, and host a, which
    reconnected, gets the pool with it; host b keeps the session it has. Both go on
    stamping, and each calls the other alive."""
    samba = service_pool
    async with _hosts(tmp_path, samba) as (hosts, _):
        samba.user = USER
        samba.set_password("N3w-Serv1ce!pw")
        _, added = await hosts["a"].answer(MODIFY, _pool(samba, "N3w-Serv1ce!pw"))
        assert added["result"] is True, added
        before = {host: _stamp(samba, host).read_text() for host in hosts}
        await asyncio.sleep(2.5 * INTERVAL_S)
        for host, other in (("a", "b"), ("b", "a")):
            assert _stamp(samba, host).read_text() != before[host]
            assert await _says(hosts[host], other) == (False, "host is alive")
