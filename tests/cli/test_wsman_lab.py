"""The lab arrangement, as an operator sets it up: ``emulator wsman`` serves an emulated host
over WinRM, ``serve --backend wsman`` with the same ``--config`` (its own state directory)
drives it and reaches its files through the file's drive and share mappings, and
``probe --deploy`` plays a whole deployment against that agent."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.samba import free_port

USER, PASSWORD = "lab", "Lab-Pa55word!"
PRIVATE_IP = "192.168.100.10"  # the emulated host's private NIC


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hyperv_agent.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            urllib.request.urlopen(url, context=context, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the agent did not become ready")


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    _, errors = process.communicate(timeout=30)
    return errors


def test_agent_on_wsman_deploys_through_the_face_with_a_shared_config(tmp_path: Path) -> None:
    secondary = tmp_path / "secondary"
    template = secondary / "template" / "tmpl" / "1" / "1" / "hyperv-agent-probe.vhdx"
    made = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "template", "make",
                           str(template)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    config = tmp_path / "lab.toml"
    config.write_text(f"""[emulator.drives]
C = "{tmp_path / 'C'}"
[emulator.shares]
'\\\\HYPERV-EMU\\secondary' = "{secondary}"
'\\\\{PRIVATE_IP}\\secondary' = "{secondary}"
""")
    face = _start("emulator", "wsman", "--listen", "127.0.0.1:0", "--state-dir",
                  str(tmp_path / "host"), "--config", str(config), "--user", USER,
                  "--password", PASSWORD)
    agent = None
    try:
        assert face.stdout is not None
        url = json.loads(face.stdout.readline())["url"]
        port = free_port()
        agent = _start("serve", "--backend", "wsman", "--config", str(config), "--state-dir",
                       str(tmp_path / "agent"), "--listen", f"127.0.0.1:{port}",
                       "--admin-listen", f"127.0.0.1:{free_port()}", "--wsman-url", url,
                       "--wsman-user", USER, "--wsman-password", PASSWORD,
                       "--wsman-auth", "ntlm")
        _wait_ready(f"https://127.0.0.1:{port}/api/HypervResource", agent)
        probe = subprocess.run(
            [sys.executable, "-m", "hyperv_agent.cli", "probe", f"https://127.0.0.1:{port}",
             "--deploy", "--private-ip", PRIVATE_IP], capture_output=True, text=True,
            timeout=120)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert "copy template" in probe.stdout and "delete volume" in probe.stdout
    finally:
        errors = _stop(agent) if agent is not None else ""
        errors += _stop(face)
    assert PASSWORD not in errors
    copied = list((tmp_path / "C").rglob("*.vhdx"))
    assert copied, "the template copy landed on the emulated host's drive C"
