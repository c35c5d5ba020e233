"""Storage pools over real HTTPS: local folders and SMB shares, registration and statistics."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from urllib.parse import quote

import pytest
import smbclient  # type: ignore[import-untyped]

from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.handlers.heartbeat import format_heartbeat, parse_heartbeat
from hyperv_agent.handlers.storage import StorageHandlers
from hyperv_agent.hostfs.api import FileStat
from hyperv_agent.service import heartbeats
from tests.e2e.conftest import (
    PRIVATE_IP,
    STARTUP_REQUEST,
    Running,
    config_with_shares,
    every_backend,
    serving,
)
from tests.samba import Samba, samba_with_accounts

MODIFY = "com.cloud.agent.api.ModifyStoragePoolCommand"
CREATE_POOL = "com.cloud.agent.api.CreateStoragePoolCommand"
STATS = "com.cloud.agent.api.GetStorageStatsCommand"
CREATE_OBJECT = "org.apache.cloudstack.storage.command.CreateObjectCommand"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
PRIMARY_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
VOLUME_UUID = "13131313-1313-1313-1313-131313131313"
POOL_UUID = "3c2e0b0a-5f1e-4c6b-9a52-0d9b8f6f2b11"
SMB_PATH = "/SMB-Share/primary?user=admin&password=s3cret%40pw&domain=LAB"
DELETE_POOL = "com.cloud.agent.api.DeleteStoragePoolCommand"
DELETE_VOLUME = "org.apache.cloudstack.storage.command.DeleteCommand"
ANSWER = "com.cloud.agent.api.Answer"
KEPT = "pool-credentials.json"  # in the state directory


def _config_file(tmp_path: Path) -> Path:
    share = tmp_path / "smb-share"
    (share / "primary").mkdir(parents=True)
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"
backend = "emulator"
private_ip = "192.168.100.10"
[emulator.shares]
'\\\\10.1.1.2\\SMB-Share' = "{share}"
""")
    return config


backend_kind = every_backend  # every test here runs on the emulator and over WinRM


@pytest.fixture
async def pools(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(load_config(_config_file(tmp_path))) as running:
        yield running


def _modify(add: bool, pool_type: str, host: str, path: str, local: str | None = None
            ) -> dict[str, object]:
    body: dict[str, object] = {"add": add, "pool": {
        "type": pool_type, "host": host, "port": 445, "path": path, "uuid": POOL_UUID}}
    if local is not None:
        body["localPath"] = local
    return body


def _drive_c(running: Running) -> Path:
    return running.agent.config.agent.state_dir / "emulator" / "drives" / "C"


async def test_local_pool_is_measured_when_its_folder_exists(pools: Running) -> None:
    (_drive_c(pools) / "pools" / "p1").mkdir(parents=True)
    key, value = await pools.answer(MODIFY, _modify(True, "Filesystem", "127.0.0.1",
                                                    "C:\\pools\\p1", "C:\\pools\\p1"))
    assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer" and value["result"] is True
    info = value["poolInfo"]
    assert (info["localPath"], info["poolType"]) == ("C:\\pools\\p1", "Filesystem")
    assert 0 < info["availableBytes"] <= info["capacityBytes"]
    key, stats = await pools.answer(STATS, {"id": POOL_UUID, "pooltype": "Filesystem",
                                            "localPath": "C:\\pools\\p1"})
    assert key == "com.cloud.agent.api.GetStorageStatsAnswer" and stats["result"] is True
    usage = shutil.disk_usage(_drive_c(pools) / "pools" / "p1")
    reserved = 4 * 1024**3
    assert stats["capacityBytes"] == stats["capacity"] == usage.total - reserved
    assert stats["usedBytes"] == stats["used"]
    assert 0 <= stats["usedBytes"] <= stats["capacityBytes"]


async def test_smb_pool_is_registered_measured_and_forgotten(
    pools: Running, tmp_path: Path
) -> None:
    _, value = await pools.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
    assert value["result"] is True, value
    assert value["poolInfo"]["localPath"] == "\\\\10.1.1.2\\SMB-Share\\primary"
    assert value["poolInfo"]["hostPath"] == "/SMB-Share/primary"  # credentials dropped
    _, stats = await pools.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is True and stats["capacityBytes"] > 0
    registry = json.loads((tmp_path / "state" / "pools.json").read_text())
    assert registry == {POOL_UUID: {"root": "\\\\10.1.1.2\\SMB-Share\\primary",
                                    "pool_type": "SMB", "host": "10.1.1.2",
                                    "path": "/SMB-Share/primary"}}
    assert "s3cret" not in json.dumps(registry)
    # the host reaches this share itself (as a Windows host does, with the service's
    # account): the credentials are of no use, and not kept
    assert not (tmp_path / "state" / KEPT).exists()
    _, value = await pools.answer(MODIFY, _modify(False, "SMB", "10.1.1.2", SMB_PATH))
    assert value["result"] is True
    _, stats = await pools.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is False and "not registered" in stats["details"]


async def test_a_pool_named_in_another_case_than_its_share_and_folder_is_the_same_pool(
    pools: Running, tmp_path: Path
) -> None:
    # Windows folds case in share names and NTFS in the path inside: the MS may name the
    # share and folder as the operator typed them, not as the file server spells them
    pools.agent.host.private_ip = "192.168.100.10"
    path = "/smb-share/PRIMARY?user=admin&password=s3cret%40pw&domain=LAB"
    _, value = await pools.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", path))
    assert value["result"] is True, value
    assert value["poolInfo"]["localPath"] == "\\\\10.1.1.2\\smb-share\\PRIMARY"
    assert sorted(p.name for p in (tmp_path / "smb-share").iterdir()) == ["primary"]
    assert (tmp_path / "smb-share" / "primary" / "hb-192.168.100.10").is_file()


async def test_smb_pool_registration_survives_a_restart(tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path))
    for step in ("register", "after restart"):
        async with serving(config) as running:
            if step == "register":
                await running.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
            else:
                _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
                assert stats["result"] is True


async def test_pools_lost_with_the_state_directory_are_refused_naming_the_reconnect(
    tmp_path: Path,
) -> None:
    """An agent reinstalled (its state directory new) while the host stays connected gets
    no StartupCommand and no ModifyStoragePoolCommand: the MS registers pools when a host
    connects, never on a ping. Commands on a pool it no longer knows fail, and say how
    to have the MS register them again."""
    config = load_config(_config_file(tmp_path))
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
        assert added["result"] is True
    (config.agent.state_dir / "pools.json").unlink()  # the reinstall
    store = {PRIMARY_TO: {"uuid": POOL_UUID, "id": 201, "host": "10.1.1.2", "poolType": "SMB",
                          "path": SMB_PATH, "port": 445}}
    volume = {"data": {VOLUME_TO: {"uuid": VOLUME_UUID, "volumeType": "DATADISK",
                                   "size": 1 << 26, "dataStore": store, "name": "DATA-10",
                                   "id": 10}}, "wait": 0}
    async with serving(config) as running:
        _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB",
                                                "localPath": f"/mnt//{POOL_UUID}"})
        _, created = await running.answer(CREATE_OBJECT, volume)
    for answer in (stats, created):
        assert answer["result"] is False
        assert "not registered on this host" in answer["details"], answer
        assert "reconnect the host in CloudStack (reconnectHost)" in answer["details"], answer
        assert "s3cret" not in answer["details"]
    assert not list((tmp_path / "smb-share" / "primary").glob("*.vhd*"))


@pytest.mark.parametrize(("pool_type", "host", "path", "local"), [
    ("SMB", "10.9.9.9", "/nowhere/primary?user=a&password=s3cret%40pw", None),  # unreachable
    ("Filesystem", "127.0.0.1", "C:\\pools\\absent", "C:\\pools\\absent"),  # missing folder
    ("Filesystem", "127.0.0.1", "C:\\pools\\..\\..\\x", "C:\\pools\\..\\..\\x"),  # escape
    ("Filesystem", "127.0.0.1", ".\\Dummy", ".\\Dummy"),  # relative
    ("SMB", "10.1.1.2", "/SMB-Share/primary/../other?user=a&password=s3cret%40pw", None),
    ("SMB", "10.1.1.2", "\\SMB-Share\\primary\\..\\other", None),  # climbs, not resolved
    ("RBD", "10.1.1.2", "/rbd", None),  # a type Hyper-V cannot use
])
async def test_bad_pool_is_refused_clearly_without_leaking_the_password(
    pools: Running, pool_type: str, host: str, path: str, local: str | None
) -> None:
    key, value = await pools.answer(MODIFY, _modify(True, pool_type, host, path, local))
    assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer" and value["result"] is False
    assert value["details"].startswith(f"ModifyStoragePoolCommand failed: Failed to add "
                                       f"storage pool {POOL_UUID}")
    assert "s3cret" not in value["details"]
    assert not (pools.agent.config.agent.state_dir / "pools.json").exists()


async def test_create_and_delete_pool_answer_success(pools: Running) -> None:
    _, created = await pools.answer("com.cloud.agent.api.CreateStoragePoolCommand", {})
    _, deleted = await pools.answer("com.cloud.agent.api.DeleteStoragePoolCommand",
                                    {"_pool": {"uuid": POOL_UUID, "type": "SMB"}})
    assert created["result"] is True and deleted["result"] is True


async def test_create_pool_registers_the_pool_it_carries_and_never_fails_the_ms(
    pools: Running,
) -> None:
    (_drive_c(pools) / "pools" / "p2").mkdir(parents=True)
    body = _modify(True, "Filesystem", "127.0.0.1", "C:\\pools\\p2", "C:\\pools\\p2")
    _, created = await pools.answer("com.cloud.agent.api.CreateStoragePoolCommand", body)
    assert created["result"] is True and "registered at C:\\pools\\p2" in created["details"]
    _, stats = await pools.answer(STATS, {"id": POOL_UUID, "pooltype": "Filesystem",
                                          "localPath": "C:\\pools\\p2"})
    assert stats["result"] is True, stats
    absent = _modify(True, "Filesystem", "127.0.0.1", "C:\\pools\\gone", "C:\\pools\\gone")
    _, created = await pools.answer("com.cloud.agent.api.CreateStoragePoolCommand", absent)
    assert created["result"] is True and "not registered here" in created["details"]
    _, stats = await pools.answer(STATS, {"id": "x", "pooltype": "Filesystem",
                                          "localPath": "C:\\pools\\gone"})
    assert stats["result"] is False and "not registered" in stats["details"]


def _check_on_host(ip: str) -> dict[str, object]:
    return {"host": {"guid": "neighbour", "privateNetwork": {"ip": ip}}, "contextMap": {}}


def _stamped(beat: Path, says: float, written_s_ago: float) -> None:
    """A heartbeat as a host writes it: the time its own clock ``says``, in a file the
    file server last wrote ``written_s_ago`` seconds ago by its clock (this machine's)."""
    beat.write_text(format_heartbeat(says))
    written = time.time() - written_s_ago
    os.utime(beat, (written, written))


async def test_check_on_host_sees_a_fresh_heartbeat_in_a_shared_pool(
    pools: Running, tmp_path: Path
) -> None:
    await pools.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
    await pools.agent.host.write_heartbeats()
    beat = tmp_path / "smb-share" / "primary" / "hb-192.168.100.10"
    assert beat.read_text().count("@") == 1
    key, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                    _check_on_host("192.168.100.10"))
    assert key == "com.cloud.agent.api.CheckOnHostAnswer"
    assert (value["result"], value["details"], value["alive"]) == (False, "host is alive", True)


async def test_check_on_host_reports_not_alive_when_the_heartbeat_is_stale(
    pools: Running, tmp_path: Path
) -> None:
    await pools.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
    (tmp_path / "smb-share" / "primary" / "hb-10.0.0.7").write_text("2024-5-7@3:4:9")
    os.utime(tmp_path / "smb-share" / "primary" / "hb-10.0.0.7", (1715051049, 1715051049))
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host("10.0.0.7"))
    assert (value["result"], value["details"], value["determined"]) == (
        True, "host is not alive", True)
    _, bad = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                _check_on_host("..\\..\\x"))
    assert bad["result"] is False and "not an IP address" in bad["details"]


HOUR = 3600.0
SUSPECT = "10.0.0.7"


async def _neighbour_with_clock(pools: Running, tmp_path: Path, off_s: float) -> Path:
    """This agent as the neighbour, its clock ``off_s`` seconds off the file server's, its
    own heartbeat stamped in the shared pool at registration; the pool's folder."""
    pools.agent.host.heartbeats.clock = lambda: time.time() + off_s
    _, added = await pools.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
    assert added["result"] is True, added
    share = tmp_path / "smb-share" / "primary"
    assert parse_heartbeat((share / "hb-192.168.100.10").read_text()) == pytest.approx(
        time.time() + off_s, abs=5)
    return share


async def test_a_clock_far_off_the_file_servers_is_logged_once_and_again_when_it_moves(
    pools: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent measures its clock against the file server's each time it stamps: a
    skew beyond SKEW_WARN_S makes neighbours running the C# agent misjudge this host, so
    it is logged, once and not every stamp; again when it moves by more than the bound,
    and once when the clocks agree again."""
    caplog.set_level(logging.INFO, logger="hyperv_agent.handlers.heartbeat")

    def said() -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in caplog.records
                if "this machine's clock" in r.getMessage()]

    await _neighbour_with_clock(pools, tmp_path, -150.0)  # stamps at registration
    for _ in range(3):
        await pools.agent.host.write_heartbeats()
    assert len(said()) == 1, said()
    level, line = said()[0]
    assert level == logging.WARNING and "behind the file server's" in line, line
    assert "calls this live host down" in line and "NTP" in line, line
    assert "marks it Down" in line and "restarts" not in line, line
    pools.agent.host.heartbeats.clock = lambda: time.time() - 140  # moved little
    await pools.agent.host.write_heartbeats()
    assert len(said()) == 1, said()
    pools.agent.host.heartbeats.clock = lambda: time.time() + 600
    await pools.agent.host.write_heartbeats()
    await pools.agent.host.write_heartbeats()
    assert len(said()) == 2 and "ahead of the file server's" in said()[1][1], said()
    pools.agent.host.heartbeats.clock = lambda: time.time() + 20  # under the bound, not yet
    await pools.agent.host.write_heartbeats()  # back within half of it: no line
    assert len(said()) == 2, said()
    pools.agent.host.heartbeats.clock = time.time
    await pools.agent.host.write_heartbeats()
    await pools.agent.host.write_heartbeats()
    assert len(said()) == 3 and said()[2][0] == logging.INFO, said()
    assert "back within" in said()[2][1]


@pytest.mark.parametrize(("neighbour_off", "suspect_off"), [
    (0.0, -HOUR),  # the suspect's time service failed: it runs an hour behind
    (HOUR, 0.0),  # the neighbour's clock is an hour ahead
    (-HOUR, 0.0),  # the neighbour's clock is an hour behind
    (0.0, HOUR),  # the suspect's clock is an hour ahead
])
async def test_check_on_host_judges_a_live_hosts_heartbeat_by_the_file_servers_clock(
    pools: Running, tmp_path: Path, neighbour_off: float, suspect_off: float
) -> None:
    """Hosts whose clocks disagree by more than heartbeat_stale_s (a failed time service,
    hosts outside a domain): a suspect that stamped 20 s ago by the file server's clock is
    alive, whatever either host's clock says. Judged by the clocks, a live host an hour
    behind its neighbour is called Down while its VMs still run."""
    share = await _neighbour_with_clock(pools, tmp_path, neighbour_off)
    _stamped(share / f"hb-{SUSPECT}", time.time() + suspect_off - 20, written_s_ago=20)
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host(SUSPECT))
    assert (value["result"], value["details"], value["alive"], value["determined"]) == (
        False, "host is alive", True, True), value


@pytest.mark.parametrize(("neighbour_off", "suspect_off"), [
    (0.0, HOUR),  # the suspect's clock was an hour ahead: its last stamp says the future
    (-HOUR, 0.0),  # the neighbour's clock is an hour behind
    (HOUR, -HOUR),  # behind by two hours, reading a neighbour's clock
    (0.0, 0.0),
])
async def test_check_on_host_calls_a_host_whose_stamps_stopped_down_whatever_its_clock(
    pools: Running, tmp_path: Path, neighbour_off: float, suspect_off: float
) -> None:
    """A host dead for 200 s (its last stamp written then, by the file server's clock) is
    Down whatever the clocks said: judged by them, a suspect an hour ahead (or a neighbour
    an hour behind) stays alive for the hour after its death, and is not called Down."""
    share = await _neighbour_with_clock(pools, tmp_path, neighbour_off)
    _stamped(share / f"hb-{SUSPECT}", time.time() + suspect_off - 200, written_s_ago=200)
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host(SUSPECT))
    assert (value["result"], value["details"], value["determined"]) == (
        True, "host is not alive", True), value


@pytest.mark.parametrize("line", ["", "2026-12-"])
async def test_a_stamp_caught_while_a_csharp_agents_host_writes_it_is_judged_by_its_time(
    pools: Running, tmp_path: Path, line: str
) -> None:
    """A host still run by the C# agent writes its stamp in place (its heartbeat task's
    ``echo ...>hb-<ip>``: the file truncated, then the line written), so a neighbour's
    read can find it empty or holding part of the line, just written. That host runs:
    judged by the file's time, it is alive, not called Down while it runs; the same stamp
    left stale_s ago, by the file server's clock, is Down."""
    share = await _neighbour_with_clock(pools, tmp_path, 0.0)
    beat = share / f"hb-{SUSPECT}"
    beat.write_text(line)
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host(SUSPECT))
    assert (value["result"], value["details"], value["alive"]) == (
        False, "host is alive", True), value
    os.utime(beat, (time.time() - 200, time.time() - 200))
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host(SUSPECT))
    assert (value["result"], value["details"], value["determined"]) == (
        True, "host is not alive", True), value


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd, hung
async def test_check_on_host_answers_within_its_wait_while_another_pools_server_hangs(
    tmp_path: Path, own_samba: Samba
) -> None:
    """CheckOnHostCommand waits 20 s for its answer (its ``wait``). A neighbour with two
    shared pools, the file server of the first hung (it accepts, never answers): reading
    the suspect's stamp there waits until the connection is given up, 20 s, and the
    answer came after the MS had given up on it, though the other pool told at once
    whether the suspect stamps. The pools are read side by side, within half the wait:
    a fresh stamp in one says alive at once; a pool not read by then counts as one that
    cannot be read, and the others decide."""
    samba = own_samba
    share = tmp_path / "smb"
    (share / "primary").mkdir(parents=True)
    config = config_with_shares(tmp_path, {r"\\10.1.1.2\SMB-Share": share},
                                f'smb_servers = ["{samba.server}"]\nsmb_port = {samba.port}')
    async with serving(config) as running:
        await _samba_pool_then_emulated_one(running, samba)
        beat = share / "primary" / f"hb-{SUSPECT}"
        with samba.hung():
            for written_s_ago, said in ((5, (False, "host is alive")),
                                        (200, (True, "host is not alive"))):
                _stamped(beat, time.time() - written_s_ago, written_s_ago)
                started = time.monotonic()
                _, value = await running.answer("com.cloud.agent.api.CheckOnHostCommand",
                                                {**_check_on_host(SUSPECT), "wait": 4})
                assert time.monotonic() - started < 3.5, value
                assert (value["result"], value["details"]) == said, value


async def _samba_pool_then_emulated_one(running: Running, samba: Samba) -> None:
    """Register POOL_A on ``samba`` (folder hung-first), then an SMB pool on an emulated
    share (SMB_PATH)."""
    first = _samba_pool(samba, "hung-first")
    first["pool"] = {**first["pool"], "uuid": POOL_A}  # type: ignore[dict-item]
    for body in (first, _modify(True, "SMB", "10.1.1.2", SMB_PATH)):
        _, added = await running.answer(MODIFY, body)
        assert added["result"] is True, added


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd, hung
async def test_a_pools_hung_file_server_delays_no_other_pools_stamp(
    tmp_path: Path, own_samba: Samba, caplog: pytest.LogCaptureFixture
) -> None:
    """Two shared pools, the file server of the first hung (it accepts, never answers),
    stamped every 0.5 s. The stamp in the first waits until the file access gives up
    (20 s): written one pool after the other, the second pool's stamp waited as long
    each round, and a neighbour reading it called this live host down. Each pool is
    stamped on its own: the second's stamp is renewed every round; the first's write,
    still under way at its next turns, is not started again beside itself (said once);
    removed (DeleteStoragePoolCommand), its pool is no longer stamped, its write given
    up; the heartbeat stopped, no write is left behind."""
    samba, interval_s = own_samba, 0.5
    share = tmp_path / "smb"
    (share / "primary").mkdir(parents=True)
    config = config_with_shares(tmp_path, {r"\\10.1.1.2\SMB-Share": share},
                                f'smb_servers = ["{samba.server}"]\nsmb_port = {samba.port}',
                                heartbeat_interval_s=interval_s, heartbeat_stale_s=3.0)
    caplog.set_level(logging.INFO, logger="hyperv_agent")
    async with serving(config) as running:
        await _samba_pool_then_emulated_one(running, samba)
        registry = running.agent.host.pools
        assert registry is not None
        hung_root = registry.roots()[0]
        assert "hung-first" in hung_root
        files = running.agent.host.heartbeats.files
        write_text = files.write_text
        started: list[str] = []  # the pool root of each write started
        given_up: list[str] = []

        async def counted(path: str, text: str) -> None:
            root = path.rsplit("\\", 1)[0]
            started.append(root)
            try:
                await write_text(path, text)
            except asyncio.CancelledError:
                given_up.append(root)
                raise

        files.write_text = counted  # type: ignore[method-assign]
        healthy = share / "primary" / f"hb-{PRIVATE_IP}"
        with samba.hung():
            beating = asyncio.create_task(heartbeats(running.agent))
            stamped: list[float] = []  # when the healthy pool's stamp changed
            last = healthy.stat().st_mtime_ns
            began = time.monotonic()
            while time.monotonic() - began < 8 * interval_s:
                await asyncio.sleep(0.02)
                now = healthy.stat().st_mtime_ns
                if now != last:
                    stamped.append(time.monotonic() - began)
                    last = now
            assert stamped and stamped[0] < interval_s, stamped
            assert len(stamped) >= 6, stamped
            gaps = [b - a for a, b in itertools.pairwise(stamped)]
            assert max(gaps) < 2 * interval_s, stamped
            assert started.count(hung_root) == 1, started
            held = [r for r in caplog.records if "is not written yet" in r.getMessage()]
            assert len(held) == 1 and hung_root in held[0].getMessage(), held
            _, removed = await running.answer(DELETE_POOL, {"_pool": {"uuid": POOL_A,
                                                                      "type": "SMB"}})
            assert removed["result"] is True, removed
            await asyncio.sleep(2 * interval_s)
            assert given_up == [hung_root], given_up
        before = len(stamped)
        await asyncio.sleep(4 * interval_s)  # the server answers again
        assert started.count(hung_root) == 1, started
        assert healthy.stat().st_mtime_ns != last  # the other pool still stamped
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        assert before >= 6
        assert not [task for task in asyncio.all_tasks()
                    if task.get_name().startswith("heartbeat stamp")]


async def test_without_file_times_a_stamp_from_the_future_tells_only_that_clocks_disagree(
    pools: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file access gives no modification time, the stamp is read against this
    host's clock, as the C# agent reads it: one from its future tells that the clocks
    disagree, so the answer is "cannot tell" (the host kept Up), not "alive" for as long
    as the skew lasts; a stamp in the past is judged by its age as before."""
    share = await _neighbour_with_clock(pools, tmp_path, 0.0)
    files = pools.agent.host.heartbeats.files
    stat_with_time = files.stat

    async def no_times(path: str) -> FileStat | None:
        found = await stat_with_time(path)
        return None if found is None else FileStat(size=found.size, is_dir=found.is_dir)

    monkeypatch.setattr(files, "stat", no_times)
    await pools.agent.host.write_heartbeats()  # its time unknown: no server clock to use
    _stamped(share / f"hb-{SUSPECT}", time.time() + HOUR - 200, written_s_ago=200)
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host(SUSPECT))
    assert (value["result"], value["alive"], value["determined"]) == (False, False, False)
    assert value["details"].startswith("cannot tell whether the host is alive: its "
                                       "heartbeat is stamped ahead of this host's clock"), value
    _stamped(share / f"hb-{SUSPECT}", time.time() - 20, written_s_ago=0)
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host(SUSPECT))
    assert (value["result"], value["alive"]) == (False, True), value
    _stamped(share / f"hb-{SUSPECT}", time.time() - 200, written_s_ago=0)
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host(SUSPECT))
    assert (value["result"], value["details"]) == (True, "host is not alive"), value


async def test_pool_registration_stamps_the_heartbeat_and_a_lost_pool_tells_nothing(
    pools: Running, tmp_path: Path
) -> None:
    pools.agent.host.private_ip = "192.168.100.10"
    share = tmp_path / "smb-share" / "primary"
    await pools.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
    assert (share / "hb-192.168.100.10").read_text().count("@") == 1  # at registration
    (share / "hb-10.0.0.7").write_text("2024-5-7@3:4:9")
    share.rename(tmp_path / "smb-share" / "gone")  # the share itself is lost
    _, value = await pools.answer("com.cloud.agent.api.CheckOnHostCommand",
                                  _check_on_host("10.0.0.7"))
    assert (value["result"], value["determined"]) == (False, False), value
    assert value["details"] == ("cannot tell whether the host is alive: its heartbeat could "
                                "not be read in the 1 shared storage pool registered here "
                                "(this agent's log says why)")


async def test_an_agent_restarted_between_pings_goes_on_stamping_its_heartbeat(
    tmp_path: Path,
) -> None:
    """Without [agent] private_ip, stamps are written under the address the management
    server registered the host under. An agent restarted between two pings gets no
    StartupCommand (the MS saw nothing): it stamps under the address it learnt before,
    so a neighbour asked CheckOnHost does not call the live host down."""
    config_file = _config_file(tmp_path)
    config_file.write_text(config_file.read_text().replace('private_ip = "192.168.100.10"\n',
                                                           ""))
    config = load_config(config_file)
    assert config.agent.private_ip is None
    share = tmp_path / "smb-share" / "primary"
    registered = copy.deepcopy(STARTUP_REQUEST)
    registered[0]["com.cloud.agent.api.StartupRoutingCommand"]["privateIpAddress"] = "10.1.1.7"
    async with serving(config) as running:
        status, _ = await running.post("com.cloud.agent.api.StartupCommand", registered)
        assert status == 200
        await running.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
        assert (share / "hb-10.1.1.7").read_text().count("@") == 1
    (share / "hb-10.1.1.7").write_text("2024-5-7@3:4:9")  # the restart took a while
    async with serving(config) as running:  # pings go on; no StartupCommand comes
        await running.agent.host.write_heartbeats()
        _, value = await running.answer("com.cloud.agent.api.CheckOnHostCommand",
                                        _check_on_host("10.1.1.7"))
    assert (value["result"], value["alive"]) == (False, True), value
    assert sorted(p.name for p in share.glob("hb-*")) == ["hb-10.1.1.7"]


async def test_heartbeats_go_under_the_registered_address_when_private_ip_names_another(
    tmp_path: Path,
) -> None:
    """The MS's HA investigator asks neighbours about the address it registered the host
    under (CheckOnHostCommand's host.privateNetwork.ip), whatever [agent] private_ip says
    (an agentless agent given the Hyper-V host's own address, registered under the agent
    machine's). Stamps under the configured address only, a neighbour finds none under
    the registered one and calls the live host down. Also after a restart without a
    StartupCommand."""
    config = load_config(_config_file(tmp_path))
    assert config.agent.private_ip == "192.168.100.10"
    share = tmp_path / "smb-share" / "primary"
    registered = copy.deepcopy(STARTUP_REQUEST)
    registered[0]["com.cloud.agent.api.StartupRoutingCommand"]["privateIpAddress"] = "10.1.1.7"
    async with serving(config) as running:
        status, reply = await running.post("com.cloud.agent.api.StartupCommand", registered)
        assert status == 200
        routing = reply[0]["com.cloud.agent.api.StartupRoutingCommand"]
        assert routing["privateIpAddress"] == "10.1.1.7"  # echoed, as the MS requires
        await running.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
        assert sorted(p.name for p in share.glob("hb-*")) == ["hb-10.1.1.7"]
    (share / "hb-10.1.1.7").write_text("2024-5-7@3:4:9")  # the restart took a while
    async with serving(config) as running:  # pings go on; no StartupCommand comes
        await running.agent.host.write_heartbeats()
        _, value = await running.answer("com.cloud.agent.api.CheckOnHostCommand",
                                        _check_on_host("10.1.1.7"))
    assert (value["result"], value["alive"]) == (False, True), value
    assert sorted(p.name for p in share.glob("hb-*")) == ["hb-10.1.1.7"]


# --- what a pool root may be ----------------------------------------------------------------


def _refused_everywhere(details: str, said: str) -> None:
    assert details.startswith(f"ModifyStoragePoolCommand failed: Failed to add storage pool "
                              f"{POOL_UUID}, please verify your pool details: "), details
    assert said in details, details


def _create_volume(pool_uuid: str, path: str) -> dict[str, object]:
    store = {PRIMARY_TO: {"uuid": pool_uuid, "id": 201, "host": "127.0.0.1",
                          "poolType": "Filesystem", "path": path, "port": 0}}
    return {"data": {VOLUME_TO: {"uuid": VOLUME_UUID, "volumeType": "DATADISK", "size": 1 << 26,
                                 "dataStore": store, "name": "DATA-10", "id": 10}}, "wait": 0}


def _files_below(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize(("pool_type", "host", "path", "local"), [
    ("Filesystem", "127.0.0.1", "C:\\pool\\..\\Windows", "C:\\pool\\..\\Windows"),
    ("Filesystem", "127.0.0.1", "C:/pool/../Windows", "C:/pool/../Windows"),
    ("Filesystem", "127.0.0.1", "C:\\Windows\\.", "C:\\Windows\\."),
    ("Filesystem", "", "\\\\10.1.1.2\\SMB-Share\\primary\\..\\other",
     "\\\\10.1.1.2\\SMB-Share\\primary\\..\\other"),
])
async def test_root_with_dot_segments_is_refused_and_nothing_is_registered_or_made(
    pools: Running, tmp_path: Path, pool_type: str, host: str, path: str, local: str | None
) -> None:
    windows = _drive_c(pools) / "Windows"
    (windows / "System32").mkdir(parents=True)
    (tmp_path / "smb-share" / "other").mkdir()
    state = pools.agent.config.agent.state_dir
    body = _modify(True, pool_type, host, path, local)
    key, value = await pools.answer(MODIFY, body)
    assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer" and value["result"] is False
    _refused_everywhere(value["details"], "'..'" if ".." in path else "'.'")
    assert "s3cret" not in value["details"]
    _, created = await pools.answer(CREATE_POOL, body)  # the same rule: not registered
    assert created["result"] is True and "not registered here" in created["details"], created
    assert not (state / "pools.json").exists()
    key, volume = await pools.answer(CREATE_OBJECT, _create_volume(POOL_UUID, path))
    assert key == "org.apache.cloudstack.storage.command.CreateObjectAnswer"
    assert volume["result"] is False, volume
    assert _files_below(windows) == ["System32"]
    assert _files_below(tmp_path / "smb-share") == ["other", "primary"]
    _, stats = await pools.answer(STATS, {"id": POOL_UUID, "pooltype": pool_type,
                                          "localPath": local})
    assert stats["result"] is False and "not registered" in stats["details"]


@pytest.mark.parametrize(("pool_type", "host", "path", "local"), [
    ("Filesystem", "127.0.0.1", "C:\\Windows\\System32\\kernel32.dll",
     "C:\\Windows\\System32\\kernel32.dll"),
    ("Filesystem", "", "\\\\10.1.1.2\\SMB-Share\\primary\\notes.txt",
     "\\\\10.1.1.2\\SMB-Share\\primary\\notes.txt"),
    ("SMB", "10.1.1.2", "/SMB-Share/primary/notes.txt?user=a&password=s3cret%40pw", None),
])
async def test_root_that_is_a_file_is_refused_and_nothing_is_registered(
    pools: Running, tmp_path: Path, pool_type: str, host: str, path: str, local: str | None
) -> None:
    (_drive_c(pools) / "Windows" / "System32").mkdir(parents=True)
    dll = _drive_c(pools) / "Windows" / "System32" / "kernel32.dll"
    dll.write_bytes(b"MZ")
    (tmp_path / "smb-share" / "primary" / "notes.txt").write_text("notes")
    body = _modify(True, pool_type, host, path, local)
    key, value = await pools.answer(MODIFY, body)
    assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer" and value["result"] is False
    _refused_everywhere(value["details"], "is a file, not a folder")
    assert "s3cret" not in value["details"] and "poolInfo" not in value
    _, created = await pools.answer(CREATE_POOL, body)
    assert created["result"] is True and "not registered here" in created["details"], created
    assert not (pools.agent.config.agent.state_dir / "pools.json").exists()
    assert dll.read_bytes() == b"MZ"
    assert (tmp_path / "smb-share" / "primary" / "notes.txt").read_text() == "notes"


async def _local_pool_uuid(running: Running) -> tuple[str, str]:
    status, data = await running.post("com.cloud.agent.api.StartupCommand", STARTUP_REQUEST)
    assert status == 200
    info = data[1]["com.cloud.agent.api.StartupStorageCommand"]["poolInfo"]
    return info["uuid"], info["localPath"]


async def test_local_pool_is_not_moved_by_a_command_carrying_its_uuid(tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path))
    registry = tmp_path / "state" / "pools.json"
    data = tmp_path / "state" / "emulator" / "drives" / "D" / "data"
    data.mkdir(parents=True)
    async with serving(config) as running:
        local_uuid, local_path = await _local_pool_uuid(running)
        stored = registry.read_text()

        def modify(path: str) -> dict[str, object]:
            return {"add": True, "localPath": path, "pool": {
                "uuid": local_uuid, "type": "Filesystem", "host": "127.0.0.1", "path": path}}

        moved = modify("D:\\data")
        key, value = await running.answer(MODIFY, moved)
        assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer" and value["result"] is False
        assert f"Failed to add storage pool {local_uuid}" in value["details"]
        assert "this host's local pool" in value["details"]
        assert local_path in value["details"] and "D:\\data" in value["details"]
        _, created = await running.answer(CREATE_POOL, moved)
        assert created["result"] is True and "not registered here" in created["details"]
        assert registry.read_text() == stored
        _, value = await running.answer(MODIFY, modify(local_path))  # as it is: fine
        assert value["result"] is True and value["poolInfo"]["localPath"] == local_path
        assert registry.read_text() == stored
    async with serving(config) as running:  # restarted, before any StartupCommand
        _, value = await running.answer(MODIFY, moved)
        assert value["result"] is False and "this host's local pool" in value["details"]
        _, volume = await running.answer(CREATE_OBJECT, _create_volume(local_uuid, local_path))
        assert volume["result"] is True, volume
    assert registry.read_text() == stored
    assert _files_below(data) == []


OTHER_POOL = "6b1d7e2a-0c4f-4e8b-b3a1-2f5e9d8c7a60"


@pytest.mark.parametrize("add", [True, False])
async def test_a_pool_without_a_uuid_is_refused_and_nothing_is_registered(
    pools: Running, add: bool
) -> None:
    """Every later command finds a pool by its uuid: an add without one would answer
    success for a pool no command could use."""
    body = _modify(add, "SMB", "10.1.1.2", SMB_PATH)
    pool = body["pool"]
    assert isinstance(pool, dict)
    del pool["uuid"]
    key, value = await pools.answer(MODIFY, body)
    assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer" and value["result"] is False
    assert "pool.uuid is missing" in value["details"], value
    assert "s3cret" not in value["details"]
    _, created = await pools.answer(CREATE_POOL, body)
    assert created["result"] is True and "registered at" not in created["details"], created
    assert not (pools.agent.config.agent.state_dir / "pools.json").exists()


async def test_a_pool_put_into_maintenance_is_forgotten_by_its_uuid_alone(
    tmp_path: Path,
) -> None:
    """A pool going into maintenance gets ModifyStoragePoolCommand without ``add`` on every
    Up host of its cluster (StoragePoolAutomationImpl.maintain), with ``localPath`` the
    Linux mount point ``/mnt//<uuid>``: the local pools of the cluster's hosts too, and
    pools a host never registered. Each is forgotten by its uuid, or found unknown; none
    is answered as an add that failed, and the pools registered stay."""
    config = load_config(_config_file(tmp_path))
    async with serving(config) as running:
        local_uuid, local_path = await _local_pool_uuid(running)
        _, added = await running.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
        assert added["result"] is True, added

        def remove(uuid: str, pool_type: str, host: str, path: str) -> dict[str, object]:
            return {"add": False, "localPath": f"/mnt//{uuid}", "details": {}, "pool": {
                "id": 7, "uuid": uuid, "type": pool_type, "host": host, "path": path,
                "port": 0}}

        answers = [await running.answer(MODIFY, body) for body in (
            remove(local_uuid, "Filesystem", PRIVATE_IP, local_path),  # this host's own
            remove(OTHER_POOL, "Filesystem", "192.168.100.11", local_path),  # a neighbour's
            remove(OTHER_POOL, "SMB", "[fd00::2]", "/SMB-Share/v6"),  # refused at its add
        )]
        _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
        assert stats["result"] is True, stats  # the registered SMB pool is untouched
        _, local_stats = await running.answer(STATS, {"id": local_uuid,
                                                      "pooltype": "Filesystem",
                                                      "localPath": local_path})
        assert local_stats["result"] is True, local_stats
    for key, value in answers:
        assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer"
        assert value["result"] is True, value
        assert "add" not in value["details"], value
    assert "this host's local pool" in answers[0][1]["details"]
    for _, value in answers[1:]:
        assert f"{OTHER_POOL} was not registered on this host" in value["details"]


@pytest.mark.parametrize("remove", ["modify", "delete"])
async def test_a_remove_sent_while_an_add_reaches_its_share_is_applied_after_it(
    pools: Running, remove: str
) -> None:
    """Commands on one pool run in the order they came: a remove that arrives while the
    add is still reaching the share waits for it, so the pool ends up unregistered (it
    stayed registered when the remove overtook the add)."""
    storage = getattr(pools.agent.dispatch.routes[MODIFY].handler, "__self__", None)
    assert isinstance(storage, StorageHandlers)
    reached, release = asyncio.Event(), asyncio.Event()
    measure = storage._measure

    async def slow_measure(root: str) -> tuple[int, int]:
        reached.set()  # the add is at its share, as over a slow SMB logon
        await release.wait()
        return await measure(root)

    setattr(storage, "_measure", slow_measure)  # noqa: B010 - an instance's method
    adding = asyncio.create_task(pools.answer(MODIFY, _modify(True, "SMB", "10.1.1.2",
                                                              SMB_PATH)))
    await asyncio.wait_for(reached.wait(), 10)
    removing = asyncio.create_task(
        pools.answer(MODIFY, _modify(False, "SMB", "10.1.1.2", SMB_PATH)) if remove == "modify"
        else pools.answer("com.cloud.agent.api.DeleteStoragePoolCommand",
                          {"_pool": {"uuid": POOL_UUID, "type": "SMB"}}))
    await asyncio.sleep(0.2)
    assert not removing.done()  # it waits for the add
    release.set()
    (_, added), (_, removed) = await adding, await removing
    assert added["result"] is True and removed["result"] is True
    assert "not registered" not in str(removed.get("details"))
    _, stats = await pools.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is False
    stored = json.loads((pools.agent.config.agent.state_dir / "pools.json").read_text())
    assert POOL_UUID not in stored


# --- the credentials of SMB pools reached through smbprotocol ----------------------------


def _samba_config(tmp_path: Path, samba: Samba) -> AgentConfig:
    """An agent reaching ``samba``'s shares through smbprotocol, as an agent off Windows
    reaches a file server, with no account configured for it: the pools' own credentials
    are all it has."""
    return config_with_shares(tmp_path, {}, f'smb_servers = ["{samba.server}"]\n'
                                            f"smb_port = {samba.port}")


def _samba_pool(samba: Samba, folder: str, password: str | None = None) -> dict[str, object]:
    (samba.share_dir / folder).mkdir(exist_ok=True)
    secret = quote(password or samba.password, safe="")
    return _modify(True, "SMB", samba.server,
                   f"/{samba.share}/{folder}?user={samba.user}&password={secret}")


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_an_agent_restarted_between_pings_keeps_reaching_its_smb_pool(
    tmp_path: Path, samba: Samba, caplog: pytest.LogCaptureFixture
) -> None:
    """The management server sends a pool's credentials (ModifyStoragePoolCommand) only
    when the host connects. An agent restarted between two pings (a service restart, an
    upgrade) gets none, and must go on stamping its heartbeat in the pool: a neighbour
    asked CheckOnHost later would find the stamp stale and call this live host down.
    Statistics and copies on the pool must go on too."""
    config = _samba_config(tmp_path, samba)
    folder = f"restarted-{tmp_path.name}"
    beat = samba.share_dir / folder / f"hb-{PRIVATE_IP}"
    with caplog.at_level(logging.DEBUG):
        async with serving(config) as running:
            _, added = await running.answer(MODIFY, _samba_pool(samba, folder))
            assert added["result"] is True, added
            assert beat.read_text().count("@") == 1  # stamped at registration
        beat.write_text("2024-5-7@3:4:9")  # the restart took a while
        async with serving(config) as running:  # pings go on; no ModifyStoragePool comes
            await running.agent.host.write_heartbeats()
            _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    stamped = parse_heartbeat(beat.read_text())
    assert stamped is not None and abs(time.time() - stamped) < 60, beat.read_text()
    assert stats["result"] is True and stats["capacityBytes"] > 0, stats
    kept = config.agent.state_dir / KEPT
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert samba.password in kept.read_text()  # kept there, and only there
    assert samba.password not in (config.agent.state_dir / "pools.json").read_text()
    assert samba.password not in caplog.text
    assert quote(samba.password, safe="") not in caplog.text


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_a_stamp_a_neighbour_is_reading_is_logged_once_and_written_next_round(
    tmp_path: Path, samba: Samba, caplog: pytest.LogCaptureFixture
) -> None:
    """A neighbour reading this host's stamp (CheckOnHost) just as it is replaced: the
    file server refuses to rename over a file open elsewhere. The round logs one warning
    saying the stamp is open elsewhere, and the next round writes it."""
    config = _samba_config(tmp_path, samba)
    folder = f"read-{tmp_path.name}"
    beat = samba.share_dir / folder / f"hb-{PRIVATE_IP}"
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _samba_pool(samba, folder))
        assert added["result"] is True, added
        beat.write_text("2024-5-7@3:4:9")
        connections: dict[str, object] = {}  # the neighbour's own connection
        unc = f"{samba.unc}\\{folder}\\hb-{PRIVATE_IP}"
        reader = smbclient.open_file(unc, "rb", share_access="r", username=samba.user,
                                     password=samba.password, port=samba.port,
                                     connection_cache=connections)
        try:
            with caplog.at_level(logging.WARNING, logger="hyperv_agent"):
                await running.agent.host.write_heartbeats()
        finally:
            reader.close()
            smbclient.reset_connection_cache(connection_cache=connections)
        warned = [record.getMessage() for record in caplog.records
                  if record.levelno >= logging.WARNING]
        assert len(warned) == 1 and f"hb-{PRIVATE_IP} is open elsewhere" in warned[0], warned
        assert beat.read_text() == "2024-5-7@3:4:9"
        await running.agent.host.write_heartbeats()
    stamped = parse_heartbeat(beat.read_text())
    assert stamped is not None and abs(time.time() - stamped) < 60, beat.read_text()
    assert sorted(path.name for path in beat.parent.iterdir()) == [beat.name]


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
@pytest.mark.parametrize("remove", ["modify", "delete"])
async def test_a_pool_forgotten_takes_its_credentials_with_it(
    tmp_path: Path, samba: Samba, remove: str
) -> None:
    """DeleteStoragePoolCommand, or ModifyStoragePoolCommand without ``add``, forgets the
    pool: its password leaves the state directory with it."""
    config = _samba_config(tmp_path, samba)
    kept = config.agent.state_dir / KEPT
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _samba_pool(samba, f"forgotten-{remove}"))
        assert added["result"] is True and kept.exists(), added
        if remove == "modify":
            body = _samba_pool(samba, f"forgotten-{remove}")
            _, removed = await running.answer(MODIFY, {**body, "add": False})
        else:
            _, removed = await running.answer(DELETE_POOL, {"_pool": {"uuid": POOL_UUID,
                                                                      "type": "SMB"}})
        assert removed["result"] is True, removed
        assert not kept.exists()
    async with serving(config) as running:  # restarted: nothing to reach, nothing kept
        _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is False and "not registered" in stats["details"]
    assert samba.password not in "".join(
        path.read_text(errors="replace") for path in config.agent.state_dir.glob("*.json"))


# --- SMB credentials as a CloudStack 4.22 management server sends them ---------------------
# StoragePoolVO.getPath strips ?user=..&password=..&domain=.. from any path holding a
# password, so ModifyStoragePoolCommand carries the bare path and the account only in its
# details: the password URLEncoder-encoded (encrypted too where the MS encrypts its
# database), the domain the string "null" when none was given.

# what DBEncryptionUtil.encrypt makes of a password: base64 of the encrypted bytes
MS_CIPHERTEXT = "Q3dSbTJ6aWhHQmJ0c3RpZ0R4ZW1xQT09+7kL/9x2="


def _stripped_pool(samba: Samba, folder: str, password: str, domain: str = "null"
                   ) -> dict[str, object]:
    (samba.share_dir / folder).mkdir(exist_ok=True)
    body = _modify(True, "SMB", samba.server, f"/{samba.share}/{folder}")
    body["details"] = {"user": samba.user, "password": password, "domain": domain}
    return body


def _java_url_encoded(text: str) -> str:
    return quote(text, safe="*-._").replace("%20", "+")  # URLEncoder.encode(text, "UTF-8")


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_a_pool_whose_account_comes_in_its_details_is_reached_and_kept(
    tmp_path: Path, samba: Samba, caplog: pytest.LogCaptureFixture
) -> None:
    """The body as the management server sends it: the share reached with the details'
    account (the password URL-decoded, the domain "null" taken for none), and kept for an
    agent restarted between pings."""
    config = _samba_config(tmp_path, samba)
    folder = f"stripped-{tmp_path.name}"
    body = _stripped_pool(samba, folder, _java_url_encoded(samba.password))
    assert _java_url_encoded(samba.password) != samba.password  # decoding is exercised
    with caplog.at_level(logging.DEBUG):
        async with serving(config) as running:
            _, added = await running.answer(MODIFY, body)
            assert added["result"] is True, added
        async with serving(config) as running:  # restarted: no ModifyStoragePool comes
            _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is True and stats["capacityBytes"] > 0, stats
    assert (samba.share_dir / folder / f"hb-{PRIVATE_IP}").exists()
    kept = json.loads((config.agent.state_dir / KEPT).read_text())
    (account,) = kept.values()
    assert account == {"user": samba.user, "domain": samba.server, "password": samba.password}
    assert samba.password not in caplog.text
    assert _java_url_encoded(samba.password) not in caplog.text


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_an_encrypted_password_in_the_details_fails_naming_the_setting_to_use(
    tmp_path: Path, samba: Samba, caplog: pytest.LogCaptureFixture
) -> None:
    """A management server that encrypts its database sends the password as ciphertext:
    the file server refuses it and the answer says why and what to set instead."""
    config = _samba_config(tmp_path, samba)
    with caplog.at_level(logging.DEBUG):
        async with serving(config) as running:
            _, added = await running.answer(MODIFY, _stripped_pool(samba, "encrypted",
                                                                   MS_CIPHERTEXT))
    assert added["result"] is False, added
    details = str(added["details"])
    assert "refused the account" in details and "encrypts its database" in details
    assert f'set [agent.smb_credentials] for "{samba.server}"' in details
    assert MS_CIPHERTEXT not in details and MS_CIPHERTEXT not in caplog.text
    assert not (config.agent.state_dir / KEPT).exists()


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_a_configured_account_wins_over_the_details(
    tmp_path: Path, samba: Samba, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[agent.smb_credentials] names the account for the server: the operator chose it, and
    the (encrypted) password of the details is not tried."""
    monkeypatch.setenv("HV_TEST_SMB_PASSWORD", samba.password)
    config = config_with_shares(
        tmp_path, {}, f'smb_servers = ["{samba.server}"]\nsmb_port = {samba.port}\n'
                      "[agent.smb_credentials]\n"
                      f'"{samba.server}" = {{username = "{samba.user}", '
                      'password_env = "HV_TEST_SMB_PASSWORD"}')
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _stripped_pool(samba, "configured",
                                                               MS_CIPHERTEXT))
    assert added["result"] is True, added
    assert not (config.agent.state_dir / KEPT).exists()  # the configuration's, not kept


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
@pytest.mark.parametrize("domain", ["null", "", "WORKGROUP"])
async def test_the_domain_of_the_details_is_the_accounts_unless_null_or_empty(
    tmp_path: Path, samba: Samba, domain: str
) -> None:
    config = _samba_config(tmp_path, samba)
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _stripped_pool(
            samba, f"domain-{domain or 'empty'}", samba.password, domain))
    assert added["result"] is True, added
    (account,) = json.loads((config.agent.state_dir / KEPT).read_text()).values()
    assert account["domain"] == (domain if domain not in ("null", "") else samba.server)


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_a_path_query_whose_domain_is_null_logs_on_as_the_servers_account(
    tmp_path: Path, samba: Samba
) -> None:
    """The query as PrimaryDataStoreHelper writes it (``"&domain=" + domain``), which a body
    keeping the pool's path with its query carries: a domain nobody gave is the string
    ``null``, which names no domain, and the account is the server's own."""
    config = _samba_config(tmp_path, samba)
    folder = f"null-domain-{tmp_path.name}"
    (samba.share_dir / folder).mkdir()
    path = (f"/{samba.share}/{folder}?user={samba.user}"
            f"&password={_java_url_encoded(samba.password)}&domain=null")
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _modify(True, "SMB", samba.server, path))
        assert added["result"] is True, added
    (account,) = json.loads((config.agent.state_dir / KEPT).read_text()).values()
    assert account == {"user": samba.user, "domain": samba.server, "password": samba.password}


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_a_details_password_not_url_encoded_as_utf8_names_the_details(
    tmp_path: Path, samba: Samba, caplog: pytest.LogCaptureFixture
) -> None:
    """The details' password is decoded as URLEncoder wrote it; one that does not decode
    to UTF-8 is refused naming where it came from (the pool's details: the body carries no
    storage URL), and never shown."""
    config = _samba_config(tmp_path, samba)
    secret = "Pw%FF%FEzz"
    with caplog.at_level(logging.DEBUG):
        async with serving(config) as running:
            _, added = await running.answer(MODIFY, _stripped_pool(samba, "undecodable",
                                                                   secret))
    assert added["result"] is False, added
    details = str(added["details"])
    assert "pool details: the 'password' value is not valid percent-encoded UTF-8" in details
    assert "storage URL" not in details
    assert secret not in details and "Pw" not in details and secret not in caplog.text
    assert not (config.agent.state_dir / KEPT).exists()


def _configured(tmp_path: Path, samba: Samba, username: str) -> AgentConfig:
    return config_with_shares(
        tmp_path, {}, f'smb_servers = ["{samba.server}"]\nsmb_port = {samba.port}\n'
                      "[agent.smb_credentials]\n"
                      f'"{samba.server}" = {{username = {json.dumps(username)}, '
                      'password_env = "HV_TEST_SMB_PASSWORD"}')


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_a_configured_domain_user_logs_on_in_its_own_domain(
    tmp_path: Path, samba: Samba, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``username = "CSTEST\\\\root"`` without ``domain`` names the domain in the user, as
    a pool's details do: not a user of that name local to the file server."""
    monkeypatch.setenv("HV_TEST_SMB_PASSWORD", samba.password)
    config = _configured(tmp_path, samba, f"CSTEST\\{samba.user}")
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _stripped_pool(samba, "configured-domain",
                                                               MS_CIPHERTEXT))
    assert added["result"] is True, added


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_a_configured_user_principal_name_logs_on_without_the_servers_name(
    tmp_path: Path, samba: Samba, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``username = "user@domain"`` (a UPN) names its own domain: the logon sends it as it
    is, not as a local account of the file server (``server\\\\user@domain``), as a UPN in
    a pool's details. (This smbd, a standalone server, knows no UPN: the refusal shows
    the account the logon was tried with.)"""
    monkeypatch.setenv("HV_TEST_SMB_PASSWORD", samba.password)
    config = _configured(tmp_path, samba, f"{samba.user}@corp.example")
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _stripped_pool(samba, "configured-upn",
                                                               MS_CIPHERTEXT))
    details = str(added["details"])
    assert added["result"] is False, added
    assert f"wrong user name or password for {samba.user}@corp.example" in details
    assert f"for {samba.server}\\" not in details


@pytest.mark.parametrize("backend_kind", ["emulator"])
async def test_an_account_configured_after_registration_wins_over_the_kept_one(
    tmp_path: Path, own_samba: Samba, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's account was kept from its details; the password then changed on the file
    server, and the operator put the account in [agent.smb_credentials] (the fix for a
    management server that sends it encrypted). Restarted, the agent reaches the pool
    with the configured account from its first call: the kept password is not tried
    (a heartbeat missed, a failed logon counted towards the account's lockout)."""
    samba = own_samba
    folder = "kept-then-configured"
    async with serving(_samba_config(tmp_path, samba)) as running:
        _, added = await running.answer(MODIFY, _stripped_pool(samba, folder, samba.password))
        assert added["result"] is True, added
    samba.set_password("N3w-pw!rotated")
    monkeypatch.setenv("HV_TEST_SMB_PASSWORD", samba.password)
    async with serving(_configured(tmp_path, samba, samba.user)) as running:
        _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is True and stats["capacityBytes"] > 0, stats


async def test_stats_of_a_pool_whose_share_cannot_be_reached_say_so_and_name_its_root(
    tmp_path: Path,
) -> None:
    """Windows reports a share whose server is down, or that was taken away, as a path not
    found. The MS shows GetStorageStatsAnswer's details in its log and alerts: they name
    the pool's root as what cannot be reached from this host, not an OS error text; the
    share back, the pool is measured again."""
    share = tmp_path / "smb"
    (share / "primary").mkdir(parents=True)
    config = config_with_shares(tmp_path, {r"\\10.1.1.2\SMB-Share": share})
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _modify(True, "SMB", "10.1.1.2", SMB_PATH))
        assert added["result"] is True, added
        share.rename(tmp_path / "away")  # the share cannot be reached
        key, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
        assert (key, stats["result"]) == ("com.cloud.agent.api.GetStorageStatsAnswer", False)
        assert stats["details"] == (
            f"GetStorageStatsCommand failed: pool {POOL_UUID} (SMB): the folder "
            r"\\10.1.1.2\SMB-Share\primary does not exist or cannot be reached from this "
            "host, so it cannot be measured"), stats
        (tmp_path / "away").rename(share)  # back
        _, stats = await running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
        assert stats["result"] is True and stats["capacityBytes"] > 0, stats


POOL_A = "a1a1a1a1-0000-4000-8000-00000000000a"
POOL_B = "b2b2b2b2-0000-4000-8000-00000000000b"
ACCOUNTS = {"daemon": "Acc0unt-A!pw", "bin": "Acc0unt-B!pw"}  # existing Unix accounts


def _account_pool(samba: Samba, pool_uuid: str, folder: str, user: str) -> dict[str, object]:
    secret = quote(ACCOUNTS[user], safe="")
    body = _modify(True, "SMB", samba.server,
                   f"/{samba.share}/{folder}?user={user}&password={secret}")
    body["pool"] = {**body["pool"], "uuid": pool_uuid}  # type: ignore[dict-item]
    return body


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd, with two accounts
async def test_two_pools_on_one_share_each_reach_their_folder_with_their_own_account(
    tmp_path: Path
) -> None:
    """Two primary pools in two folders of one share, each given its own account, which
    alone has rights to its folder (a file server where each pool's folder belongs to a
    different service account). The MS re-sends every pool when a host connects, in any
    order: the second registration must not take the first pool's files from its
    account, or the first pool's heartbeats, statistics and writes fail, and its
    neighbours call this live host down. After a restart too, from the kept accounts,
    over a stamp's file aside that a write cut short under a former account left."""
    with samba_with_accounts(ACCOUNTS) as samba:
        await _each_pool_with_its_account(tmp_path, samba)


async def _each_pool_with_its_account(tmp_path: Path, samba: Samba) -> None:
    owners = {"daemon": "folder-a", "bin": "folder-b"}
    for user, folder in owners.items():
        where = samba.share_dir / folder
        where.mkdir()
        shutil.chown(where, user, user)
        where.chmod(0o700)  # the other account may not even look in
    config = _samba_config(tmp_path, samba)
    pools = {POOL_A: "daemon", POOL_B: "bin"}

    def stamp_of(user: str) -> Path:
        return samba.share_dir / owners[user] / f"hb-{PRIVATE_IP}"

    def stamped_anew(pool_uuid: str, user: str, before: int | None) -> int:
        """The stamp's inode, checked to be a new file (each stamp is renamed over the
        last) written as the pool's own account, with nothing left aside."""
        beat = stamp_of(user)
        assert beat.exists(), f"no heartbeat for {pool_uuid} ({user})"
        assert beat.stat().st_ino != before, f"heartbeat for {pool_uuid} ({user}) not renewed"
        assert beat.owner() == user  # written as the pool's own account
        assert os.listdir(beat.parent) == [beat.name]
        return beat.stat().st_ino

    stamps: dict[str, int | None] = dict.fromkeys(pools.values())

    async def check(running: Running) -> None:
        for _ in range(3):  # each round replaces the stamps the last one wrote
            await running.agent.host.write_heartbeats()
            for pool_uuid, user in pools.items():
                stamps[user] = stamped_anew(pool_uuid, user, stamps[user])
        for pool_uuid in pools:
            _, stats = await running.answer(STATS, {"id": pool_uuid, "pooltype": "SMB"})
            assert stats["result"] is True and stats["capacityBytes"] > 0, stats

    async with serving(config) as running:
        for _ in range(2):  # a reconnect sends them all again, each stamped again
            for pool_uuid, user in pools.items():
                _, added = await running.answer(
                    MODIFY, _account_pool(samba, pool_uuid, owners[user], user))
                assert added["result"] is True, added
                stamps[user] = stamped_anew(pool_uuid, user, stamps[user])
        await check(running)
    _cut_short_under_another_account(samba, owners.values())
    async with serving(config) as running:  # restarted: no ModifyStoragePool comes
        await check(running)


def _cut_short_under_another_account(samba: Samba, folders: Iterable[str]) -> None:
    """Leave in each of ``folders`` the file aside of this host's heartbeat stamp, as a
    write of it cut short under another account (a former account of the pool) leaves
    it: that account's, which the folder's own account may delete but not write."""
    for folder in folders:
        stale = samba.share_dir / folder / f".hb-{PRIVATE_IP}.tmp"
        stale.write_text("cut short")
        shutil.chown(stale, "nobody")


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd, with two accounts
async def test_a_volume_another_account_left_in_a_pools_folder_is_deleted_by_the_pool(
    tmp_path: Path
) -> None:
    """A pool's folder belongs to its own service account; a volume file in it was left
    by another account (written before the pool's account changed, or by a tool run as
    another user) and may be read but not written by the pool's account: on Windows the
    account still deletes it (FILE_DELETE_CHILD on its folder). DeleteCommand deletes it,
    and answers success again once it is gone."""
    with samba_with_accounts(ACCOUNTS) as samba:
        folder = samba.share_dir / "folder-a"
        folder.mkdir()
        shutil.chown(folder, "daemon", "daemon")
        folder.chmod(0o700)
        volume = folder / f"{VOLUME_UUID}.vhdx"
        vhd.create(volume, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
        shutil.chown(volume, "bin", "bin")
        volume.chmod(0o644)
        pool = _account_pool(samba, POOL_A, "folder-a", "daemon")
        store = {PRIMARY_TO: {**pool["pool"], "id": 201, "poolType": "SMB"}}  # type: ignore[dict-item]
        body = {"data": {VOLUME_TO: {"uuid": VOLUME_UUID, "volumeType": "DATADISK",
                                     "dataStore": store, "name": "DATA-10", "size": 1 << 26,
                                     "path": VOLUME_UUID, "format": "VHDX", "id": 10}}}
        async with serving(_samba_config(tmp_path, samba)) as running:
            _, added = await running.answer(MODIFY, pool)
            assert added["result"] is True, added
            for _ in range(2):
                key, answer = await running.answer(DELETE_VOLUME, body)
                assert (key, answer["result"]) == (ANSWER, True), answer
                assert not volume.exists()
        assert os.listdir(folder) == [f"hb-{PRIVATE_IP}"]


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd, restarted
async def test_a_password_rotated_between_two_pools_of_one_user_reaches_both(
    tmp_path: Path, own_samba: Samba
) -> None:
    """Two pools on one server with one account, the second registered after the account's
    password changed on the file server: the newest password the MS gave for that user
    there is the one both pools' folders are reached with, after the server drops its
    connections (the first pool's old password was tried and refused, its statistics and
    heartbeats failed) and after the agent restarts (the old one no longer kept)."""
    samba = own_samba
    config = _samba_config(tmp_path, samba)
    old = samba.password
    pools = {POOL_A: "rotated-a", POOL_B: "rotated-b"}

    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _pool_of(samba, POOL_A, pools))
        assert added["result"] is True, added
        samba.set_password("R0tated-pw!two")
        _, added = await running.answer(MODIFY, _pool_of(samba, POOL_B, pools))
        assert added["result"] is True, added
        samba.crash()  # the file server restarts: every session logs on again
        samba.start_again()
        await _all_measured(running, pools)
    kept = (config.agent.state_dir / KEPT).read_text()
    assert old not in kept and quote(old, safe="") not in kept
    async with serving(config) as running:  # restarted: the kept accounts only
        await _all_measured(running, pools)


def _pool_of(samba: Samba, pool_uuid: str, folders: dict[str, str],
             password: str | None = None) -> dict[str, object]:
    """The ModifyStoragePoolCommand of the pool ``pool_uuid`` in its folder of
    ``folders`` ({uuid: folder}), with ``password`` (the account's current one if None)."""
    body = _samba_pool(samba, folders[pool_uuid], password)
    body["pool"] = {**body["pool"], "uuid": pool_uuid}  # type: ignore[dict-item]
    return body


async def _all_measured(running: Running, pools: Iterable[str]) -> None:
    """Every pool of ``pools`` (uuids) answers its storage statistics."""
    for pool_uuid in pools:
        _, stats = await running.answer(STATS, {"id": pool_uuid, "pooltype": "SMB"})
        assert stats["result"] is True and stats["capacityBytes"] > 0, stats


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd, restarted
async def test_a_pool_re_sent_with_its_old_password_keeps_the_newest_one(
    tmp_path: Path, own_samba: Samba
) -> None:
    """The management server re-sends every pool when the host connects, each with the
    details it stores: after an operator changed the account's password and updated one
    pool's details only, the other pool comes again with the old password. It was taken
    because a session opened with it before the change was still open (a session's
    password was trusted), kept for a restart and handed to every pool of that user:
    after a restart both pools were refused at logon. It is refused as any wrong
    password is (the operator updates the pool's details), and the folders, and what is
    kept for a restart, keep the newest."""
    samba = own_samba
    config = _samba_config(tmp_path, samba)
    old, new = samba.password, "R0tated-pw!three"
    folders = {POOL_A: "resent-a", POOL_B: "resent-b"}

    def pool(pool_uuid: str, password: str) -> dict[str, object]:
        return _pool_of(samba, pool_uuid, folders, password)

    async with serving(config) as running:
        _, added = await running.answer(MODIFY, pool(POOL_A, old))
        assert added["result"] is True, added
        samba.set_password(new)
        _, added = await running.answer(MODIFY, pool(POOL_B, new))
        assert added["result"] is True, added
        _, again = await running.answer(MODIFY, pool(POOL_A, old))  # the host reconnects
        # refused as any wrong password is, though a session opened with it is still open
        assert again["result"] is False and "refused the logon" in again["details"], again
        await _all_measured(running, folders)  # the folders keep the newest
    kept = (config.agent.state_dir / KEPT).read_text()
    assert quote(old, safe="") not in kept and old not in kept, kept
    async with serving(config) as running:  # restarted: the kept accounts only
        await _all_measured(running, folders)


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd
async def _kept_as_an_older_version_left_it(config: AgentConfig, samba: Samba,
                                            folders: dict[str, str], new: str,
                                            first: str) -> Path:
    """Pools A and B of one account registered, B after the account's password was
    changed to ``new`` on the file server; then the credentials file rewritten as an
    older version left it: A kept with the old password, B with the new one, ``first``
    first. The file's path."""
    old = samba.password
    async with serving(config) as running:
        _, added = await running.answer(MODIFY, _pool_of(samba, POOL_A, folders, old))
        assert added["result"] is True, added
        samba.set_password(new)
        _, added = await running.answer(MODIFY, _pool_of(samba, POOL_B, folders, new))
        assert added["result"] is True, added
    kept: Path = config.agent.state_dir / KEPT
    accounts = json.loads(kept.read_text())
    older = {POOL_A: {**accounts[POOL_A], "password": old}, POOL_B: accounts[POOL_B]}
    kept.write_text(json.dumps({key: older[key] for key in sorted(older, key=first.__ne__)}))
    return kept


@pytest.mark.parametrize("first", [POOL_A, POOL_B])
async def test_a_password_a_logon_took_is_kept_for_every_pool_of_its_user(
    tmp_path: Path, own_samba: Samba, first: str
) -> None:
    """A credentials file as an older version left it: pool A kept with the account's old
    password, pool B with the new one the file server now takes (in either order). After
    a restart B's password is taken at logon; it is the account's on that server, so it
    is kept for A too: with B removed since and the agent restarted again, A (never
    re-sent by the management server) still stamps its heartbeat and answers its
    statistics, instead of logging on with the old password and being refused."""
    samba = own_samba
    config = _samba_config(tmp_path, samba)
    old, new = samba.password, "R0tated-pw!four"
    folders = {POOL_A: "older-a", POOL_B: "older-b"}
    kept = await _kept_as_an_older_version_left_it(config, samba, folders, new, first)

    async with serving(config) as running:  # restarted: the kept accounts only
        await running.agent.host.write_heartbeats()
        _, stats = await running.answer(STATS, {"id": POOL_B, "pooltype": "SMB"})
        assert stats["result"] is True, stats
        _, removed = await running.answer(DELETE_POOL, {"_pool": {"uuid": POOL_B,
                                                                  "type": "SMB"}})
        assert removed["result"] is True, removed
    beat = samba.share_dir / folders[POOL_A] / f"hb-{PRIVATE_IP}"
    beat.write_text("2024-5-7@3:4:9")
    async with serving(config) as running:  # restarted again: A alone, never re-sent
        await running.agent.host.write_heartbeats()
        await _all_measured(running, [POOL_A])
    stamped = parse_heartbeat(beat.read_text())
    assert stamped is not None and abs(time.time() - stamped) < 60, beat.read_text()
    text = kept.read_text()
    assert old not in text and quote(old, safe="") not in text, "the refused one is kept"


@pytest.mark.parametrize("backend_kind", ["emulator"])  # its own smbd, restarted
@pytest.mark.parametrize("first", [POOL_A, POOL_B])
async def test_a_pool_whose_kept_password_is_refused_takes_the_one_its_user_logs_on_with(
    tmp_path: Path, own_samba: Samba, first: str
) -> None:
    """After a restart pool A's kept password is the account's old one and pool B's the
    new one (a credentials file an older version left, in either order). A's is refused
    at logon, or would be; the password the server took for that user (B's) is A's from
    then on, not a session left open by chance: with B removed and the file server
    restarted, so that every session logs on again, A still stamps its heartbeat and
    answers its statistics."""
    samba = own_samba
    config = _samba_config(tmp_path, samba)
    folders = {POOL_A: "refused-a", POOL_B: "refused-b"}
    await _kept_as_an_older_version_left_it(config, samba, folders, "R0tated-pw!five", first)
    beat = samba.share_dir / folders[POOL_A] / f"hb-{PRIVATE_IP}"
    async with serving(config) as running:  # restarted: the kept accounts only
        await running.agent.host.write_heartbeats()
        await running.agent.host.write_heartbeats()
        _, removed = await running.answer(DELETE_POOL, {"_pool": {"uuid": POOL_B,
                                                                  "type": "SMB"}})
        assert removed["result"] is True, removed
        samba.crash()  # the file server restarts: every session logs on again
        samba.start_again()
        beat.write_text("2024-5-7@3:4:9")
        await running.agent.host.write_heartbeats()
        await _all_measured(running, [POOL_A])
    stamped = parse_heartbeat(beat.read_text())
    assert stamped is not None and abs(time.time() - stamped) < 60, beat.read_text()
