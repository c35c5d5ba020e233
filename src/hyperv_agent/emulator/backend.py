"""The emulator as a CIM backend: ``cim.api.Cim`` answered from an ``EmulatedHost``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from hyperv_agent.cim import cimxml
from hyperv_agent.cim.api import (
    V2_NAMESPACE,
    Cim,
    CimInstance,
    CimProperty,
    CimValue,
    InValue,
    MethodResult,
    ObjectPath,
    OutValue,
    coerce_value,
    namespace_name,
)
from hyperv_agent.cim.classdecl import CimClass, MethodDecl, ParameterDecl
from hyperv_agent.emulator import (
    associations,
    classes,
    jobs,
    model,
    services,
    wqlindex,
    wqlparse,
)
from hyperv_agent.emulator.calls import Arg, Call, MethodError, instance_of
from hyperv_agent.emulator.codes import ReturnCode
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.host import Clock, EmulatedHost
from hyperv_agent.emulator.instruments import Faults, JobFault, RoundTrips
from hyperv_agent.emulator.jobs import expired, is_job, new_job
from hyperv_agent.emulator.schema import (
    CLASSES,
    ClassDef,
    concrete_classes,
    lookup,
)
from hyperv_agent.emulator.services import image
from hyperv_agent.emulator.store import Record, Transaction
from hyperv_agent.errors import (
    CimInvalidClass,
    CimInvalidMethod,
    CimInvalidParameter,
    CimInvalidProperty,
    CimInvalidQuery,
    CimNotFound,
)

_PSEUDO = {"__path", "__class", "__relpath"}
_T = TypeVar("_T")


class EmulatorCim(Cim):
    """An in-process Hyper-V host behind the CIM seam.

    Each primitive counts itself, waits out the latency model, then does its work on the
    emulator's thread (``worker``), so the caller's event loop is never blocked by it.
    """

    def __init__(self, host: EmulatedHost) -> None:
        self.host = host

    @classmethod
    def open(cls, config: EmulatorConfig, clock: Clock | None = None) -> EmulatorCim:
        return cls(EmulatedHost(config, clock) if clock else EmulatedHost(config))

    @property
    def faults(self) -> Faults:
        return self.host.faults

    def round_trips(self) -> RoundTrips:
        return self.host.counters.snapshot()

    async def close(self) -> None:
        def close() -> None:
            jobs.forget(self.host)
            self.host.close()

        await self.host.worker.run(close)

    async def _primitive(self, name: str | None) -> None:
        """Count a round trip (unless the work decides what it is) and wait out its
        modelled latency."""
        if name is not None:
            self.host.counters.add(name)
        delay = self.host.config.latency.call_s
        if delay > 0:
            await asyncio.sleep(delay)

    async def _work(self, work: Callable[[], _T]) -> _T:
        def settled() -> _T:
            jobs.begin_due(self.host)  # what queued jobs do as they begin is seen here
            return work()

        return await self.host.worker.run(settled)

    # --- reads ----------------------------------------------------------------------------

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        namespace = namespace_name(namespace)
        parsed = wqlparse.parse(wql)
        if isinstance(parsed, wqlparse.SelectQuery):
            select = parsed
            await self._primitive("query")
            return await self._work(lambda: self._select(select, namespace))
        await self._primitive("associators")
        if isinstance(parsed, wqlparse.AssociatorsQuery):
            associators = parsed
            return await self._work(lambda: self._associators(associators, namespace))
        references = parsed
        return await self._work(lambda: self._references(references, namespace))

    def _select(self, query: wqlparse.SelectQuery, namespace: str) -> list[CimInstance]:
        classes = self._classes(query.class_name, namespace)
        wanted = [p for p in query.properties if p.lower() not in _PSEUDO]
        names = set(wanted)
        if query.where is not None:
            names |= wqlparse.referenced_properties(query.where)
        _check_properties(classes, names)
        txn = self.host.store.transaction()
        results = []
        probes = self.host.store.probes
        candidates = model.in_listing_order(classes, list(wqlindex.candidates(
            txn, classes, query.where, model.seen_as_stored, model.owner_probe)))
        self.host.counters.add("examined", len(candidates))
        self.host.counters.add("probed", self.host.store.probes - probes)
        for record in candidates:
            if is_job(record) and expired(record, self.host.clock()):
                continue
            if not model.present(txn, record):
                continue
            instance = self._view(txn, record)
            if query.where is None or wqlparse.evaluate(query.where, _lookup(instance)):
                results.append(_project(instance, wanted))
        return results

    def _classes(self, class_name: str, namespace: str) -> tuple[ClassDef, ...]:
        classes = concrete_classes(class_name, namespace)
        if not classes:
            raise CimInvalidClass(f"no class {class_name} in namespace {namespace}")
        return classes

    def _view(self, txn: Transaction, record: Record) -> CimInstance:
        return instance_of(record, model.computed(self.host, txn, record), self.host.name)

    def _associators(self, query: wqlparse.AssociatorsQuery, namespace: str
                     ) -> list[CimInstance]:
        txn, source = self._source(query.path_text, namespace)
        found = [
            self._view(txn, link.other)
            for link in associations.links(self.host, txn, source)
            if _link_matches(link, query.assoc_class, query.role, query.result_role)
            and (query.result_class is None or link.other.class_def.is_a(query.result_class))
        ]
        return found

    def _references(self, query: wqlparse.ReferencesQuery, namespace: str
                    ) -> list[CimInstance]:
        txn, source = self._source(query.path_text, namespace)
        return [
            _association_instance(link, source)
            for link in associations.links(self.host, txn, source)
            if _link_matches(link, query.result_class, query.role, None)
        ]

    def _source(self, path_text: str, namespace: str) -> tuple[Transaction, Record]:
        """The record a query's path names; a relative path is in the query's namespace."""
        try:
            path = ObjectPath.parse(path_text)
        except CimInvalidParameter as error:
            raise CimInvalidQuery(str(error)) from None
        if ":" not in path_text.split(".", 1)[0].split("=", 1)[0]:
            path = dataclasses.replace(path, namespace=namespace)
        txn = self.host.store.transaction()
        record = txn.get(path)
        if record is None:
            raise CimNotFound(f"no instance at {path_text}")
        return txn, record

    async def get(self, path: ObjectPath) -> CimInstance:
        await self._primitive(None)
        return await self._work(lambda: self._get(path))

    def _get(self, path: ObjectPath) -> CimInstance:
        record = self.host.store.get(path)
        polling = record is not None and is_job(record)
        self.host.counters.add("job_poll" if polling else "get")
        if lookup(path.class_name) is None:
            raise CimInvalidClass(f"no class {path.class_name}")
        txn = self.host.store.transaction()
        if record is None or (polling and expired(record, self.host.clock())) or (
                not model.present(txn, record)):
            raise CimNotFound(f"no instance at {path}")
        return self._view(txn, record)

    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        await self._primitive("spawn")
        return await self._work(lambda: self._spawn(class_name, namespace_name(namespace)))

    def _spawn(self, class_name: str, namespace: str) -> CimInstance:
        class_def = lookup(class_name)
        if class_def is None or class_def.namespace.lower() != namespace.lower():
            raise CimInvalidClass(f"no class {class_name} in namespace {namespace}")
        record = self.host.new_record(class_def.name)
        instance = instance_of(record)
        return CimInstance(instance.class_name, instance.properties, None, instance.namespace,
                           instance.superclasses)

    async def get_class(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimClass:
        # metadata: no round trip counted
        declared = classes.declaration(class_name, namespace_name(namespace))
        absent = [key for key in declared.methods
                  if not self.host.has_method(declared.name, key)]
        if not absent:
            return declared
        return dataclasses.replace(declared, methods={
            key: method for key, method in declared.methods.items() if key not in absent})

    def to_embedded(self, instance: CimInstance) -> str:
        return cimxml.write_instance(instance)

    def parse_embedded(self, text: str) -> CimInstance:
        class_name, props = cimxml.read_instance(text)
        class_def = lookup(class_name)
        if class_def is None:
            raise CimInvalidClass(f"no class {class_name}")
        return CimInstance.build(class_def.name, props, None, class_def.namespace,
                                 class_def.ancestors)

    # --- method calls ---------------------------------------------------------------------

    async def invoke(
        self, path: ObjectPath, method: str, params: Mapping[str, InValue] | None = None
    ) -> MethodResult:
        await self._primitive("invoke")
        return await self._work(lambda: self._invoke(path, method, params))

    def _invoke(
        self, path: ObjectPath, method: str, params: Mapping[str, InValue] | None
    ) -> MethodResult:
        class_def, method_def, target = self._resolve(path, method)
        self.host.counters.add(f"invoke:{method_def.name}")
        args = self._convert(method_def, params or {})
        injected = self.host.faults.take_return_code(method_def.name)
        if injected is not None:
            return MethodResult.build(injected, {})
        handler = services.handler(class_def.name, method_def.name)
        if handler is None:
            return MethodResult.build(ReturnCode.NOT_SUPPORTED, {})
        return self._run(Call(self.host, self.host.store.transaction(), method_def, target, args),
                         handler)

    def _resolve(self, path: ObjectPath, method: str) -> tuple[ClassDef, MethodDecl, Record | None]:
        class_def = lookup(path.class_name)
        if class_def is None:
            raise CimInvalidClass(f"no class {path.class_name}")
        method_def = class_def.method(method)
        if method_def is None or not self.host.has_method(class_def.name, method):
            raise CimInvalidMethod(f"{class_def.name} has no method {method!r}")
        target = self.host.store.get(path) if path.keys else None
        if path.keys and target is None:
            raise CimNotFound(f"no instance at {path}")
        return class_def, method_def, target

    def _convert(self, method: MethodDecl, params: Mapping[str, InValue]) -> dict[str, Arg]:
        args: dict[str, Arg] = {}
        for name, value in params.items():
            param = method.parameter(name)
            if param is None or param.direction != "in":
                raise CimInvalidParameter(f"{method.name} has no in-parameter {name!r}")
            args[param.name.lower()] = self._argument(param, value)
        return args

    def _argument(self, param: ParameterDecl, value: InValue) -> Arg:
        if value is None:
            return None
        if param.is_array:
            if isinstance(value, str | bytes | CimInstance | ObjectPath) or not isinstance(
                value, Sequence
            ):
                raise CimInvalidParameter(f"{param.name} takes an array")
            return tuple(_scalar(self, param, item) for item in value)
        if isinstance(value, Sequence) and not isinstance(value, str):
            raise CimInvalidParameter(f"{param.name} takes a single value")
        return _scalar(self, param, value)

    def _run(self, call: Call, handler: Callable[[Call], Mapping[str, OutValue]]) -> MethodResult:
        has_job = call.method.parameter("Job") is not None
        has_job = has_job and call.method.name.lower() not in image.SYNCHRONOUS
        asynchronous = has_job and self.host.config.async_jobs
        try:
            out = dict(handler(call))
        except MethodError as error:
            return self._refused(call, error, asynchronous)
        out = {name: self._hosted(value) for name, value in out.items()}
        if not asynchronous:
            refused = self._write_files(call, asynchronous)
            if refused is not None:
                return refused
            try:
                call.txn.commit()
            except MethodError as error:  # refused at the commit: a migration's hand-over
                return MethodResult.build(error.code, {})
            return MethodResult.build(ReturnCode.COMPLETED, out)
        refused = self._unless_spoiled(call)
        if refused is not None:
            return refused
        fault = self.host.faults.take_job_fault(call.method.name)
        if fault is not None:  # its files, as its records, are left as they were
            return self._failed_job(call, None, fault)
        lost = self.host.faults.take_lost_job(call.method.name)
        if lost is False:  # gone at once, its work never done
            return self._failed_job(call, (ReturnCode.FAILED, "the job was lost"), lost=True)
        slow = self.host.faults.take_slow_job(call.method.name)
        job = new_job(self.host, call.txn, call.method.name, _affected(call),
                      duration_s=slow[0] if slow else None, cancellable=bool(slow and slow[1]),
                      queue=call.queue, writes=call.writes,
                      retention_s=0.0 if lost else None)
        out["Job"] = self._hosted(job)
        try:
            call.txn.commit()
        except MethodError as error:
            return self._failed_job(call, (error.code, error.description))
        if call.queue is not None:
            jobs.defer(self.host, job, call.queue)
        self.host.counters.add("jobs_started")
        return MethodResult.build(ReturnCode.JOB_STARTED, out)

    def _write_files(self, call: Call, asynchronous: bool) -> MethodResult | None:
        """Write the call's files (``Call.files``), once no injected fault stops its job:
        None when they are written, else the answer of their failure."""
        try:
            if call.files is not None:
                call.files()
        except MethodError as error:
            return self._refused(call, error, asynchronous)
        return None

    def _unless_spoiled(self, call: Call) -> MethodResult | None:
        """The files of the call's job written (``_write_files``) before its injected
        faults are taken, unless one spoils it (``Faults.next_job_spoiled``: then nothing
        is written): a job whose file work fails on its own takes no fault meant for the
        next job, nor the place of one that succeeds before it."""
        if self.host.faults.next_job_spoiled(call.method.name):
            return None
        return self._write_files(call, True)

    def _refused(self, call: Call, error: MethodError, asynchronous: bool) -> MethodResult:
        """A refusal's answer: its code, or (once the call's parameters are checked, and
        jobs are asynchronous) a failed job."""
        if error.immediate or not asynchronous:
            return MethodResult.build(error.code, {})
        return self._failed_job(call, (error.code, error.description), shows=error.shows)

    def _failed_job(
        self, call: Call, error: tuple[int, str] | None, fault: JobFault | None = None,
        *, lost: bool = False, shows: Mapping[str, CimValue] | None = None,
    ) -> MethodResult:
        """A job that fails, the call's own changes discarded; ``lost``: one that ends and
        goes at once, unread (``Faults.lose_next_job``); ``shows``: what it shows besides
        its error once it has ended (``MethodError.shows``)."""
        txn = self.host.store.transaction()  # the call's own changes are discarded
        job = new_job(self.host, txn, call.method.name, _affected(call), fault, error,
                      duration_s=0.0 if lost else None, retention_s=0.0 if lost else None,
                      shows=shows)
        txn.commit()
        self.host.counters.add("jobs_started")
        return MethodResult.build(ReturnCode.JOB_STARTED, {"Job": self._hosted(job)})

    def _hosted(self, value: OutValue) -> OutValue:
        """Paths as the host writes them: ``\\\\HOST\\namespace:…``."""
        if isinstance(value, ObjectPath):
            return dataclasses.replace(value, host=self.host.name)
        if isinstance(value, tuple) and value and isinstance(value[0], ObjectPath):
            return tuple(dataclasses.replace(p, host=self.host.name)
                         for p in value if isinstance(p, ObjectPath))
        return value


# --- helpers ------------------------------------------------------------------------------


def _check_properties(classes: Iterable[ClassDef], names: Iterable[str]) -> None:
    for name in names:
        if name.lower() in _PSEUDO:
            continue
        for class_def in classes:
            if class_def.prop(name) is None:
                raise CimInvalidQuery(f"{class_def.name} has no property {name!r}")


def _lookup(instance: CimInstance) -> Callable[[str], CimValue]:
    def lookup(name: str) -> CimValue:
        lowered = name.lower()
        if lowered == "__path":
            return str(instance.path)
        if lowered == "__class":
            return instance.class_name
        if lowered == "__relpath":
            return instance.path.relative() if instance.path else None
        if name not in instance:
            raise CimInvalidProperty(f"{instance.class_name} has no property {name!r}")
        return instance[name]

    return lookup


def _project(instance: CimInstance, wanted: Sequence[str]) -> CimInstance:
    if not wanted:
        return instance
    keep = {name.lower() for name in wanted}
    props = {k: v for k, v in instance.properties.items() if k in keep}
    return CimInstance(instance.class_name, props, instance.path, instance.namespace,
                       instance.superclasses)


def _link_matches(
    link: associations.Link, assoc_class: str | None, role: str | None, result_role: str | None
) -> bool:
    if assoc_class is not None and link.association.lower() != assoc_class.lower():
        return False
    if role is not None and link.role.lower() != role.lower():
        return False
    return result_role is None or link.result_role.lower() == result_role.lower()


def _association_instance(link: associations.Link, source: Record) -> CimInstance:
    class_def = CLASSES[link.association]
    ends = {link.role: str(source.path), link.result_role: str(link.other.path)}
    values = {**link.values, **ends}
    props = [CimProperty(p.name, p.cim_type, p.is_array, values.get(p.name, p.default))
             for p in class_def.properties.values()]
    path = ObjectPath(class_def.name, tuple(sorted(ends.items())), class_def.namespace)
    return CimInstance.build(class_def.name, props, path, class_def.namespace,
                             class_def.ancestors)


def _scalar(backend: EmulatorCim, param: ParameterDecl,
            value: object) -> str | int | bool | ObjectPath:
    converted: str | int | bool | ObjectPath | None = None
    if param.cim_type == "reference":
        converted = _reference(value)
    elif isinstance(value, CimInstance) and param.cim_type in ("string", "object"):
        converted = backend.to_embedded(value)  # an embedded instance (or object) as its text
    elif param.cim_type == "string":
        converted = str(value) if isinstance(value, str | ObjectPath) else None
    elif param.cim_type != "object":
        coerced = coerce_value(CimProperty(param.name, param.cim_type, False, None), value)
        converted = coerced if isinstance(coerced, str | int | bool) else None
    if converted is None:
        raise CimInvalidParameter(f"{param.name} takes {param.cim_type}, not {value!r}")
    return converted


def _reference(value: object) -> ObjectPath | None:
    if isinstance(value, ObjectPath):
        return value
    if isinstance(value, CimInstance):
        return value.path
    return ObjectPath.parse(value) if isinstance(value, str) else None


def _affected(call: Call) -> ObjectPath | None:
    for name in ("AffectedSystem", "TargetSystem", "ComputerSystem", "AffectedConfiguration"):
        path = call.path(name)
        if path is not None:
            return path
    return call.target.path if call.target is not None else None
