"""The first five minutes, as a new user meets them: the README's "see it work" commands run
as written in a fresh clone, its sample configuration starts as written, diagnostics leave
nothing behind, and every start-up problem is one line naming the setting."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import self_signed_pair
from tests.cli import lab
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of the README section headed ``section``."""
    text = README.read_text()
    start = text.index(f"\n{section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", text[start:end if end > 0 else None], re.S)


def _environment(tmp_path: Path, **more: str) -> dict[str, str]:
    """A fresh default state directory and free listeners (the defaults, 8250 and 9250,
    may be taken on a shared machine), as an operator sets them in the environment."""
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state-home"),
            "HYPERV_AGENT_LISTEN": f"127.0.0.1:{free_port()}",
            "HYPERV_AGENT_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
            "PYTHONUNBUFFERED": "1", **more}


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this repository, its ``.venv`` provisioned from this one's packages
    (no download: the clone's own code, this machine's installed dependencies)."""
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True, timeout=60)
    venv = target / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    here = sysconfig.get_paths()["purelib"]
    (site / "hyperv_agent_clone.pth").write_text(f"{target / 'src'}\n{here}\n")
    script = venv / "bin" / "hyperv-agent"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nfrom hyperv_agent.cli import main\n"
                      "main()\n")
    script.chmod(0o755)
    (venv / ".installed").touch()  # newer than the clone's pyproject.toml: no reinstall
    return target


def _commands() -> list[str]:
    found = [line.strip() for block in _blocks("## See it work", "sh")
             for line in block.splitlines() if line.strip()]
    assert found == ["./dev serve", "./dev probe --deploy"], found
    return found


def test_see_it_work_commands_deploy_a_vm_when_run_as_written_in_a_fresh_clone(
        clone: Path, tmp_path: Path) -> None:
    serve, probe = _commands()
    environment = _environment(tmp_path)
    agent = subprocess.Popen(["bash", "-c", serve], cwd=clone, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:  # the probe is started at once: it waits for the agent to come up
        run = subprocess.run(["bash", "-c", probe], cwd=clone, env=environment,
                             capture_output=True, text=True, timeout=180)
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        _, errors = agent.communicate(timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr + errors
    assert "start VM" in run.stdout and "delete volume" in run.stdout, run.stdout
    assert agent.returncode == 0, errors
    assert errors.strip().splitlines()[-1].endswith("hyperv-agent stopped: listeners closed, "
                                                    "backend closed"), errors
    state = tmp_path / "state-home" / "hyperv-agent"  # the README's default state directory
    assert (state / "tls" / "agent.crt").is_file() and (state / "emulator").is_dir()


def test_sample_configuration_starts_as_written_and_says_when_it_stopped(
        tmp_path: Path) -> None:
    (sample,) = _blocks("## Configuration", "toml")
    config = tmp_path / "agent.toml"
    config.write_text(sample)
    process = subprocess.Popen([sys.executable, "-m", "hyperv_agent.cli", "serve", "--config",
                                str(config)], env=_environment(tmp_path),
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = _lines_until(process, "serving CloudStack on")
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, "".join(lines) + rest
    assert rest.strip().splitlines()[-1].endswith("hyperv-agent stopped: listeners closed, "
                                                  "backend closed"), rest


def _lines_until(process: subprocess.Popen[str], wanted: str) -> list[str]:
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        assert line, "".join(seen) + process.stderr.read()
        seen.append(line)
        if wanted in line:
            return seen
    raise AssertionError("".join(seen))


def test_cim_query_creates_no_folder_when_the_emulated_host_does_not_exist(
        tmp_path: Path) -> None:
    named = tmp_path / "absent"
    run = lab.command("cim", "query", "--state-dir", str(named),
                      "SELECT ElementName FROM Msvm_VirtualEthernetSwitch")
    assert run.returncode == 0, run.stderr
    assert "External" in run.stdout
    defaulted = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "cim", "query",
                                "SELECT Name FROM Msvm_ComputerSystem"],
                               env=_environment(tmp_path), capture_output=True, text=True,
                               timeout=60)
    assert defaulted.returncode == 0, defaulted.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def taken_port() -> Iterator[int]:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "serve",
                           "--admin-listen", f"127.0.0.1:{free_port()}", *args],
                          env=_environment(tmp_path), capture_output=True, text=True,
                          timeout=60)


def test_start_up_problems_are_one_line_naming_the_setting(
        tmp_path: Path, taken_port: int) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = [
        (("--state-dir", str(a_file / "state")), "[agent] state_dir"),
        (("--state-dir", str(a_file)), "[agent] state_dir"),
        (("--state-dir", str(tmp_path / "s"), "--listen", f"127.0.0.1:{taken_port}"),
         f"127.0.0.1:{taken_port} ([agent] listen)"),
        (("--state-dir", str(tmp_path / "s"), "--listen", "nowhere"), "listen"),
        (("--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0"),
         "listen (from --listen): Value error, '127.0.0.1:0': the port must be from 1 to "
         "65535"),
        (("--state-dir", str(tmp_path / "s"), "--backend", "wsman"), "[wsman] url"),
    ]
    for args, setting in cases:
        run = _serve(tmp_path, *args)
        assert run.returncode == 2, (args, run.stderr)
        # The problem is the one line: nothing before it says the agent serves or stopped.
        (problem,) = run.stderr.splitlines()
        assert problem.startswith("error: ") and setting in problem, (args, run.stderr)


@pytest.mark.parametrize(("flag", "address", "reason"), [
    ("--listen", "192.0.2.1", "not an address of this machine (give one of its addresses, "
     "or 0.0.0.0 for all of them)"),
    ("--listen", "no-such-host.invalid", "the host name does not resolve ("),
    ("--admin-listen", "192.0.2.1", "not an address of this machine ("),
    ("--listen", "[2001:db8::1]", "not an address of this machine (give one of its "
     "addresses, or [::] for all of them)"),
])
def test_an_address_not_to_be_listened_on_is_refused_before_the_agent_says_it_serves(
        tmp_path: Path, flag: str, address: str, reason: str) -> None:
    """A listener address of another machine (192.0.2.1 and 2001:db8::1 are documentation
    addresses, never this machine's) or a name that does not resolve: the only line is the
    refusal, naming the setting and the address, and for an IPv6 address the any-address
    of IPv6, not of IPv4. Not the warnings of a serving agent, a line that
    it stopped, and the refusal after them; nor, for a bad admin address, a CloudStack
    listener that took connections meanwhile."""
    port = free_port()
    setting = "[agent] listen" if flag == "--listen" else "[agent] admin_listen"
    state = tmp_path / "state"
    run = _serve(tmp_path, "--state-dir", str(state), "--listen", f"127.0.0.1:{free_port()}",
                 flag, f"{address}:{port}")
    assert run.returncode == 2, run.stderr
    (problem,) = run.stderr.splitlines()
    assert problem.startswith(f"error: cannot listen on {address}:{port} ({setting}): "
                              f"{reason}"), run.stderr


def test_a_console_relay_address_not_of_this_machine_is_refused_before_serving(
        tmp_path: Path) -> None:
    """An agent driving a host over WinRM relays consoles at ``console_relay_listen``; an
    address of another machine there stops ``serve`` with the one line naming it, not after
    a line saying the agent serves CloudStack and another that it stopped."""
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nstate_dir = "state"\nbackend = "wsman"\n'
                      'console_relay_listen = "192.0.2.1:12179"\n'
                      '[wsman]\nurl = "https://hv01.lab:5986/wsman"\nusername = "u"\n'
                      'password = "p"\n')
    run = _serve(tmp_path, "--config", str(config))
    assert run.returncode == 2, run.stderr
    (problem,) = run.stderr.splitlines()
    assert problem == ("error: cannot listen on 192.0.2.1:12179 ([agent] console_relay_listen)"
                       ": not an address of this machine (give one of its addresses, or "
                       "0.0.0.0 for all of them)"), run.stderr


def test_the_emulated_hosts_winrm_address_in_use_is_refused_before_serving(
        tmp_path: Path, taken_port: int) -> None:
    """The emulated host's WinRM face (``[emulator] winrm``) listens at ``[wsman] url``;
    that port taken, ``serve`` stops with the one line naming the address and the setting,
    not after lines saying the agent serves and that it stopped, nor with the system's
    words alone."""
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nstate_dir = "state"\n[emulator]\nwinrm = true\n'
                      f'[wsman]\nurl = "http://127.0.0.1:{taken_port}/wsman"\n'
                      'username = "lab"\npassword = "Lab-Pa55word!"\n')
    run = _serve(tmp_path, "--config", str(config))
    assert run.returncode == 2, run.stderr
    (problem,) = run.stderr.splitlines()
    assert problem == (f"error: cannot listen on 127.0.0.1:{taken_port} ([wsman] url, which "
                       "[emulator] winrm serves): the address is in use (another program "
                       "listens there)"), run.stderr


def test_an_error_that_is_no_listeners_is_not_said_to_be_one(tmp_path: Path) -> None:
    """A file the agent cannot write once its listeners are bound (here the WinRM face's
    account store, where a file stands in the way of its folder) stops ``serve`` with
    what the system said and the file, not "cannot listen on", which would send the
    operator to the addresses."""
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nstate_dir = "state"\n[emulator]\nwinrm = true\n'
                      f'[wsman]\nurl = "http://127.0.0.1:{free_port()}/wsman"\n'
                      'username = "lab"\npassword = "Lab-Pa55word!"\n')
    in_the_way = tmp_path / "state" / "winrm"
    in_the_way.parent.mkdir()
    in_the_way.write_text("not a folder")
    run = _serve(tmp_path, "--config", str(config))
    assert run.returncode == 2, run.stderr
    (problem,) = run.stderr.splitlines()
    assert problem == f"error: stopped on an error: File exists: {in_the_way}", run.stderr


def test_a_share_whose_folder_is_missing_stops_the_start_naming_the_share(
        tmp_path: Path) -> None:
    """An ``[emulator.shares]`` folder that is not there (mistyped, or not mounted yet) stops
    ``serve`` at start, one line naming the setting, the share and the folder: not an agent
    that starts and answers the first copy from that image store "not found"."""
    missing = tmp_path / "secondry"
    config = tmp_path / "agent.toml"
    config.write_text("[agent]\nstate_dir = \"state\"\n[emulator.shares]\n"
                      f"'\\\\10.1.1.1\\secondary' = \"{missing}\"\n")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "hyperv_agent.cli", "serve", "--config", str(config)],
            env=_environment(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=20)
    except subprocess.TimeoutExpired as served:
        raise AssertionError(f"it started: {served.stderr!r}") from None
    assert run.returncode == 2, run.stderr
    (problem,) = run.stderr.splitlines()
    assert problem == (f"error: [emulator.shares] '\\\\10.1.1.1\\secondary' = {missing} "
                       "cannot be used: No such file or directory (a share is a folder that "
                       "exists: make it, or map the share to the folder that holds it)"), \
        run.stderr
    assert not missing.exists()


def test_tls_files_that_do_not_load_stop_the_start_in_one_line_naming_the_setting(
        tmp_path: Path) -> None:
    """A certificate with another's key, a key with a passphrase (OpenSSL would ask for it
    on the terminal) or a client CA file that is not there stop ``serve`` at start, as
    every other setting does: not with a traceback once start-up seemed to have gone well."""
    a_cert, _ = self_signed_pair(tmp_path, "a")
    _, b_key = self_signed_pair(tmp_path, "b")
    locked_cert, locked_key = self_signed_pair(tmp_path, "locked", b"secret")
    cases = [
        (f'tls_cert = "{a_cert}"\ntls_key = "{b_key}"', "key values mismatch",
         "[agent] tls_cert and tls_key"),
        (f'tls_cert = "{locked_cert}"\ntls_key = "{locked_key}"', "encrypted with a passphrase",
         "[agent] tls_cert and tls_key"),
        ('tls_client_ca = "ms-ca.pem"', str(tmp_path / "ms-ca.pem"), "[agent] tls_client_ca"),
    ]
    for settings, reason, setting in cases:
        config = tmp_path / "agent.toml"
        config.write_text(f'[agent]\nstate_dir = "state"\n{settings}\n')
        run = subprocess.run(
            [sys.executable, "-m", "hyperv_agent.cli", "serve", "--config", str(config)],
            env=_environment(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=60)
        assert run.returncode == 2, (settings, run.stderr)
        (problem,) = run.stderr.splitlines()
        assert problem.startswith("error: cannot load TLS material: "), (settings, run.stderr)
        assert reason in problem and setting in problem, (settings, run.stderr)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_at_start_names_the_state_directory_not_none(tmp_path: Path) -> None:
    """A write that fails for want of room carries no file name: the line says where the
    agent was writing, not "None". The generated key is written through a link to
    /dev/full, which takes no byte (ENOSPC), as a full disk does."""
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    (state / "tls" / "agent.key").symlink_to("/dev/full")
    run = _serve(tmp_path, "--state-dir", str(state))
    assert run.returncode == 2, run.stderr
    (problem,) = run.stderr.splitlines()
    assert problem == (f"error: cannot start: No space left on device: writing in {state} "
                       "(see [agent] state_dir, tls_cert and tls_key)"), run.stderr


@pytest.mark.parametrize("command", [
    ("serve", "--listen", "127.0.0.1:{port}", "--admin-listen", "127.0.0.1:{admin}"),
    ("emulator", "wsman", "--listen", "127.0.0.1:0", "--user", "u", "--password", "p"),
])
def test_an_empty_state_dir_flag_is_refused_not_the_folder_the_command_runs_in(
        tmp_path: Path, command: tuple[str, ...]) -> None:
    """``--state-dir "$STATE"`` with the variable unset: read as a path, "" is ".", and the
    agent's state, key and emulated host were made in the folder the command ran in."""
    args = [arg.format(port=free_port(), admin=free_port()) for arg in command]
    try:
        run = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", *args, "--state-dir",
                              ""], cwd=tmp_path, env=_environment(tmp_path),
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as served:
        raise AssertionError(f"it started: {served.stderr!r}") from None
    assert run.returncode == 2, run.stderr
    assert ("Invalid value for '--state-dir': an empty path would be the folder the command "
            "happens to run in") in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []
