"""The Windows tools' command lines and how their answers read."""

from __future__ import annotations

import codecs
import sys
from collections.abc import Iterator

import pytest

from hyperv_agent.winsvc import tools
from hyperv_agent.winsvc.host import FirewallRule

# `schtasks /Query /FO CSV /NH` on a host of the C# agent: root-folder tasks first, a task
# with two triggers listed twice, tasks in sub-folders.
LISTING = """\
"\\cloudstack-heartbeat-4b8d1c20-7e63-3f0a-9d45-1a2b3c4d5e6f","11/3/2026 10:41:00 AM","Ready"
"\\cloudstack-heartbeat-9C2F3E55-0B1A-3D6E-A0F4-6D2B8E71C4A9","11/3/2026 10:41:00 AM","Ready"
"\\cloudstack-heartbeat-9C2F3E55-0B1A-3D6E-A0F4-6D2B8E71C4A9","N/A","Ready"
"\\GoogleUpdateTaskMachineCore","11/4/2026 9:12:00 AM","Ready"

"\\Microsoft\\Windows\\Defrag\\ScheduledDefrag","N/A","Ready"
"\\Microsoft\\Windows\\cloudstack-heartbeat-in-a-folder","N/A","Disabled"
"""


def test_heartbeat_tasks_are_found_once_each_with_their_folder() -> None:
    assert tools.task_names(LISTING, "cloudstack-heartbeat-") == (
        "\\cloudstack-heartbeat-4b8d1c20-7e63-3f0a-9d45-1a2b3c4d5e6f",
        "\\cloudstack-heartbeat-9C2F3E55-0B1A-3D6E-A0F4-6D2B8E71C4A9",
        "\\Microsoft\\Windows\\cloudstack-heartbeat-in-a-folder",
    )


def test_an_empty_listing_has_no_tasks() -> None:
    assert tools.task_names("", "cloudstack-heartbeat-") == ()


def test_firewall_rule_is_one_argument_per_setting() -> None:
    rule = FirewallRule("hyperv-agent-cloudstack-tcp-8250", 8250)
    assert tools.firewall_add(rule) == [
        "netsh", "advfirewall", "firewall", "add", "rule",
        "name=hyperv-agent-cloudstack-tcp-8250", "dir=in", "action=allow", "protocol=TCP",
        "localport=8250"]
    assert tools.shown(tools.firewall_show(rule.name)) == (
        "netsh advfirewall firewall show rule name=hyperv-agent-cloudstack-tcp-8250")


def test_restart_on_failure_restarts_three_times_and_counts_error_stops() -> None:
    assert [tools.shown(argv) for argv in tools.restart_on_failure("hyperv-agent", 60)] == [
        "sc.exe failure hyperv-agent reset= 86400 actions= "
        "restart/60000/restart/60000/restart/60000",
        "sc.exe failureflag hyperv-agent 1"]


def test_a_task_name_with_spaces_stays_one_argument() -> None:
    assert tools.shown(tools.task_delete("\\My Task")) == 'schtasks /Delete /TN "\\My Task" /F'


@pytest.fixture
def german_oem_code_page() -> Iterator[None]:
    """Python's ``oem`` codec, which exists on Windows only, as a German host's (850)."""
    def search(name: str) -> codecs.CodecInfo | None:
        return codecs.lookup("cp850") if name == "oem" else None

    codecs.register(search)
    try:
        yield
    finally:
        codecs.unregister(search)


# netsh on a German host, no rule of that name: "No rules match the specified criteria."
NO_RULE = "Es wurden keine Regeln gefunden, die den angegebenen Kriterien entsprechen. Ä Ü ß"


@pytest.mark.usefixtures("german_oem_code_page")
def test_a_tools_answer_is_read_in_the_oem_code_page_it_is_written_in() -> None:
    """A console tool writes into a pipe in the OEM code page (850 on a German host), not
    in the ANSI one (1252), in which its Ä Ü ß would read as Ž š á."""
    writes = f"import sys; sys.stdout.buffer.write({NO_RULE.encode('cp850')!r})"
    done = tools.run([sys.executable, "-c", writes], timeout_s=30)
    assert (done.returncode, done.stdout) == (0, NO_RULE)
    assert NO_RULE.encode("cp850").decode("cp1252") != NO_RULE  # what the ANSI page reads
