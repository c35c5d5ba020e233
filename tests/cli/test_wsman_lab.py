"""Agentless mode end to end, in processes, as an operator runs it: ``emulator wsman`` serves
an emulated host over WinRM, ``serve --backend wsman`` drives it from its own state
directory, and ``probe --deploy`` plays a whole deployment against that agent; ``doctor``
checks the same host. Two arrangements:

- the lab arrangement: agent and face share one ``--config``, and the agent reaches the
  host's files through its ``[emulator.drives]``/``[emulator.shares]`` folders;
- the real way: the agent's configuration maps nothing, so it reaches drive C as a real
  host's administrative share ``\\\\host\\C$``, served here by a real Samba on loopback
  whose C$ is the emulated host's drive C, and the image store as another share.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.cli import lab
from tests.cli.test_first_minutes import README
from tests.doctor.test_doctor import CHECKS, DEPLOY
from tests.ports import free_port
from tests.samba import Samba

USER, PASSWORD = "lab", "Lab-Pa55word!"
PRIVATE_IP = "192.168.100.10"  # the emulated host's private NIC
DOCTOR_LINES = len(CHECKS) + len(DEPLOY)  # the checks, then the throwaway VM's steps


def _wsman(url: str, user: str, password: str) -> tuple[str, ...]:
    return ("--backend", "wsman", "--wsman-url", url, "--wsman-user", user,
            "--wsman-password", password, "--wsman-auth", "ntlm")


def _doctor(config: Path, state_dir: Path, *wsman: str) -> subprocess.CompletedProcess[str]:
    return lab.command("doctor", "--config", str(config), "--state-dir", str(state_dir),
                       "--min-free-gb", "0.001", "--deploy", *wsman)


def test_agent_on_wsman_deploys_relays_consoles_and_passes_doctor_with_a_shared_config(
        tmp_path: Path) -> None:
    secondary = tmp_path / "secondary"
    lab.make_template(secondary)
    relay_port = free_port()
    config = tmp_path / "lab.toml"
    with lab.vmconnect() as stand_in:
        config.write_text(f"""[agent]
console_relay_listen = "127.0.0.1:{relay_port}"
console_relay_target_port = {stand_in.port}
[emulator.drives]
C = "{tmp_path / 'C'}"
[emulator.shares]
'\\\\HYPERV-EMU\\secondary' = "{secondary}"
'\\\\{PRIVATE_IP}\\secondary' = "{secondary}"
""")
        with lab.face(config, tmp_path / "host", USER, PASSWORD) as url:
            wsman = _wsman(url, USER, PASSWORD)
            with lab.agent("--config", str(config), "--state-dir", str(tmp_path / "agent"),
                           "--admin-listen", f"127.0.0.1:{free_port()}", *wsman,
                           port=free_port(), password=PASSWORD) as agent:
                probe = lab.command("probe", agent, "--deploy", "--private-ip", PRIVATE_IP)
                assert probe.returncode == 0, probe.stdout + probe.stderr
                assert "copy template" in probe.stdout and "delete volume" in probe.stdout
                echoed = lab.console_round_trip(relay_port, stand_in)
            doctor = _doctor(config, tmp_path / "doctor", *wsman)
            refused = _doctor(config, tmp_path / "doctor", *_wsman(url, USER, "wrong"))
    assert echoed == b"RDP-HELLOecho:x"
    assert list((tmp_path / "C").rglob("*.vhdx")), "the template landed on drive C"
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert len(lines) == DOCTOR_LINES and all(line.startswith(("ok ", "skip ")) for line in lines)
    assert refused.returncode == 1
    first = refused.stdout.splitlines()[0]
    assert first.startswith("FAIL  connection") and "refused the credentials" in first
    assert " -> fix: check [wsman] username and password" in first
    assert "not ready: connection" in refused.stderr and "wrong" not in refused.stdout


def test_an_agent_whose_shared_config_maps_only_drive_c_stops_at_start_naming_the_share(
        tmp_path: Path) -> None:
    # The face keeps its image store in its own state directory; an agent left to default
    # would look for templates in one of its own, and fail each copy later, misleadingly.
    config = tmp_path / "lab.toml"
    config.write_text(f'[emulator.drives]\nC = "{tmp_path / "C"}"\n')
    with lab.face(config, tmp_path / "host", USER, PASSWORD) as url:
        wsman = _wsman(url, USER, PASSWORD)
        served = lab.command("serve", "--config", str(config), "--state-dir",
                             str(tmp_path / "agent"), "--listen", f"127.0.0.1:{free_port()}",
                             "--admin-listen", f"127.0.0.1:{free_port()}", *wsman,
                             timeout_s=30)
        doctor = _doctor(config, tmp_path / "doctor", *wsman)
    assert served.returncode == 2, served.stdout + served.stderr
    (line,) = served.stderr.splitlines()
    assert line.startswith("error: backend wsman reaches the emulated host's files")
    assert "the image store's share ([emulator.shares]" in line
    assert doctor.returncode == 1
    first = doctor.stdout.splitlines()[0]
    assert first.startswith("FAIL  connection") and "[emulator.shares]" in first


def test_agent_on_wsman_deploys_through_the_hosts_administrative_shares(
        tmp_path: Path, admin_share: Samba) -> None:
    lab.make_template(admin_share.other_share_dir)
    host = tmp_path / "host.toml"  # the emulated host: its drive C is the share's folder
    host.write_text(f'[emulator.drives]\nC = "{admin_share.share_dir}"\n')
    agent_config = tmp_path / "agent.toml"  # the agent's: no mapping, admin shares
    agent_config.write_text(f"""[agent]
smb_port = {admin_share.port}
console_relay_listen = ""
[agent.smb_credentials]
"{admin_share.server}" = {{username = "{admin_share.user}", password = "{admin_share.password}"}}
""")
    user, password = admin_share.user, admin_share.password  # one account, as on a real host
    with lab.face(host, tmp_path / "host", user, password) as url:
        wsman = _wsman(url, user, password)
        with lab.agent("--config", str(agent_config), "--state-dir", str(tmp_path / "agent"),
                       "--admin-listen", f"127.0.0.1:{free_port()}", *wsman,
                       port=free_port(), password=password) as agent:
            probe = lab.command("probe", agent, "--deploy", "--private-ip", "127.0.0.1",
                                "--secondary", f"cifs://{admin_share.server}/"
                                               f"{admin_share.other_share}")
        doctor = _doctor(agent_config, tmp_path / "doctor", *wsman)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    pool = admin_share.share_dir / "Users" / "Public" / "Documents" / "Hyper-V"
    assert [p.name for p in pool.rglob("*.vhdx")], "the template copy went through C$"
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"\\\\{admin_share.server}\\C$ (administrative share): readable and writable" \
        in doctor.stdout


def test_readme_face_lab_deploys_as_pasted(tmp_path: Path) -> None:
    # The README's lab through the WinRM face, its folder, ports and `./dev` prefix swapped
    # for a temporary folder, free ports and this interpreter: the shared configuration
    # must name drive C and the image store for both processes, or the agent writes where
    # the emulated host never looks. The face is made slow to start: the agent must not be
    # asked to register before the face listens.
    text = README.read_text()
    start = text.index("\n### The emulator as a WinRM host")
    (block,) = [found for found in re.findall(r"```sh\n(.*?)```",
                                               text[start:text.index("\n## ", start)], re.S)
                if "probe --deploy" in found]
    here = f"{shlex.quote(sys.executable)} -m hyperv_agent.cli"
    script = (block.replace("/srv/face-lab", str(tmp_path / "face-lab"))
              .replace(":5985", f":{free_port()}").replace("./dev agent", here)
              .replace("./dev probe", f"{here} probe"))
    assert script.count(f"{here} emulator wsman") == 1
    script = script.replace(f"{here} emulator wsman", f"sleep 2 && {here} emulator wsman")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1",
                   "HYPERV_AGENT_LISTEN": f"127.0.0.1:{free_port()}",
                   "HYPERV_AGENT_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"}
    output, errors = tmp_path / "stdout", tmp_path / "stderr"  # the face and agent it
    with output.open("w") as out_file, errors.open("w") as error_file:  # leaves write too
        lab_run = subprocess.Popen(["bash", "-euc", script], env=environment,
                                   stdout=out_file, stderr=error_file, start_new_session=True)
        try:
            lab_run.wait(timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lab_run.pid, signal.SIGTERM)
    out = output.read_text()
    assert lab_run.returncode == 0, out + errors.read_text()
    assert "copy template" in out and "delete volume" in out, out
    assert list((tmp_path / "face-lab" / "C").rglob("*.vhdx")), "the template landed on C"
    assert json.loads((tmp_path / "face-lab" / "face.json").read_text())["url"].endswith(
        "/wsman")
