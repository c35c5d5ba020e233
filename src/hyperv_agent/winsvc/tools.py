"""The Windows tools the service's steps run, as argument lists, how they are run and how
their answers read (in the OEM code page): the one home of every ``netsh``, ``sc.exe`` and
``schtasks`` command line the agent runs (other steps go through pywin32; their dry-run
lines are equivalents to type).

Arguments are lists (never a shell string), built only from the agent's own constants;
the dry run shows them as Windows would see them (:func:`shown`).
"""

from __future__ import annotations

import csv
import io
import subprocess

from hyperv_agent.winsvc.host import FirewallRule

RESET_PERIOD_S = 86400  # the failure count starts again after a day without failures
#: What ``netsh``, ``sc.exe`` and ``schtasks`` write into a pipe: text in the OEM code page
#: (850 on a German or French host, 437 on an English one), as console programs do, not
#: the ANSI code page (1252) that ``text=True`` decodes by default. Python's ``oem`` codec
#: (Windows only) is CP_OEMCP. A console switched with ``chcp`` is not followed: the
#: service's steps run these tools for their exit status, task names and error lines,
#: and the OEM code page is what they write with the console's default.
OUTPUT_ENCODING = "oem"


def shown(argv: list[str]) -> str:
    """``argv`` as one Windows command line."""
    return subprocess.list2cmdline(argv)


def run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run one of these tools and read what it says (:data:`OUTPUT_ENCODING`; a byte it
    does not map becomes U+FFFD). OSError and TimeoutExpired are the caller's."""
    return subprocess.run(argv, capture_output=True, encoding=OUTPUT_ENCODING,
                          errors="replace", timeout=timeout_s, check=False)


def firewall_show(name: str) -> list[str]:
    return ["netsh", "advfirewall", "firewall", "show", "rule", f"name={name}"]


def firewall_add(rule: FirewallRule) -> list[str]:
    return ["netsh", "advfirewall", "firewall", "add", "rule", f"name={rule.name}",
            "dir=in", "action=allow", "protocol=TCP", f"localport={rule.port}"]


def firewall_delete(name: str) -> list[str]:
    return ["netsh", "advfirewall", "firewall", "delete", "rule", f"name={name}"]


def restart_on_failure(name: str, delay_s: int) -> list[list[str]]:
    """``sc.exe failure`` (restart three times, ``delay_s`` apart) and ``sc.exe
    failureflag`` (also when the service stops with an error, not only when it crashes)."""
    action = f"restart/{delay_s * 1000}"
    return [["sc.exe", "failure", name, "reset=", str(RESET_PERIOD_S), "actions=",
             "/".join([action] * 3)],
            ["sc.exe", "failureflag", name, "1"]]


def task_list() -> list[str]:
    return ["schtasks", "/Query", "/FO", "CSV", "/NH"]


def task_delete(name: str) -> list[str]:
    return ["schtasks", "/Delete", "/TN", name, "/F"]


def task_names(listing: str, prefix: str) -> tuple[str, ...]:
    """Names (as ``schtasks /Query /FO CSV /NH`` prints them, with their folder) of the
    tasks whose own name starts with ``prefix``, once each, in order."""
    found: list[str] = []
    for row in csv.reader(io.StringIO(listing)):
        if not row or not row[0].strip():
            continue
        name = row[0].strip()
        if name.rpartition("\\")[2].lower().startswith(prefix.lower()) and name not in found:
            found.append(name)
    return tuple(found)
