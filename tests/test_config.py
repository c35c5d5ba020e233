"""Configuration files as operators write them: every mistake is one ConfigError naming
the file and the setting, never a traceback."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from hyperv_agent.cli import main
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.errors import ConfigError
from tests.cli import lab
from tests.ports import free_port


@pytest.mark.parametrize("text, section, kind", [
    ('agent = "emulator"\n', "agent", "str"),
    ("agent = 5\n", "agent", "int"),
    ('wsman = ["https://hv01:5986/wsman"]\n', "wsman", "list"),
])
def test_a_section_written_as_a_value_is_one_error_naming_it(
        tmp_path: Path, text: str, section: str, kind: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"invalid config file {path}: {section}: a table is expected")
    assert kind in message and "\n" not in message


@pytest.mark.parametrize("text, setting", [
    ('[agent]\nstate_dir = ""\n', "agent.state_dir"),
    ('[agent]\ntls_cert = ""\ntls_key = ""\n', "agent.tls_cert"),
    ('[agent]\ntls_client_ca = ""\n', "agent.tls_client_ca"),
    ('[agent.smb_credentials]\n"fs1" = {username = "u", password_file = ""}\n',
     "agent.smb_credentials.fs1.password_file"),
    ('[wsman]\npassword_file = ""\n', "wsman.password_file"),
    ('[wsman]\nca_file = ""\n', "wsman.ca_file"),
    ('[emulator]\ncluster_dir = ""\n', "emulator.cluster_dir"),
    ('[emulator.drives]\nC = ""\n', "emulator.drives.C"),
    ('[agent]\nstate_dir = " "\n', "agent.state_dir"),  # blank is empty too
    ('[emulator.drives]\nC = "\t"\n', "emulator.drives.C"),
])
def test_an_empty_path_is_an_error_naming_it_not_the_folder_the_agent_runs_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, setting: str) -> None:
    """Read as a path, "" is "." (System32 for a Windows service, / for a systemd unit):
    state, cluster files or an emulated drive would quietly be written there."""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"invalid config file {path}: {setting}: ")
    assert "an empty path" in message and "\n" not in message
    run = CliRunner().invoke(main, ["cim", "query", "--config", str(path),
                                    "SELECT Name FROM Msvm_ComputerSystem"])
    assert run.exit_code == 2 and setting in run.output, run.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml"]


# --- relative paths ------------------------------------------------------------------------


def test_relative_paths_in_a_file_are_taken_from_its_folder_wherever_the_command_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "smb.pw").write_text("secret\n")
    path = folder / "agent.toml"
    path.write_text('[agent]\nstate_dir = "state"\ntls_cert = "tls/agent.crt"\n'
                    'tls_key = "../keys/agent.key"\n'
                    '[agent.smb_credentials]\n"fs1" = {username = "u", password_file = "smb.pw"}\n'
                    '[wsman]\nca_file = "hv01.pem"\npassword_file = "~/wsman.pw"\n'
                    '[emulator]\ncluster_dir = "cluster"\n'
                    '[emulator.drives]\nC = "drives/C"\n[emulator.shares]\n'
                    "'\\\\fs1\\secondary' = \"/srv/secondary\"\n")
    elsewhere = tmp_path / "elsewhere"  # as a service runs, in a folder of its own
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(path)
    assert config.agent.state_dir == folder / "state"
    assert config.agent.tls_cert == folder / "tls" / "agent.crt"
    assert config.agent.tls_key == folder / ".." / "keys" / "agent.key"
    assert config.agent.smb_credentials["fs1"].secret() == "secret"
    assert config.wsman.ca_file == folder / "hv01.pem"
    assert config.wsman.password_file == tmp_path / "home" / "wsman.pw"
    assert config.emulator.cluster_dir == folder / "cluster"
    assert config.emulator.drives == {"C": folder / "drives" / "C"}
    assert config.emulator.shares == {"\\\\fs1\\secondary": Path("/srv/secondary")}
    # A flag or the environment names a folder from where the command runs.
    assert load_config(path, state_dir=Path("here")).agent.state_dir == Path("here")
    monkeypatch.setenv("HYPERV_AGENT_STATE_DIR", "there")
    assert load_config(path).agent.state_dir == Path("there")


def test_the_environment_overrides_the_file_and_flags_override_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A unit's Environment= line beats the packaged file; a flag typed by hand beats both.
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nstate_dir = "/srv/file"\nbackend = "wsman"\n'
                    'listen = "10.0.0.1:8250"\nadmin_listen = "10.0.0.1:9250"\n'
                    'private_ip = "10.0.0.1"\n')
    for name in ("STATE_DIR", "BACKEND", "LISTEN", "ADMIN_LISTEN"):
        monkeypatch.delenv(f"HYPERV_AGENT_{name}", raising=False)
    config = load_config(path)
    assert (config.agent.state_dir, config.agent.backend, config.agent.listen,
            config.agent.admin_listen) == (Path("/srv/file"), "wsman", "10.0.0.1:8250",
                                           "10.0.0.1:9250")
    monkeypatch.setenv("HYPERV_AGENT_STATE_DIR", "/srv/env")
    monkeypatch.setenv("HYPERV_AGENT_BACKEND", "emulator")
    monkeypatch.setenv("HYPERV_AGENT_LISTEN", "10.0.0.2:8250")
    monkeypatch.setenv("HYPERV_AGENT_ADMIN_LISTEN", "10.0.0.2:9250")
    config = load_config(path)
    assert (config.agent.state_dir, config.agent.backend, config.agent.listen,
            config.agent.admin_listen) == (Path("/srv/env"), "emulator", "10.0.0.2:8250",
                                           "10.0.0.2:9250")
    config = load_config(path, state_dir=Path("/srv/flag"), backend="wsman",
                         listen="10.0.0.3:8250", admin_listen="10.0.0.3:9250",
                         private_ip="10.0.0.3")
    assert (config.agent.state_dir, config.agent.backend, config.agent.listen,
            config.agent.admin_listen, config.agent.private_ip) == (
        Path("/srv/flag"), "wsman", "10.0.0.3:8250", "10.0.0.3:9250", "10.0.0.3")


def test_a_bad_value_from_the_environment_or_a_flag_is_named_by_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file may not even hold the setting: the error names the variable (a unit's
    Environment= line) or the flag the value came from, so the operator does not search
    the file for it."""
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nlisten = "0.0.0.0:8250"\n')
    monkeypatch.setenv("HYPERV_AGENT_LISTEN", "8250")
    monkeypatch.setenv("HYPERV_AGENT_SMB_PORT", "smb")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"invalid config file {path}: agent.listen (from HYPERV_AGENT_LISTEN): Value error, "
        "'8250' is not HOST:PORT; agent.smb_port (from HYPERV_AGENT_SMB_PORT): Input should "
        "be a valid integer, unable to parse string as an integer")
    run = CliRunner().invoke(main, ["cim", "query", "--config", str(path), "--state-dir",
                                    str(tmp_path / "state"), "SELECT Name FROM Msvm_Memory"])
    assert run.exit_code == 2 and "agent.listen (from HYPERV_AGENT_LISTEN)" in run.output
    monkeypatch.delenv("HYPERV_AGENT_SMB_PORT")
    with pytest.raises(ConfigError) as raised:  # a flag beats the variable, and is named
        load_config(path, listen="nowhere", backend=None)
    assert str(raised.value) == (f"invalid config file {path}: agent.listen (from --listen): "
                                 "Value error, 'nowhere' is not HOST:PORT")
    monkeypatch.delenv("HYPERV_AGENT_LISTEN")
    path.write_text('[agent]\nlisten = "8250"\n')  # the file's own: named as before
    with pytest.raises(ConfigError, match=r"file \S+: agent\.listen: Value error"):
        load_config(path)


# --- password files ------------------------------------------------------------------------

#: One password as Windows and Linux tools save it: LF, CRLF, Notepad's UTF-8 with a BOM,
#: PowerShell 5.1's ``"..." > file`` (UTF-16 with a BOM and CRLF).
PASSWORD_FILES = {
    "lf": "Pa55-w\u00f6rd\n".encode(),
    "crlf": "Pa55-w\u00f6rd\r\n".encode(),
    "utf-8 bom": "\ufeffPa55-w\u00f6rd\r\n".encode(),
    "utf-16 bom": "\ufeffPa55-w\u00f6rd\r\n".encode("utf-16-le"),
    "utf-16 le, no bom": "Pa55-w\u00f6rd\r\n".encode("utf-16-le"),
    "utf-16 be, no bom": "Pa55-w\u00f6rd\r\n".encode("utf-16-be"),
}


def _password_settings(tmp_path: Path, data: bytes) -> Path:
    secret = tmp_path / "password"
    secret.write_bytes(data)
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent.smb_credentials]\n"fs1" = {{username = "cloud", password_file = '
                    f'"{secret}"}}\n[wsman]\nurl = "https://hv01:5986/wsman"\n'
                    f'username = "HV01\\\\cloudstack"\npassword_file = "{secret}"\n')
    return path


@pytest.mark.parametrize("kind", sorted(PASSWORD_FILES))
def test_a_password_file_gives_its_first_line_however_it_was_saved(
        tmp_path: Path, kind: str) -> None:
    config = load_config(_password_settings(tmp_path, PASSWORD_FILES[kind]))
    assert config.wsman.resolved_password() == "Pa55-w\u00f6rd"
    assert config.agent.smb_credentials["fs1"].secret() == "Pa55-w\u00f6rd"


def test_a_password_file_that_is_not_text_is_one_error_naming_it_not_its_content(
        tmp_path: Path) -> None:
    secret = tmp_path / "password"
    path = _password_settings(tmp_path, b"\xe9t\xe9-Secret\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"invalid config file {path}: agent.smb_credentials.fs1: Value error, {secret} is "
        "not UTF-8 text (save it as UTF-8)")
    path.write_text(f'[wsman]\nurl = "https://hv01:5986/wsman"\npassword_file = "{secret}"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path).wsman.resolved_password()
    assert str(raised.value) == (f"wsman password_file: {secret} is not UTF-8 text "
                                 "(save it as UTF-8)")
    assert "Secret" not in str(raised.value)


# --- the documents' configuration samples --------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A commented-out setting: "# key = value" (a bare or quoted key), as an operator uncomments.
_COMMENTED_SETTING = re.compile(r"^(\s*)# ((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*') = .*)$")


def _toml_blocks() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in re.finditer(r"```toml\n(.*?)```", text, re.S):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{document.name}:{line}", textwrap.dedent(match.group(1))))
    return found


def _variants(block: str) -> list[tuple[str, str]]:
    """The block as written, with each commented-out setting uncommented on its own, and
    with all of them uncommented."""
    lines = block.splitlines()
    commented = [i for i, line in enumerate(lines) if _COMMENTED_SETTING.match(line)]

    def uncomment(indexes: list[int]) -> str:
        return "\n".join(_COMMENTED_SETTING.sub(r"\1\2", line) if i in indexes else line
                         for i, line in enumerate(lines)) + "\n"

    return [("as written", block), *((f"uncommented: {lines[i].strip()}", uncomment([i]))
                                     for i in commented),
            ("all uncommented", uncomment(commented))]


@pytest.mark.parametrize("where, block", _toml_blocks(), ids=[w for w, _ in _toml_blocks()])
def test_every_documented_sample_loads_as_written_and_with_its_comments_taken_out(
        tmp_path: Path, where: str, block: str) -> None:
    # The files the samples name are the operator's: they are made here, where a setting
    # reads its file when the configuration is loaded (a password file).
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "smb.pw").write_text("secret\n")
    problems = []
    for variant, text in _variants(block):
        path = tmp_path / "agent.toml"
        path.write_text(text.replace("/etc/hyperv-agent/", f"{etc}/"))
        try:
            load_config(path)
        except ConfigError as error:
            problems.append(f"{variant}: {error}")
    assert not problems, f"{where}:\n" + "\n".join(problems)


def _settings(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every setting of ``model`` as ``section.key``, nested sections walked."""
    found = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found += _settings(kind, f"{prefix}{name}.")
        else:
            found.append(f"{prefix}{name}")
    return found


def test_the_readme_sample_configuration_names_every_setting() -> None:
    # An operator learns the settings from the README's sample: one left out of it is one
    # nobody sets (the local pool's folder, the log level, a certificate logon's files).
    text = DOCUMENTS[0].read_text()
    start = text.index("\n## Configuration\n")
    (sample,) = re.findall(r"```toml\n(.*?)```", text[start:text.index("\n## ", start + 1)],
                           re.S)
    tables: set[str] = set()
    named: set[str] = set()
    table = ""
    for line in sample.splitlines():
        header = re.match(r"\s*\[([\w.]+)\]", line)
        if header:
            table = header.group(1)
            tables.add(table)
            continue
        # a setting, commented out or not, or one a comment offers ("or password = ...")
        named.update(f"{table}.{key}" for key in re.findall(r"(?:^|#\s*|\bor\s+)(\w+) =",
                                                            line))
    missing = [key for key in _settings(AgentConfig) if key not in named
               and not key.startswith(("agent.smb_credentials", "emulator.drives",
                                       "emulator.shares"))]
    assert not missing, f"settings the README's sample configuration leaves out: {missing}"
    assert {"agent.smb_credentials", "emulator.drives", "emulator.shares"} <= tables


@pytest.mark.parametrize("key", ["local_storage_path", "local_secondary_storage_path",
                                 "config_drive_cache_path"])
@pytest.mark.parametrize(("root", "why"), [
    ("pool", "is not an absolute drive"),
    ("C:pool", "is not an absolute drive"),
    ("\\\\?\\D:\\VMs", "device namespace"),
    ("C:\\pool\\..\\other", "'..' segment"),
])
def test_a_local_pool_folder_registration_would_refuse_is_a_config_error(
        tmp_path: Path, key: str, root: str, why: str) -> None:
    """The local pool's folder (and the legacy download folder) is registered as a pool
    root at every start: one registration refuses stops the start naming the setting,
    instead of an agent that starts with its local pool quietly left out of the host's
    registration."""
    path = tmp_path / "agent.toml"
    path.write_text(f"[agent]\n{key} = '{root}'\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert key in message and why in message, message
    path.write_text(f"[agent]\n{key} = 'D:\\VMs\\pool'\n")
    assert getattr(load_config(path).agent, key) == "D:\\VMs\\pool"


def test_a_local_pool_folder_with_a_plus_is_a_config_error_and_doctor_says_so(
        tmp_path: Path) -> None:
    """The management server stores a local pool's hostPath with every '+' made a space
    (CloudStackPrimaryDataStoreLifeCycleImpl.initialize): the pool it records would be
    another folder, where the volumes it then creates on it are looked for. The other
    folders are never registered as pools: a '+' there is a folder name like any other."""
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\nlocal_storage_path = 'D:\\VMs+Disks'\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "local_storage_path" in message and "'+'" in message, message
    assert "D:\\VMs Disks" in message, message  # the folder the MS would record
    result = CliRunner().invoke(main, ["doctor", "--config", str(path),
                                       "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2, result.output
    assert "local_storage_path" in result.output and "'+'" in result.output, result.output
    for key in ("local_secondary_storage_path", "config_drive_cache_path"):
        path.write_text(f"[agent]\n{key} = 'D:\\C++ Builds'\n")
        assert getattr(load_config(path).agent, key) == "D:\\C++ Builds"


def test_an_emulated_host_of_more_sockets_than_cores_is_a_config_error(tmp_path: Path) -> None:
    """Each Win32_Processor holds at least one core: 4 sockets cannot share 2 cores."""
    path = tmp_path / "agent.toml"
    path.write_text("[emulator]\ncpus = 2\nsockets = 4\n")
    with pytest.raises(ConfigError, match=r"sockets \(4\) outnumber cpus \(2\)"):
        load_config(path)
    path.write_text("[emulator]\ncpus = 6\nsockets = 4\n")
    assert load_config(path).emulator.sockets == 4


def test_an_empty_secondary_folder_says_there_is_none_and_an_empty_pool_folder_is_refused(
        tmp_path: Path) -> None:
    """local_secondary_storage_path empty: no folder for legacy nfs:// downloads (they fail
    saying so); local_storage_path empty names no pool folder and fails the load."""
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\nlocal_secondary_storage_path = ''\n")
    assert load_config(path).agent.local_secondary_storage_path == ""
    path.write_text("[agent]\nlocal_storage_path = ''\n")
    with pytest.raises(ConfigError, match="local_storage_path"):
        load_config(path)


def test_the_config_drive_cache_is_below_the_local_pool_unless_set(tmp_path: Path) -> None:
    """A host folder in every mode (the state directory of an agent driving a host over
    WinRM is not on that host), alike on every host of a cluster set up alike."""
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\nlocal_storage_path = 'D:\\VMs'\n")
    assert load_config(path).agent.config_drive_cache == "D:\\VMs\\configdrive-cache"
    path.write_text("[agent]\nconfig_drive_cache_path = 'E:\\ConfigDrives'\n")
    assert load_config(path).agent.config_drive_cache == "E:\\ConfigDrives"


@pytest.mark.parametrize("key", ["'\\\\\\\\fs1\\\\secondary'", "'\\\\fs1\\\\secondary'",
                                 "'\\\\\\\\fs1\\secondary'"])
def test_a_share_named_with_doubled_backslashes_is_refused_saying_how_to_write_it(
        tmp_path: Path, key: str) -> None:
    """``'\\\\\\\\fs1\\\\secondary'``: the double-quoted form written between single quotes,
    which keep every backslash. It was taken, and mapped nothing: a path on the share found
    "no such share on this host" at the first command that used it."""
    path = tmp_path / "agent.toml"
    path.write_text(f'[emulator.shares]\n{key} = "{tmp_path}"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    unc = key.strip("'")
    assert str(raised.value) == (
        f"invalid config file {path}: emulator.shares: Value error, share '{unc}' is not of "
        "the form \\\\server\\share (between single quotes TOML keeps every backslash: write "
        "'\\\\server\\share' there, or \"\\\\\\\\server\\\\share\" between double quotes)")
    path.write_text(f'[emulator.shares]\n\'\\\\fs1\\secondary\\\' = "{tmp_path}"\n'
                    f'"\\\\\\\\fs2\\\\secondary" = "{tmp_path}"\n')
    assert set(load_config(path).emulator.shares) == {"\\\\fs1\\secondary\\",
                                                      "\\\\fs2\\secondary"}


@pytest.mark.parametrize("text, setting", [
    ('[emulator.drives]\nC = "{file}"\n', "emulator.drives: Value error, C: {file} is a file"),
    ("[emulator.shares]\n'\\\\fs1\\secondary' = \"{file}\"\n",
     "emulator.shares: Value error, \\\\fs1\\secondary: {file} is a file"),
    ('[emulator]\ncluster_dir = "{file}"\n', "emulator.cluster_dir: Value error, {file} is a file"),
    ('[emulator.drives]\nC = "{file}/hv/C"\n',
     "emulator.drives: Value error, C: {file}, on the way to {file}/hv/C, is a file"),
    ('[emulator]\ncluster_dir = "{file}/cluster"\n',
     "emulator.cluster_dir: Value error, {file}, on the way to {file}/cluster, is a file"),
])
def test_an_emulated_folder_that_is_a_file_is_an_error_naming_the_setting(
        tmp_path: Path, text: str, setting: str) -> None:
    """serve stopped with "cannot start: File exists: <file> (see [agent] state_dir, tls_cert
    and tls_key)", or "Not a directory: <file>/hv/C" for a folder below a file, pointing at
    settings that were not at fault."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    path = tmp_path / "agent.toml"
    path.write_text(text.format(file=a_file))
    run = lab.command("serve", "--config", str(path), "--state-dir", str(tmp_path / "state"),
                      "--listen", f"127.0.0.1:{free_port()}", "--admin-listen",
                      f"127.0.0.1:{free_port()}", timeout_s=60)
    assert run.returncode == 2, run.stderr
    (problem,) = run.stderr.splitlines()
    assert problem.startswith(f"error: invalid config file {path}: "
                              f"{setting.format(file=a_file)}; the "), run.stderr


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be"])
def test_a_config_file_saved_by_windows_tools_loads(tmp_path: Path, encoding: str) -> None:
    """Notepad's UTF-8 with a byte-order mark, PowerShell 5.1's ``> agent.toml`` and Out-File
    (UTF-16 with a mark, CRLF): read as password files are, not a traceback or "Invalid
    statement at line 1, column 1"."""
    path = tmp_path / "agent.toml"
    text = '[agent]\r\nstate_dir = "st\u00e4te"\r\nallow_from = ["10.1.0.0/16"]\r\n'
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path.write_bytes(data)
    config = load_config(path)
    assert config.agent.state_dir == tmp_path / "st\u00e4te"
    assert config.agent.allow_from == ("10.1.0.0/16",)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_config_file_saved_as_utf16_without_a_mark_loads(tmp_path: Path,
                                                           encoding: str) -> None:
    """UTF-16 as some Windows tools save it, with no byte-order mark: read as UTF-16, as
    the same file with a mark is, not refused as TOML ("Invalid initial character for a
    key part") with no word of its encoding."""
    path = tmp_path / "agent.toml"
    path.write_bytes('# hyperv-agent\r\n[agent]\r\nstate_dir = "st\u00e4te"\r\n'
                     'allow_from = ["10.1.0.0/16"]\r\n'.encode(encoding))
    config = load_config(path)
    assert config.agent.state_dir == tmp_path / "st\u00e4te"
    assert config.agent.allow_from == ("10.1.0.0/16",)
    run = CliRunner().invoke(main, ["cim", "query", "--config", str(path), "--state-dir",
                                    str(tmp_path / "state"),
                                    "SELECT ElementName FROM Msvm_VirtualEthernetSwitch"])
    assert run.exit_code == 0, run.output
    assert "External" in run.output


def test_a_config_file_in_another_encoding_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes('[agent]\nstate_dir = "st\u00e4te"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (f"config file {path} is not UTF-8 text (byte 23: invalid "
                                 "continuation byte); save it as UTF-8")
    run = CliRunner().invoke(main, ["cim", "query", "--config", str(path),
                                    "SELECT Name FROM Msvm_ComputerSystem"])
    assert (run.exit_code, run.output) == (2, f"error: {raised.value}\n")


def test_an_emulated_folder_that_cannot_be_looked_at_is_an_error_naming_the_setting(
        tmp_path: Path) -> None:
    """A drive whose folder cannot even be looked at (permission denied to the account
    the command runs as; here a name longer than the file system takes) is refused naming
    the setting and the reason, not raised as an OSError traceback from every command."""
    drive = tmp_path / ("x" * 300) / "C"
    path = tmp_path / "agent.toml"
    path.write_text(f'[emulator.drives]\nC = "{drive}"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(
        f"invalid config file {path}: emulator.drives: Value error, C: {drive} cannot "
        "be looked at: File name too long; the drives of the emulated host are folders"
    ), str(raised.value)


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "[::]"])
async def test_the_local_agent_url_reaches_a_listener_on_every_address(
        wildcard: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``probe`` without a URL reaches the agent listening at HYPERV_AGENT_LISTEN. A
    listener on every IPv6 address (``[::]:8250``) takes IPv6 alone, and the URL named
    127.0.0.1, where nothing listens."""
    import asyncio
    from urllib.parse import urlsplit

    from aiohttp import web

    from hyperv_agent import server
    from hyperv_agent.config import local_agent_url

    port = free_port()
    runner = await server.start(web.Application(), server.Listener.parse(f"{wildcard}:{port}"),
                                None)
    try:
        monkeypatch.setenv("HYPERV_AGENT_LISTEN", f"{wildcard}:{port}")
        url = urlsplit(local_agent_url())
        assert url.port == port
        _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, url.port), 5)
        writer.close()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_password_file_in_utf16_without_a_mark_may_begin_with_a_letter_beyond_ascii(
        tmp_path: Path, encoding: str) -> None:
    """A password beginning with a letter such as "\u00d6" saved as UTF-16 without a mark
    was read as UTF-8 and refused as not UTF-8 text: its NUL was looked for beside an
    ASCII character only."""
    password = "\u00d6l-Pa55-w\u00f6rd"
    config = load_config(_password_settings(tmp_path, f"{password}\r\n".encode(encoding)))
    assert config.wsman.resolved_password() == password
    assert config.agent.smb_credentials["fs1"].secret() == password
