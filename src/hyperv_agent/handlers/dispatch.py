"""The handler table, and the ONE place an exception becomes a failed Answer.

Every command the protocol knows is decoded here. Every failure is answered here, with
the command's own answer class (the management server casts the answer to it and reads
its fields also when ``result`` is false), built by ``codec.failed_answer`` from the
decoded command, or from the fields of a body that did not decode: a malformed body
(``details`` names the field path), a known command without a handler ("not supported
by this agent yet"), an ``AgentError`` from a handler (its message), and anything else
(logged with its traceback, answered with a generic message; never a traceback on the
wire). Handlers answer successes (and the few non-failures with ``result`` false, such as
CheckOnHost's "host is alive"); they raise ``AgentError`` for everything that failed.

Every handler runs within its command's bound (``jobs.command_bound``): no wait for
Hyper-V inside it outlasts what the management server waits for the answer (the
command's ``wait``), so a slow host fails the command, in its own answer class, while
the MS still listens, instead of answering after the MS has failed it.

The table holds a ``Route`` per command: the command class its handler takes and the
handler. Dispatch narrows the decoded command to that class before it calls the handler,
so handlers receive their command already typed and never check its type themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from hyperv_agent import logs
from hyperv_agent.cloudstack import codec
from hyperv_agent.cloudstack.answers import Answer
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.errors import AgentError
from hyperv_agent.hyperv import jobs
from hyperv_agent.metrics import Metrics, result_word

log = logging.getLogger("hyperv_agent.command")

#: What a handler returns: one answer, several (Startup), or bytes already encoded
#: (the bare-array VM state report).
Result: TypeAlias = Answer | Sequence[Answer] | bytes
#: A handler of any command.
Handler = Callable[[Command], Awaitable[Result]]

_C = TypeVar("_C", bound=Command)


@dataclass(frozen=True)
class Route(Generic[_C]):
    """A handler and the command class it takes: dispatch calls ``handler`` only with a
    command of class ``command`` (a subclass included)."""

    command: type[_C]
    handler: Callable[[_C], Awaitable[Result]]


#: The handler table: the route of each command, by the command's Java class name.
Routes: TypeAlias = dict[str, Route[Any]]
RoundTripCounter = Callable[[], AbstractContextManager[list[int]]]


def _no_counter() -> AbstractContextManager[list[int]]:
    return nullcontext([0])


@dataclass(frozen=True)
class Outcome:
    body: bytes
    ok: bool
    details: str
    vm: str = ""


class Dispatch:
    """Decodes, runs the handler, encodes; never raises."""

    def __init__(
        self,
        handlers: Mapping[str, Route[Any] | Handler],
        metrics: Metrics | None = None,
        round_trips: RoundTripCounter = _no_counter,
    ) -> None:
        self._routes: Routes = {fqcn: entry if isinstance(entry, Route) else Route(Command, entry)
                                for fqcn, entry in handlers.items()}
        self._metrics = metrics
        self._round_trips = round_trips
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Commands being answered now."""
        return self._in_flight

    async def finished(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` until no command is being answered; how many still
        are."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._in_flight

    @property
    def routes(self) -> Routes:
        """A copy of the handler table."""
        return dict(self._routes)

    @property
    def handlers(self) -> Mapping[str, Callable[..., Awaitable[Result]]]:
        """The handler of each command, by Java class name."""
        return {fqcn: route.handler for fqcn, route in self._routes.items()}

    def knows(self, fqcn: str) -> bool:
        return fqcn in self._routes or codec.is_known(fqcn)

    async def __call__(self, fqcn: str, body: bytes) -> bytes:
        logs.new_request_id()
        started = time.perf_counter()
        self._in_flight += 1
        self._idle.clear()
        try:
            with self._round_trips() as spent:
                outcome = await self._answer(fqcn, body)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        elapsed = time.perf_counter() - started
        self._record(fqcn, outcome, elapsed, spent[0])
        return outcome.body

    async def _answer(self, fqcn: str, body: bytes) -> Outcome:
        short = fqcn.rsplit(".", 1)[-1]
        try:
            command = codec.decode_command(fqcn, body)
        except codec.CodecError as error:
            return _failed(fqcn, f"{short}: malformed request: {error}",
                           codec.raw_command(fqcn, body, error))
        route = self._routes.get(fqcn)
        if route is None:
            outcome = _failed(fqcn, f"{short} is not supported by this agent yet", command)
        elif not isinstance(command, route.command):
            outcome = _failed(fqcn, f"{short} failed: its handler takes a "
                              f"{route.command.__name__}, not a {type(command).__name__}",
                              command)
        else:
            outcome = await self._run(short, fqcn, route, command)
        return dataclasses.replace(outcome, vm=vm_of(command))

    async def _run(self, short: str, fqcn: str, route: Route[Any], command: Command) -> Outcome:
        try:
            with jobs.command_bound(short, command.answer_wait_s):
                return _encoded(await route.handler(command))
        except AgentError as error:
            return _failed(fqcn, f"{short} failed{error.joined_by}{error}", command,
                           error.answer_fields)
        except Exception as error:
            log.exception("%s failed unexpectedly", short)
            return _failed(fqcn, f"{short} failed: internal error ({type(error).__name__})",
                           command)

    def _record(self, fqcn: str, outcome: Outcome, elapsed_s: float, round_trips: int) -> None:
        log.info("%s vm=%s result=%s duration_ms=%.1f round_trips=%d%s",
                 fqcn.rsplit(".", 1)[-1], outcome.vm or "-", result_word(outcome.ok),
                 elapsed_s * 1000, round_trips,
                 f" details={outcome.details}" if outcome.details else "")
        if self._metrics is not None:
            self._metrics.observe(fqcn, outcome.ok, elapsed_s, round_trips)


def vm_of(command: Command) -> str:
    """The VM a command is about, for the log line ("" when it names none)."""
    for attribute in ("vm_name",):
        value = getattr(command, attribute, None)
        if isinstance(value, str):
            return value
    name = getattr(getattr(command, "vm", None), "name", None)
    return name if isinstance(name, str) else ""


def _failed(fqcn: str, details: str, source: Command | Mapping[str, Any] | None,
            fields: Mapping[str, str] | None = None) -> Outcome:
    """The failed answer of the command ``fqcn``, of its own class, with what that class
    echoes from ``source`` and the ``fields`` the failure names; secrets a malformed body
    carried never reach the wire."""
    details = logs.redact(details)
    answer = codec.failed_answer(fqcn, details, source, fields)
    return Outcome(codec.encode_answers([answer]), False, details)


def _encoded(result: Result) -> Outcome:
    if isinstance(result, bytes):
        return Outcome(result, True, "")
    answers = list(_as_list(result))
    ok = all(getattr(answer, "result", True) is not False for answer in answers)
    details = "" if ok else str(getattr(answers[0], "details", "") or "")
    return Outcome(codec.encode_answers(answers), ok, details)


def _as_list(result: Answer | Sequence[Answer]) -> Iterator[Answer]:
    if isinstance(result, Sequence):
        yield from result
    else:
        yield result
