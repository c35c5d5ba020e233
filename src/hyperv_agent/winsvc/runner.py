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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hyperv_agent import logs, service
from hyperv_agent.backends import prepare_state
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.connections import CannotListen
from hyperv_agent.errors import AgentError, system_said
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

    @property
    def requested(self) -> bool:
        with self._lock:
            return self._requested

    def bind(self) -> asyncio.Event:
        """The event the running loop waits on (call inside the loop)."""
        event = asyncio.Event()
        with self._lock:
            self._bound = (asyncio.get_running_loop(), event)
            if self._requested:
                event.set()
        return event


#: How often a stopping service tells the service manager it is still stopping, and the
#: wait hint it gives: the manager may take a service whose checkpoint has not moved within
#: its wait hint for hung, and the agent's stop (up to ``service.STOP_GRACE_S`` for the
#: commands in flight, then closing the backend) takes longer than one hint.
STOP_REPORT_EVERY_S = 5.0
STOP_WAIT_HINT_MS = 15_000


class StopProgress:
    """While the agent stops, ``report(wait_hint_ms)`` every ``every_s`` (the service's
    SERVICE_STOP_PENDING, pywin32 moving its checkpoint on), from a thread of its own that
    looks every ``every_s`` for a stop request, until :meth:`finish`; use it as a context
    manager around the run."""

    def __init__(self, stop: StopSignal, report: Callable[[int], None],
                 every_s: float = STOP_REPORT_EVERY_S, wait_hint_ms: int = STOP_WAIT_HINT_MS
                 ) -> None:
        self._stop, self._report = stop, report
        self._every_s, self._wait_hint_ms = every_s, wait_hint_ms
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stop-progress", daemon=True)

    def __enter__(self) -> StopProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> None:
        """Stop reporting (before the service reports anything else)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._every_s):
            if not self._stop.requested:
                continue
            try:
                self._report(self._wait_hint_ms)
            except Exception:  # the manager refused a status: the stop goes on regardless
                log.exception("cannot report the service as stopping")


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
    except CannotListen as error:
        log.error("fatal: cannot listen on %s", error.strerror or error)
        return f"cannot listen on {error.strerror or error}"
    except OSError as error:  # not a listener's: a file of the state directory, say
        said = system_said(error)
        log.error("fatal: %s", said)
        return said
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
    try:
        prepare_state(config)
        agent = service.build_agent(config)
    except OSError as error:  # a file of the state directory or a TLS file, not a listener
        raise service.cannot_start(error, config.agent.state_dir) from None
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
