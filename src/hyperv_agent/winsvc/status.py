"""``service status``: the service, the C# agent, the firewall rule, the configuration and
the backend it would use, one line each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyperv_agent.cim.localchoice import choose_for_this_host
from hyperv_agent.config import load_config
from hyperv_agent.errors import ConfigError
from hyperv_agent.winsvc import paths
from hyperv_agent.winsvc.host import RunState, ServiceHost, ServiceState


@dataclass(frozen=True)
class Status:
    lines: tuple[str, ...]
    running: bool  # the agent's service is running


def status(host: ServiceHost | None, config_file: Path) -> Status:
    """What ``host`` (None: no service manager here) and ``config_file`` say."""
    lines: list[str] = []
    running = False
    if host is None:
        lines.append("service manager: only on the Windows host")
    else:
        state = host.service_state(paths.SERVICE_NAME)
        running = state is not None and state.run is RunState.RUNNING
        lines.append(f"service {paths.SERVICE_NAME}: {_describe(state)}")
        lines += [f"C# agent service {name}: {_describe(host.service_state(name))}"
                  for name in paths.CSHARP_SERVICES]
        present = host.firewall_rule_exists(paths.FIREWALL_RULE)
        lines.append(f"firewall rule \"{paths.FIREWALL_RULE}\": "
                     f"{'present' if present else 'missing'}")
    lines += _configuration(config_file)
    return Status(tuple(lines), running)


def _describe(state: ServiceState | None) -> str:
    if state is None:
        return "not installed"
    account = f", as {state.account}" if state.account else ""
    return f"{state.run.name.lower()} (start {state.start.value}{account})"


def _configuration(config_file: Path) -> list[str]:
    if not config_file.exists():
        return [f"configuration {config_file}: missing (the agent's defaults apply)"]
    try:
        config = load_config(config_file)
    except ConfigError as error:
        return [f"configuration {config_file}: {error}"]
    lines = [f"configuration {config_file}: valid; listen {config.agent.listen}, "
             f"state {config.agent.state_dir}"]
    backend = config.agent.backend
    if backend != "auto":
        return [*lines, f"backend: {backend}"]
    try:
        choice = choose_for_this_host()
    except ConfigError as error:
        return [*lines, f"backend: auto: {error}"]
    return [*lines, f"backend: auto -> {choice.backend} ({choice.reason})"]
