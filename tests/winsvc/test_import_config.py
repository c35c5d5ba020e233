"""`hyperv-agent service import-config`: the C# agent's AgentShell.exe.config becomes a valid
agent.toml and pool registry, and every setting left behind is named."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from hyperv_agent.cli import main
from hyperv_agent.config import load_config
from hyperv_agent.service import build_agent
from hyperv_agent.state import PoolRegistry, RegisteredPool
from hyperv_agent.winsvc import tomltext
from tests.conftest import off_windows

FIXTURES = Path(__file__).parent / "fixtures"
IN_SERVICE = FIXTURES / "AgentShell.exe.config"
SHIPPED = FIXTURES / "AgentShell.shipped.exe.config"
POOL_1 = "9c2f3e55-0b1a-3d6e-a0f4-6d2b8e71c4a9"
POOL_2 = "4b8d1c20-7e63-3f0a-9d45-1a2b3c4d5e6f"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["service", "import-config", *args])


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HYPERV_AGENT_STATE_DIR", "HYPERV_AGENT_BACKEND", "HYPERV_AGENT_SMB_SERVERS",
                 "HYPERV_AGENT_SMB_PORT"):
        monkeypatch.delenv(name, raising=False)


def imported(tmp_path: Path, source: Path = IN_SERVICE) -> tuple[Path, Result]:
    output = tmp_path / "agent.toml"
    result = run(str(source), "--output", str(output), "--state-dir", str(tmp_path / "state"))
    assert result.exit_code == 0, result.output
    return output, result


def test_settings_the_csharp_agent_used_become_a_valid_agent_toml(tmp_path: Path) -> None:
    output, _ = imported(tmp_path)
    agent = load_config(output).agent
    assert agent.listen == "10.1.1.27:8250"
    assert agent.dom0_min_memory_mb == 4096
    assert agent.root_device_reserved_bytes == 8 * 1024**3
    assert agent.root_device_name == "c:\\"
    assert agent.local_secondary_storage_path == "D:\\Secondary"
    assert agent.state_dir == tmp_path / "state"
    assert agent.local_storage_path == "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"


def test_smb_pools_the_csharp_agent_registered_go_to_the_pool_registry(tmp_path: Path) -> None:
    _, result = imported(tmp_path)
    registry = PoolRegistry(tmp_path / "state" / "pools.json")
    assert registry.get(POOL_1) == RegisteredPool("\\\\10.1.1.2\\primary", "SMB", "10.1.1.2",
                                                  "/primary")
    second = registry.get(POOL_2.upper())
    assert second is not None and second.root == "\\\\fs2.lab.example\\cloud\\pool2"
    assert (second.host, second.path) == ("fs2.lab.example", "/cloud/pool2")
    assert f"registered 2 SMB pool(s) in {tmp_path / 'state' / 'pools.json'}" in result.output


def test_pools_already_registered_are_kept(tmp_path: Path) -> None:
    PoolRegistry(tmp_path / "state" / "pools.json").put("11111111-2222-3333-4444-555555555555",
                                                         RegisteredPool.from_root("\\\\fs9\\old"))
    imported(tmp_path)
    data = json.loads((tmp_path / "state" / "pools.json").read_text())
    assert set(data) == {"11111111-2222-3333-4444-555555555555", POOL_1, POOL_2}


def test_every_setting_left_behind_is_named_with_a_reason(tmp_path: Path) -> None:
    output, result = imported(tmp_path)
    left = {"cpus", "type", "local_storage_uuid", "capabilities", "Settingcpuspeed", "memory",
            "host", "pod", "gateway_ip_address", "cluster", "zone", "workers",
            "private_ip_netmask", "hyperv_plugin_root", "private_mac_address",
            "local_storage_path", "testS3AccessKey", "testS3SecretKey", "testCifsUrl"}
    listed = result.output.split("not carried over (19):\n")[1].splitlines()
    assert {line.strip().split(":")[0] for line in listed} == left
    assert all(line.split(":", 1)[1].strip() for line in listed)
    text = output.read_text()
    assert all(f"# {name}: " in text for name in left)
    assert "(Get-VMHost).VirtualHardDiskPath" in text  # what to do about local_storage_path


def test_secret_values_reach_neither_the_output_nor_the_file(tmp_path: Path) -> None:
    output, result = imported(tmp_path)
    for text in (result.output, output.read_text()):
        assert "do-not-print" not in text and "AKIAEXAMPLEKEY" not in text


def test_shipped_defaults_listen_on_every_address(tmp_path: Path) -> None:
    output, result = imported(tmp_path, SHIPPED)
    agent = load_config(output).agent
    assert agent.listen == "0.0.0.0:8250"
    assert agent.root_device_name == "e:\\"
    assert agent.local_secondary_storage_path == "c:\\Secondary"
    assert "registered" not in result.output
    assert not (tmp_path / "state" / "pools.json").exists()
    assert "guid: sent by the management server" in result.output


def test_dash_prints_the_file_and_writes_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["service", "import-config", str(IN_SERVICE),
                                       "--output", "-"], catch_exceptions=False)
    assert result.exit_code == 0
    settings = tomllib.loads(result.output)["agent"]
    assert settings["listen"] == "10.1.1.27:8250"
    assert settings["local_secondary_storage_path"] == "D:\\Secondary"


def test_an_existing_file_is_kept_unless_forced_then_backed_up(tmp_path: Path) -> None:
    output = tmp_path / "agent.toml"
    output.write_text('[agent]\nlisten = "127.0.0.1:8250"\n')
    refused = run(str(IN_SERVICE), "--output", str(output))
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (f"error: {output} exists; add --force to replace it "
                                      "(the old file is kept as agent.toml.bak)")
    assert output.read_text() == '[agent]\nlisten = "127.0.0.1:8250"\n'
    forced = run(str(IN_SERVICE), "--output", str(output), "--state-dir",
                 str(tmp_path / "state"), "--force")
    assert forced.exit_code == 0, forced.output
    assert load_config(output).agent.listen == "10.1.1.27:8250"
    assert (tmp_path / "agent.toml.bak").read_text() == '[agent]\nlisten = "127.0.0.1:8250"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "AgentShell.exe.config"
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_xml_fails_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    source = write(tmp_path, "<configuration><appSettings></configuration>")
    result = run(str(source), "--output", str(tmp_path / "agent.toml"))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "is not a readable XML file" in result.stderr
    assert list(tmp_path.iterdir()) == [source]


def test_another_xml_file_is_refused(tmp_path: Path) -> None:
    source = write(tmp_path, "<?xml version='1.0'?><Project><Item/></Project>")
    result = run(str(source), "--output", str(tmp_path / "agent.toml"))
    assert result.exit_code == 2
    assert "not a .NET configuration file (its root element is <Project>" in result.stderr


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = run(str(tmp_path / "nowhere.config"), "--output", str(tmp_path / "agent.toml"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot read ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_entity_expansion_is_refused(tmp_path: Path) -> None:
    source = write(tmp_path, '<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "aaaa">]>'
                             "<configuration>&a;</configuration>")
    result = run(str(source), "--output", str(tmp_path / "agent.toml"))
    assert result.exit_code == 2
    assert "is not a readable XML file" in result.stderr


SECTION = "CloudStack.Plugin.AgentShell.AgentSettings"


def settings_file(tmp_path: Path, settings: dict[str, str], pools: dict[str, str],
                  namespace: str = "") -> Path:
    rows = "".join(f'<setting name="{k}" serializeAs="String"><value>{v}</value></setting>'
                   for k, v in settings.items())
    adds = "".join(f'<add key="{k}" value="{v}"/>' for k, v in pools.items())
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    return write(tmp_path, f"<configuration{xmlns}><appSettings>{adds}</appSettings>"
                           f"<applicationSettings><{SECTION}>{rows}</{SECTION}>"
                           f"</applicationSettings></configuration>")


def test_values_that_cannot_be_carried_keep_the_defaults_and_say_why(tmp_path: Path) -> None:
    source = settings_file(
        tmp_path, {"dom0MinMemory": "lots", "port": "https", "private_ip_address": "fe80::7",
                   "RootDeviceReservedSpaceBytes": "-1", "RootDeviceName": ""},
        {"primary_storage_not-a-uuid": "\\\\fs\\p", f"primary_storage_{POOL_1}": "share",
         "SomeOtherKey": "x"})
    output, result = imported(tmp_path, source)
    agent = load_config(output).agent
    assert agent.listen == "[fe80::7]:8250"
    assert (agent.dom0_min_memory_mb, agent.root_device_reserved_bytes) == (2048, 4 * 1024**3)
    assert agent.root_device_name == "c:\\"
    for line in ("dom0MinMemory: 'lots' is not a whole number; the agent's default is kept",
                 "port: 'https' is not a TCP port; 8250 (the port the management server "
                 "uses) is kept",
                 "RootDeviceReservedSpaceBytes: negative; the agent's default is kept",
                 "RootDeviceName: empty; the agent's default is kept",
                 "appSettings primary_storage_not-a-uuid: the key does not end in a pool uuid",
                 f"appSettings primary_storage_{POOL_1}: 'share' is not a UNC path or an "
                 "absolute Windows path",
                 "appSettings SomeOtherKey: not written by the C# agent"):
        assert f"  {line}\n" in result.output
    assert not (tmp_path / "state" / "pools.json").exists()


def test_a_namespaced_configuration_is_read(tmp_path: Path) -> None:
    source = settings_file(tmp_path, {"dom0MinMemory": "3072"}, {},
                           namespace="http://schemas.microsoft.com/.NetConfiguration/v2.0")
    output, _ = imported(tmp_path, source)
    assert load_config(output).agent.dom0_min_memory_mb == 3072


@off_windows
def test_off_windows_the_file_to_write_must_be_named() -> None:
    result = run(str(IN_SERVICE))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: name the file to write with --output (on the "
                                    "Hyper-V host the default is the service's ")
    assert "hyperv-agent\\agent.toml)" in result.stderr


@given(st.text())
def test_any_text_written_as_a_toml_string_reads_back_the_same(text: str) -> None:
    assert tomllib.loads(tomltext.line("k", text))["k"] == text


def test_pool_the_agent_would_drop_when_reading_it_is_named_and_not_registered(
    tmp_path: Path,
) -> None:
    climbing = "5d6e7f80-1a2b-3c4d-8e9f-a0b1c2d3e4f5"
    source = tmp_path / "AgentShell.exe.config"
    source.write_text(IN_SERVICE.read_text().replace(
        "</appSettings>",
        f'<add key="primary_storage_{climbing}" value="\\\\fs1\\share\\..\\other" />'
        "</appSettings>"))
    _, result = imported(tmp_path, source)
    assert f"appSettings primary_storage_{climbing}" in result.output
    registry = PoolRegistry(tmp_path / "state" / "pools.json")
    assert registry.get(climbing) is None and registry.get(POOL_1) is not None
    stored = json.loads((tmp_path / "state" / "pools.json").read_text())
    assert climbing not in stored


async def test_pools_are_not_imported_under_a_running_agent_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    """An agent serving from the state directory writes pools.json from what it holds in
    memory: pools imported under it were lost at its next change (a pool registered or
    removed by the management server). The import is refused, naming what to do, and
    writes nothing; with the agent stopped it goes through."""
    agent = build_agent(load_config(None, state_dir=tmp_path / "state", backend="emulator"))
    try:
        before = (tmp_path / "state" / "pools.json").read_bytes() \
            if (tmp_path / "state" / "pools.json").exists() else None
        output = tmp_path / "agent.toml"
        result = run(str(IN_SERVICE), "--output", str(output), "--state-dir",
                     str(tmp_path / "state"))
        assert result.exit_code != 0
        assert f"the agent's state directory {tmp_path / 'state'} is in use by another " \
               f"process (PID {os.getpid()})" in result.output
        assert "hyperv-agent service stop" in result.output
        assert not output.exists()
        assert ((tmp_path / "state" / "pools.json").read_bytes()
                if (tmp_path / "state" / "pools.json").exists() else None) == before
    finally:
        await agent.close()
    imported(tmp_path)
    assert set(json.loads((tmp_path / "state" / "pools.json").read_text())) == {POOL_1, POOL_2}
