"""`hyperv-agent emulator wsman` and `cim query|invoke --backend wsman`, run as an operator
runs them: the same output as on the emulator, and one-line errors without passwords."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim.api import ObjectPath

USER, PASSWORD = "labadmin", "Lab-Pa55word!"
VSMS = ('Msvm_VirtualSystemManagementService.CreationClassName='
        '"Msvm_VirtualSystemManagementService",Name="vmms",'
        'SystemCreationClassName="Msvm_ComputerSystem",SystemName="HYPERV-EMU"')


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperv_agent.cli", *args],
                          capture_output=True, text=True, timeout=60)


def _paths_as_objects(found: Any) -> Any:
    """``__PATH`` compared as WMI compares paths (a path over WinRM names no machine)."""
    if isinstance(found, list):
        return [_paths_as_objects(item) for item in found]
    if isinstance(found, dict):
        return {key: ObjectPath.parse(value) if key == "__PATH" and value else
                _paths_as_objects(value) for key, value in found.items()}
    return found


@pytest.fixture(params=["http", "https"])
def face(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A face served by the CLI on a free port; the state directory is seeded first."""
    state = tmp_path / "state"
    seeded = _cli("cim", "query", "--backend", "emulator", "--state-dir", str(state),
                  "SELECT * FROM Msvm_VirtualEthernetSwitch")
    assert seeded.returncode == 0, seeded.stderr
    tls = request.param == "https"
    args = [sys.executable, "-m", "hyperv_agent.cli", "emulator", "wsman", "--listen",
            "127.0.0.1:0", "--state-dir", str(state), "--user", USER, "--password", PASSWORD]
    process = subprocess.Popen([*args, "--tls"] if tls else args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        auth = ["--wsman-auth", "basic", "--wsman-no-verify"] if tls else [
            "--wsman-auth", "ntlm"]
        yield {"url": started["url"], "state": str(state), "host": started["host"],
               "certificate_sha256": started["certificate_sha256"] or "",
               "args": json.dumps(["--backend", "wsman", "--wsman-url", started["url"],
                                   "--wsman-user", USER, "--wsman-password", PASSWORD, *auth])}
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
        assert PASSWORD not in errors


def test_query_prints_what_the_emulator_prints(face: dict[str, str]) -> None:
    query = "SELECT * FROM Msvm_VirtualEthernetSwitch"
    over = _cli("cim", "query", *json.loads(face["args"]), query)
    assert over.returncode == 0, over.stderr
    assert face["host"] == "HYPERV-EMU"
    found = json.loads(over.stdout)
    assert [switch["ElementName"] for switch in found] == ["External"]
    assert found[0]["__PATH"].startswith("\\\\.\\root\\virtualization\\v2:")
    expected = [{**switch, "__PATH": found[0]["__PATH"]} for switch in found]
    assert _paths_as_objects(found) == _paths_as_objects(expected)


def test_query_over_winrm_equals_the_emulators_answer_in_root_cimv2(
        face: dict[str, str], tmp_path: Path) -> None:
    query = "SELECT Name, NumberOfLogicalProcessors FROM Win32_ComputerSystem"
    over = _cli("cim", "query", *json.loads(face["args"]), "--namespace", "root\\cimv2", query)
    assert over.returncode == 0, over.stderr
    other = tmp_path / "other"  # a fresh emulated host of the same configuration
    direct = _cli("cim", "query", "--backend", "emulator", "--state-dir", str(other),
                  "--namespace", "root\\cimv2", query)
    assert _paths_as_objects(json.loads(over.stdout)) == _paths_as_objects(
        json.loads(direct.stdout))


def test_invoke_prints_out_parameters_as_on_the_emulator(face: dict[str, str],
                                                          tmp_path: Path) -> None:
    args = ("cim", "invoke", VSMS, "GetSummaryInformation", "RequestedInformation=[0,1,100]")
    over = _cli(args[0], args[1], *json.loads(face["args"]), *args[2:])
    assert over.returncode == 0, over.stderr
    direct = _cli(args[0], args[1], "--backend", "emulator", "--state-dir",
                  str(tmp_path / "other"), *args[2:])
    assert json.loads(over.stdout) == json.loads(direct.stdout) == {
        "ReturnValue": 0, "SummaryInformation": []}


def test_the_face_keeps_its_account_as_an_nt_hash_its_owner_alone_reads(
        face: dict[str, str]) -> None:
    # The NTLM acceptor's account file, in the state directory: a lab's password is often
    # reused, so the file holds what NTLM needs (the NT hash), never the password itself.
    from spnego._ntlm_raw.crypto import ntowfv1

    accounts = Path(face["state"]) / "winrm" / "ntlm-accounts"
    text = accounts.read_text()
    assert PASSWORD not in text
    assert f"{USER}:0:{'0' * 32}:{ntowfv1(PASSWORD).hex().upper()}:" in text
    assert f"{face['host']}\\{USER}:" in text  # as HOST\user too
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o600


def test_the_face_prints_the_sha256_of_the_certificate_it_serves(face: dict[str, str]) -> None:
    # An operator pins the face's self-signed certificate by the fingerprint it printed.
    if not face["url"].startswith("https"):
        assert face["certificate_sha256"] == ""
        return
    host, port = face["url"].split("//")[1].split("/")[0].rsplit(":", 1)
    served = ssl.get_server_certificate((host, int(port)))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).hexdigest().upper()
    assert face["certificate_sha256"] == ":".join(
        digest[index:index + 2] for index in range(0, len(digest), 2))


def test_wrong_password_exits_with_one_line_naming_the_host(face: dict[str, str]) -> None:
    args = json.loads(face["args"])
    args[args.index("--wsman-password") + 1] = "Wrong-Pa55!"
    run = _cli("cim", "query", *args, "SELECT * FROM Msvm_VirtualEthernetSwitch")
    assert run.returncode == 2
    port = face["url"].split(":")[2].split("/")[0]
    assert run.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in run.stderr
    assert "Wrong-Pa55!" not in run.stderr + run.stdout and PASSWORD not in run.stderr


def test_wsman_backend_needs_a_url_and_refuses_basic_over_http(tmp_path: Path) -> None:
    run = _cli("cim", "query", "--backend", "wsman", "--state-dir", str(tmp_path),
               "SELECT * FROM Msvm_ComputerSystem")
    assert run.returncode == 2 and "--wsman-url" in run.stderr
    run = _cli("cim", "query", "--backend", "wsman", "--state-dir", str(tmp_path),
               "--wsman-url", "http://127.0.0.1:5985/wsman", "--wsman-auth", "basic",
               "--wsman-user", USER, "--wsman-password", PASSWORD,
               "SELECT * FROM Msvm_ComputerSystem")
    assert run.returncode == 2 and "password in clear" in run.stderr
    assert PASSWORD not in run.stderr


@pytest.mark.parametrize("listen", ["127.0.0.1:65536", "127.0.0.1:99999"])
def test_face_on_a_port_out_of_range_is_one_line_and_makes_nothing(
        tmp_path: Path, listen: str) -> None:
    from click.testing import CliRunner

    from hyperv_agent.cli import main

    state = tmp_path / "state"
    result = CliRunner().invoke(main, ["emulator", "wsman", "--listen", listen, "--state-dir",
                                       str(state), "--user", USER, "--password", PASSWORD])
    assert (result.exit_code, result.stderr) == (
        2, f"error: --listen {listen!r}: the port must be from 0 (any) to 65535\n"), result
    assert not state.exists()
