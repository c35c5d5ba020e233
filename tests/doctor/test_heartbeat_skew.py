"""``doctor``'s clock line and the agent's heartbeat stamps: the running agent measures its
clock against each shared pool's file server when it stamps; doctor reads the same from the
stamp it left there (the time written in it against the time the server gave the file), so
a skew that makes neighbours running the C# agent misjudge this host shows before they
call it Down."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.doctor.checks import Options
from hyperv_agent.doctor.report import Status
from hyperv_agent.doctor.run import diagnose
from hyperv_agent.handlers.heartbeat import format_heartbeat

ROOMY = Options(min_free_bytes=1024 * 1024)
ROOT = "\\\\10.1.1.2\\SMB-Share\\primary"
IP = "192.168.100.10"


def _config(tmp_path: Path) -> AgentConfig:
    """An agent with the shared pool ROOT registered (its folder mapped by the emulator)."""
    share = tmp_path / "smb-share"
    (share / "primary").mkdir(parents=True)
    config_file = tmp_path / "agent.toml"
    config_file.write_text(f"[emulator.shares]\n'\\\\10.1.1.2\\SMB-Share' = \"{share}\"\n")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "pools.json").write_text(json.dumps({str(uuid.uuid4()): {
        "root": ROOT, "pool_type": "SMB", "host": "10.1.1.2", "path": "/SMB-Share/primary"}}))
    return load_config(config_file, state_dir=state_dir, backend="emulator", private_ip=IP)


def _stamp(tmp_path: Path, off_s: float) -> None:
    """The agent's stamp as a machine whose clock is ``off_s`` off the file server's
    (this machine's, whose clock sets the mapped folder's times) writes it."""
    beat = tmp_path / "smb-share" / "primary" / f"hb-{IP}"
    beat.write_text(format_heartbeat(time.time() + off_s))
    now = time.time()
    os.utime(beat, (now, now))


async def _clock_line(config: AgentConfig) -> tuple[Status, str]:
    report = await diagnose(config, ROOMY)
    check = next(c for c in report.checks if c.name == "clock")
    return check.status, check.line()


async def test_the_clock_line_names_a_pool_whose_file_server_is_far_off(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    _stamp(tmp_path, -45)
    status, line = await _clock_line(config)
    assert status is Status.WARN, line
    assert f"heartbeat stamp in {ROOT}" in line and "behind its file server's" in line, line
    assert re.search(r"this machine's is 4[56] s behind", line), line  # whole seconds
    _stamp(tmp_path, -150)  # beyond what a neighbour running the C# agent absorbs
    status, line = await _clock_line(config)
    assert status is Status.FAIL and "beyond 120 s HA heartbeats" in line, line
    assert "file servers with NTP" in line, line


async def test_the_clock_line_is_quiet_about_stamps_within_the_bound_or_absent(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    status, line = await _clock_line(config)
    assert status is Status.OK and "heartbeat" not in line, line
    _stamp(tmp_path, 2)
    status, line = await _clock_line(config)
    assert status is Status.OK and f"heartbeat stamp in {ROOT}" in line, line
