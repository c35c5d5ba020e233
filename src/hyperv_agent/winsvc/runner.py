"""The service's body, on any OS: what pywin32's ``SvcDoRun`` runs.

It reads the service's ``agent.toml``, logs everything to a rotating file, waits for
Hyper-V (vmms, then the v2 namespace) before it listens, serves until the service
manager asks it to stop, and writes start, stop and fatal errors to the event sink (the
Windows event log). A fatal error ends it with exit code 1, so that Windows' recovery
actions restart it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hyperv_agent import logs, service
from hyperv_agent.backends import prepare_state
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.errors import AgentError
from hyperv_agent.winsvc.readiness import AsyncProbe, Backoff, wait_until_ready

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where start, stop and fatal errors go (the Windows event log)."""

    def info(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


class StopSignal:
    """A stop request made on another thread (the service control handler), seen by the
    agent's event loop; a request made before the loop runs is kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._bound: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def request(self) -> None:
        with self._lock:
            self._requested = True
            if self._bound is not None:
                loop, event = self._bound
                loop.call_soon_threadsafe(event.set)

    def bind(self) -> asyncio.Event:
        """The event the running loop waits on (call inside the loop)."""
        event = asyncio.Event()
        with self._lock:
            self._bound = (asyncio.get_running_loop(), event)
            if self._requested:
                event.set()
        return event


@dataclass(frozen=True)
class ServiceRun:
    config_file: Path
    log_file: Path
    hyperv_service: AsyncProbe | None = None  # is vmms running? (not asked of the emulator)
    backoff: Backoff = field(default_factory=Backoff)


def run_service(run: ServiceRun, events: EventSink, stop: StopSignal) -> int:
    """Serve until ``stop`` is requested: 0; 1 after a fatal error (in ``events``)."""
    try:
        config = load_config(run.config_file)
    except AgentError as error:
        events.error(f"hyperv-agent cannot start: {error}")
        return 1
    with logs.to_file(run.log_file, config.agent.log_level):
        events.info(f"hyperv-agent starting: configuration {run.config_file}, backend "
                    f"{config.agent.backend}, listening on {config.agent.listen}, "
                    f"log {run.log_file}")
        problem = _serve_logged(config, run, stop)
        if problem is not None:
            events.error(f"hyperv-agent stopped on an error: {problem}")
            return 1
        events.info("hyperv-agent stopped")
        return 0


def _serve_logged(config: AgentConfig, run: ServiceRun, stop: StopSignal) -> str | None:
    try:
        asyncio.run(_serve(config, run, stop))
    except AgentError as error:
        log.error("fatal: %s", error)
        return str(error)
    except OSError as error:
        log.error("fatal: cannot listen on %s", error.strerror or error)
        return f"cannot listen on {error.strerror or error}"
    except Exception as error:  # the service must say why it died, whatever it was
        log.exception("fatal: unexpected error")
        return f"unexpected {type(error).__name__}: {error} (see {run.log_file})"
    return None


async def _hyperv_service_ready(config: AgentConfig, run: ServiceRun,
                                stop: asyncio.Event) -> bool:
    if run.hyperv_service is None or config.agent.backend == "emulator":
        return True  # the emulator is its own Hyper-V
    return await wait_until_ready("Hyper-V (vmms)", run.hyperv_service, stop, run.backoff)


async def _serve(config: AgentConfig, run: ServiceRun, stop_signal: StopSignal) -> None:
    stop = stop_signal.bind()
    if not await _hyperv_service_ready(config, run, stop):
        return
    prepare_state(config)
    agent = service.build_agent(config)
    try:
        ready = await wait_until_ready("Hyper-V's v2 namespace", agent.hyperv_problem, stop,
                                       run.backoff)
    except BaseException:
        await agent.close()
        raise
    if not ready:
        await agent.close()
        return
    await service.run_agent(agent, stop)
