"""``doctor`` on the emulator, run as an operator runs it, before the first ``serve``: it
diagnoses, it does not install. A state directory that does not exist yet stays so; the
fresh emulated host its checks (and ``--deploy``) need lives in a temporary folder,
removed afterwards, and the report says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hyperv_agent.backends import emulator_config
from hyperv_agent.config import load_config
from hyperv_agent.emulator.lab import open_emulator
from tests.cli import lab
from tests.doctor.test_doctor import CHECKS, DEPLOY


def _doctor(state_dir: Path, *more: str) -> tuple[int, list[str]]:
    run = lab.command("doctor", "--backend", "emulator", "--state-dir", str(state_dir),
                      "--min-free-gb", "0.001", *more)
    return run.returncode, (run.stdout + run.stderr).splitlines()


def test_doctor_before_the_first_start_creates_no_emulated_host_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"  # where the temporary host goes, to see it removed
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    state_dir = tmp_path / "not-yet" / "state"
    status, lines = _doctor(state_dir, "--deploy")
    assert status == 0, lines
    assert len(lines) == len(CHECKS) + len(DEPLOY), lines  # the VM played, too
    connection = lines[0]
    assert connection.startswith("ok    connection")
    assert f"no emulated host in {state_dir} yet" in connection
    assert "a fresh one, as the first start makes it there, checked in a temporary " \
           "folder and removed afterwards" in connection
    assert not (tmp_path / "not-yet").exists()
    assert list(scratch.iterdir()) == []


def test_doctor_on_an_emulated_host_that_exists_checks_that_host(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = load_config(None, state_dir=state_dir, backend="emulator")
    asyncio.run(open_emulator(emulator_config(config)).close())  # as `serve` left it
    status, lines = _doctor(state_dir)
    assert status == 0, lines
    assert "temporary folder" not in lines[0]
    files = next(line for line in lines if " host files " in line)
    assert f"mapped to {state_dir / 'emulator' / 'drives' / 'C'}" in files
