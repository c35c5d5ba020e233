"""The WinRM WMI plugin of the emulated host: SOAP requests answered through the CIM seam.

Get (an instance, or a class's CIM-XML metadata), Enumerate/Pull/Release with a WQL
filter (optimized enumeration, EnumerationMode), and custom actions (method calls). Each
request is one seam call, so the emulator counts the same round trips as when the agent
calls it directly; a class-metadata Get counts as the host's SpawnInstance_ read of the
class. Answers larger than the client's MaxEnvelopeSize are refused with
``w:EncodingLimit``, as WinRM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from xml.etree.ElementTree import Element

from hyperv_agent.cim.api import Cim, CimInstance, InValue, MethodResult, ObjectPath, OutValue
from hyperv_agent.cim.classdecl import (
    OBJECT,
    CimClass,
    MethodDecl,
    RawInstance,
    RawValue,
    typed_value,
)
from hyperv_agent.cim.wsman import writing
from hyperv_agent.cim.wsman.classxml import write_classes
from hyperv_agent.cim.wsman.config import WinrmLimits, write_config
from hyperv_agent.cim.wsman.names import (
    CLASS_METADATA,
    CONFIG,
    ENUMERATE,
    GET,
    NAMESPACE_SELECTOR,
    PULL,
    RELEASE,
    WQL_DIALECT,
    WSEN,
    WSMAN,
    class_uri,
    local_name,
    parse_resource_uri,
    q,
    read_selectors,
)
from hyperv_agent.cim.wsman.reading import read_values
from hyperv_agent.emulator.winrm.enumerations import Enumerations
from hyperv_agent.emulator.winrm.soap import (
    INSUFFICIENT_SELECTORS,
    INVALID_URI_WMI_SINGLETON,
    INVALID_URI_WMI_SINGLETON_TEXT,
    MAX_ENVELOPE_SIZE_EXCEEDED,
    MAX_TIMEOUT_S,
    TIMED_OUT_TEXT,
    Fault,
    SoapRequest,
    envelope,
    fault_envelope,
    option,
    provider_fault,
    quota_exceeded,
    read_request,
    unknown_class_in_query,
)
from hyperv_agent.errors import CimError, CimInvalidClass, CimInvalidParameter

DEFAULT_MAX_ENVELOPE_KB = 500
_SELECT = re.compile(r"\s*SELECT\s+(?P<columns>.+?)\s+FROM\s", re.IGNORECASE | re.DOTALL)


class WinrmService:
    """Answers WS-Management requests for one emulated host.

    As WinRM, it holds the account to ``max_concurrent_operations_per_user`` operations at
    once: a Get, a method call or an Enumerate being answered counts as one, and so does
    each enumeration open (its Pulls and Release are part of it; WSMAN_AUTHZ_QUOTA) until
    it ended, was released or expired. Past it a new operation is refused
    (``quota_exceeded``); a Pull or Release of an open enumeration never is."""

    def __init__(self, cim: Cim, machine: str,
                 max_envelope_kb: int = DEFAULT_MAX_ENVELOPE_KB) -> None:
        self.cim = cim
        self.machine = machine
        self.max_envelope_bytes = max_envelope_kb * 1024
        self.max_concurrent_operations_per_user = 1500  # WinRM's default quota
        # False: the account is in Remote Management Users only, which WinRM's
        # configuration refuses (it is served to Administrators)
        self.administrator = True
        self.enumerations = Enumerations()
        self.operations = 0  # Gets, method calls and Enumerates being answered
        self.requests = 0  # SOAP requests answered
        self.last_answer_bytes = 0

    def limits(self) -> WinrmLimits:
        """The service's configuration as WinRM reports it (its defaults, with this face's
        MaxEnvelopeSizekb)."""
        return WinrmLimits(max_envelope_kb=self.max_envelope_bytes // 1024,
                           max_timeout_ms=int(MAX_TIMEOUT_S * 1000), max_batch_items=32000,
                           max_provider_requests=4294967295,
                           max_concurrent_operations_per_user=self.max_concurrent_operations_per_user,
                           allow_unencrypted=False)

    async def handle(self, data: bytes) -> tuple[int, str]:
        """(HTTP status, answer envelope) for one request envelope."""
        self.requests += 1
        relates_to = "uuid:00000000-0000-0000-0000-000000000000"
        try:
            request = read_request(data, self.max_envelope_bytes)
            relates_to = request.message_id
            action, body = await self._within(request)
            answer = envelope(action, relates_to, body)
            self.last_answer_bytes = len(answer.encode())
            if self.last_answer_bytes > request.max_envelope_bytes:
                raise Fault("w:EncodingLimit", "the answer would exceed the envelope size "
                            "the client accepts (MaxEnvelopeSize)", detail="MaxEnvelopeSize",
                            code=MAX_ENVELOPE_SIZE_EXCEEDED)
            return 200, answer
        except Fault as fault:
            return fault.status, fault_envelope(fault, relates_to, self.machine)
        except CimError as error:
            refused = provider_fault(error)
            return refused.status, fault_envelope(refused, relates_to, self.machine)

    async def _within(self, request: SoapRequest) -> tuple[str, str]:
        """The request answered within its OperationTimeout, else ``w:TimedOut``."""
        try:
            return await asyncio.wait_for(self._dispatch(request), request.timeout_s)
        except TimeoutError:
            raise Fault("w:TimedOut", TIMED_OUT_TEXT, sender=False) from None

    async def _dispatch(self, request: SoapRequest) -> tuple[str, str]:
        if request.action == PULL:
            return f"{PULL}Response", self._pull(request)
        if request.action == RELEASE:
            return f"{RELEASE}Response", self._release(request)
        limit = self.max_concurrent_operations_per_user
        if self.operations + self.enumerations.open_count >= limit:
            raise quota_exceeded(limit)
        self.operations += 1
        try:
            return await self._operation(request)
        finally:
            self.operations -= 1

    async def _operation(self, request: SoapRequest) -> tuple[str, str]:
        if request.action == GET:
            return f"{GET}Response", await self._get(request)
        if request.action == ENUMERATE:
            return f"{ENUMERATE}Response", await self._enumerate(request)
        if request.resource_uri and request.action.startswith(request.resource_uri + "/"):
            method = request.action[len(request.resource_uri) + 1:]
            return f"{request.action}Response", await self._invoke(request, method)
        raise Fault("a:ActionNotSupported", f"the action {request.action} is not supported "
                    "by this resource")

    # --- Get ------------------------------------------------------------------------------

    async def _get(self, request: SoapRequest) -> str:
        if request.resource_uri == CLASS_METADATA:
            return await self._get_class(request)
        if request.resource_uri == CONFIG:
            if not self.administrator:
                raise Fault("w:AccessDenied", "Access is denied.", code=5)
            return write_config(self.limits())
        path = self._path(request)
        if not path.keys and (await self.cim.get_class(path.class_name, path.namespace)).keys:
            # none only for a singleton; the subcode and detail are the face's own
            raise Fault("w:InvalidSelectors", INVALID_URI_WMI_SINGLETON_TEXT,
                        detail="InsufficientSelectors", code=INVALID_URI_WMI_SINGLETON,
                        provider=INVALID_URI_WMI_SINGLETON_TEXT)
        instance = await self.cim.get(path)
        return writing.instance(instance, instance.path or path)

    async def _get_class(self, request: SoapRequest) -> str:
        selectors = dict((k.lower(), v) for k, v in _selectors_with_namespace(request))
        name, namespace = selectors.get("classname"), selectors.get(NAMESPACE_SELECTOR)
        if not name or not namespace:
            raise Fault("w:InvalidSelectors", "class metadata needs the __cimnamespace and "
                        "ClassName selectors", detail="InsufficientSelectors",
                        code=INSUFFICIENT_SELECTORS)
        decl = await self.cim.get_class(name, namespace.replace("/", "\\"))
        with contextlib.suppress(CimInvalidClass):  # abstract classes have no instances
            await self.cim.spawn(decl.name, decl.namespace)  # the host reads the class
        hierarchy = (option(request, "IncludeInheritanceHierarchy") or "").lower() == "true"
        return write_classes(decl, hierarchy)

    def _path(self, request: SoapRequest) -> ObjectPath:
        namespace, class_name = _resource(request.resource_uri)
        _same_namespace(request, namespace)
        if class_name is None:
            raise Fault("a:DestinationUnreachable", "the resource URI names no class",
                        detail="InvalidResourceURI")
        try:
            keys = read_selectors(request.selector_set)
        except CimInvalidParameter as error:
            raise Fault("w:InvalidSelectors", str(error), detail="InvalidValue") from None
        return ObjectPath(class_name, keys, namespace, self.machine)

    # --- enumerations ---------------------------------------------------------------------

    async def _enumerate(self, request: SoapRequest) -> str:
        namespace, class_name = _resource(request.resource_uri)
        _same_namespace(request, namespace)
        start = request.body.find(q(WSEN, "Enumerate"))
        if start is None:
            raise Fault("w:SchemaValidationError", "the body holds no wsen:Enumerate")
        wql = _filter(start, class_name)
        mode = (start.findtext(q(WSMAN, "EnumerationMode")) or "").strip()
        try:
            found = await self.cim.query(wql, namespace)
        except CimInvalidClass:
            raise unknown_class_in_query(wql) from None
        context = self.enumerations.start([_item(i, wql, mode) for i in found])
        if start.find(q(WSMAN, "OptimizeEnumeration")) is None:
            return f"<n:EnumerateResponse><n:EnumerationContext>{context}" \
                   "</n:EnumerationContext></n:EnumerateResponse>"
        max_elements = _count(start.findtext(q(WSMAN, "MaxElements")))
        return self._batch("n:EnumerateResponse", "w:Items", "w:EndOfSequence", context,
                           max_elements, request)

    def _pull(self, request: SoapRequest) -> str:
        pull = request.body.find(q(WSEN, "Pull"))
        context = (pull.findtext(q(WSEN, "EnumerationContext")) if pull is not None else "")
        max_elements = _count(pull.findtext(q(WSEN, "MaxElements")) if pull is not None else None)
        return self._batch("n:PullResponse", "n:Items", "n:EndOfSequence",
                           (context or "").strip(), max_elements, request)

    def _batch(self, tag: str, items_tag: str, end_tag: str, context: str, max_elements: int,
               request: SoapRequest) -> str:
        skeleton = envelope(f"{ENUMERATE}Response", request.message_id,
                            f"<{tag}><n:EnumerationContext>{context}</n:EnumerationContext>"
                            f"<{items_tag}></{items_tag}><{end_tag}/></{tag}>")
        room = request.max_envelope_bytes - len(skeleton.encode()) - 64
        batch = self.enumerations.take(context, max_elements, room)
        items = f"<{items_tag}>{''.join(batch.items)}</{items_tag}>"
        if batch.ended:  # an optimized answer keeps the element, empty, as Windows does
            keep = "<n:EnumerationContext></n:EnumerationContext>" \
                if tag == "n:EnumerateResponse" else ""
            return f"<{tag}>{keep}{items}<{end_tag}/></{tag}>"
        return f"<{tag}><n:EnumerationContext>{batch.context}</n:EnumerationContext>" \
               f"{items}</{tag}>"

    def _release(self, request: SoapRequest) -> str:
        release = request.body.find(q(WSEN, "Release"))
        context = release.findtext(q(WSEN, "EnumerationContext")) if release is not None else ""
        self.enumerations.release((context or "").strip())
        return ""

    # --- methods --------------------------------------------------------------------------

    async def _invoke(self, request: SoapRequest, method_name: str) -> str:
        path = self._path(request)
        path = ObjectPath(path.class_name, path.keys, path.namespace)  # "." when static
        decl = await self.cim.get_class(path.class_name, path.namespace)
        method = decl.method(method_name)
        element = next((c for c in request.body
                        if local_name(c.tag).lower() == f"{method.name}_input".lower()), None)
        raw = read_values(element) if element is not None else {}
        params = await self._arguments(method, raw)
        result = await self.cim.invoke(path, method.name, params)
        return _output(decl, method, result)

    async def _arguments(self, method: MethodDecl, raw: Mapping[str, RawValue]
                         ) -> dict[str, InValue]:
        params: dict[str, InValue] = {}
        for name, value in raw.items():
            decl = method.parameter(name)
            if decl is None:
                params[name] = _plain(value)  # the provider names what it does not know
                continue
            nested = await self._nested(value)
            params[decl.name] = _argument(decl.cim_type, decl.is_array, value, name, nested)
        return params

    async def _nested(self, value: RawValue) -> dict[str, CimClass]:
        items = value if isinstance(value, tuple) else (value,)
        return {i.class_name.lower(): await self.cim.get_class(i.class_name, i.namespace)
                for i in items if isinstance(i, RawInstance) and i.class_name}


def _selectors_with_namespace(request: SoapRequest) -> list[tuple[str, str]]:
    if request.selector_set is None:
        return []
    return [(s.get("Name") or "", (s.text or "").strip())
            for s in request.selector_set.findall(q(WSMAN, "Selector"))]


def _same_namespace(request: SoapRequest, namespace: str) -> None:
    """A ``__cimnamespace`` selector beside a WMI resource URI must name the URI's own
    namespace: Windows refuses any other with ``w:InternalError`` (MS-WSMV; a Windows
    Server 2016 answer to omicli, microsoft/omi#398, holds this reason). The code number
    is not known; ERROR_WSMAN_PROVIDER_FAILURE stands for it."""
    for name, value in _selectors_with_namespace(request):
        if name.lower() == NAMESPACE_SELECTOR and \
                value.replace("/", "\\").strip("\\").lower() != namespace.lower():
            raise Fault("w:InternalError", "The WS-Management service cannot process the "
                        "request. The resource URI and __cimnamespace selector attempted to "
                        "use different namespaces. Try removing the __cimnamespace selector "
                        "or using a DMTF resource URI. If a non-DMTF resource URI is used "
                        "with a __cimnamespace selector, the namespaces must match.",
                        sender=False)


def _resource(uri: str) -> tuple[str, str | None]:
    try:
        return parse_resource_uri(uri)
    except CimInvalidParameter:
        raise Fault("a:DestinationUnreachable", f"the resource URI {uri!r} is not served "
                    "here", detail="InvalidResourceURI") from None


def _filter(start: Element, class_name: str | None) -> str:
    found = start.find(q(WSMAN, "Filter"))
    if found is None:
        found = start.find(q(WSEN, "Filter"))
    if found is None:
        if class_name is None:
            raise Fault("n:CannotProcessFilter", "an enumeration of all classes needs a "
                        "WQL filter")
        return f"SELECT * FROM {class_name}"  # noqa: S608 - the URI's class name is checked
    dialect = found.get("Dialect") or WQL_DIALECT
    if dialect != WQL_DIALECT:
        raise Fault("n:FilterDialectRequestedUnavailable", f"the filter dialect {dialect} is "
                    "not supported; use WQL")
    return (found.text or "").strip()


def _count(text: str | None) -> int:
    stripped = (text or "").strip()
    return int(stripped) if stripped.isdigit() and int(stripped) > 0 else 1


def _item(instance: CimInstance, wql: str, mode: str) -> str:
    select = _SELECT.match(wql)
    if select is not None and select.group("columns").strip() != "*":
        return writing.fragment(instance)
    rendered = writing.instance(instance, instance.path)
    if mode == "EnumerateEPR" and instance.path is not None:
        return f"<a:EndpointReference>{writing.epr(instance.path)}</a:EndpointReference>"
    if mode == "EnumerateObjectAndEPR" and instance.path is not None:
        return (f"<w:Item>{rendered}<a:EndpointReference>{writing.epr(instance.path)}"
                "</a:EndpointReference></w:Item>")
    return rendered


def _argument(cim_type: str, is_array: bool, value: RawValue, name: str,
              nested: Mapping[str, CimClass]) -> InValue:
    if cim_type == "reference":
        items = value if isinstance(value, tuple) else (value,)
        paths = [i if isinstance(i, ObjectPath) else ObjectPath.parse(str(i))
                 for i in items if i is not None]
        return paths if is_array else (paths[0] if paths else None)
    typed = typed_value("string" if cim_type == OBJECT else cim_type, is_array, value, name,
                        nested)
    return list(typed) if isinstance(typed, tuple) else typed


def _plain(value: RawValue) -> InValue:
    if isinstance(value, tuple):
        return [str(item) for item in value]
    return None if value is None else str(value)


def _output(decl: CimClass, method: MethodDecl, result: MethodResult) -> str:
    uri = class_uri(decl.namespace, decl.name)
    values: dict[str, tuple[str, OutValue]] = {"ReturnValue": ("uint32", result.return_value)}
    for name, value in result.out.items():
        param = method.parameter(name)
        values[param.name if param else name] = (param.cim_type if param else "string", value)
    body = "".join(writing.elements(f"p:{name}", cim_type, value)
                   for name, (cim_type, value) in sorted(values.items(),
                                                         key=lambda i: i[0].lower()))
    tag = f"p:{method.name}_OUTPUT"
    return f"<{tag} xmlns:p={writing.attr(uri)}>{body}</{tag}>"
