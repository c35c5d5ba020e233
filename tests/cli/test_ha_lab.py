"""The README's HA lab, run as written: its commands with the lab folder, ports and the
`./dev agent` prefix swapped for a temporary folder, free ports and this interpreter. Three
`serve` processes on 127.0.0.2-4 share an SMB pool; `probe --ha-pool` registers it with
each, `probe --check-on-host` asks as the HA investigator asks, and once HV-A is stopped
both neighbours call it Down while they still call each other Up."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperv_agent.probe_ha import pool_command
from tests.cli import lab
from tests.cli.test_first_minutes import README
from tests.ports import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2-4 (Linux loopback)")

SAMPLES = Path(__file__).resolve().parents[1] / "cloudstack" / "samples" / "ms-4.22"
SECTION = "### HA in the lab: a stopped host goes Down"
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def _section_blocks() -> list[str]:
    text = README.read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.index("\n## ", start)
    return re.findall(r"```sh\n(.*?)```", text[start:end], re.S)


def _as_here(block: str, folder: Path, port: int, admin: int) -> str:
    """The block with the lab's folder, ports and command prefix of this test."""
    here = f"{shlex.quote(sys.executable)} -m hyperv_agent.cli "
    return (block.replace("/srv/ha-lab", str(folder)).replace(":8250", f":{port}")
            .replace(":9250", f":{admin}").replace("./dev agent ", here))


def _run(block: str) -> str:
    run = subprocess.run(["bash", "-euc", block], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _verdicts(output: str) -> list[tuple[str, str]]:
    """(suspect, Up|Down) of every CheckOnHost line the probes printed."""
    return re.findall(r"^CheckOnHost (\S+)\s+[\d.]+\s+ok\s+(Up|Down):", output, re.M)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            lab.stop(process)


def test_readme_ha_lab_calls_a_stopped_host_down_on_both_neighbours(
        tmp_path: Path, agents: list[subprocess.Popen[str]]) -> None:
    configure, serve, register, after_stop = _section_blocks()
    port, admin = free_port(*ADDRESSES), free_port(*ADDRESSES)
    folder = tmp_path / "ha-lab"

    def here(block: str) -> str:
        return _as_here(block, folder, port, admin)

    _run(here(configure))
    for line in here(serve).splitlines():
        words = shlex.split(line.removesuffix("&"))
        assert words[1:3] == ["-m", "hyperv_agent.cli"], line
        agents.append(lab.start(*words[3:]))
    registered = _run(here(register))  # probe waits for agents still starting
    assert _verdicts(registered) == [("127.0.0.2", "Up")], registered
    pools = re.findall(r"^ModifyStoragePool\s+[\d.]+\s+ok\s+registered at (.*)$", registered,
                       re.M)
    assert pools == ["\\\\127.0.0.1\\pool"] * 3, registered
    assert {path.name for path in (folder / "pool").glob("hb-*")} == {
        f"hb-{address}" for address in ADDRESSES}

    lab.stop(agents[0])  # HV-A stops
    stopped = time.monotonic()
    after = _run(here(after_stop))
    assert time.monotonic() - stopped < 30
    assert _verdicts(after) == [("127.0.0.2", "Down"), ("127.0.0.2", "Down"),
                                ("127.0.0.3", "Up")], after


def test_ha_pool_is_registered_with_the_body_the_ms_sends() -> None:
    body = pool_command("cifs://10.1.1.1/primary?user=administrator&password=Passw0rd"
                        "&domain=WORKGROUP")
    sample = json.loads((SAMPLES / "31_ModifyStoragePoolCommand_SMB.json").read_text())
    assert set(body) <= set(sample) and set(body["pool"]) == set(sample["pool"])
    assert {k: body["pool"][k] for k in ("host", "path", "port", "type")} == {
        k: sample["pool"][k] for k in ("host", "path", "port", "type")}
    assert body["localPath"] == f"/mnt//{body['pool']['uuid']}"
    with pytest.raises(ValueError, match="is not cifs://server/share"):
        pool_command("smb://10.1.1.1/primary")


def test_ha_pool_url_that_is_not_cifs_is_quoted_without_its_password() -> None:
    """The probe prints the refusal in its table: a mistyped scheme must not put the
    pool's password on the terminal (or in the CI log that keeps it)."""
    for url in ("smb://10.1.1.1/primary?user=administrator&password=Zq9Kw7pw&domain=W",
                "cifs://administrator:Zq9Kw7pw@10.1.1.1/"):
        with pytest.raises(ValueError, match="is not cifs://server/share") as refused:
            pool_command(url)
        assert "Zq9Kw7pw" not in str(refused.value) and "10.1.1.1" in str(refused.value)


@pytest.mark.parametrize(("args", "message"), [
    (("--check-on-host", "HV-A"), "'HV-A' is not an IP address"),
    (("--deploy", "--check-on-host", "127.0.0.2"), "--deploy and --ha-pool/--check-on-host"),
])
def test_bad_ha_probe_arguments_are_refused_before_anything_is_sent(
        args: tuple[str, ...], message: str) -> None:
    run = lab.command("probe", "https://127.0.0.1:1", *args, timeout_s=60)
    assert run.returncode == 2 and message in run.stderr, run.stderr
