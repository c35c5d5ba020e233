"""The CIM seam over WS-Management: a Hyper-V host driven through its WinRM service.

* ``query``: one Enumerate on ``…/<namespace>/*`` with the WQL filter, optimized (the
  first batch comes in the answer), then Pull until EndOfSequence. Full instances carry
  their path in ``cim:Location``; a projected result (``SELECT a, b``) carries none, and
  gets its path from its key values when the projection includes every key, as in WMI.
* ``get``: a Get with the path's selectors. ``invoke``: ``<p:Method_INPUT>`` to the
  class's resource URI with the instance's selectors (none for a static method).
* Values are typed from the class declaration (a CIM-XML class Get, once per class for
  the life of the backend); ``spawn`` always fetches it, as SpawnInstance_ reads the class.
* Limits: MaxEnvelopeSize on every request; an array argument of a method known to work
  item by item is sent in batches that fit; a bounded number of requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from pypsrp.wsman import OptionSet

from hyperv_agent.cim import cimxml
from hyperv_agent.cim.api import (
    V2_NAMESPACE,
    Cim,
    CimInstance,
    InScalar,
    InValue,
    MethodResult,
    ObjectPath,
    OutValue,
    namespace_name,
)
from hyperv_agent.cim.classdecl import (
    CimClass,
    MethodDecl,
    ParameterDecl,
    RawInstance,
    RawValue,
    typed_instance,
    typed_value,
)
from hyperv_agent.cim.wsman import envelope
from hyperv_agent.cim.wsman.classxml import read_classes
from hyperv_agent.cim.wsman.config import WinrmLimits, read_config
from hyperv_agent.cim.wsman.names import (
    CLASS_METADATA,
    CONFIG,
    ENUMERATE,
    GET,
    NAMESPACE_SELECTOR,
    PULL,
    RELEASE,
    all_classes_uri,
    class_uri,
    method_action,
)
from hyperv_agent.cim.wsman.reading import read_instance
from hyperv_agent.cim.wsman.settings import WsmanSettings
from hyperv_agent.cim.wsman.transport import NameSelectors, PathSelectors, Transport
from hyperv_agent.errors import (
    CimEnumerationExpired,
    CimError,
    CimInvalidParameter,
    CimResponseTooLarge,
    CimTimedOut,
    CimUnreachable,
)

_SELECT = re.compile(r"\s*SELECT\s+(?P<columns>.+?)\s+FROM\s+(?P<class>[A-Za-z_]\w*)",
                     re.IGNORECASE | re.DOTALL)
MAX_ELEMENTS = 32000  # WinRM's MaxBatchItems; the envelope size bounds a batch first
# An enumeration that does not end within these is refused (a host or a proxy that never
# sends EndOfSequence): far beyond a Hyper-V host's 1,024 VMs with all their settings.
MAX_PULLS = 10_000
MAX_ENUMERATED = 2_000_000
# Pulls in a row answered w:TimedOut before the enumeration is given up (our choice: the
# provider produced nothing for this many OperationTimeouts).
PULL_TIMEOUTS = 4
#: How long ``close`` waits for the Releases of queries given up still under way: a
#: host that answers lets their contexts go within it; one that does not (hung) would
#: hold the close for a request's whole deadline, so they are then cancelled.
RELEASE_GRACE_S = 3.0


@dataclass(frozen=True)
class Batched:
    """A method that works item by item on an array argument, so a long array can be sent
    in batches whose out-arrays are concatenated in order."""

    argument: str
    result: str
    batch_size: int


#: (class, method) -> how to batch it. GetSummaryInformation answers one summary per
#: SettingData path, in order, and changes nothing.
BATCHED: Mapping[tuple[str, str], Batched] = {
    ("msvm_virtualsystemmanagementservice", "getsummaryinformation"):
        Batched("SettingData", "SummaryInformation", 500),
}


class WsmanCim(Cim):
    """One Hyper-V host's CIM namespaces over WinRM."""

    def __init__(self, settings: WsmanSettings, transport: Transport | None = None,
                 batched: Mapping[tuple[str, str], Batched] = BATCHED) -> None:
        self.settings = settings
        self.transport = transport or Transport(settings)
        self.batched = batched
        self._classes: dict[tuple[str, str], CimClass] = {}
        self._class_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._batch_sizes: dict[str, int] = {}  # method -> batch size that fits
        self._releasing: set[asyncio.Future[None]] = set()  # Releases of queries given up

    @property
    def requests(self) -> int:
        """SOAP requests sent so far (class metadata included)."""
        return self.transport.requests

    async def close(self) -> None:
        """Close the transport, once the Releases of queries given up still under way
        have ended (the host's contexts let go, not left open against the account's
        quota until they expire), or after RELEASE_GRACE_S, cancelled."""
        if self._releasing:
            _, late = await asyncio.wait(set(self._releasing), timeout=RELEASE_GRACE_S)
            for releasing in late:
                releasing.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.to_thread(self.transport.close)

    async def service_limits(self) -> WinrmLimits:
        """The WinRM service's limits, read from its configuration resource (one Get).
        CimAccessDenied for an account that is not an administrator of the host."""
        return read_config(await self.transport.send(GET, CONFIG))

    # --- class declarations ---------------------------------------------------------------

    async def get_class(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimClass:
        namespace = namespace_name(namespace)
        key = (namespace.lower(), class_name.lower())
        cached = self._classes.get(key)
        if cached is not None:
            return cached
        async with self._class_locks.setdefault(key, asyncio.Lock()):
            if key not in self._classes:
                self._classes[key] = await self._fetch_class(class_name, namespace)
        return self._classes[key]

    def known_classes(self) -> list[CimClass]:
        """The class declarations read so far."""
        return list(self._classes.values())

    def learn_classes(self, declarations: Iterable[CimClass]) -> None:
        """Take declarations read by another backend of the same host (they do not
        change while the host runs), saving one class Get each."""
        for decl in declarations:
            self._classes[(decl.namespace.lower(), decl.name.lower())] = decl

    async def _fetch_class(self, class_name: str, namespace: str) -> CimClass:
        options = OptionSet()
        options.add_option("IncludeInheritanceHierarchy", "true", {"Type": "xs:boolean"})
        selectors = NameSelectors({NAMESPACE_SELECTOR: namespace.replace("\\", "/"),
                                   "ClassName": class_name})
        body = await self.transport.send(GET, CLASS_METADATA, selectors=selectors,
                                         options=options)
        decl = read_classes(list(body), namespace)
        self._classes[(namespace.lower(), decl.name.lower())] = decl
        return decl

    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        decl = await self._fetch_class(class_name, namespace)
        return decl.new_instance()

    # --- reads ----------------------------------------------------------------------------

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        namespace = namespace_name(namespace)
        select = _SELECT.match(wql)
        columns = select.group("columns").strip() if select is not None else "*"
        from_class = select.group("class") if select is not None else None
        raw = await self._enumerate(wql, namespace)
        if columns != "*":  # a projection: the columns asked for, null when not rendered
            nulls: dict[str, RawValue] = {c.strip(): None for c in columns.split(",")}
            raw = [RawInstance(r.class_name, r.namespace, {**nulls, **r.values}, r.path)
                   for r in raw]
        return [await self._typed(item, from_class, columns != "*", namespace) for item in raw]

    async def _enumerate(self, wql: str, namespace: str) -> list[RawInstance]:
        """The query's instances. When the host no longer knows the enumeration between
        two pulls (it drops a context EnumerationTimeoutms, 60 s, after its last answer:
        a Pull that waited that long for a free request slot, or a restart of the
        service), the query is read again from its start, once: it changes nothing. So it
        is when a Pull's connection was reset before any byte of its answer (the host
        restarted): a Pull is never sent twice (transport.REPEATABLE)."""
        try:
            return await self._enumerate_once(wql, namespace)
        except CimEnumerationExpired:
            return await self._enumerate_once(wql, namespace)
        except CimUnreachable as error:
            if not getattr(error, "reset_unanswered", False):
                raise
            return await self._enumerate_once(wql, namespace)

    async def _enumerate_once(self, wql: str, namespace: str) -> list[RawInstance]:
        uri = all_classes_uri(namespace)
        body = await self.transport.send(ENUMERATE, uri, envelope.enumerate_body(wql,
                                                                                 MAX_ELEMENTS))
        batch = envelope.read_batch(body)
        items = list(batch.items)
        context = batch.context  # the one the host holds, until the sequence ended
        pulls = 0
        where = self.transport.settings.where
        try:
            while not batch.ended:
                if batch.context is None:  # taken as the end, instances would go missing
                    answered = "a Pull" if pulls else "the Enumerate"
                    raise CimError(f"{where}: the answer to {answered} of {wql!r} neither "
                                   "ends the enumeration (EndOfSequence) nor names the "
                                   "context to go on with; its answer is not used")
                context = batch.context
                if pulls >= MAX_PULLS or len(items) >= MAX_ENUMERATED:
                    raise CimError(f"{where}: the enumeration of {wql!r} did not end after "
                                   f"{pulls} pulls and {len(items)} instances; its answer is "
                                   "not used")
                body = await self._pull(uri, context)
                pulls += 1
                batch = envelope.read_batch(body)
                items.extend(batch.items)
        except (CimError, asyncio.CancelledError) as error:  # the host's context is let go
            # at once, not left to its timeout holding one of the account's concurrent
            # operations (MaxConcurrentOperationsPerUser), unless the host said it no
            # longer has it; the caller is not kept waiting for it when it gave the query
            # up, nor when the host answered nothing by the deadline (hung: it would not
            # answer the Release either)
            if not (batch.ended or context is None
                    or isinstance(error, CimEnumerationExpired)):
                if isinstance(error, asyncio.CancelledError) or (
                        isinstance(error, CimUnreachable)
                        and not getattr(error, "reset_unanswered", False)):
                    self._release_later(uri, context)
                else:
                    await self._release(uri, context)
            raise
        return items

    async def _pull(self, uri: str, context: str) -> Element:
        """The answer to a Pull. A ``w:TimedOut`` fault (no items ready within the
        OperationTimeout: a slow provider) leaves the enumeration context valid
        (WS-Enumeration, Pull), so the same Pull is sent again, up to PULL_TIMEOUTS times
        in a row."""
        timeouts = 0
        while True:
            try:
                return await self.transport.send(PULL, uri, envelope.pull_body(context,
                                                                               MAX_ELEMENTS))
            except CimTimedOut:
                timeouts += 1
                if timeouts >= PULL_TIMEOUTS:
                    raise

    async def _release(self, uri: str, context: str) -> None:
        with contextlib.suppress(CimError):  # the host drops it on its own after a while
            await self.transport.send(RELEASE, uri, envelope.release_body(context))

    def _release_later(self, uri: str, context: str) -> None:
        """The Release of ``context`` sent in a task of its own (kept until it is done)."""
        releasing = asyncio.ensure_future(self._release(uri, context))
        self._releasing.add(releasing)
        releasing.add_done_callback(self._releasing.discard)

    async def _typed(self, raw: RawInstance, from_class: str | None, projected: bool,
                     namespace: str) -> CimInstance:
        class_name = raw.class_name or from_class
        if class_name is None:
            raise CimError("a query result names no class")
        decl = await self.get_class(class_name, raw.namespace if raw.class_name else namespace)
        nested = await self._nested_classes(raw.values.values())
        return typed_instance(decl, raw, complete=not projected, nested=nested)

    async def _nested_classes(self, found: Iterable[RawValue]) -> dict[str, CimClass]:
        names: dict[tuple[str, str], None] = {}
        for value in found:
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, RawInstance) and item.class_name:
                    names[(item.namespace, item.class_name)] = None
        return {name.lower(): await self.get_class(name, namespace)
                for namespace, name in names}

    async def get(self, path: ObjectPath) -> CimInstance:
        decl = await self.get_class(path.class_name, path.namespace)
        body = await self.transport.send(GET, class_uri(path.namespace, path.class_name),
                                         selectors=PathSelectors(path) if path.keys else None)
        element = next(iter(body), None)
        if element is None:
            raise CimError(f"the answer to a Get of {path} holds no instance")
        raw = read_instance(element)
        if raw.class_name and raw.class_name.lower() != decl.name.lower():
            decl = await self.get_class(raw.class_name, raw.namespace)
        instance = typed_instance(decl, raw, nested=await self._nested_classes(
            raw.values.values()))
        return instance if instance.path is not None else _with_path(instance, path)

    # --- methods --------------------------------------------------------------------------

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        decl = await self.get_class(path.class_name, path.namespace)
        method_decl = decl.method(method)
        arguments = dict(params or {})
        batched = self.batched.get((decl.name.lower(), method_decl.name.lower()))
        if batched is not None:
            return await self._invoke_batched(path, method_decl, arguments, batched)
        return await self._invoke_once(path, method_decl, arguments)

    async def _invoke_once(self, path: ObjectPath, method: MethodDecl,
                           params: Mapping[str, InValue]) -> MethodResult:
        body = envelope.input_body(path.namespace, path.class_name, method, params,
                                   self.to_embedded)
        answer = await self.transport.send(
            method_action(path.namespace, path.class_name, method.name),
            class_uri(path.namespace, path.class_name), body,
            selectors=PathSelectors(path) if path.keys else None)
        return_value, raw = envelope.read_output(answer, method.name)
        return MethodResult.build(return_value, await self._outputs(method, raw))

    async def _invoke_batched(self, path: ObjectPath, method: MethodDecl,
                              params: dict[str, InValue], batched: Batched) -> MethodResult:
        """Batches of at most ``batch_size`` items; a batch whose answer overflows the
        envelope is halved and sent again, and the smaller size kept for this method."""
        items = _argument(params, batched.argument)
        if items is None:
            return await self._invoke_once(path, method, params)
        size = min(len(items), self._batch_sizes.get(method.name.lower(), batched.batch_size))
        results: list[CimInstance] = []
        last, start = MethodResult.build(0, {}), 0
        while start < len(items):
            chunk = {k: v for k, v in params.items() if k.lower() != batched.argument.lower()}
            chunk[batched.argument] = list(items[start:start + size])
            try:
                last = await self._invoke_once(path, method, chunk)
            except CimResponseTooLarge:
                if size == 1:
                    raise
                size = self._batch_sizes[method.name.lower()] = max(1, size // 2)
                continue
            if last.return_value != 0:
                return last
            results.extend(last.instances(batched.result))
            start += size
        out: dict[str, OutValue] = {**last.out, batched.result: tuple(results)}
        return MethodResult.build(0, out)

    async def _outputs(self, method: MethodDecl, raw: Mapping[str, RawValue]
                       ) -> dict[str, OutValue]:
        nested = await self._nested_classes(raw.values())
        out: dict[str, OutValue] = {}
        for name, value in raw.items():
            param = method.parameter(name)
            out[param.name if param else name] = _out_value(param, value, name, nested)
        for param in method.parameters:  # an empty array is rendered as nothing at all
            if param.direction == "out" and param.is_array and param.name not in out:
                out[param.name] = ()
        return out

    # --- embedded instances ---------------------------------------------------------------

    def to_embedded(self, instance: CimInstance) -> str:
        return cimxml.write_instance(instance)

    def parse_embedded(self, text: str) -> CimInstance:
        class_name, props = cimxml.read_instance(text)
        known = next((c for (_, name), c in self._classes.items()
                      if name == class_name.lower()), None)
        if known is None:
            return CimInstance.build(class_name, props)
        return CimInstance.build(known.name, props, None, known.namespace, known.superclasses)


def _argument(params: Mapping[str, InValue], name: str) -> Sequence[InScalar] | None:
    value = next((v for k, v in params.items() if k.lower() == name.lower()), None)
    if value is None or isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return None
    return value


def _out_value(param: ParameterDecl | None, value: RawValue, name: str,
               nested: Mapping[str, CimClass]) -> OutValue:
    if param is None:
        return _untyped_out(value)
    if param.cim_type == "reference":
        return _paths(value, param.is_array, name)
    typed = typed_value("string" if param.cim_type == "object" else param.cim_type,
                        param.is_array, value, name, nested)
    return typed  # type: ignore[return-value]


def _paths(value: RawValue, is_array: bool, name: str) -> OutValue:
    items = value if isinstance(value, tuple) else (() if value is None else (value,))
    paths = []
    for item in items:
        if isinstance(item, ObjectPath):
            paths.append(item)
        elif isinstance(item, str) and item:
            paths.append(ObjectPath.parse(item))
        else:
            raise CimInvalidParameter(f"out-parameter {name} is not a reference")
    if is_array:
        return tuple(paths) if value is not None else None
    return paths[0] if paths else None


def _untyped_out(value: RawValue) -> OutValue:
    if isinstance(value, RawInstance):
        raise CimError(f"an undeclared out-parameter holds an instance of {value.class_name}")
    if isinstance(value, tuple):
        return tuple(str(item) for item in value)
    return value if value is None or isinstance(value, str | ObjectPath) else str(value)


def _with_path(instance: CimInstance, path: ObjectPath) -> CimInstance:
    return CimInstance(instance.class_name, instance.properties, path, instance.namespace,
                       instance.superclasses)
