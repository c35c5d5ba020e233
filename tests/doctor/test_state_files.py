"""``doctor``'s ``state files`` check: the copies of state files the agent could not read
or use, which it set aside in its state directory, named for the operator."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent import state
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.doctor.checks import Options
from hyperv_agent.doctor.report import Status
from hyperv_agent.doctor.run import diagnose

ROOMY = Options(min_free_bytes=1024 * 1024)


def _config(tmp_path: Path) -> AgentConfig:
    return load_config(None, state_dir=tmp_path / "state", backend="emulator")


async def _line(config: AgentConfig) -> tuple[Status, str]:
    report = await diagnose(config, ROOMY)
    check = next(c for c in report.checks if c.name == "state files")
    return check.status, check.line()


async def test_a_state_directory_without_copies_is_ok(tmp_path: Path) -> None:
    status, line = await _line(_config(tmp_path))
    assert status is Status.OK, line
    assert "none set aside" in line


async def test_the_copies_the_agent_set_aside_are_named_with_what_to_do(
        tmp_path: Path) -> None:
    """A pools.json a power loss cut short and a generated key left empty, as the agent
    found them at its start: doctor names both copies, read only."""
    state_dir = tmp_path / "state"
    (state_dir / "tls").mkdir(parents=True)
    (state_dir / "pools.json").write_bytes(b'{"ab-1": {"ro')
    state.PoolRegistry(state_dir / "pools.json")  # the agent's start sets it aside
    key = state_dir / "tls" / "agent.key"
    key.write_bytes(b"")
    state.set_aside(key, state.UNUSABLE)
    before = state.set_aside_copies(state_dir)
    status, line = await _line(_config(tmp_path))
    assert status is Status.WARN, line
    assert "2 set aside in" in line
    assert "pools.json.unreadable-" in line and "tls/agent.key.unusable-" in line
    assert f"-> fix: read what they held, then delete them; the agent keeps only the " \
           f"newest {state.KEPT_ASIDE}" in line
    assert state.set_aside_copies(state_dir) == before and len(before) == 2


async def test_a_set_aside_copy_of_the_credentials_is_named_as_holding_passwords(
        tmp_path: Path) -> None:
    """A pool-credentials.json cut short is set aside with the passwords it held: doctor
    says so, and that it is to be deleted once read, never showing what it holds."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    credentials = state_dir / state.CREDENTIALS_FILE
    credentials.write_bytes(b'{"ab-1": {"user": "cloud", "password": "s3cret@pw"')
    state.PoolRegistry(state_dir / "pools.json", credentials_path=credentials)
    (pools_copy := state_dir / "pools.json.unreadable-20250101-120000").write_text("{")
    status, line = await _line(_config(tmp_path))
    assert status is Status.WARN, line
    (copy,) = state_dir.glob(f"{state.CREDENTIALS_FILE}.unreadable-*")
    assert f"; {copy.name} may hold SMB pools' passwords in the clear" in line
    assert pools_copy.name not in line.split("; ", 1)[1].split(" -> fix")[0]
    assert f"delete each copy of {state.CREDENTIALS_FILE} as soon as it is read" in line
    assert "s3cret" not in line and "cloud" not in line
